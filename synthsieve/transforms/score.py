"""Scores prepared images with RunInference and builds the `scores` rows."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Iterable
from typing import Any

import apache_beam as beam
from apache_beam.ml.inference.base import KeyedModelHandler, ModelHandler, RunInference

from synthsieve.counters import WOULD_SEND, counter
from synthsieve.elements import ERRORS, ImageInfo
from synthsieve.inference.outputs import interpret
from synthsieve.inference.spec import ModelSpec
from synthsieve.provenance import evidence_verdict, provenance_source
from synthsieve.schema import STAGE_API, STAGE_INFERENCE, empty_score_row, error_row, now_utc
from synthsieve.transforms.windowing import in_window

__all__ = ["ScoreImages", "ScoreRemote", "SkipScoring", "score_row"]


def score_row(info: ImageInfo, columns: dict[str, Any], *, model: str | None, backend: str,
              run_id: str) -> dict[str, Any]:
    """One scores row: the backend's columns, the provenance read from the file (which wins
    over a vendor's report of the same field), and the combined evidence verdict."""
    row = empty_score_row()
    row.update(columns)
    if info.provenance is not None:
        for name, value in info.provenance.items():
            if value is not None:
                row[name] = value
        row["provenance_source"] = provenance_source(row)
        row["evidence_verdict"], row["verdict_reason"] = evidence_verdict(row)
    row.update(
        image_id=info.ref.image_id,
        uri=info.ref.uri,
        sha256=info.sha256,
        bytes=info.num_bytes,
        width=info.width,
        height=info.height,
        format=info.format,
        model=model,
        backend=backend,
        warnings=list(info.warnings),
        extra=info.ref.extra,
        http_status=info.http_status,
        robots_opt_out=info.robots_opt_out,
        run_id=run_id,
        processed_at=now_utc(),
    )
    return row


class _ToScoreRow(beam.DoFn):
    def __init__(self, spec: ModelSpec, backend: str, run_id: str):
        self._spec = spec
        self._backend = backend
        self._run_id = run_id

    def process(self, keyed: tuple[ImageInfo, Any]) -> Iterable[Any]:
        info, result = keyed
        try:
            columns = interpret(result.inference, self._spec)
        except Exception as e:
            yield beam.pvalue.TaggedOutput(ERRORS, error_row(
                image_id=info.ref.image_id, uri=info.ref.uri, stage=STAGE_INFERENCE,
                error_type="bad_model_output", message=f"{type(e).__name__}: {e}",
                run_id=self._run_id))
            return
        model_warnings = columns.pop("model_warnings", [])
        row = score_row(info, columns, model=self._spec.model_id, backend=self._backend,
                        run_id=self._run_id)
        if model_warnings:
            row["warnings"] = [*row["warnings"], *model_warnings]
        yield row


class _FailedBatchToErrors(beam.DoFn):
    def __init__(self, run_id: str):
        self._run_id = run_id

    def process(self, failed: tuple[Any, BaseException]) -> Iterable[dict[str, Any]]:
        batch, exc = failed
        for info, _pixels in batch:
            yield error_row(
                image_id=info.ref.image_id, uri=info.ref.uri, stage=STAGE_INFERENCE,
                error_type=type(exc).__name__, message=f"inference failed for its batch: {exc}",
                run_id=self._run_id)


class _Unscored(beam.DoFn):
    """--backend none: the image was read and decoded, no model ran."""

    def __init__(self, run_id: str):
        self._run_id = run_id
        self._would_send = counter(WOULD_SEND)

    def process(self, keyed: tuple[ImageInfo, Any]) -> Iterable[dict[str, Any]]:
        info, _pixels = keyed
        self._would_send.inc()
        yield score_row(info, {}, model=None, backend="none", run_id=self._run_id)


class SkipScoring(beam.PTransform):
    """(ImageInfo, pixels) -> {'scores': rows without a pixel score, 'errors': empty}."""

    def __init__(self, run_id: str):
        """
        Args:
          run_id: the run the rows belong to.
        """
        super().__init__()
        self._run_id = run_id

    def expand(self, images: beam.PCollection) -> dict[str, beam.PCollection]:
        rows = images | "NoModel" >> beam.ParDo(_Unscored(self._run_id))
        none = images.pipeline | "NoInferenceErrors" >> beam.Create([])
        return {"scores": rows, "errors": none}


