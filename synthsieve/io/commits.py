"""Tells whoever is listening in this process which image_ids a writer has committed.

The sinks announce here; runner infrastructure listens (it depends on io, never the reverse).

The streaming job on an in-process runner acknowledges a Pub/Sub message only after the row
it became is durably written (runners/relay.py). The writer runs in the same process as the
job's driver there, so the news travels through this registry, keyed by run_id. On a
distributed runner nobody listens and `committed` does nothing; Dataflow's own Pub/Sub
source acknowledges after its commit.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

__all__ = ["committed", "listening"]

Listener = Callable[[list[str]], None]

_lock = threading.Lock()
_listeners: dict[str, Listener] = {}


@contextmanager
def listening(run_id: str, listener: Listener) -> Iterator[None]:
    """While inside, `committed(run_id, ids)` calls `listener(ids)`."""
    with _lock:
        if run_id in _listeners:
            raise ValueError(f"run {run_id} already has a commit listener")
        _listeners[run_id] = listener
    try:
        yield
    finally:
        with _lock:
            _listeners.pop(run_id, None)


def committed(run_id: str, image_ids: Iterable[str]) -> None:
    with _lock:
        listener = _listeners.get(run_id)
    if listener is not None:
        listener(list(image_ids))
