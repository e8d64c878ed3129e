"""Renders the audit report dict as one self-contained HTML page (plots embedded as PNG)."""

from __future__ import annotations

import html
from typing import Any

from synthsieve.evaluation.report import png_data_uri

__all__ = ["CSS", "render"]

CSS = """body{font-family:system-ui,sans-serif;margin:2rem;max-width:70rem;color:#222}
table{border-collapse:collapse;margin:.5rem 0 1.5rem}td,th{border:1px solid #ccc;
padding:.25rem .6rem;text-align:left}th{background:#f3f3f3}.big{font-size:1.6rem;
font-weight:600}.ok{color:#176617}.bad{color:#a11}.grid{display:flex;flex-wrap:wrap;
gap:1.5rem}.card{border:1px solid #ddd;border-radius:6px;padding:.8rem 1.2rem}"""


def _table(rows: list[dict[str, Any]] | dict[str, Any], headers: tuple[str, str] = ("", "")
           ) -> str:
    if isinstance(rows, dict):
        rows = [{headers[0]: k, headers[1]: v} for k, v in rows.items()]
    if not rows:
        return "<p><em>none</em></p>"
    cols = list(rows[0])
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(r.get(c)))}</td>" for c in cols)
                   + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _plots(report: dict[str, Any]) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = {}
    hist = report["histogram"]
    if any(hist):
        fig, ax = plt.subplots(figsize=(5.5, 3.2))
        width = 1 / len(hist)
        ax.bar([i * width for i in range(len(hist))], hist, width=width, align="edge",
               color="#4a7bd0", edgecolor="white")
        ax.set(xlabel="ai_generated", ylabel="images", title="Pixel scores", xlim=(0, 1))
        ax.yaxis.get_major_locator().set_params(integer=True)
        out["histogram"] = png_data_uri(fig)
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
        f"<h1>Audit report</h1><p>{html.escape(report['audit'])}</p>",
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
        parts.append(f"<img alt='score histogram' src='{plots['histogram']}'>")
    parts.append("<h2>Generators</h2>")
    if "sources" in plots:
        parts.append(f"<img alt='generators' src='{plots['sources']}'>")
    else:
        parts.append("<p><em>no generator named</em></p>")
    if "provenance_coverage" in report:
        parts += ["<h2>Provenance coverage</h2>",
                  _table([report["provenance_coverage"]]),
                  "<h2>Evidence and pixels</h2>", _table(report["agreement"])]
    parts += ["<h2>Errors</h2><div class=grid><div>",
              _table(report["errors_by_stage"], ("stage", "images")), "</div><div>",
              _table(report["errors_by_type"], ("stage/type", "images")), "</div></div>",
              "<h2>Prefixes and hosts by AI share</h2>", _table(report["top_prefixes"])]
    diff = report.get("diff")
    if diff:
        parts += [f"<h2>Changes since {html.escape(diff['previous'])}</h2>",
                  f"<p>by {diff['column']}; {diff['only_in_this_audit']} images only in this "
                  f"audit, {diff['only_in_previous']} only in the previous one</p>",
                  _table(diff["changed"]), "<h3>Examples</h3>", _table(diff["examples"])]
    parts.append("</body></html>")
    return "\n".join(parts)
