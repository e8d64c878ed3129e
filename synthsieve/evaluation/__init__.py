"""Evaluation of detectors against labelled manifests: metrics, robustness, reports."""
