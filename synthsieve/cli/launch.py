"""`synthsieve launch-command`: the command that runs a job on a cluster runner."""

from __future__ import annotations

import argparse
import shlex
import sys
from typing import Any

from apache_beam.options.pipeline_options import PipelineOptions

from synthsieve.cli import audit, evaluate, scrub, stream
from synthsieve.cli.args import OneLineParser, positive_int, refuse
from synthsieve.inference.gpu import GPU_BACKENDS
from synthsieve.runners.launch import LaunchError, Target, check_target, runner_options

__all__ = ["LaunchError", "Target", "check", "launch_command", "render"]

# The commands that run as a Beam job, and so can run on a cluster.
CLUSTER_JOBS = {"audit": audit, "stream": stream, "scrub": scrub, "eval": evaluate}


def _job_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="synthsieve")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in CLUSTER_JOBS.values():
        command.add_parser(sub)
    return parser




def _job_paths(job: list[str]) -> tuple[str, list[str], dict[str, Any]]:
    if not job or job[0] not in CLUSTER_JOBS:
        raise LaunchError(f"{job[0] if job else 'nothing'} does not run on a cluster runner")
    args, rest = _job_parser().parse_known_args(job)
    stray = [a for a in rest if not a.startswith("--")]
    if stray:  # --options are Beam's and go through; anything else is a mistake
        raise LaunchError(f"unrecognized synthsieve arguments: {' '.join(stray)}")
    paths = list(getattr(args, "sources", []) or [])
    for name in ("out", "manifest", "audit_dir"):
        if getattr(args, name, None):
            paths.append(getattr(args, name))
    return args.command, paths, vars(args)


def check(t: Target, job: list[str]) -> PipelineOptions:
    """Refuses a launch of `job` (a synthsieve command line) that would fail on the cluster;
    returns the runner's options. Raises LaunchError."""
    command, paths, job_args = _job_paths(job)
    backend = job_args.get("backend")
    return check_target(t, command, paths, backend if backend in GPU_BACKENDS else None)


def launch_command(t: Target, job: list[str]) -> list[str]:
    """The checked command line: the job followed by the runner's options."""
    check(t, job)
    return ["synthsieve", *job, *runner_options(t)]


def render(command: list[str]) -> str:
    return " ".join(shlex.quote(part) for part in command)


def add_parser(sub: argparse._SubParsersAction) -> None:
    lp = sub.add_parser(
        "launch-command",
        help="print the command that runs a job on Dataflow, Flink or Spark, checked offline",
        description=(
            "Assembles Beam's runner options for RUNNER around a synthsieve job given after "
            "--, checks them without any cloud call (Beam's own option validator for "
            "Dataflow; remote paths; GPU workers for a GPU backend) and prints the command. "
            "See deploy/README.md."),
    )
    lp.add_argument("runner", choices=("dataflow", "flink", "spark"),
                    help="the Beam runner to submit to")
    lp.add_argument("--image", required=True, help="worker container (deploy/Dockerfile)")
    lp.add_argument("--project", help="Dataflow: the Google Cloud project")
    lp.add_argument("--region", help="Dataflow: the region the job runs in")
    lp.add_argument("--temp-location", metavar="gs://BUCKET/tmp",
                    help="Dataflow: where staging and temporary files go")
    lp.add_argument("--machine-type", default="g2-standard-8",
                    help="Dataflow: the worker machine type (default: g2-standard-8)")
    lp.add_argument("--gpu-type", default="nvidia-l4",
                    help="Dataflow accelerator type, or 'none' for CPU workers")
    lp.add_argument("--gpu-count", type=positive_int, default=1,
                    help="Dataflow: accelerators per worker (default: 1)")
    lp.add_argument("--max-workers", type=positive_int, default=10,
                    help="Dataflow: the autoscaling ceiling (default: 10)")
    lp.add_argument("--job-name", help="the job's name on the runner")
    lp.add_argument("--service-account", help="Dataflow: the workers' service account")
    lp.add_argument("--endpoint", metavar="HOST:PORT",
                    help="Flink master, or the Spark job server")
    lp.add_argument("--parallelism", type=positive_int,
                    help="Flink or Spark: the job's parallelism")
    lp.epilog = "Then -- and the synthsieve job, e.g. -- audit gs://b/images --out gs://b/out"


def run(args: argparse.Namespace) -> int:
    job = args.job
    if not job:
        print("synthsieve launch-command: give the job after --, e.g. -- audit gs://b/images "
              "--out gs://b/audit", file=sys.stderr)
        return 2
    target = Target(runner=args.runner, image=args.image, project=args.project,
                    region=args.region, temp_location=args.temp_location,
                    machine_type=args.machine_type,
                    gpu_type=None if args.gpu_type == "none" else args.gpu_type,
                    gpu_count=args.gpu_count, max_workers=args.max_workers,
                    job_name=args.job_name, service_account=args.service_account,
                    endpoint=args.endpoint, parallelism=args.parallelism)
    try:
        print(render(launch_command(target, job)))
    except LaunchError as e:
        return refuse("launch-command", str(e))
    return 0
