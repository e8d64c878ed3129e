import numpy as np
import pytest

from synthsieve.evaluation import metrics


@pytest.fixture
def labels():
    return np.array([0] * 50 + [1] * 50)


def test_perfect_inverted_and_random_scorers_give_auc_1_0_and_half(labels):
    perfect = labels * 0.8 + 0.1
    assert metrics.roc_auc(labels, perfect) == 1.0
    assert metrics.roc_auc(labels, 1 - perfect) == 0.0
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 20000)
    assert metrics.roc_auc(y, rng.random(20000)) == pytest.approx(0.5, abs=0.02)
    assert metrics.roc_auc(labels, np.full(100, 0.3)) == 0.5  # all ties count half


def test_average_precision_and_tpr_at_fpr_on_known_rankings(labels):
    assert metrics.average_precision(labels, labels.astype(float)) == 1.0
    # one real image above every AI image: precision 1/2 at the first AI image, ...
    y = np.array([0, 1, 1])
    p = np.array([0.9, 0.8, 0.7])
    assert metrics.average_precision(y, p) == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert metrics.tpr_at_fpr(y, p, 0.0) == 0.0
    assert metrics.tpr_at_fpr(y, p, 1.0) == 1.0


def test_single_class_sets_have_no_auc():
    assert metrics.roc_auc([1, 1], [0.2, 0.9]) is None
    assert metrics.tpr_at_fpr([0, 0], [0.2, 0.9], 0.01) is None


def test_calibration_error_is_zero_when_calibrated_and_large_when_not():
    rng = np.random.default_rng(1)
    p = rng.random(200000)
    y = (rng.random(200000) < p).astype(int)
    assert metrics.expected_calibration_error(y, p) < 0.01
    assert metrics.expected_calibration_error(np.ones(10, int), np.zeros(10)) == 1.0
    bins = metrics.reliability(y, p)
    assert sum(b["n"] for b in bins) == len(y) and len(bins) == 10


def test_summary_counts_the_three_way_verdicts():
    y = np.array([1, 1, 1, 0, 0, 0])
    p = np.array([0.95, 0.5, 0.1, 0.9, 0.5, 0.05])
    s = metrics.summary(y, p, t_not=0.2, t_ai=0.8)
    assert s["confusion"] == {"ai_as_ai": 1, "ai_as_not_ai": 1, "ai_as_inconclusive": 1,
                              "real_as_ai": 1, "real_as_not_ai": 1, "real_as_inconclusive": 1}
    assert s["precision"] == 0.5 and s["recall"] == pytest.approx(1 / 3, abs=1e-4)
    assert s["coverage"] == pytest.approx(4 / 6, abs=1e-4)
    assert s["accuracy"] == pytest.approx(2 / 6, abs=1e-4)


def test_bad_labels_are_refused():
    with pytest.raises(ValueError):
        metrics.roc_auc([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError):
        metrics.roc_auc([0, 1, 1], [0.1, 0.2])
