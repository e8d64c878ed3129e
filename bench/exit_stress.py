"""Runs `synthsieve audit` on the bundled sample many times and counts the runs that did not
exit as the audit said they would (for example `terminate called without an active
exception` and exit 134 from a native thread pool torn down during interpreter exit).

    .venv/bin/python bench/exit_stress.py --runs 200 --parallel 2

Each run is a fresh process (the failure is in process exit, which one process cannot
repeat). Prints one JSON line: runs, exit codes seen, bad exits and the stderr tail of the
first few. Exit status 1 when any run exited badly.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def one(i: int, work: Path, source: str, extra: list[str]) -> tuple[int, str]:
    out = work / f"run{i:04d}"
    proc = subprocess.run(
        [sys.executable, "-m", "synthsieve", "-q", "audit", source, "--out", str(out), *extra],
        capture_output=True, text=True, cwd=ROOT, check=False)
    shutil.rmtree(out, ignore_errors=True)
    return proc.returncode, proc.stderr


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--parallel", type=int, default=2)
    ap.add_argument("--source", default=str(ROOT / "sample"))
    ap.add_argument("--expect", type=int, default=0, help="the exit code a good run gives")
    ap.add_argument("extra", nargs="*", help="more audit arguments (after --)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="exit_stress_") as tmp, \
            ThreadPoolExecutor(args.parallel) as pool:
        results = list(pool.map(lambda i: one(i, Path(tmp), args.source, args.extra),
                                range(args.runs)))
    codes = Counter(rc for rc, _ in results)
    bad = [(rc, err) for rc, err in results
           if rc != args.expect or "terminate called" in err or "Traceback" in err]
    print(json.dumps({
        "runs": args.runs, "exit_codes": dict(sorted(codes.items())), "bad_exits": len(bad),
        "examples": [{"rc": rc, "stderr_tail": err[-400:]} for rc, err in bad[:3]],
    }, indent=2))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
