"""Reproduces, with Apache Beam alone, the data loss that made synthsieve refuse the
FnApiRunner's multi_threading mode for batch jobs.

One DoFn emits N short strings in one bundle; a Reshuffle moves them to the next stage; a
counter counts what arrives. With the in-memory worker and with multi_processing every
element arrives; with multi_threading (an in-process SDK harness on the gRPC data plane),
once the bundle's output passes the data channel's 10 MB flush size some elements never
arrive, and with tuple elements the decoder reads garbage lengths and memory grows until the
process is killed (the 1 GB/s growth seen on a 100,000-row manifest of missing files).

    .venv/bin/python bench/fnapi_data_loss.py --n 300000
    .venv/bin/python bench/fnapi_data_loss.py --n 300000 --modes multi_threading --tuples

Each mode runs in its own process with a 4 GiB address-space limit, so a runaway run ends
in a MemoryError instead of taking the machine.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys

CHILD = r"""
import json, sys
import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.portability.fn_api_runner import FnApiRunner

n, mode, workers, tuples = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4] == "1"

class Emit(beam.DoFn):
    def process(self, _):
        for i in range(n):
            uri = f"missing/{i:07d}.jpg"
            yield (uri, f"{i:032x}", None) if tuples else uri + f"{i:032x}"

class Count(beam.DoFn):
    def process(self, _):
        beam.metrics.Metrics.counter("bench", "arrived").inc()
        return []

opts = PipelineOptions(["--direct_num_workers", workers, "--direct_running_mode", mode])
p = beam.Pipeline(runner=FnApiRunner(), options=opts)
(p | beam.Create(["start"]) | beam.ParDo(Emit()) | beam.Reshuffle() | beam.ParDo(Count()))
result = p.run()
result.wait_until_finish()
print(json.dumps({"arrived": result.metrics().query()["counters"][0].committed}))
"""


def run(n: int, mode: str, tuples: bool) -> dict:
    workers = "1" if mode == "in_memory" else "2"

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))

    proc = subprocess.run([sys.executable, "-c", CHILD, str(n), mode, workers,
                           "1" if tuples else "0"], capture_output=True, text=True,
                          timeout=600, preexec_fn=limit)
    last = proc.stdout.strip().splitlines()[-1:] or [""]
    if proc.returncode == 0 and last[0].startswith("{"):
        return {"mode": mode, "sent": n, **json.loads(last[0])}
    tail = (proc.stderr.strip().splitlines() or ["?"])[-1]
    return {"mode": mode, "sent": n, "arrived": None, "failed": tail[:200]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=300_000)
    ap.add_argument("--modes", default="in_memory,multi_processing,multi_threading")
    ap.add_argument("--tuples", action="store_true",
                    help="emit (uri, id, None) tuples instead of strings")
    args = ap.parse_args()
    lost_somewhere = False
    for mode in args.modes.split(","):
        r = run(args.n, mode, args.tuples)
        lost_somewhere |= r["arrived"] != args.n
        print(json.dumps(r))
    return 1 if lost_somewhere else 0


if __name__ == "__main__":
    sys.exit(main())
