"""Outputs that leave a DoFn after their own element: decode-ahead and vendor-API calls emit
an element's output while a later element is processed, or at the end of the bundle, where
Beam would give it the wrong window or none; each is wrapped in its own element's window."""

from __future__ import annotations

from typing import Any

import apache_beam as beam
from apache_beam.utils.windowed_value import WindowedValue

__all__ = ["in_window"]


def in_window(output: Any, timestamp: Any, window: Any) -> Any:
    """`output` (a value or a TaggedOutput) in the window and at the timestamp of the element
    it came from."""
    if isinstance(output, beam.pvalue.TaggedOutput):
        return beam.pvalue.TaggedOutput(output.tag, WindowedValue(
            output.value, timestamp, (window,)))
    return WindowedValue(output, timestamp, (window,))
