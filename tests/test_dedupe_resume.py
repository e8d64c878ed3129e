"""Identical bytes are scored once, and --resume does only what is not in DIR yet."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from corpus import encode, photo_like

from synthsieve.cli import main


def _rows(out: Path, table: str) -> list[dict]:
    files = sorted((out / table).glob("*.parquet"))
    return pa.concat_tables([pq.read_table(f) for f in files]).to_pylist() if files else []


def test_identical_bytes_are_scored_once_but_every_input_gets_a_row(tmp_path, tiny_model):
    d = tmp_path / "imgs"
    d.mkdir()
    same = encode(photo_like(80, 60, seed=5), "PNG")
    for i in range(5):
        (d / f"copy{i}.png").write_bytes(same)
    (d / "other.png").write_bytes(encode(photo_like(80, 60, seed=6), "PNG"))
    for i in range(2):
        (d / f"broken{i}.jpg").write_bytes(b"\xff\xd8\xff\xe0 same broken bytes")
    out = tmp_path / "out"
    assert main(["-q", "audit", str(d), "--out", str(out), "--model", str(tiny_model)]) == 0
    scores = {Path(r["uri"]).name: r for r in _rows(out, "scores")}
    errors = {Path(r["uri"]).name: r for r in _rows(out, "errors")}
    assert sorted(scores) == ["copy0.png", "copy1.png", "copy2.png", "copy3.png", "copy4.png",
                              "other.png"]
    copies = [scores[f"copy{i}.png"] for i in range(5)]
    assert len({r["ai_generated"] for r in copies}) == 1
    assert len({r["image_id"] for r in copies}) == 5
    assert sum(any("scored once" in w for w in r["warnings"]) for r in copies) == 4
    assert sorted(errors) == ["broken0.jpg", "broken1.jpg"]
    assert all(e["stage"] == "decode" for e in errors.values())
    summary = json.loads((out / "summary.json").read_text())
    assert summary["duplicate_bytes_scored_once"] == 5
    assert summary["inputs"] == 8 and summary["accounted_for"]


def test_resume_does_only_the_rest_and_writes_nothing_twice(tmp_path, tiny_model):
    d = tmp_path / "imgs"
    d.mkdir()
    rows = []
    for i in range(8):
        path = d / f"{i}.png"
        path.write_bytes(encode(photo_like(40, 40, seed=i), "PNG") if i != 3 else b"junk")
        rows.append({"id": f"img{i}", "uri": str(path)})
    rows.append({"id": "bad-row", "uri": ""})

    def manifest(name: str, subset: list[dict]) -> str:
        path = tmp_path / name
        with open(path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["id", "uri"])
            w.writeheader()
            w.writerows(subset)
        return str(path)

    out = tmp_path / "out"
    # The first run got through half of the corpus (as a run that failed part-way would
    # have committed), including the broken file and the bad manifest row.
    first = manifest("first.csv", rows[:4] + rows[-1:])
    assert main(["-q", "audit", first, "--out", str(out), "--model", str(tiny_model)]) == 0
    everything = manifest("all.csv", rows)
    assert main(["-q", "audit", everything, "--out", str(out), "--model", str(tiny_model),
                 "--resume"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["inputs"] == 4 and summary["skipped_by_resume"] == 5
    ids = [r["image_id"] for r in _rows(out, "scores") + _rows(out, "errors")]
    assert sorted(ids) == sorted(r["id"] for r in rows), "missing or duplicated rows"
    # A third run has nothing left to do.
    assert main(["-q", "audit", everything, "--out", str(out), "--model", str(tiny_model),
                 "--resume"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["inputs"], summary["scores"], summary["errors"]) == (0, 0, 0)
    assert len(_rows(out, "scores") + _rows(out, "errors")) == len(rows)
