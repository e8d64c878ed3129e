"""Element-wise work: the scoring chain, decode with provenance, dedupe, scoring, progress."""
