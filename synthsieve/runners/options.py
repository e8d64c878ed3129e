"""The Beam flags a command line passes on to the runner: which of them no Beam options class
defines.

Beam itself only logs "Discarding unparseable args" for those and runs the job without them,
so a mistyped synthsieve option (which falls through to Beam) would be silently ignored.
Beam has no public call that returns the unknown flags, so the parser is assembled here the
way PipelineOptions.get_all_options assembles it.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import typing as t
from collections.abc import Iterable

from apache_beam.options.pipeline_options import PipelineOptions, _BeamArgumentParser

__all__ = ["beam_flags", "did_you_mean", "unknown_options"]


class _Parser(_BeamArgumentParser):
    def error(self, message: str) -> t.NoReturn:  # raise instead of printing and exiting
        raise argparse.ArgumentError(None, message)


def _beam_parser() -> argparse.ArgumentParser:
    with contextlib.suppress(ImportError):  # registers the Dask runner's options
        import synthsieve.runners.dask_runner  # noqa: F401
    parser = _Parser(allow_abbrev=False, add_help=False)
    classes: dict[str, type[PipelineOptions]] = {}
    for cls in PipelineOptions.__subclasses__():
        classes.setdefault(str(cls), cls)  # Beam's own rule for repeated subclasses
    for cls in classes.values():
        cls._add_argparse_args(parser)  # noqa: SLF001 - how Beam builds it
    return parser


def beam_flags() -> list[str]:
    """Every --flag some Beam options class defines."""
    return [s for a in _beam_parser()._actions for s in a.option_strings]  # noqa: SLF001


def unknown_options(args: list[str]) -> list[str]:
    """The flags in args (--name or --name=value) that no Beam options class defines."""
    parser = _beam_parser()
    try:
        _, unknown = parser.parse_known_args(args)
    except argparse.ArgumentError:
        return []  # a known flag with a bad value: Beam's own check reports it
    return [a.split("=", 1)[0] for a in unknown if a.startswith("-")]


def did_you_mean(flag: str, known: Iterable[str]) -> str | None:
    """The known flag closest to a mistyped one, if any is close."""
    close = difflib.get_close_matches(flag, list(known), n=1, cutoff=0.75)
    return close[0] if close else None
