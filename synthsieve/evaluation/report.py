"""Renders eval.json as one self-contained HTML page with embedded plots."""

from __future__ import annotations

import base64
import html
import io
from typing import Any

__all__ = [
    "GROUP_COLUMNS", "METRIC_COLUMNS", "THUMBNAIL_PX", "png_data_uri", "thumbnail_data_uri",
    "write_html",
]

METRIC_COLUMNS = (
    ("n", "n"), ("n_ai", "AI"), ("n_real", "real"), ("roc_auc", "ROC-AUC"),
    ("average_precision", "AP"), ("tpr_at_1pct_fpr", "TPR@1%FPR"),
    ("tpr_at_5pct_fpr", "TPR@5%FPR"), ("ece", "ECE"), ("accuracy", "accuracy"),
    ("precision", "precision"), ("recall", "recall"), ("false_positive_rate", "FPR"),
    ("coverage", "decided"),
)


def png_data_uri(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


# Fewer labelled images than this, and the reliability plot says it shows too few to judge
# calibration; a bin with fewer than RELIABILITY_MIN_PER_BIN is drawn hollow.
RELIABILITY_MIN_IMAGES = 100
RELIABILITY_MIN_PER_BIN = 10


def _plots(report: dict[str, Any]) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from synthsieve.evaluation import metrics

    out = {}
    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    rows = report["scores_as_is"]
    y = np.array([r["label"] for r in rows])
    p = np.array([r["ai_generated"] for r in rows])
    fpr, tpr, _ = metrics.roc_curve(y, p)
    ax.plot(fpr, tpr, lw=2, label=f"as is (AUC {report['overall']['roc_auc']})")
    ax.plot([0, 1], [0, 1], ls=":", c="grey")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC curve",
           xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="lower right", fontsize=8)
    out["roc"] = png_data_uri(fig)

    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    bins = [b for b in report["reliability"] if b["n"]]
    n = sum(b["n"] for b in bins)
    ax.plot([0, 1], [0, 1], ls=":", c="grey", label="perfectly calibrated")
    ax.plot([b["mean_score"] for b in bins], [b["ai_rate"] for b in bins], "-", c="C0",
            label=f"model (ECE {report['overall']['ece']})")
    # a bin of a few images is a coin toss, not a calibration estimate: drawn hollow
    for b in bins:
        few = b["n"] < RELIABILITY_MIN_PER_BIN
        ax.plot(b["mean_score"], b["ai_rate"], "o", c="C0", mfc="white" if few else "C0")
        ax.annotate(str(b["n"]), (b["mean_score"], b["ai_rate"]), fontsize=7,
                    textcoords="offset points", xytext=(4, -10))
    title = "Reliability" + (f" ({n} images: too few to judge)"
                             if n < RELIABILITY_MIN_IMAGES else "")
    ax.set(xlabel="mean score in bin (hollow: under "
                  f"{RELIABILITY_MIN_PER_BIN} images)", ylabel="share that is AI",
           title=title, xlim=(0, 1), ylim=(-0.02, 1.02))
    ax.legend(loc="upper left", fontsize=8)
    out["reliability"] = png_data_uri(fig)

    fig, ax = plt.subplots(figsize=(4.6, 3.2))
    edges = np.linspace(0, 1, 21)
    ax.hist(p[y == 0], bins=edges, alpha=0.6, label="real")
    ax.hist(p[y == 1], bins=edges, alpha=0.6, label="AI")
    for t in set(report["thresholds"].values()):
        ax.axvline(t, c="k", ls="--", lw=1)
    ax.set(xlabel="ai_generated", ylabel="images", title="Scores by true class (as is)")
    ax.legend(fontsize=8)
    out["histogram"] = png_data_uri(fig)
    return out


