"""`synthsieve publish`: one Pub/Sub message per image reference, the messages a stream
reads (for a quick start on the emulator, or to feed a stream from a batch of files)."""

from __future__ import annotations

import argparse
import sys
import uuid
from pathlib import Path

from synthsieve.cli.args import (
    counted,
    pubsub_name_problem,
    refuse,
    uri_column_argument,
    uri_columns,
)

__all__ = ["add_parser", "run"]

# messages a publisher holds before it waits for their acknowledgements
IN_FLIGHT = 1000


def add_parser(sub: argparse._SubParsersAction) -> None:
    a = sub.add_parser(
        "publish",
        help="publish image references to a Pub/Sub topic, one message each (what stream reads)",
        description=(
            "Lists each SOURCE as audit does (directories, globs, gs:// and s3:// prefixes, "
            "manifests) and publishes one message per image: its URI as the data (local "
            "paths as file://), and the image_id an audit of the same SOURCE gives it as an "
            "attribute. "
            "http(s) URLs given as SOURCE are published as they are. Honours "
            "PUBSUB_EMULATOR_HOST. Prints how many were published; unusable manifest rows "
            "are counted on stderr, not published."),
    )
    a.add_argument("sources", nargs="+", metavar="SOURCE",
                   help="a directory, glob, bucket prefix, manifest or http(s) URL")
    a.add_argument("--topic", required=True, metavar="projects/P/topics/T",
                   help="the topic to publish to")
    uri_column_argument(a)


def _messages(args: argparse.Namespace):
    """(data, attributes) per reference, and the error rows of unusable manifest rows."""
    from synthsieve.io.read import is_http
    from synthsieve.io.sources import iter_references

    for source in args.sources:
        if is_http(source):
            yield source.encode(), {}
            continue
        for ref in iter_references([source], f"publish-{uuid.uuid4().hex[:6]}",
                                   uri_columns(args)):
            if isinstance(ref, dict):
                yield None, ref
                continue
            uri = ref.uri if "://" in ref.uri else "file://" + str(Path(ref.uri).resolve())
            # the id an audit of the same source gives the image, so both runs' rows join
            yield uri.encode(), {"image_id": ref.image_id}


def run(args: argparse.Namespace) -> int:
    from synthsieve.io.read import is_http
    from synthsieve.io.sources import SourceError, classify_source

    problem = pubsub_name_problem(args.topic, "topics")
    if problem:
        return refuse("publish", f"--topic {args.topic}: {problem}")
    try:
        for source in args.sources:
            if not is_http(source):
                classify_source(source)
    except SourceError as e:
        return refuse("publish", str(e))
    from google.api_core import exceptions
    from google.cloud import pubsub_v1

    publisher = pubsub_v1.PublisherClient()
    published = unusable = 0
    pending = []
    try:
        for data, attrs in _messages(args):
            if data is None:
                unusable += 1
                continue
            pending.append(publisher.publish(args.topic, data, **attrs))
            if len(pending) >= IN_FLIGHT:
                published += _settle(pending)
        published += _settle(pending)
    except exceptions.NotFound:
        return refuse("publish", f"topic {args.topic} does not exist", 1)
    except exceptions.GoogleAPICallError as e:
        return refuse("publish", f"{args.topic}: {e}", 1)
    finally:
        publisher.stop()
    if unusable:
        print(f"synthsieve publish: {counted(unusable, 'manifest row')} could not be "
              "published (no usable uri)", file=sys.stderr)
    print(f"published {counted(published, 'reference')} to {args.topic}")
    if not published:
        return refuse("publish", "nothing was published", 1)
    return 0


def _settle(pending: list) -> int:
    """Waits for the messages in flight; how many Pub/Sub took."""
    n = sum(1 for f in pending if f.result(timeout=60))
    pending.clear()
    return n
