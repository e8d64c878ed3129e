"""The local runner is chosen by synthsieve, never by Beam's DirectRunner, which would first
try to download the Prism runner at run time."""

from __future__ import annotations

import logging
import socket

from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.direct.direct_runner import BundleBasedDirectRunner
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from corpus import noise_png

from synthsieve.pipelines.audit import AuditConfig, run_audit
from synthsieve.runners.choice import local_runner


def test_local_runners_for_batch_and_streaming_and_none_for_a_chosen_cluster_runner():
    assert isinstance(local_runner(PipelineOptions([])), FnApiRunner)
    assert isinstance(local_runner(PipelineOptions(["--runner=DirectRunner"])), FnApiRunner)
    assert isinstance(local_runner(PipelineOptions(["--streaming"])), BundleBasedDirectRunner)
    assert local_runner(PipelineOptions(["--runner=DataflowRunner"])) is None
    assert local_runner(PipelineOptions(["--runner=FlinkRunner"])) is None


def test_an_audit_makes_no_lookup_and_never_tries_prism(tmp_path, tiny_model, monkeypatch,
                                                        caplog):
    real = socket.getaddrinfo
    looked_up = []

    def guarded(host, *args, **kwargs):
        if host not in ("localhost", "127.0.0.1", "::1"):
            looked_up.append(host)
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", guarded)
    for i in range(4):
        (tmp_path / f"{i}.png").write_bytes(noise_png(50 + i, side=48))
    caplog.set_level(logging.INFO)
    # a metadata-only audit is one Beam's DirectRunner would hand to Prism
    summary = run_audit(AuditConfig(sources=[str(tmp_path)], out_dir=str(tmp_path / "out"),
                                    model_dir=str(tiny_model), backend="none"), [])
    assert summary["scores"] == 4
    assert not looked_up
    assert "Prism" not in caplog.text
