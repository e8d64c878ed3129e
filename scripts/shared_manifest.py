"""Writes a labelled manifest (uri, id, label, generator, split) of ../shared/data for eval.

    python scripts/shared_manifest.py --split test --out /tmp/test.csv
    synthsieve eval /tmp/test.csv --out out/eval-test --group-column generator
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared/data"))
    ap.add_argument("--split", default="test", help="train, val, test or all")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    data = Path(args.data).resolve()
    with open(data / "SOURCES.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["label"] in ("ai", "real")
                and args.split in ("all", r["split"])]
    if not rows:
        print(f"no labelled rows for split {args.split!r} in {data}", file=sys.stderr)
        return 1
    with open(args.out, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "uri", "label", "generator", "split"])
        for r in rows:
            gen = r["generator_or_camera"] if r["label"] == "ai" else ""
            w.writerow([r["file"], str(data / r["file"]), r["label"], gen, r["split"]])
    print(f"{len(rows)} rows -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
