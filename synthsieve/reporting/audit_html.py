"""Renders the audit report dict as one self-contained HTML page: plots embedded as PNG,
the gallery's thumbnails as JPEG data URIs, no script and no request to anywhere."""

from __future__ import annotations

import html
from typing import Any

from synthsieve.evaluation.report import png_data_uri
from synthsieve.reporting.gallery import THUMB_BUDGET_BYTES, thumbnail

__all__ = ["CSS", "render"]

CSS = """body{font-family:system-ui,sans-serif;margin:2rem;max-width:80rem;color:#222}
table{border-collapse:collapse;margin:.5rem 0 1.5rem;max-width:100%}td,th{border:1px solid
#ccc;padding:.25rem .6rem;text-align:left;vertical-align:top}td.long{overflow-wrap:anywhere}
th{background:#f3f3f3}.big{font-size:1.6rem;font-weight:600}.ok{color:#176617}
.bad{color:#a11}.grid{display:flex;flex-wrap:wrap;gap:1.5rem}.card{border:1px solid #ddd;
border-radius:6px;padding:.8rem 1.2rem}.meta td:first-child{font-weight:600;white-space:nowrap}
.gallery{display:grid;grid-template-columns:repeat(auto-fill,minmax(13rem,1fr));gap:1rem}
.item{margin:0;border:1px solid #ddd;border-radius:6px;padding:.5rem;font-size:.8rem}
.item img,.item .noimg{display:block;margin:0 auto .4rem;max-width:160px;max-height:160px}
.item .noimg{width:160px;height:60px;background:#f3f3f3;color:#777;text-align:center;
line-height:60px}.uri{overflow-wrap:anywhere;font-family:monospace}
.badge{display:inline-block;background:#eef;border:1px solid #99c;border-radius:3px;
padding:0 .3rem;margin:.1rem .2rem 0 0}.v-ai_generated{color:#a11;font-weight:600}
.v-not_ai_generated{color:#176617}#logscale:checked~.hist-lin{display:none}
#logscale:not(:checked)~.hist-log{display:none}"""


LONG_COLUMNS = {"uri", "image_id", "message", "prefix"}


def _table(rows: list[dict[str, Any]] | dict[str, Any], headers: tuple[str, str] = ("", ""),
           empty: str = "none") -> str:
    if isinstance(rows, dict):
        rows = [{headers[0]: k, headers[1]: v} for k, v in rows.items()]
    if not rows:
        return f"<p><em>{html.escape(empty)}</em></p>"
    cols = list(rows[0])
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in cols)
    # long values wrap anywhere, so that the columns beside them stay on screen
    cls = {c: " class=long" if c in LONG_COLUMNS else "" for c in cols}
    body = "".join("<tr>" + "".join(f"<td{cls[c]}>{html.escape(str(r.get(c)))}</td>"
                                    for c in cols) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _images(n: int) -> str:
    return f"{n} image" if n == 1 else f"{n} images"


def _histogram(hist: list[int], thresholds: dict[str, float] | None, log: bool) -> str:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 3.4))
    width = 1 / len(hist)
    ax.bar([i * width for i in range(len(hist))], hist, width=width, align="edge",
           color="#4a7bd0", edgecolor="white", log=log)
    for name, value in (thresholds or {}).items():
        ax.axvline(value, color="#a11" if name == "ai_generated" else "#176617",
                   linestyle="--", linewidth=1.2, label=f"{name} threshold {value:.3g}")
    if thresholds:
        ax.legend(fontsize=8, loc="upper center")
    ax.set(xlabel="ai_generated", ylabel="images (log scale)" if log else "images",
           title="Pixel scores", xlim=(0, 1))
    if not log:
        ax.yaxis.get_major_locator().set_params(integer=True)
    return png_data_uri(fig)