class ScoreImages(beam.PTransform):
    """(ImageInfo, HWC uint8) -> {'scores': score rows, 'errors': error rows}."""

    def __init__(self, handler: ModelHandler, spec: ModelSpec, backend: str, run_id: str):
        """
        Args:
          handler: the local model's handler (ONNX Runtime, TensorRT).
          spec: the model, which says how to read its outputs.
          backend: the `backend` column's value.
          run_id: the run the rows belong to.
        """
        super().__init__()
        self._handler = handler
        self._spec = spec
        self._backend = backend
        self._run_id = run_id

    def expand(self, images: beam.PCollection) -> dict[str, beam.PCollection]:
        predictions, failed = (
            images
            | "RunInference" >> RunInference(KeyedModelHandler(self._handler))
            .with_exception_handling()
        )
        rows = predictions | "ToScoreRows" >> beam.ParDo(
            _ToScoreRow(self._spec, self._backend, self._run_id)).with_outputs(
                ERRORS, main="scores")
        failed_rows = failed.failed_inferences | "FailedBatches" >> beam.ParDo(
            _FailedBatchToErrors(self._run_id))
        errors = (rows[ERRORS], failed_rows) | "InferenceErrors" >> beam.Flatten()
        return {"scores": rows.scores, "errors": errors}


class _CallApi(beam.DoFn):
    """(ImageInfo, (bytes, uri)) -> a scores row, or an `api` error row, per image.

    Each image's call starts as soon as the image arrives and its row leaves as soon as the
    answer is in, whatever happened to the images around it: up to the handler's
    `max_pending` calls are open at once (the API client's rate limiter and in-flight cap
    pace the requests themselves). Batching them, as RunInference does, would make every
    image wait for its batch's slowest answer and leave the rate limit idle meanwhile.
    Rows carry their own element's window, as they may leave while another element is
    being processed. A refused key (ApiAuthError) stops the job.
    """

    def __init__(self, handler: Any, run_id: str):
        self._handler = handler
        self._run_id = run_id

    def setup(self) -> None:
        self._client = self._handler.create_client()
        self._max_pending = max(1, int(self._handler.max_pending))
        self._pending: dict[concurrent.futures.Future, tuple[ImageInfo, Any, Any]] = {}

    def start_bundle(self) -> None:
        self._pending = {}

    def process(self, keyed: tuple[ImageInfo, Any], timestamp: Any = beam.DoFn.TimestampParam,
                window: Any = beam.DoFn.WindowParam) -> Iterable[Any]:
        info, (data, uri) = keyed
        future = self._handler.submit(self._client, data, uri)
        self._pending[future] = (info, timestamp, window)
        yield from self._finished(wait=len(self._pending) >= self._max_pending)

    def finish_bundle(self) -> Iterable[Any]:
        while self._pending:
            yield from self._finished(wait=True)

    def _finished(self, wait: bool) -> Iterable[Any]:
        """The rows of the calls that are done; with `wait`, of at least one."""
        done, _ = concurrent.futures.wait(
            list(self._pending), timeout=None if wait else 0,
            return_when=concurrent.futures.FIRST_COMPLETED)
        for future in done:
            info, timestamp, window = self._pending.pop(future)
            try:
                result = future.result()
            except BaseException:  # ApiAuthError: the job stops, and so do the other calls
                self._cancel_pending()
                raise
            yield in_window(self._output(info, result), timestamp, window)

    def _cancel_pending(self) -> None:
        for future in self._pending:
            future.cancel()
        self._pending.clear()

    def teardown(self) -> None:
        self._cancel_pending()

    def _output(self, info: ImageInfo, result: Any) -> Any:
        """The scores row, or the tagged `api` error row, of one answered call."""
        if result.error_type:
            return beam.pvalue.TaggedOutput(ERRORS, error_row(
                image_id=info.ref.image_id, uri=info.ref.uri, stage=STAGE_API,
                error_type=result.error_type, message=result.message or result.error_type,
                attempts=result.attempts, http_status=info.http_status, run_id=self._run_id))
        columns = dict(result.columns)
        vendor_warnings = columns.pop("vendor_warnings", [])
        row = score_row(info, columns, model=self._handler.model_name,
                        backend=self._handler.backend_name, run_id=self._run_id)
        row["warnings"] = [*row["warnings"], *vendor_warnings]
        return row


class ScoreRemote(beam.PTransform):
    """(ImageInfo, (bytes, uri)) -> {'scores', 'errors'} through a vendor API handler.

    Per-image failures come back as results and become error rows; what escapes (a
    rejected API key) must stop the job.
    """

    def __init__(self, handler: ModelHandler, run_id: str):
        """
        Args:
          handler: a vendor API's RemoteApiModelHandler.
          run_id: the run the rows belong to.
        """
        super().__init__()
        self._handler = handler
        self._run_id = run_id

    def expand(self, images: beam.PCollection) -> dict[str, beam.PCollection]:
        out = images | "CallApi" >> beam.ParDo(_CallApi(self._handler, self._run_id)
                                               ).with_outputs(ERRORS, main="scores")
        return {"scores": out.scores, "errors": out[ERRORS]}
