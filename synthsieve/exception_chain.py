"""Every exception inside one that a runner or a filesystem raised.

Beam's runners re-raise a DoFn's exception wrapped (as __cause__/__context__, or as a new
exception of the same type), and its FileSystems keep one exception per path in
BeamIOError.exception_details. Code that decides by exception type looks through all of them.
"""

from __future__ import annotations

from collections.abc import Iterator

__all__ = ["causes"]


def causes(exc: BaseException) -> Iterator[BaseException]:
    """exc, then every exception it wraps, each once."""
    todo, seen = [exc], set()
    while todo:
        e = todo.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        details = getattr(e, "exception_details", None)
        if isinstance(details, dict):
            todo.extend(v for v in details.values() if isinstance(v, BaseException))
        todo.extend(c for c in (e.__cause__, e.__context__) if c is not None)
