"""Writes a labelled manifest of ../shared/data for `synthsieve eval`.

Columns: id, uri, label (ai/real), set (old/diverse/diverse2), split, part (ai/photo/art),
kind (photo, human-made non-photo, AI photoreal, AI other), detail (the SOURCES file's own
kind), family (generator family of AI images), origin.

    python scripts/shared_manifest.py --set diverse,diverse2 --split val --out /tmp/val.csv
    synthsieve eval /tmp/val.csv --out out/eval-val --group-column kind
    python scripts/shared_manifest.py --set old --split test --out /tmp/test.csv
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

from model_data import DIVERSE_SETS, load_rows

SETS = ("old", *DIVERSE_SETS)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared/data"))
    ap.add_argument("--set", dest="dataset", default="all",
                    help=f"comma-separated, of {', '.join(SETS)} (the older SOURCES.csv "
                         "images, diverse/, diverse2/); or all")
    ap.add_argument("--split", default="test", help="train, val, test or all")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    sets = set(SETS) if args.dataset == "all" else set(args.dataset.split(","))
    if not sets <= set(SETS):
        print(f"shared_manifest: --set takes {', '.join(SETS)} or all, not {args.dataset!r}",
              file=sys.stderr)
        return 2
    data = Path(args.data).resolve()
    if not (data / "SOURCES.csv").is_file() or not (data / "diverse").is_dir():
        print(f"shared_manifest: {data} is not ../shared/data (no SOURCES.csv or diverse/); "
              "pass --data", file=sys.stderr)
        return 2
    rows = [r for r in load_rows(data) if args.split in ("all", r.split)
            and r.dataset in sets]
    if not rows:
        print(f"shared_manifest: no labelled rows for set {args.dataset!r} and split "
              f"{args.split!r} in {data}", file=sys.stderr)
        return 2
    with open(args.out, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "uri", "label", "set", "split", "part", "kind", "detail", "family",
                    "origin"])
        for r in rows:
            part = r.file.split("/")[1] if r.dataset in DIVERSE_SETS else r.file.split("/")[0]
            w.writerow([r.file, str(data / r.file), "ai" if r.label else "real", r.dataset,
                        r.split, part, r.kind, r.detail, r.family, r.group])
    print(f"{len(rows)} rows -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
