"""Which Beam runner a job gets when the user names none (or names the DirectRunner).

Beam 2.77's DirectRunner first tries the Prism runner, which downloads its binary from
GitHub at run time: a network call the product must never make, and, where the network
exists, a different runner from the one the tests cover. So the local runner is chosen
here, as the DirectRunner would after Prism: the FnApiRunner for batch jobs (it honours
--direct_num_workers and --direct_running_mode), the bundle-based DirectRunner for
streaming (the only one that reads Pub/Sub in-process). `--runner DaskRunner` gets
synthsieve's own Dask runner (pipelines/dask_runner.py), which fixes what Beam's loses.
"""

from __future__ import annotations

from typing import Any

from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

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
            from synthsieve.pipelines.dask_runner import DaskRunner
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
