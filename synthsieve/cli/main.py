"""The `synthsieve` command: one subcommand per module of this package."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import typing as t

from synthsieve.cli import (
    audit,
    emulate,
    evaluate,
    launch,
    models,
    publish,
    report,
    scrub,
    stream,
)
from synthsieve.cli.args import OneLineParser, refuse

__all__ = ["JOBS", "TOOLS", "build_parser", "console_main", "main"]


class _DropKnownNoise(logging.Filter):
    """Beam logs these at WARNING on every start; they say nothing about the run."""

    NOISE = ("apitools not found", "Resource module is not available")

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        return not any(n in msg for n in self.NOISE)


class _DropApiAuthFailures(logging.Filter):
    """A refused API key stops the job with one line from the CLI; without this, each DoFn
    and runner layer it passes through logs it again, with a traceback. Recognised by the
    exception's type, in the record's exc_info or its arguments."""

    def filter(self, record: logging.LogRecord) -> bool:
        from synthsieve.exception_chain import causes
        from synthsieve.inference.remote import ApiAuthError

        carried = [record.exc_info[1]] if record.exc_info else []
        carried += list(record.args) if isinstance(record.args, tuple) else []
        return not any(isinstance(e, ApiAuthError) for item in carried
                       if isinstance(item, BaseException) for e in causes(item))


# Commands whose leftover --options are Beam's, and the function each runs.
JOBS: dict[str, t.Callable[[argparse.Namespace, list[str]], int]] = {
    "audit": audit.run, "stream": stream.run, "scrub": scrub.run, "eval": evaluate.run}
TOOLS: dict[str, t.Callable[[argparse.Namespace], int]] = {
    "report": report.run, "import-model": models.run_import_model, "emulate": emulate.run,
    "fetch-model": models.run_fetch_model, "build-engine": models.run_build_engine,
    "launch-command": launch.run, "publish": publish.run}


def build_parser() -> argparse.ArgumentParser:
    """The whole command line: every subcommand's parser under one `synthsieve`."""
    from synthsieve import __version__

    parser = OneLineParser(
        prog="synthsieve",
        description="Find the AI-generated images in a corpus: score them, read their "
                    "provenance, write Parquet tables, and act on the result.",
        epilog=audit.EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"synthsieve {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in (audit, stream, scrub, report, evaluate):
        command.add_parser(sub)
    models.add_import_model_parser(sub)
    emulate.add_parser(sub)
    publish.add_parser(sub)
    models.add_fetch_model_parser(sub)
    models.add_build_engine_parser(sub)
    launch.add_parser(sub)
    return parser


def _beam_args_problem(parser: argparse.ArgumentParser, command: str,
                       rest: list[str]) -> str | None:
    """Why the arguments left for Beam cannot all be Beam's: a flag neither synthsieve nor
    Beam knows (Beam would drop it and run without it)."""
    if not rest:
        return None
    from synthsieve.runners.options import beam_flags, did_you_mean, unknown_options

    unknown = unknown_options(rest)
    if unknown:
        sub = next(a for a in parser._actions  # noqa: SLF001 - argparse keeps them here
                   if isinstance(a, argparse._SubParsersAction)).choices[command]  # noqa: SLF001
        ours = [s for a in sub._actions for s in a.option_strings]  # noqa: SLF001
        guess = did_you_mean(unknown[0], ours + beam_flags())
        hint = f" (did you mean {guess}?)" if guess else ""
        return f"unknown option {unknown[0]}{hint}"
    return None


def main(argv: list[str] | None = None) -> int:
    # Logging first: building the parsers imports Beam, which logs on import.
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        for kind in (_DropKnownNoise, _DropApiAuthFailures):
            if not any(isinstance(f, kind) for f in handler.filters):
                handler.addFilter(kind())
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    job: list[str] = []
    if "launch-command" in argv and "--" in argv:  # the job after -- is not ours to parse
        job = argv[argv.index("--") + 1:]
        argv = argv[:argv.index("--")]
    args, rest = parser.parse_known_args(argv)
    args.job = job
    logging.getLogger().setLevel(logging.WARNING if args.quiet else logging.INFO)
    if not args.quiet:
        # Beam logs every stage at INFO; keep our progress lines readable.
        logging.getLogger("apache_beam").setLevel(logging.WARNING)
    if args.command in JOBS:
        problem = _beam_args_problem(parser, args.command, rest)
        if problem:
            return refuse(args.command, problem)
        return JOBS[args.command](args, rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    return TOOLS[args.command](args)


def console_main() -> t.NoReturn:
    """The `synthsieve` command: main(), then an exit that skips native teardown.

    By the time main() returns, everything synthsieve wrote is closed and renamed into
    place and its own threads, event loops and model sessions are shut down (an audit
    leaves none: tests/test_job_contract.py). What is left are native thread pools of the
    libraries (Arrow's, ONNX Runtime's environment, OpenBLAS, OpenCV) whose C++ destructors
    run after the interpreter has finalised; in about one run in seven (bench/exit_stress.py)
    one of them destroyed a still-joinable std::thread there and the process aborted
    ("terminate called without an active exception", exit 134) after a complete run. So the
    process flushes its output and leaves with the exit code main() gave, without running
    those destructors.
    """
    try:
        code = main()
    except SystemExit as e:  # argparse's --help, --version and usage errors
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
        if e.code is not None and not isinstance(e.code, int):
            print(e.code, file=sys.stderr)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
