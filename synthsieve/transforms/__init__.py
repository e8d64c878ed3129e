"""PTransforms and DoFns: sources, read, decode, scoring, sinks."""