def _plots(report: dict[str, Any]) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = {}
    hist = report["histogram"]
    if any(hist):
        thresholds = (report.get("run") or {}).get("thresholds")
        out["histogram"] = _histogram(hist, thresholds, log=False)
        out["histogram_log"] = _histogram(hist, thresholds, log=True)
    sources = {**report.get("sources", {})}
    for k, v in report.get("provenance_sources", {}).items():
        sources[f"{k} (metadata)"] = v
    if sources:
        items = sorted(sources.items(), key=lambda kv: kv[1])[-15:]
        fig, ax = plt.subplots(figsize=(5.5, 0.35 * len(items) + 1.2))
        ax.barh([k for k, _ in items], [v for _, v in items], color="#d07a4a")
        ax.set(xlabel="images", title="Generators named")
        ax.xaxis.get_major_locator().set_params(integer=True)
        out["sources"] = png_data_uri(fig)
    return out


def _run_table(run: dict[str, Any], t: dict[str, Any]) -> str:
    def show(value: Any) -> str:
        if value is None:
            return "unknown"
        if isinstance(value, dict):
            return ", ".join(f"{k} {v}" for k, v in value.items())
        if isinstance(value, list):
            return ", ".join(str(v) for v in value)
        return str(value)

    span = (f"{run.get('first_row_at')} to {run.get('last_row_at')}"
            if run.get("first_row_at") else None)
    rows = [("run", run.get("run_id")), ("rows written", span), ("model", run.get("model")),
            ("backend", run.get("backend")), ("thresholds", run.get("thresholds")),
            ("sources", run.get("sources")), ("wall time (s)", run.get("wall_s")),
            ("images/s", run.get("images_per_s")), ("images", t["images"])]
    body = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(show(v))}</td></tr>"
                   for k, v in rows)
    return f"<table class=meta>{body}</table>"


def _coverage(coverage: dict[str, int], scored: int) -> str:
    rows = [{"evidence": k.replace("_", " "), "images": v,
             "share of scored": f"{v / scored:.1%}" if scored else "-"}
            for k, v in coverage.items()]
    return _table(rows)


SECTION_TITLES = {
    "flagged": ("Top flagged", "AI-generated by the combined verdict, highest pixel score "
                               "first"),
    "disagreements": ("Pixels and evidence disagree", "the pixel verdict and the combined "
                                                      "verdict differ"),
    "inconclusive": ("Inconclusive", "neither threshold reached, and no evidence decided"),
}


class _Thumbs:
    """Thumbnails until THUMB_BUDGET_BYTES of them are on the page."""

    def __init__(self, budget: int = THUMB_BUDGET_BYTES):
        self.left = budget
        self.cache: dict[str, str | None] = {}

    def get(self, uri: str) -> tuple[str | None, str]:
        """(data URI or None, why there is none)."""
        if uri not in self.cache:
            self.cache[uri] = thumbnail(uri) if self.left > 0 else None
            if self.cache[uri]:
                self.left -= len(self.cache[uri])
            elif self.left <= 0:
                return None, "thumbnail budget used"
        data = self.cache[uri]
        return data, ("" if data else "no thumbnail")


def _item(item: dict[str, Any], thumbs: _Thumbs) -> str:
    data, why = thumbs.get(item["uri"])
    picture = (f"<img alt='' src='{data}'>" if data
               else f"<div class=noimg>{html.escape(why)}</div>")
    score = item.get("ai_generated")
    decided = item.get("evidence_verdict") or item.get("verdict") or "no verdict"
    badges = "".join(f"<span class=badge>{html.escape(b)}</span>"
                     for b in item.get("badges") or [])
    reason = item.get("verdict_reason")
    return (f"<figure class=item data-uri='{html.escape(item['uri'], quote=True)}'>{picture}"
            f"<figcaption><div class=uri>{html.escape(item['uri'])}</div>"
            f"<div>score {'-' if score is None else f'{score:.3f}'} · "
            f"<span class='v-{html.escape(decided)}'>{html.escape(decided)}</span>"
            f" (pixels: {html.escape(str(item.get('verdict')))})</div>"
            + (f"<div>{html.escape(reason)}</div>" if reason else "")
            + f"<div>{badges}</div></figcaption></figure>")


