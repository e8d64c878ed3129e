"""Which Beam runner a job gets when the user names none (or names the DirectRunner), and
how many model sessions share one machine.

Beam 2.77's DirectRunner first tries the Prism runner, which downloads its binary from
GitHub at run time: a network call the product must never make, and, where the network
exists, a different runner from the one the tests cover. So the local runner is chosen
here, as the DirectRunner would after Prism: the FnApiRunner for batch jobs (it honours
--direct_num_workers and --direct_running_mode), the bundle-based DirectRunner for
streaming (the only one that reads Pub/Sub in-process). `--runner DaskRunner` gets
synthsieve's own Dask runner (runners/dask_runner.py), which fixes what Beam's loses.
"""

from __future__ import annotations

from typing import Any

from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, StandardOptions

__all__ = [
    "LOCAL_RUNNER_NAMES", "RunnerUnavailable", "UnsafeRunnerMode", "fuses_stages", "is_local",
    "local_runner", "names_dask", "one_worker_in_process", "with_local_defaults",
    "workers_elsewhere", "workers_per_machine",
]

LOCAL_RUNNER_NAMES = (None, "DirectRunner", "direct", "SwitchingDirectRunner",
                      "BundleBasedDirectRunner")


class RunnerUnavailable(RuntimeError):
    """The runner named by --runner cannot be loaded in this environment."""


def _runner_name(options: PipelineOptions) -> str | None:
    """--runner as given (a name, a dotted path) or the class name of a runner object."""
    runner = options.view_as(StandardOptions).runner
    return runner if isinstance(runner, str) or runner is None else type(runner).__name__


def names_dask(options: PipelineOptions) -> bool:
    """True when --runner names the Dask runner (ours or Beam's, by any spelling)."""
    name = _runner_name(options)
    return name is not None and name.rsplit(".", 1)[-1] in ("DaskRunner", "dask")


def is_local(options: PipelineOptions) -> bool:
    return _runner_name(options) in LOCAL_RUNNER_NAMES


def workers_elsewhere(options: PipelineOptions) -> bool:
    """True when the job's workers run on other machines (Dataflow, Flink, Spark, a Dask
    scheduler at an address): checks of the model and GPU libraries belong there."""
    if is_local(options):
        return False
    if names_dask(options):
        from apache_beam.runners.dask.dask_runner import DaskOptions

        dask = options.view_as(DaskOptions)
        return bool(dask.address or dask.scheduler_file)
    return True


def fuses_stages(options: PipelineOptions) -> bool:
    """Whether the runner runs a chain of ParDos for one element in one process (every
    runner but Dask, whose bag tasks for one partition may land on different workers)."""
    return not names_dask(options)


def local_runner(options: PipelineOptions) -> Any:
    """The runner object to pass to beam.Pipeline, or None for a runner the user chose."""
    if names_dask(options):
        try:
            from synthsieve.runners.dask_runner import DaskRunner
        except ImportError as e:
            raise RunnerUnavailable(
                f"--runner DaskRunner needs dask and distributed ({e}): "
                "pip install 'synthsieve[dask]'") from e

        return DaskRunner()
    if not is_local(options):
        return None
    if options.view_as(StandardOptions).streaming:
        from apache_beam.runners.direct.direct_runner import BundleBasedDirectRunner

        return BundleBasedDirectRunner()
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner

    return FnApiRunner()


class UnsafeRunnerMode(ValueError):
    """A local runner setting that is known to lose data."""


def with_local_defaults(pipeline_args: list[str]) -> list[str]:
    """Beam arguments for a batch job, refusing the FnApiRunner's multi_threading mode.

    In Beam 2.77 that mode (the in-process gRPC data plane) loses elements, or decodes
    garbage and grows without bound, once one bundle sends more than the data channel's
    10 MB flush size across a stage boundary: a manifest of 100,000 references is enough.
    bench/fnapi_data_loss.py reproduces it with Beam alone; the in-memory mode (one worker,
    the default here) and multi_processing are exact. So a local batch job runs one
    in-memory worker, whose ONNX Runtime session uses every core, unless the user asks for
    --direct_running_mode multi_processing.

    Raises:
      UnsafeRunnerMode: for --direct_running_mode multi_threading on a local runner.
    """
    args = list(pipeline_args)
    options = PipelineOptions(args)
    if not is_local(options):
        return args
    mode = options.view_as(DirectOptions).direct_running_mode
    if mode == "multi_threading":
        raise UnsafeRunnerMode(
            "--direct_running_mode multi_threading loses data in Beam 2.77 once a bundle "
            "passes 10 MB between stages (bench/fnapi_data_loss.py); use multi_processing "
            "for several local workers")
    return args


def one_worker_in_process(options: PipelineOptions) -> bool:
    """True for the local batch runner with one in-memory worker: every stage then runs in
    this process's one worker thread, so spreading elements over workers gains nothing and
    a Reshuffle would only hold the whole input in memory."""
    if not is_local(options) or names_dask(options):
        return False
    direct = options.view_as(DirectOptions)
    return (int(direct.direct_num_workers or 1) == 1
            and direct.direct_running_mode in (None, "in_memory"))


def workers_per_machine(options: PipelineOptions) -> int:
    """How many workers share this machine's cores: the local Dask cluster's worker
    threads, else --direct_num_workers (1 on other runners, whose machines are not known
    here)."""
    if names_dask(options):
        from synthsieve.runners.dask_runner import local_cluster_size, starts_local_cluster

        if starts_local_cluster(options):
            workers, threads = local_cluster_size(options)
            return workers * threads
    direct = options.view_as(DirectOptions)
    return max(1, int(direct.direct_num_workers or 1))
