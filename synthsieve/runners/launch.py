"""The command line that runs a synthsieve job on a cluster runner, checked before any
cloud call: Dataflow (GPU workers on a custom container), Flink and Spark (portable runner,
the same container as the SDK harness). `synthsieve launch-command` (cli/launch.py)
prints it.

The options are Beam's own; this module only assembles them from a few choices and
refuses the combinations that would fail minutes later on a worker (local paths that
workers cannot see, a GPU backend without accelerators, a missing temp location).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

__all__ = [
    "GCS_BUCKET", "REMOTE_SCHEMES", "RUNNERS", "LaunchError", "Target", "check_target",
    "runner_options",
]

RUNNERS = ("dataflow", "flink", "spark")
REMOTE_SCHEMES = ("gs://", "s3://", "http://", "https://")
# Cloud Storage's bucket naming rule. Checked here because Beam's validator, given a name
# that breaks it, falls back to creating a default bucket: a cloud call.
GCS_BUCKET = re.compile(r"^gs://[a-z0-9][a-z0-9._-]{1,61}[a-z0-9](/.*)?$")


class LaunchError(ValueError):
    pass


@dataclass(frozen=True)
class Target:
    runner: str  # dataflow | flink | spark
    image: str  # the worker container (deploy/Dockerfile)
    # Dataflow
    project: str | None = None
    region: str | None = None
    temp_location: str | None = None
    machine_type: str = "g2-standard-8"
    gpu_type: str | None = "nvidia-l4"
    gpu_count: int = 1
    max_workers: int = 10
    job_name: str | None = None
    service_account: str | None = None
    # Flink / Spark
    endpoint: str | None = None  # flink_master host:port, or the Spark job server host:port
    parallelism: int | None = None


def runner_options(t: Target) -> list[str]:
    if t.runner == "dataflow":
        args = ["--runner=DataflowRunner", f"--project={t.project}", f"--region={t.region}",
                f"--temp_location={t.temp_location}",
                f"--sdk_container_image={t.image}", "--sdk_location=container",
                "--experiments=use_runner_v2", f"--machine_type={t.machine_type}",
                f"--max_num_workers={t.max_workers}"]
        if t.gpu_type:
            args.append("--dataflow_service_options=worker_accelerator="
                        f"type:{t.gpu_type};count:{t.gpu_count};install-nvidia-driver")
            # one process per GPU: each loads the engine once and batches for it
            args.append("--experiments=no_use_multiple_sdk_containers")
        if t.job_name:
            args.append(f"--job_name={t.job_name}")
        if t.service_account:
            args.append(f"--service_account_email={t.service_account}")
        return args
    if t.runner == "flink":
        args = ["--runner=FlinkRunner", f"--flink_master={t.endpoint}",
                "--environment_type=DOCKER", f"--environment_config={t.image}"]
    elif t.runner == "spark":
        args = ["--runner=PortableRunner", f"--job_endpoint={t.endpoint}",
                "--environment_type=DOCKER", f"--environment_config={t.image}"]
    else:
        raise LaunchError(f"runner must be one of {', '.join(RUNNERS)}")
    if t.parallelism:
        args.append(f"--parallelism={t.parallelism}")
    return args


def check_target(t: Target, command: str, paths: list[str],
                 gpu_backend: str | None = None) -> PipelineOptions:
    """Refuses a launch that would fail on the cluster.

    Args:
      t: the cluster runner and its settings.
      command: the synthsieve job (audit, stream, scrub or eval).
      paths: every input and output path the job names.
      gpu_backend: the job's --backend when it runs on a GPU (it needs GPU workers).

    Returns:
      The runner's PipelineOptions, as the job will get them.

    Raises:
      LaunchError: with the one reason the launch would fail.
    """
    local = [p for p in paths if not p.startswith(REMOTE_SCHEMES)]
    if local:
        raise LaunchError(f"workers cannot read local paths: {', '.join(local)} "
                          "(use gs:// or s3://)")
    if t.runner == "dataflow":
        missing = [n for n in ("project", "region", "temp_location") if not getattr(t, n)]
        if missing:
            raise LaunchError(f"Dataflow needs {', '.join(missing)}")
        if not GCS_BUCKET.match(str(t.temp_location)):
            raise LaunchError(f"Dataflow's temp location must be gs://BUCKET/... with a valid "
                              f"bucket name, not {t.temp_location}")
        if gpu_backend and not t.gpu_type:
            raise LaunchError(f"--backend {gpu_backend} needs GPU workers (--gpu-type)")
        if t.gpu_type and t.gpu_count < 1:
            raise LaunchError("--gpu-count must be at least 1")
        from apache_beam.options.pipeline_options_validator import PipelineOptionsValidator
        from apache_beam.runners.dataflow.dataflow_runner import DataflowRunner

        # --dry_run: Beam's validator then skips its one online check (the bucket's
        # soft-delete policy); everything else it checks offline
        offline = PipelineOptions([*runner_options(t), "--dry_run=True"])
        errors = PipelineOptionsValidator(offline, DataflowRunner()).validate()
        if errors:
            raise LaunchError("; ".join(errors))
    elif not t.endpoint:
        raise LaunchError(f"{t.runner} needs the job endpoint (host:port)")
    options = PipelineOptions(runner_options(t))
    if command == "stream":
        options.view_as(StandardOptions).streaming = True
    return options
