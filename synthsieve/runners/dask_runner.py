"""Beam's DaskRunner, made correct for pipelines with several outputs and sinks.

Beam 2.77's `apache_beam.runners.dask` translates a pipeline into dask bags, but an audit
run on it loses rows and mixes tables:

- it reads a DoFn's outputs before calling `finish_bundle`, so whatever a DoFn emits there
  (BatchElements' last batch per bundle, and with it RunInference's last images) is dropped;
- one receiver list, built when the graph is, collects every tagged output into the
  producer's single bag (shared by every partition a worker runs), so a consumer of
  `errors` also receives `images`;
- it computes only the last transform's bag, so of two sinks (scores and errors) one runs;
- `Reshuffle` is a no-op: a listing's refs all stay in the listing's one partition, and one
  worker thread decodes and scores the whole corpus;
- it reports no metrics.

This module keeps Beam's translation of Create, Flatten and GroupByKey and its options, and
replaces the rest: a ParDo runs one bundle per partition with receivers made inside the
task, after `finish_bundle`, and emits (tag, value) pairs that each consumer filters to the
output it reads; Reshuffle repartitions; every leaf is computed; each bundle's counters come
back to the client as Beam MetricUpdates. No library offers this for Dask, and the
translation is Beam's own internals, so it is written here against Beam 2.77.

Batch pipelines in the global window only, as Beam's runner: no streaming, no timers,
no state.
"""

from __future__ import annotations

import argparse
import logging
import os
import typing as t

import apache_beam as beam
from apache_beam import pvalue
from apache_beam.metrics.execution import MetricsContainer
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.pipeline import AppliedPTransform, PipelineVisitor
from apache_beam.runners.common import (
    DoFnContext,
    DoFnInvoker,
    DoFnSignature,
    Receiver,
    _OutputHandler,
)
from apache_beam.runners.dask import dask_runner as beam_dask
from apache_beam.runners.dask import transform_evaluator as beam_eval
from apache_beam.runners.dask.overrides import _Reshuffle, dask_overrides
from apache_beam.runners.direct.direct_metrics import DirectMetrics
from apache_beam.runners.runner import PipelineResult, PipelineState
from apache_beam.runners.worker import statesampler
from apache_beam.transforms.sideinputs import SideInputMap
from apache_beam.utils import counters

__all__ = [
    "DaskRunner", "DaskRunnerResult", "LocalClusterOptions", "local_cluster_size",
    "starts_local_cluster",
]

log = logging.getLogger("synthsieve.dask")

_METRICS = "__synthsieve_metrics__"  # the tag a bundle's MetricUpdates travel under


class LocalClusterOptions(PipelineOptions):
    """The LocalCluster started when no scheduler is named (--dask_client_address or
    --dask_scheduler_file)."""

    @classmethod
    def _add_argparse_args(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--dask_local_workers", type=int, default=None,
                            help="worker processes of the LocalCluster (default: one per core)")
        parser.add_argument("--dask_threads_per_worker", type=int, default=1,
                            help="threads per LocalCluster worker (default 1: ONNX Runtime "
                                 "uses the cores of its process)")


def local_cluster_size(options: PipelineOptions) -> tuple[int, int]:
    """(worker processes, threads per worker) of the LocalCluster these options start."""
    o = options.view_as(LocalClusterOptions)
    return max(1, o.dask_local_workers or os.cpu_count() or 1), max(1, o.dask_threads_per_worker)


def starts_local_cluster(options: PipelineOptions) -> bool:
    dask = options.view_as(beam_dask.DaskOptions)
    return not dask.address and not dask.scheduler_file


class _Collect(Receiver):
    def __init__(self, tag: str | None, out: list[tuple[str | None, t.Any]]):
        self._tag = tag
        self._out = out

    def receive(self, windowed_value: t.Any) -> None:
        self._out.append((self._tag, windowed_value.value))


class _Receivers(dict):
    """tag -> receiver, made per bundle (Beam's is made once and shared by every task)."""

    def __init__(self, out: list[tuple[str | None, t.Any]]):
        super().__init__()
        self._out = out

    def __missing__(self, tag: str | None) -> _Collect:
        receiver = self[tag] = _Collect(tag, self._out)
        return receiver


