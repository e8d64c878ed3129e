"""The audit on a real dask.distributed LocalCluster gives the DirectRunner's rows."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from corpus import noise_png, write_corpus
from outputs import table

from synthsieve.cli import main

distributed = pytest.importorskip("distributed")

SCORE_COLUMNS = ("image_id", "uri", "sha256", "width", "height", "format", "verdict",
                 "evidence_verdict", "provenance_source")


def _rows(out: Path) -> tuple[dict[str, tuple], dict[str, tuple]]:
    """image_id -> what an image's row says, for scores and errors (not timings or notes
    such as 'identical bytes to ...', which depend on which copy a worker met first)."""
    scores = {r["image_id"]: (*(r[c] for c in SCORE_COLUMNS), round(r["ai_generated"], 5))
              for r in table(out, "scores").to_pylist()}
    errors = {r["image_id"]: (r["uri"], r["stage"], r["error_type"])
              for r in table(out, "errors").to_pylist()}
    return scores, errors


@pytest.fixture()
def corpus(tmp_path: Path) -> tuple[Path, int]:
    root = tmp_path / "corpus"
    expected = write_corpus(root)  # good files and each kind of bad one
    for i in range(240):
        (root / f"noise_{i:03d}.png").write_bytes(noise_png(i))
    for i in range(30):  # the same bytes under other names: each still gets its row
        shutil.copy(root / f"noise_{i:03d}.png", root / f"copy_{i:03d}.png")
    return root, len(expected) + 240 + 30


@pytest.mark.slow
def test_audit_on_a_two_worker_local_cluster_writes_the_direct_runners_rows(
        tmp_path, corpus, tiny_model):
    root, n = corpus
    direct = tmp_path / "direct"
    assert main(["-q", "audit", str(root), "--out", str(direct), "--model", str(tiny_model),
                 "--batch-size", "8"]) == 0

    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       host="127.0.0.1", dashboard_address=None)
    try:
        on_cluster = tmp_path / "dask"
        with distributed.Client(cluster) as client, \
                distributed.get_task_stream(client) as tasks:
            assert main(["-q", "audit", str(root), "--out", str(on_cluster),
                         "--model", str(tiny_model), "--batch-size", "8",
                         "--runner", "DaskRunner", "--dask_client_address",
                         cluster.scheduler_address]) == 0
    finally:
        cluster.close()
    # the work was spread: both worker processes ran bundles of the audit
    assert len({t["worker"] for t in tasks.data}) == 2

    want_scores, want_errors = _rows(direct)
    got_scores, got_errors = _rows(on_cluster)
    assert len(want_scores) + len(want_errors) == n
    assert got_errors == want_errors
    assert got_scores.keys() == want_scores.keys()
    assert got_scores == want_scores
    summary = json.loads((on_cluster / "summary.json").read_text())
    # the counters came back from the workers: the invariant is checked, not assumed
    assert summary["inputs"] == n and summary["accounted_for"] is True
    assert summary["scores"] + summary["errors"] == n


def test_dask_runner_without_an_address_starts_and_stops_its_own_local_cluster(
        tmp_path, corpus, tiny_model, capsys):
    root, n = corpus
    out = tmp_path / "out"
    assert main(["-q", "audit", str(root), "--out", str(out), "--model", str(tiny_model),
                 "--runner", "DaskRunner", "--dask_local_workers", "2"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["inputs"] == n == summary["scores"] + summary["errors"]
    scores, errors = _rows(out)
    assert len(scores) + len(errors) == n
