"""Flex template entry point: template parameters -> `synthsieve audit`.

Dataflow calls this with the template's parameters and its own pipeline options, all as
--name=value; ours are taken out and the rest goes to Beam through the CLI, unchanged."""

import argparse
import sys

from synthsieve.cli import main

if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--sources", required=True, help="comma-separated")
    ap.add_argument("--out", required=True)
    ap.add_argument("--backend", default="tensorrt")
    ap.add_argument("--model", default="/opt/synthsieve/gpu-model")
    ap.add_argument("--batch_size", default="64")
    ours, beam_args = ap.parse_known_args()
    sys.exit(main(["audit", *ours.sources.split(","), "--out", ours.out, "--backend",
                   ours.backend, "--model", ours.model, "--batch-size", ours.batch_size,
                   *beam_args]))
