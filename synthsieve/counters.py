"""The Beam counters synthsieve's jobs keep, by name, and how a finished job reads them.

Every counter lives in one namespace and is named here, so the DoFn that increments one and
the summary that reads it cannot drift apart.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter

__all__ = [
    "BYTES_READ", "DECODE_TIMEOUTS", "DUPLICATE_BYTES", "INPUTS", "NAMESPACE",
    "QUARANTINE_OUTCOMES", "RESUME_SKIPPED", "SCRUB_DECISIONS", "SHARDS_REPLACED",
    "SHARDS_WRITTEN", "WOULD_SEND", "CountInputs", "counted_inputs", "counter",
    "read_counters",
]

NAMESPACE = "synthsieve"

# references the sources gave (after --resume): the left side of inputs == scores + errors
INPUTS = "inputs"
RESUME_SKIPPED = "resume_skipped"  # inputs --resume found already done
DUPLICATE_BYTES = "duplicate_bytes"  # inputs whose bytes an earlier input already had
WOULD_SEND = "would_send"  # images a vendor backend would be sent (--dry-run, --backend none)
DECODE_TIMEOUTS = "decode_timeouts"
BYTES_READ = "bytes_read"
SHARDS_WRITTEN = "shards_written"
SHARDS_REPLACED = "shards_of_retried_bundles_deleted"
# scrub: one counter per decision, and one per quarantine outcome
SCRUB_DECISIONS = ("keep", "remove")
QUARANTINE_OUTCOMES = ("copied", "moved", "done_before", "skipped", "failed")

_KNOWN = {INPUTS, RESUME_SKIPPED, DUPLICATE_BYTES, WOULD_SEND, DECODE_TIMEOUTS, BYTES_READ,
          SHARDS_WRITTEN, SHARDS_REPLACED, *SCRUB_DECISIONS, *QUARANTINE_OUTCOMES}

log = logging.getLogger("synthsieve.counters")


def counter(name: str) -> Any:
    """The Beam counter `name` (one of this module's names) in synthsieve's namespace."""
    if name not in _KNOWN:
        raise ValueError(f"unknown counter {name!r}; name it in synthsieve/counters.py")
    return Metrics.counter(NAMESPACE, name)


class CountInputs(beam.DoFn):
    """Passes elements through, counting each as one input of the job."""

    def setup(self) -> None:
        self._inputs = counter(INPUTS)

    def process(self, element: Any) -> Iterable[Any]:
        self._inputs.inc()
        yield element


def read_counters(result: Any) -> dict[str, int] | None:
    """The finished pipeline's counters by name.

    Args:
      result: the PipelineResult of a job that has finished.

    Returns:
      Each counter's committed (else attempted) value, summed over steps; None when the
      runner's metrics cannot be read, in which case the caller must say the count is
      unknown rather than assume it. A counter never incremented is absent.
    """
    try:
        found = result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))["counters"]
    except Exception as e:  # noqa: BLE001 - any runner's failure means "unknown"
        log.warning("could not read the pipeline's counters: %s: %s", type(e).__name__, e)
        return None
    out: dict[str, int] = {}
    for c in found:
        out[c.key.metric.name] = out.get(c.key.metric.name, 0) + int(
            c.committed or c.attempted or 0)
    return out


def counted_inputs(counters: dict[str, int] | None, rows_written: int) -> int | None:
    """How many inputs the sources gave, or None when that is not known: the counters could
    not be read, or rows were written while no input was counted (a runner that reports no
    metrics). A counter never incremented is absent, so no rows and no counter is 0."""
    if counters is None:
        return None
    if INPUTS in counters:
        return counters[INPUTS]
    return 0 if rows_written == 0 else None
