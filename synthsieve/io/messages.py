"""Pub/Sub messages -> ImageRefs, for the streaming job.

A message is either a reference (its data is a URI: gs://, s3://, file://, http(s)://) or a
Cloud Storage notification (attributes eventType, bucketId, objectId, objectGeneration; data
the object's JSON resource, with payload format JSON_API_V1, or empty with NONE). Both become
the same ImageRef the batch audit uses. A message that is neither is an error row at stage
`read`, so every message ends as a row.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import apache_beam as beam

from synthsieve.counters import INPUTS, counter
from synthsieve.elements import ERRORS, ImageRef
from synthsieve.io.filesystems import is_remote
from synthsieve.io.sources import (
    image_id_for,
    outside_local_roots,
    resolve_roots,
    validate_uri,
)
from synthsieve.schema import STAGE_READ, error_row

__all__ = [
    "FINALIZE", "MAX_DATA_BYTES", "MESSAGE_ID_ATTRIBUTE", "ParseMessages", "parse_message",
]

FINALIZE = "OBJECT_FINALIZE"
MAX_DATA_BYTES = 8192
# set by runners/relay.py on the messages it forwards: the id the message had when published
MESSAGE_ID_ATTRIBUTE = "synthsieve_message_id"


def _notification_uri(attrs: dict[str, str], data: bytes) -> tuple[str | None, str | None]:
    """(gs:// uri, generation) from a Cloud Storage notification, else (None, None)."""
    bucket, name = attrs.get("bucketId"), attrs.get("objectId")
    generation = attrs.get("objectGeneration")
    if (not bucket or not name) and data[:1] == b"{":
        try:
            doc = json.loads(data)
        except ValueError:
            doc = None
        if isinstance(doc, dict) and doc.get("kind", "storage#object") == "storage#object":
            bucket, name = doc.get("bucket"), doc.get("name")
            generation = generation or doc.get("generation")
    if isinstance(bucket, str) and isinstance(name, str) and bucket and name:
        return f"gs://{bucket}/{name}", (str(generation) if generation else None)
    return None, None


def parse_message(data: bytes, attrs: dict[str, str], message_id: str | None,
                  run_id: str) -> ImageRef | dict[str, Any]:
    """One message -> an ImageRef, or an error row saying why it names no image.

    The message's attributes and id go into `extra` (prefixed pubsub_); an `image_id` or `id`
    attribute is the image's id, else it is derived from the URI as in the batch audit."""
    extra = {f"pubsub_{k}": v for k, v in attrs.items()}
    if message_id:
        extra["pubsub_message_id"] = message_id
    explicit_id = attrs.get("image_id") or attrs.get("id")
    event = attrs.get("eventType")
    uri, generation = _notification_uri(attrs, data)
    if event is not None or uri is not None:
        if event not in (None, FINALIZE):
            where = uri or f"pubsub:{message_id}"
            return error_row(image_id=explicit_id or image_id_for(f"{where}#{event}"),
                             uri=where, stage=STAGE_READ, error_type="not_a_new_object",
                             message=f"storage notification {event}: only {FINALIZE} names a "
                                     "new image", run_id=run_id)
        if uri is None:
            where = f"pubsub:{message_id}"
            return error_row(image_id=explicit_id or image_id_for(where), uri=where,
                             stage=STAGE_READ, error_type="invalid_message",
                             message="storage notification without bucket and object name",
                             run_id=run_id)
        # One image per object version: a re-upload under the same name is a new image.
        key = f"{uri}#{generation}" if generation else uri
        return ImageRef(uri=uri, image_id=explicit_id or image_id_for(key), extra=extra)
    if len(data) > MAX_DATA_BYTES:
        where = f"pubsub:{message_id}"
        return error_row(image_id=explicit_id or image_id_for(where), uri=where,
                         stage=STAGE_READ, error_type="invalid_message",
                         message=f"message data of {len(data)} bytes is not a URI",
                         run_id=run_id)
    text = data.decode("utf-8", "replace").strip()
    problem = validate_uri(text)
    if problem is None and "://" not in text:
        problem = "not a URI (gs://, s3://, file://, http(s)://)"
    if problem:
        where = text[:300] or f"pubsub:{message_id}"
        return error_row(image_id=explicit_id or image_id_for(where), uri=where,
                         stage=STAGE_READ, error_type="invalid_uri", message=problem,
                         run_id=run_id)
    uri = text[len("file://"):] if text.startswith("file://") else text  # as in manifests
    return ImageRef(uri=uri, image_id=explicit_id or image_id_for(uri), extra=extra)


class _Parse(beam.DoFn):
    def __init__(self, run_id: str, local_roots: tuple[str, ...] | None = None):
        self._run_id = run_id
        self._local_roots = resolve_roots(local_roots)
        self._inputs = counter(INPUTS)

    def process(self, message: Any) -> Iterable[Any]:
        self._inputs.inc()
        attrs = dict(message.attributes or {})
        # through the relay, the original message's id rides in an attribute
        message_id = attrs.pop(MESSAGE_ID_ATTRIBUTE, None) or getattr(message, "message_id",
                                                                      None)
        parsed = parse_message(bytes(message.data or b""), attrs, message_id, self._run_id)
        if isinstance(parsed, ImageRef) and not is_remote(parsed.uri):
            refusal = outside_local_roots(parsed.uri, self._local_roots)
            if refusal:
                parsed = error_row(image_id=parsed.image_id, uri=parsed.uri, stage=STAGE_READ,
                                   error_type="forbidden_path",
                                   message=f"pubsub:{message_id}: {refusal}",
                                   run_id=self._run_id)
        if isinstance(parsed, ImageRef):
            yield parsed
        else:
            yield beam.pvalue.TaggedOutput(ERRORS, parsed)


class ParseMessages(beam.PTransform):
    """PubsubMessage -> {'refs': ImageRef, 'errors': error rows}. With `local_roots`, a
    message naming a local file outside them is a `forbidden_path` error row."""

    def __init__(self, run_id: str, local_roots: tuple[str, ...] | None = None):
        """
        Args:
          run_id: the run the error rows belong to.
          local_roots: when given, the only directories a message may name local files in.
        """
        super().__init__()
        self._run_id = run_id
        self._local_roots = local_roots

    def expand(self, messages: beam.PCollection) -> dict[str, beam.PCollection]:
        out = messages | "Parse" >> beam.ParDo(
            _Parse(self._run_id, self._local_roots)).with_outputs(
            ERRORS, main="refs")
        return {"refs": out.refs, "errors": out[ERRORS]}
