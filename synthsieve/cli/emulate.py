"""`synthsieve emulate`: a vendor API or Pub/Sub emulator on 127.0.0.1."""

from __future__ import annotations

import argparse

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


def run(args: argparse.Namespace) -> int:
    from synthsieve.emulators import common, hive, nim, sightengine

    if args.api == "pubsub":
        from synthsieve.emulators.pubsub import PubSubEmulator

        emulator = PubSubEmulator(port=args.port).start()
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
