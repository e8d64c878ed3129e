"""Manifests from strangers: local paths are fenced by --local-root, and an oversized row is
that row's error row, not a line read whole into memory or the end of the manifest."""

from __future__ import annotations

import json

from corpus import noise_png
from outputs import rows

from synthsieve.cli import main
from synthsieve.io.sources import MAX_ROW_CHARS


def test_local_root_refuses_traversal_absolute_paths_and_symlinks_out_of_it(
        tmp_path, tiny_model):
    root = tmp_path / "dataset"
    (root / "imgs").mkdir(parents=True)
    (root / "imgs" / "a.png").write_bytes(noise_png(1))
    outside = tmp_path / "private"
    outside.mkdir()
    (outside / "key.png").write_bytes(noise_png(2))  # an image: read, it would be scored
    (root / "imgs" / "link.png").symlink_to(outside / "key.png")
    manifest = root / "m.csv"
    manifest.write_text("id,uri\n"
                        "inside,imgs/a.png\n"
                        "dotdot,../private/key.png\n"
                        "dotdot-inside,imgs/../imgs/a.png\n"
                        f"absolute,{outside / 'key.png'}\n"
                        f"file-url,file://{outside / 'key.png'}\n"
                        "symlink,imgs/link.png\n")

    fenced = tmp_path / "fenced"
    assert main(["-q", "audit", str(manifest), "--out", str(fenced), "--model", str(tiny_model),
                 "--local-root", str(root)]) == 0
    assert {r["image_id"] for r in rows(fenced, "scores")} == {"inside", "dotdot-inside"}
    errors = {r["image_id"]: r for r in rows(fenced, "errors")}
    assert set(errors) == {"dotdot", "absolute", "file-url", "symlink"}
    for row in errors.values():
        assert (row["stage"], row["error_type"]) == ("read", "forbidden_path"), row
        assert "outside --local-root" in row["message"]
    assert str(outside / "key.png") in errors["symlink"]["message"]  # where it really led

    # without --local-root the user's own manifest may name any local file
    open_out = tmp_path / "open"
    assert main(["-q", "audit", str(manifest), "--out", str(open_out),
                 "--model", str(tiny_model)]) == 0
    assert len(rows(open_out, "scores")) == 6 and not rows(open_out, "errors")


def test_an_oversized_row_is_its_own_error_and_the_rows_after_it_are_read(tmp_path, tiny_model):
    d = tmp_path / "d"
    d.mkdir()
    for i in range(4):
        (d / f"{i}.png").write_bytes(noise_png(10 + i))
    huge = "x" * (MAX_ROW_CHARS * 3)  # a 3 MiB caption
    jsonl = d / "m.jsonl"
    jsonl.write_text(json.dumps({"id": "j0", "uri": "0.png"}) + "\n"
                     + json.dumps({"id": "j-huge", "uri": "1.png", "caption": huge}) + "\n"
                     + json.dumps({"id": "j2", "uri": "2.png"}) + "\n"
                     + json.dumps({"id": "j3", "uri": "3.png"}))  # no final newline
    csv_path = d / "m.csv"
    csv_path.write_text(f"id,uri,caption\nc0,0.png,short\nc-huge,1.png,{huge}\nc2,2.png,ok\n"
                        "c3,3.png,ok\n")
    for manifest, prefix in ((jsonl, "j"), (csv_path, "c")):
        out = tmp_path / f"out-{prefix}"
        assert main(["-q", "audit", str(manifest), "--out", str(out),
                     "--model", str(tiny_model)]) == 0
        scored = {r["image_id"] for r in rows(out, "scores")}
        assert scored == {f"{prefix}0", f"{prefix}2", f"{prefix}3"}, manifest
        [error] = rows(out, "errors")
        assert (error["stage"], error["error_type"]) == ("read", "invalid_manifest_row")
        assert "longer than" in error["message"] or "field larger" in error["message"]
        assert len(error["message"]) < 2000  # the row's text is not copied into the table