def _gallery(gallery: dict[str, Any]) -> list[str]:
    thumbs = _Thumbs()
    parts = ["<h2 id=gallery>Images to review</h2>"]
    for section, (title, what) in SECTION_TITLES.items():
        g = gallery.get(section) or {"total": 0, "items": []}
        shown = len(g["items"])
        count = (f"{g['total']}" if shown == g["total"] else f"the first {shown} of "
                 f"{g['total']}")
        parts.append(f"<h3 id=gallery-{section}>{title} ({count})</h3><p>{what}</p>")
        if not g["items"]:
            parts.append("<p><em>none</em></p>")
            continue
        parts.append("<div class=gallery>" + "".join(_item(i, thumbs) for i in g["items"])
                     + "</div>")
    errors = gallery.get("errors") or {"total": 0, "items": []}
    parts.append(f"<h3 id=gallery-errors>A sample of errors ({len(errors['items'])} of "
                 f"{errors['total']})</h3>")
    parts.append(_table(errors["items"], empty="No errors"))
    return parts


def render(report: dict[str, Any]) -> str:
    t = report["totals"]
    plots = _plots(report)
    ok = "ok" if t["accounted_for"] else "bad"
    summary_inputs = t["inputs_in_summary"]
    accounted = (f"inputs {summary_inputs} = scores + errors" if t["accounted_for"] else
                 "inputs unknown (no count in summary.json): not checked"
                 if summary_inputs is None else
                 f"inputs {summary_inputs} != scores + errors {t['images']}")
    parts = [
        f"<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>synthsieve report: {html.escape(report['audit'])}</title>"
        f"<style>{CSS}</style></head><body>",
        f"<h1>Audit report</h1><p class=uri>{html.escape(report['audit'])}</p>",
        _run_table(report.get("run") or {}, t),
        "<div class=grid>",
        f"<div class=card id=total-images><div>images</div><div class=big>{t['images']}"
        "</div></div>",
        f"<div class=card id=total-scores><div>scored</div><div class=big>{t['scores']}"
        "</div></div>",
        f"<div class=card id=total-errors><div>errors</div><div class=big>{t['errors']}"
        "</div></div>",
        f"<div class=card><div>nothing lost</div><div class='big {ok}'>"
        f"{html.escape(accounted)}</div></div></div>",
        "<h2>Verdicts</h2><div class=grid><div>",
        "<h3>pixels (verdict)</h3>", _table(report["verdicts"], ("verdict", "images")),
        "</div><div><h3>pixels and evidence (evidence_verdict)</h3>",
        _table(report.get("evidence_verdicts", {}), ("evidence_verdict", "images")),
        "</div></div>",
    ]
    if "histogram" in plots:
        parts += ["<div><input type=checkbox id=logscale><label for=logscale> log scale"
                  "</label><br>",
                  f"<img class=hist-lin alt='score histogram' src='{plots['histogram']}'>",
                  f"<img class=hist-log alt='score histogram, log scale' "
                  f"src='{plots['histogram_log']}'></div>"]
    if report.get("gallery"):
        parts += _gallery(report["gallery"])
    parts.append("<h2>Generators</h2>")
    if "sources" in plots:
        parts.append(f"<img alt='generators' src='{plots['sources']}'>")
    else:
        parts.append("<p><em>no generator named</em></p>")
    if "provenance_coverage" in report:
        parts += ["<h2>Provenance coverage</h2>",
                  _coverage(report["provenance_coverage"], t["scores"]),
                  "<h2>Evidence and pixels</h2>", _table(report["agreement"])]
    parts += ["<h2>Errors</h2><div class=grid><div>",
              _table(report["errors_by_stage"], ("stage", "images"), empty="No errors"),
              "</div><div>",
              _table(report["errors_by_type"], ("stage/type", "images"), empty="No errors"),
              "</div></div>",
              "<h2>Prefixes and hosts by AI share</h2>", _table(report["top_prefixes"])]
    diff = report.get("diff")
    if diff:
        parts += [f"<h2>Changes since {html.escape(diff['previous'])}</h2>",
                  f"<p>by {diff['column']}; {_images(diff['only_in_this_audit'])} only in "
                  f"this audit, {diff['only_in_previous']} only in the previous one</p>",
                  _table(diff["changed"], empty="No verdict changed"), "<h3>Examples</h3>",
                  _table(diff["examples"], empty="No verdict changed")]
    parts.append("</body></html>")
    return "\n".join(parts)