def _table(rows: dict[str, dict[str, Any]], first: str) -> str:
    head = "".join(f"<th>{html.escape(label)}</th>" for _, label in METRIC_COLUMNS)
    body = []
    for name, m in rows.items():
        cells = "".join(f"<td>{'' if m.get(k) is None else m[k]}</td>" for k, _ in METRIC_COLUMNS)
        body.append(f"<tr><th>{html.escape(str(name))}</th>{cells}</tr>")
    return (f"<table><thead><tr><th>{html.escape(first)}</th>{head}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table>")


def _confusion(c: dict[str, int]) -> str:
    return (
        "<table><thead><tr><th>true \\ verdict</th><th>ai_generated</th><th>inconclusive</th>"
        "<th>not_ai_generated</th></tr></thead><tbody>"
        f"<tr><th>AI</th><td>{c['ai_as_ai']}</td><td>{c['ai_as_inconclusive']}</td>"
        f"<td>{c['ai_as_not_ai']}</td></tr>"
        f"<tr><th>real</th><td>{c['real_as_ai']}</td><td>{c['real_as_inconclusive']}</td>"
        f"<td>{c['real_as_not_ai']}</td></tr></tbody></table>")


GROUP_COLUMNS = (("n", "n"), ("n_ai", "AI"), ("n_real", "real"),
                 ("ai_generated", "called ai_generated"), ("inconclusive", "inconclusive"),
                 ("not_ai_generated", "not_ai_generated"), ("roc_auc", "ROC-AUC"),
                 ("auc_against", "AUC against"))
THUMBNAIL_PX = 140


def _group_table(rows: dict[str, dict[str, Any]], first: str) -> str:
    head = "".join(f"<th>{html.escape(label)}</th>" for _, label in GROUP_COLUMNS)
    body = []
    for name, m in rows.items():
        cells = []
        for k, _ in GROUP_COLUMNS:
            v = m.get(k)
            if k in ("ai_generated", "inconclusive", "not_ai_generated"):
                v = f"{v:.1%}"
            cells.append(f"<td>{'' if v is None else html.escape(str(v))}</td>")
        body.append(f"<tr><th>{html.escape(str(name))}</th>{''.join(cells)}</tr>")
    return (f"<table><thead><tr><th>{html.escape(first)}</th>{head}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table>")


# A file larger than this, or with more pixels, gets no thumbnail.
THUMB_MAX_SOURCE_BYTES = 64 * 1024 * 1024
THUMB_MAX_PIXELS = 100_000_000


def thumbnail_data_uri(uri: str, side: int = THUMBNAIL_PX, quality: int = 80) -> str | None:
    """A JPEG data URI at most `side` px on its longer side, made from the file (local or in
    a bucket) with the same guarded decoder as the pipeline; None for an http(s) source (a
    report fetches nothing again) or a file that cannot be read or decoded."""
    from synthsieve.images import decode_image
    from synthsieve.io.filesystems import open_for_read
    from synthsieve.io.read import is_http

    if is_http(uri):
        return None
    path = uri[len("file://"):] if uri.startswith("file://") else uri
    try:
        with open_for_read(path) as f:
            data = f.read(THUMB_MAX_SOURCE_BYTES + 1)
        if len(data) > THUMB_MAX_SOURCE_BYTES:
            return None
        image = decode_image(data, (side, side), THUMB_MAX_PIXELS).image
    except Exception:  # noqa: BLE001 - a file that cannot be read or decoded is only a
        return None  # missing picture (filesystems raise their own types, not just OSError)
    image.thumbnail((side, side))
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def _gallery(title: str, items: list[dict[str, Any]]) -> str:
    if not items:
        return f"<h3>{html.escape(title)}</h3><p>None.</p>"
    figs = []
    for it in items:
        thumb = thumbnail_data_uri(it["uri"])
        img = f"<img alt='' src='{thumb}'>" if thumb else "<div>(no thumbnail)</div>"
        group = f" &middot; {html.escape(str(it['group']))}" if it.get("group") else ""
        figs.append(f"<figure>{img}<figcaption><b>{it['ai_generated']:.3f}</b> "
                    f"{html.escape(it['verdict'] or '')}{group}<br>"
                    f"{html.escape(it['uri'])}</figcaption></figure>")
    return f"<h3>{html.escape(title)}</h3><div class='gallery'>{''.join(figs)}</div>"