def _run_bundle(items: t.Iterable[t.Any], label: str, fn: beam.DoFn, window_fn: t.Any,
                side_inputs: list[SideInputMap] | None, args: list[t.Any],
                kwargs: dict[str, t.Any]) -> list[tuple[str | None, t.Any]]:
    """One partition through one DoFn: its outputs as (tag, value), then its counters."""
    out: list[tuple[str | None, t.Any]] = []
    receivers = _Receivers(out)
    handler = _OutputHandler(
        window_fn=window_fn, main_receivers=receivers[None], tagged_receivers=receivers,
        per_element_output_counter=None, output_batch_converter=None,
        process_yields_batches=False, process_batch_yields_elements=False)
    invoker = DoFnInvoker.create_invoker(
        DoFnSignature(fn), handler, context=DoFnContext(label, state=None),
        side_inputs=side_inputs, input_args=args, input_kwargs=kwargs,
        user_state_context=None, bundle_finalizer_param=beam.DoFn.BundleFinalizerParam())
    # Beam's Metrics write to the container of the thread's current state sampler.
    sampler = statesampler.StateSampler(label, counters.CounterFactory())
    statesampler.set_current_tracker(sampler)
    container = MetricsContainer(label)
    try:
        with sampler.scoped_state(label, "process", metrics_container=container):
            invoker.invoke_setup()
            invoker.invoke_start_bundle()
            for item in items:
                invoker.invoke_process(beam_eval.get_windowed_value(item, window_fn))
            invoker.invoke_finish_bundle()
            invoker.invoke_teardown()
    finally:
        statesampler.set_current_tracker(None)
    out.append((_METRICS, container.get_cumulative()))
    return out


def _select(pairs: t.Iterable[tuple[str | None, t.Any]], tag: str | None) -> list[t.Any]:
    return [value for got, value in pairs if got == tag]


def _count(values: t.Iterable[t.Any]) -> list[int]:
    """A leaf's partition reduced to its size: computing a sink must not ship its rows."""
    return [sum(1 for _ in values)]


class _Translator(PipelineVisitor):
    """PCollection -> dask bag, for every primitive transform in topological order."""

    def __init__(self, bag_kwargs: dict[str, t.Any], reshuffle_partitions: int):
        self.bag_kwargs = bag_kwargs
        self.reshuffle_partitions = reshuffle_partitions
        self.bags: dict[pvalue.PCollection, t.Any] = {}
        self.bundles: list[t.Any] = []  # each ParDo's (tag, value) bag, for its metrics
        self.consumed: set[pvalue.PCollection] = set()

    def visit_transform(self, node: AppliedPTransform) -> None:
        transform = node.transform
        inputs = [i for i in node.inputs if isinstance(i, pvalue.PCollection)]
        self.consumed.update(inputs)
        in_bags = [self.bags[i] for i in inputs]
        side_inputs = self._side_inputs(node)
        outputs = {tag: pc for tag, pc in node.outputs.items()
                   if isinstance(pc, pvalue.PCollection)}
        if type(transform) is beam.ParDo:
            pairs = in_bags[0].map_partitions(
                _run_bundle, node.full_label, transform.fn, self._window_fn(node),
                side_inputs, list(transform.raw_side_inputs[0]),
                dict(transform.raw_side_inputs[1]))
            self.bundles.append(pairs)
            for pc in outputs.values():
                self.bags[pc] = pairs.map_partitions(_select, pc.tag)
            return
        if isinstance(transform, _Reshuffle):
            bag = in_bags[0]
            result = bag.repartition(max(bag.npartitions, self.reshuffle_partitions))
        else:
            op_class = beam_eval.TRANSLATIONS.get(type(transform), beam_eval.NoOp)
            op = op_class(node, bag_kwargs=self.bag_kwargs)
            if isinstance(op, beam_eval.Flatten):
                result = op.apply(in_bags)
            else:
                result = op.apply(in_bags[0] if in_bags else None, side_inputs)
        for pc in outputs.values():
            self.bags[pc] = result

    def _side_inputs(self, node: AppliedPTransform) -> list[SideInputMap] | None:
        if not node.side_inputs:
            return None
        maps = []
        for si in node.side_inputs:
            self.consumed.add(si.pvalue)
            maps.append(SideInputMap(type(si), si._view_options(),  # noqa: SLF001 (Beam's API)
                                     beam_eval.DaskBagWindowedIterator(
                                         self.bags[si.pvalue], si._window_mapping_fn)))  # noqa: SLF001
        return maps

    @staticmethod
    def _window_fn(node: AppliedPTransform) -> t.Any:
        main = next(iter(node.main_inputs.values()))
        return main.windowing.windowfn if hasattr(main, "windowing") else None

    def leaves(self) -> list[t.Any]:
        return [bag for pc, bag in self.bags.items() if pc not in self.consumed]


