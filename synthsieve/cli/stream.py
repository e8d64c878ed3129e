"""`synthsieve stream`: score references as they arrive on Pub/Sub."""

from __future__ import annotations

import argparse
import json
import sys

from synthsieve.cli.args import (
    api_arguments,
    api_config,
    counted,
    http_arguments,
    job_settings,
    model_and_provenance,
    positive_float,
    provenance_arguments,
    pubsub_name_problem,
    refuse,
    scoring_arguments,
)

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    a = sub.add_parser(
        "stream",
        help="score images as their references arrive on Pub/Sub; flag the AI-generated ones",
        description=(
            "Reads a Pub/Sub subscription whose messages carry an image URI (gs://, s3://, "
            "file://, http(s)://) or are Cloud Storage OBJECT_FINALIZE notifications; scores "
            "each image as it arrives; publishes one message per AI-generated image "
            "(evidence_verdict) to --flag-topic and one per error row to "
            "--dead-letter-topic; writes DIR/scores and DIR/errors as Parquet per fixed "
            "window. Delivery is at least once: a message is acknowledged after its row is "
            "written, so deduplicate downstream by image_id. Ctrl-C or SIGTERM stops "
            "pulling and waits for what is in flight. Honours PUBSUB_EMULATOR_HOST. Other "
            "--options go to Beam (--runner ...)."),
    )
    a.add_argument("--subscription", required=True, metavar="projects/P/subscriptions/S",
                   help="the Pub/Sub subscription to pull image references from")
    a.add_argument("--out", required=True, metavar="DIR",
                   help="where the scores and errors tables go, one Parquet file per window")
    a.add_argument("--flag-topic", default=None, metavar="projects/P/topics/T",
                   help="publish one message per AI-generated image here (default: none)")
    a.add_argument("--dead-letter-topic", default=None, metavar="projects/P/topics/T",
                   help="publish one message per error row here (default: none)")
    a.add_argument("--window", type=positive_float, default=60.0, metavar="S",
                   help="seconds per Parquet window (default 60)")
    a.add_argument("--run-for", type=positive_float, default=None, metavar="S",
                   help="stop after S seconds (default: until Ctrl-C or SIGTERM)")
    a.add_argument("--source-lost-after", type=positive_float, default=120.0, metavar="S",
                   help="end with exit 1 when the subscription cannot be pulled for S "
                        "seconds (default 120), so that a supervisor restarts the job")
    a.add_argument("--lease", type=positive_float, default=30.0, metavar="S",
                   help="DirectRunner: how long a pulled message stays leased between "
                        "renewals; after a crash it is delivered again within S (default 30)")
    a.add_argument("--no-ack-after-commit", dest="ack_after_commit", action="store_false",
                   default=None,
                   help="DirectRunner: let the runner acknowledge on pull (faster, loses "
                        "what is in flight when the job stops)")
    a.add_argument("--local-root", action="append", default=None, metavar="DIR",
                   help="a message may name a local file (file://) only under DIR "
                        "(repeatable; after `..` and symbolic links are resolved)")
    scoring_arguments(a)
    http_arguments(a)
    api_arguments(a)
    provenance_arguments(a)


def run(args: argparse.Namespace, beam_args: list[str]) -> int:
    from synthsieve.pipelines.stream import StreamConfig, run_stream

    if args.dry_run or args.max_requests:
        return refuse("stream", "--dry-run and --max-requests are for audit")
    for name, value, kind in (("--subscription", args.subscription, "subscriptions"),
                              ("--flag-topic", args.flag_topic, "topics"),
                              ("--dead-letter-topic", args.dead_letter_topic, "topics")):
        problem = pubsub_name_problem(value, kind) if value else None
        if problem:
            return refuse("stream", f"{name} {value}: {problem}")
    if args.window <= 0 or not 10 <= args.lease <= 600:
        return refuse("stream", "--window must be positive and --lease within 10..600 s "
                      "(Pub/Sub's range)")
    loaded = model_and_provenance("stream", args, beam_args)
    if loaded is None:
        return 2
    try:
        api = api_config(args)
    except ValueError as e:
        return refuse("stream", str(e))
    cfg = StreamConfig(
        subscription=args.subscription, flag_topic=args.flag_topic,
        dead_letter_topic=args.dead_letter_topic, window_s=args.window, lease_s=args.lease,
        source_lost_after_s=args.source_lost_after, ack_after_commit=args.ack_after_commit,
        **job_settings(args, loaded[1], api))
    from synthsieve.inference.remote import ApiKeyMissing

    try:
        summary = run_stream(cfg, beam_args, run_for_s=args.run_for)
    except ApiKeyMissing as e:
        return refuse("stream", str(e))
    print(json.dumps(summary, indent=2))
    from synthsieve.pipelines.stream import SOURCE_LOST, ended_badly

    if not args.quiet and "scored" in summary:
        errors = counted(summary["errors"], "error") + (
            " dead-lettered" if cfg.dead_letter_topic else "")
        print(f"stream: ended ({summary['ended']}) after {summary['wall_s']} s: "
              f"{summary['scored']:,} scored, {summary['flagged']:,} flagged, {errors}; "
              f"output: {cfg.out_dir}", file=sys.stderr)

    if not ended_badly(summary):
        return 0
    what = ("lost its source" if summary["ended"].startswith(SOURCE_LOST)
            else "was ended by its runner")
    print(f"synthsieve stream: the job {what} ({summary['ended']}); restart it",
          file=sys.stderr)
    for name in summary.get("left_behind", []):
        print(f"synthsieve stream: relay {name} left behind: delete it once Pub/Sub answers "
              "again", file=sys.stderr)
    if not summary.get("runner_stopped", True):
        # Its threads are stuck in a client library's retries; the command does not wait
        # for them (console_main leaves with os._exit).
        print("synthsieve stream: the runner did not stop; exiting without it",
              file=sys.stderr)
    return 1
