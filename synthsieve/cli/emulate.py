"""`synthsieve emulate`: a vendor API or Pub/Sub emulator on 127.0.0.1."""

from __future__ import annotations

import argparse

from synthsieve.cli.args import refuse

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    e = sub.add_parser("emulate", help="run a local emulator of a vendor API or of Pub/Sub "
                                       "on 127.0.0.1",
                       description="Serves a vendor API's documented formats on 127.0.0.1 "
                                   "for tests and benchmarks, with fault switches; or the "
                                   "Pub/Sub gRPC API (clients set "
                                   "PUBSUB_EMULATOR_HOST=127.0.0.1:PORT).")
    e.add_argument("api", choices=("hive", "nim", "sightengine", "pubsub"),
                   help="which service to emulate")
    e.add_argument("--port", type=int, required=True, help="the port on 127.0.0.1")
    e.add_argument("--key", default="emulator-key",
                   help="the API key it accepts (sightengine: api_user:api_secret)")
    e.add_argument("--latency-ms", type=float, default=0.0, metavar="MS",
                   help="how long each answer takes (default: 0)")
    e.add_argument("--rate-limit", type=float, default=0.0, metavar="R",
                   help="requests/s before answering 429 with Retry-After (0: none)")
    e.add_argument("--error-rate", type=float, default=0.0, help="share of 503 answers")
    e.add_argument("--throttle-rate", type=float, default=0.0,
                   help="share of 429 answers (Retry-After: 1), at random")
    e.add_argument("--timeout-rate", type=float, default=0.0, help="share of hung requests")
    e.add_argument("--malformed-rate", type=float, default=0.0,
                   help="share of 200 answers with a body that is not JSON")
    ps = e.add_argument_group("pubsub")
    ps.add_argument("--project", default="synthsieve-demo",
                    help="the project of --topic and --subscription (default: "
                         "synthsieve-demo)")
    ps.add_argument("--topic", action="append", default=[], metavar="NAME",
                    help="create projects/PROJECT/topics/NAME at start (repeatable)")
    ps.add_argument("--subscription", action="append", default=[], metavar="NAME=TOPIC",
                    help="create projects/PROJECT/subscriptions/NAME on topic TOPIC at start "
                         "(repeatable; the topic is created if no --topic names it)")


def run(args: argparse.Namespace) -> int:
    from synthsieve.emulators import common, hive, nim, sightengine

    if args.api == "pubsub":
        from synthsieve.emulators.pubsub import PubSubEmulator

        subscriptions = []
        for spec in args.subscription:
            name, _, topic = spec.partition("=")
            if not name or not topic or "/" in name + topic:
                return refuse("emulate", f"--subscription {spec!r}: give NAME=TOPIC, short "
                                         "names without projects/...")
            subscriptions.append((name, topic))
        emulator = PubSubEmulator(port=args.port).start()
        prefix = f"projects/{args.project}"
        for topic in dict.fromkeys([*args.topic, *(t for _, t in subscriptions)]):
            emulator.state.create_topic(f"{prefix}/topics/{topic}")
            print(f"topic {prefix}/topics/{topic}", flush=True)
        for name, topic in subscriptions:
            emulator.state.create_subscription(f"{prefix}/subscriptions/{name}",
                                               f"{prefix}/topics/{topic}", 0)
            print(f"subscription {prefix}/subscriptions/{name} on {topic}", flush=True)
        print(f"pubsub emulator on {emulator.host} "
              f"(export PUBSUB_EMULATOR_HOST={emulator.host})", flush=True)
        try:
            emulator.wait()
        except KeyboardInterrupt:
            emulator.stop()
        return 0

    faults = common.Faults(
        latency_ms=args.latency_ms, rate_limit_per_s=args.rate_limit,
        error_rate=args.error_rate, timeout_rate=args.timeout_rate,
        malformed_rate=args.malformed_rate, throttle_rate=args.throttle_rate)
    if args.api == "hive":
        app, path = hive.make_app(args.key, faults), hive.PATH
    elif args.api == "nim":
        app, path = nim.make_app(args.key, faults), nim.INVOKE_PATH
    else:
        user, _, secret = args.key.partition(":")
        app, path = sightengine.make_app(user, secret, faults), sightengine.PATH
    print(f"{args.api} emulator on http://{common.HOST}:{args.port}{path}", flush=True)
    common.run(app, args.port)
    return 0
