"""References in, scores rows and error rows out: the one chain audit, stream and eval run.

fetch (local files, buckets, http) -> optional dedupe of identical bytes -> optional variants
of the bytes (eval's robustness conditions) -> decode and provenance, bounded in time ->
score (a local model, a vendor API, or none). Each job adds only its source in front and its
sinks behind.
"""

from __future__ import annotations

from dataclasses import dataclass

import apache_beam as beam

from synthsieve.elements import ERRORS
from synthsieve.inference.onnx_handler import OnnxImageModelHandler
from synthsieve.inference.remote import RemoteApiModelHandler
from synthsieve.inference.spec import ModelSpec, WorkerModelSpec
from synthsieve.io.http import HttpConfig
from synthsieve.io.read import EACH_TIME, FetchImages
from synthsieve.provenance import ProvenanceOptions
from synthsieve.transforms.decode import DecodeImages
from synthsieve.transforms.dedupe import ERROR, SCORE, RecordLeaders, SplitDuplicates
from synthsieve.transforms.score import ScoreImages, ScoreRemote, SkipScoring

__all__ = ["ChainSettings", "ScoreReferences", "score_transform"]

Handler = OnnxImageModelHandler | RemoteApiModelHandler | None


def score_transform(handler: Handler, spec: ModelSpec | WorkerModelSpec,
                    run_id: str) -> beam.PTransform:
    """The scoring step for a backend's handler.

    Args:
      handler: a local model's handler, a vendor API's, or None (no model runs).
      spec: the model, which reads a local model's outputs.
      run_id: the run the rows belong to.

    Returns:
      A PTransform (ImageInfo, payload) -> {'scores', 'errors'}.
    """
    if handler is None:
        return SkipScoring(run_id)
    if isinstance(handler, RemoteApiModelHandler):
        return ScoreRemote(handler, run_id)
    return ScoreImages(handler, spec, handler.backend_name, run_id)


@dataclass(frozen=True)
class ChainSettings:
    """The per-image limits and readers of the chain (JobConfig carries them)."""

    run_id: str
    max_bytes: int
    max_pixels: int
    decode_timeout_s: float
    http: HttpConfig | None = None
    provenance: ProvenanceOptions | None = None
    # images decoded ahead of scoring, and how many at once (see transforms/decode.py)
    decode_ahead: int = 1
    decode_workers: int = 1


class ScoreReferences(beam.PTransform):
    """ImageRef -> the rows of every reference, as named PCollections.

    The outputs are kept apart rather than flattened, so that a job can give each its own
    writer (the DirectRunner holds a Flatten of several producers in memory):
    `SCORES` names the scores rows, `ERRORS` the error rows of each stage.
    """

    SCORES = ("scores", "duplicate_scores")
    ERRORS = ("read_errors", "decode_errors", "score_errors", "duplicate_errors")

    def __init__(self, settings: ChainSettings, spec: ModelSpec | WorkerModelSpec,
                 handler: Handler, *, same_uri: str = EACH_TIME,
                 dedupe: bool = False, wait_for_leaders: bool = True,
                 variants: beam.PTransform | None = None, score: bool = True):
        """
        Args:
          settings: run id, limits, HTTP and provenance settings.
          spec: the model whose input decode prepares (a local handler's).
          handler: what scores (see score_transform).
          same_uri: how references to one URI share its read (io/read.py): once per run or
            once nearby for a batch job; a stream reads each reference as it comes.
          dedupe: score identical bytes once; every input still gets its own row.
          wait_for_leaders: with dedupe, a duplicate waits for its leader's row in this
            process (false on runners that do not fuse stages, see transforms/dedupe.py).
          variants: a PTransform FetchedImage -> FetchedImage applied between read and
            decode (eval's robustness conditions).
          score: false for a dry run: read, dedupe and decode, but no model or API call.
        """
        super().__init__()
        self._settings = settings
        self._spec = spec
        self._handler = handler
        self._same_uri = same_uri
        self._dedupe = dedupe
        self._wait = wait_for_leaders
        self._variants = variants
        self._score = score

    def expand(self, refs: beam.PCollection) -> dict[str, beam.PCollection]:
        s = self._settings
        read = refs | "Read" >> FetchImages(s.run_id, max_bytes=s.max_bytes, http=s.http,
                                            same_uri=self._same_uri)
        out = {"read_errors": read["errors"]}
        images = read["images"]
        if self._dedupe:
            split = images | "SameBytesOnce" >> beam.ParDo(
                SplitDuplicates(s.run_id, wait_for_leaders=self._wait)).with_outputs(
                SplitDuplicates.FOLLOWER_SCORES, ERRORS, main="leaders")
            images = split.leaders
            out["duplicate_scores"] = split[SplitDuplicates.FOLLOWER_SCORES]
            out["duplicate_errors"] = split[ERRORS]
        if self._variants is not None:
            images = images | "Variants" >> self._variants
        handler = self._handler if self._score else None
        # Without a local model, decoding only validates the image (and reads provenance);
        # the payload is then the original bytes.
        local = handler is not None and not isinstance(handler, RemoteApiModelHandler)
        decoded = images | "Decode" >> DecodeImages(
            self._spec if local else None, s.run_id, max_pixels=s.max_pixels,
            provenance=s.provenance, timeout_s=s.decode_timeout_s, ahead=s.decode_ahead,
            workers=s.decode_workers)
        scored = decoded["images"] | "Score" >> score_transform(handler, self._spec, s.run_id)
        out.update(scores=scored["scores"], decode_errors=decoded["errors"],
                   score_errors=scored["errors"])
        if self._dedupe:  # leaders' rows are remembered; waiting duplicates come out with them
            out["scores"] = out["scores"] | "RecordLeaderScores" >> beam.ParDo(
                RecordLeaders(s.run_id, SCORE))
            for name, label in (("decode_errors", "Decode"), ("score_errors", "Score")):
                out[name] = out[name] | f"Record{label}Errors" >> beam.ParDo(
                    RecordLeaders(s.run_id, ERROR))
        return out

    @classmethod
    def errors(cls, out: dict[str, beam.PCollection]) -> list[beam.PCollection]:
        return [out[name] for name in cls.ERRORS if name in out]
