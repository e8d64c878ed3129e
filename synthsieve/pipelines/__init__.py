"""Beam pipelines, one module per job."""