class DaskRunnerResult(PipelineResult):
    def __init__(self, client: t.Any, cluster: t.Any, leaves: t.Any, metrics: t.Any):
        super().__init__(PipelineState.RUNNING)
        self._client = client
        self._cluster = cluster
        self._leaves = leaves
        self._metrics_future = metrics
        self._metrics = DirectMetrics()

    def wait_until_finish(self, duration: float | None = None) -> str:
        if self._state in (PipelineState.DONE, PipelineState.FAILED):
            return self._state
        import dask.distributed as ddist

        try:
            timeout = duration / 1000 if duration is not None else None
            futures = [*self._leaves, self._metrics_future]
            ddist.wait(futures, timeout=timeout)
            # One gather for all (it raises a worker's exception), and before the client
            # closes. as_completed(with_results=True) gathers each future as it finishes;
            # those concurrent gathers can wait forever (dask/distributed#7331).
            *_, updates_per_bundle = self._client.gather(futures)
            for n, updates in enumerate(updates_per_bundle):
                self._metrics.commit_logical(n, updates)
                self._metrics.commit_physical(n, updates)
            self._state = PipelineState.DONE
        except Exception:
            self._state = PipelineState.FAILED
            raise
        finally:
            _shut_down(self._client, self._cluster)
        return self._state

    def cancel(self) -> str:
        self._client.cancel([*self._leaves, self._metrics_future])
        self._state = PipelineState.CANCELLED
        _shut_down(self._client, self._cluster)
        return self._state

    def metrics(self) -> DirectMetrics:
        return self._metrics


def _shut_down(client: t.Any, cluster: t.Any) -> None:
    client.close()
    if cluster is not None:  # the LocalCluster this run started
        cluster.close()


class DaskRunner(beam_dask.DaskRunner):
    """Runs a batch pipeline on dask.distributed: the scheduler at --dask_client_address
    (or --dask_scheduler_file), else a LocalCluster on 127.0.0.1 for this run."""

    def run_pipeline(self, pipeline: beam.Pipeline, options: PipelineOptions
                     ) -> DaskRunnerResult:
        import dask.bag as db
        import dask.distributed as ddist

        dask_options = options.view_as(beam_dask.DaskOptions).get_all_options(
            drop_default=True, current_only=True)
        bag_kwargs = beam_dask.DaskOptions._extract_bag_kwargs(dask_options)  # noqa: SLF001
        cluster = None
        if starts_local_cluster(options):
            workers, threads = local_cluster_size(options)
            # Loopback only, and no dashboard: a local run opens no port to the network.
            cluster = ddist.LocalCluster(n_workers=workers, threads_per_worker=threads,
                                         processes=True, host="127.0.0.1",
                                         dashboard_address=None)
            dask_options["address"] = cluster
            log.info("dask: LocalCluster of %d workers x %d threads", workers, threads)
        client = ddist.Client(**dask_options)
        try:
            slots = sum(client.nthreads().values()) or 1
            spread = bag_kwargs.get("npartitions") or 4 * slots
            pipeline.replace_all(dask_overrides())
            translator = _Translator(bag_kwargs, spread)
            pipeline.visit(translator)
            leaves = [bag.map_partitions(_count) for bag in translator.leaves()]
            metrics = db.concat([b.map_partitions(_select, _METRICS)
                                 for b in translator.bundles])
            # One graph, one compute: collections computed apart would each run the DoFns
            # they share (a sink would write twice).
            *futures, metrics_future = client.compute([*leaves, metrics])
        except Exception:
            _shut_down(client, cluster)
            raise
        return DaskRunnerResult(client, cluster, futures, metrics_future)