def _reliability_note(report: dict[str, Any]) -> str:
    n = sum(b["n"] for b in report["reliability"])
    if n >= RELIABILITY_MIN_IMAGES:
        return ""
    return (f"<p class='warn' id='reliability-note'>Reliability: {n} labelled images are too "
            f"few to judge calibration (it takes {RELIABILITY_MIN_IMAGES} or more; bins under "
            f"{RELIABILITY_MIN_PER_BIN} images are drawn hollow). ECE is shown but is not an "
            "estimate to rely on.</p>")


def write_html(report: dict[str, Any]) -> str:
    plots = _plots(report)
    o = report["overall"]
    thr = report["thresholds"]
    sections = [
        f"<h1>synthsieve eval: {html.escape(report['model'])}</h1>",
        *(f"<p class='warn'>&#9888; {html.escape(w)}</p>" for w in report.get("warnings", [])),
        f"<p>Manifest <code>{html.escape(report['manifest'])}</code>, run "
        f"<code>{html.escape(report['run_id'])}</code>. {o['n']} labelled images "
        f"({o['n_ai']} AI, {o['n_real']} real); {report['errors']} error rows; "
        f"{report['rows_unlabelled']} scored rows without a usable label. Verdict thresholds: "
        f"ai_generated &ge; {thr['ai_generated']}, not_ai_generated &le; "
        f"{thr['not_ai_generated']}.</p>",
        f"<p class='headline'>ROC-AUC <b>{o['roc_auc']}</b> &middot; AP {o['average_precision']}"
        f" &middot; TPR at 1% FPR {o['tpr_at_1pct_fpr']} &middot; ECE {o['ece']}</p>",
        "<h2>Robustness</h2><p>The same images after each transformation (JPEG q75; half "
        "size; central 70% crop; non-JPEG re-encoded as JPEG q90; half size then JPEG "
        "q75).</p>",
        _table(report["robustness"], "condition"),
        "<h2>Confusion matrix (as is)</h2>", _confusion(o["confusion"]),
        "<div class='plots'>"
        + "".join(f"<img alt='{k}' src='{v}'>" for k, v in plots.items()) + "</div>",
        _reliability_note(report),
        "<h2>By format (as is)</h2>", _table(report["by_format"], "format"),
        "<h2>By size (as is)</h2>", _table(report["by_size"], "megapixels"),
    ]
    if report.get("by_group"):
        sections += [f"<h2>By {html.escape(report['group_column'])} (as is)</h2>"
                     "<p>Share of each verdict per group. ROC-AUC of an AI group is against "
                     "all real images; of a real group, all AI images against that group.</p>",
                     _group_table(report["by_group"], report["group_column"])]
    if report.get("worst"):
        sections += ["<h2>Worst mistakes (as is)</h2>",
                     _gallery("Real images scored most AI-like",
                              report["worst"]["real_scored_highest"]),
                     _gallery("AI images scored least AI-like",
                              report["worst"]["ai_scored_lowest"])]
    if report.get("errors_by_type"):
        sections.append("<h2>Errors</h2><ul>" + "".join(
            f"<li>{html.escape(k)}: {v}</li>" for k, v in report["errors_by_type"].items())
            + "</ul>")
    style = ("body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}"
             "table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:13px}"
             "td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}"
             "thead th{background:#f2f2f2}.plots img{margin:4px;border:1px solid #eee}"
             ".headline{font-size:1.2em}.warn{background:#fff3cd;padding:.5em;"
             "border:1px solid #e0c36a}.gallery{display:flex;flex-wrap:wrap;gap:8px}"
             ".gallery figure{margin:0;width:150px;font-size:11px;word-break:break-all}"
             ".gallery img{max-width:150px;max-height:150px;display:block}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>synthsieve eval</title>"
            f"<style>{style}</style></head><body>{''.join(sections)}</body></html>")
