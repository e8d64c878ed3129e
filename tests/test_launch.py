"""Launch command lines for Dataflow (GPU workers), Flink and Spark: assembled and checked
with Beam's own option parsing and validator, and no connection to anything."""

from __future__ import annotations

import shlex
import socket

import pytest
from apache_beam.options.pipeline_options import (
    GoogleCloudOptions,
    PipelineOptions,
    PortableOptions,
    StandardOptions,
    WorkerOptions,
)

from synthsieve.cli import main
from synthsieve.cli.launch import LaunchError, Target, check, launch_command

IMAGE = "us-docker.pkg.dev/my-proj/synthsieve/worker-gpu:0.1.0"
DATAFLOW = Target(runner="dataflow", image=IMAGE, project="my-proj", region="us-central1",
                  temp_location="gs://my-proj-tmp/synthsieve", job_name="audit-laion-0001")
GPU_AUDIT = ["audit", "gs://corpus/images/**", "--out", "gs://corpus/audit",
             "--backend", "tensorrt", "--model", "/opt/synthsieve/gpu-model",
             "--batch-size", "64"]


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Any lookup or connection fails the test: the checks must be offline."""
    def refuse(*args, **kwargs):
        raise AssertionError(f"network call during a launch check: {args[:2]}")
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)


def test_dataflow_gpu_command_parses_back_into_beams_options():
    command = launch_command(DATAFLOW, GPU_AUDIT)
    assert command[:len(GPU_AUDIT) + 1] == ["synthsieve", *GPU_AUDIT]
    options = PipelineOptions(command[len(GPU_AUDIT) + 1:])
    gcp = options.view_as(GoogleCloudOptions)
    assert (gcp.project, gcp.region, gcp.temp_location, gcp.job_name) == (
        "my-proj", "us-central1", "gs://my-proj-tmp/synthsieve", "audit-laion-0001")
    assert options.view_as(StandardOptions).runner == "DataflowRunner"
    assert options.view_as(WorkerOptions).sdk_container_image == IMAGE
    assert options.view_as(WorkerOptions).machine_type == "g2-standard-8"
    assert ("worker_accelerator=type:nvidia-l4;count:1;install-nvidia-driver"
            in gcp.dataflow_service_options)


def test_launches_that_would_fail_on_the_cluster_are_refused_before_it():
    local_out = [*GPU_AUDIT[:3], "/home/me/audit", *GPU_AUDIT[4:]]
    with pytest.raises(LaunchError, match="local paths: /home/me/audit"):
        check(DATAFLOW, local_out)
    for temp in ("/tmp/x", "gs://b/tmp", "gs://Upper-Case/tmp"):
        with pytest.raises(LaunchError, match="temp location"):
            check(Target(**{**DATAFLOW.__dict__, "temp_location": temp}), GPU_AUDIT)
    with pytest.raises(LaunchError, match="needs project"):
        check(Target(runner="dataflow", image=IMAGE, region="r",
                     temp_location="gs://bucket/t"), GPU_AUDIT)
    with pytest.raises(LaunchError, match="needs GPU workers"):
        check(Target(**{**DATAFLOW.__dict__, "gpu_type": None}), GPU_AUDIT)
    with pytest.raises(LaunchError, match="does not run on a cluster"):
        check(DATAFLOW, ["report", "gs://corpus/audit", "--out", "r.html"])
    with pytest.raises(LaunchError, match="unrecognized"):
        check(DATAFLOW, [*GPU_AUDIT, "stray"])
    with pytest.raises(LaunchError, match="job endpoint"):
        check(Target(runner="flink", image=IMAGE), GPU_AUDIT)
    # Beam's own validator runs too: a job name Dataflow would reject
    with pytest.raises(LaunchError, match="job_name"):
        check(Target(**{**DATAFLOW.__dict__, "job_name": "Bad_Name"}), GPU_AUDIT)


def test_cpu_workers_and_the_streaming_job():
    cpu = Target(**{**DATAFLOW.__dict__, "gpu_type": None, "machine_type": "n2-standard-8"})
    command = launch_command(cpu, ["audit", "gs://c/i", "--out", "gs://c/o"])
    assert not any("worker_accelerator" in part for part in command)
    options = check(DATAFLOW, ["stream", "--subscription", "projects/p/subscriptions/s",
                               "--out", "gs://c/stream", "--backend", "onnx-cuda",
                               "--model", "/opt/synthsieve/gpu-model"])
    assert options.view_as(StandardOptions).streaming


def test_flink_and_spark_run_the_same_container_through_the_portable_runner():
    for runner, endpoint, beam_runner in (("flink", "flink-master:8081", "FlinkRunner"),
                                          ("spark", "spark-jobserver:8099", "PortableRunner")):
        target = Target(runner=runner, image=IMAGE, endpoint=endpoint, parallelism=16)
        command = launch_command(target, ["audit", "s3://c/i", "--out", "s3://c/o"])
        options = PipelineOptions(command[5:])
        assert options.view_as(StandardOptions).runner == beam_runner
        portable = options.view_as(PortableOptions)
        assert (portable.environment_type, portable.environment_config) == ("DOCKER", IMAGE)
        assert endpoint in " ".join(command)


def test_launch_command_cli_prints_a_shell_line_and_exits_2_on_a_refusal(capsys):
    assert main(["launch-command", "dataflow", "--image", IMAGE, "--project", "my-proj",
                 "--region", "us-central1", "--temp-location", "gs://my-proj-tmp/t", "--",
                 *GPU_AUDIT]) == 0
    line = capsys.readouterr().out.strip()
    assert shlex.split(line)[:len(GPU_AUDIT) + 1] == ["synthsieve", *GPU_AUDIT]
    assert main(["launch-command", "dataflow", "--image", IMAGE, "--project", "p1-x",
                 "--region", "r", "--temp-location", "gs://bucket/t", "--", "audit",
                 "local/dir", "--out", "gs://c/o"]) == 2
    assert "local paths" in capsys.readouterr().err
    assert main(["launch-command", "spark", "--image", IMAGE, "--endpoint", "h:1"]) == 2


def test_flex_template_parameters_are_the_ones_its_entry_point_reads():
    import json
    import re
    from pathlib import Path

    deploy = Path(__file__).resolve().parent.parent / "deploy" / "flex-template"
    params = json.loads((deploy / "metadata.json").read_text())["parameters"]
    source = (deploy / "main.py").read_text()
    for p in params:
        assert f'"--{p["name"]}"' in source, p["name"]
    out = next(p for p in params if p["name"] == "out")
    assert re.match(out["regexes"][0], "gs://my-proj-tmp/audit")
    assert not re.match(out["regexes"][0], "/local/audit")


class _Submitted(Exception):
    pass


@pytest.mark.slow
def test_the_printed_gpu_command_builds_its_job_without_the_model_or_tensorrt_here(
        tmp_path, monkeypatch, capsys):
    """The submitting machine has neither the GPU libraries nor the model directory (both
    live in the workers' container): the command it was given must still build the job and
    reach submission. Submission itself is replaced: it would call Dataflow."""
    import importlib.util
    import sys

    import apache_beam as beam

    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import tensorrt fails here
    assert importlib.util.find_spec("synthsieve") is not None
    absent = tmp_path / "opt" / "gpu-model"
    job = [a if a != "/opt/synthsieve/gpu-model" else str(absent) for a in GPU_AUDIT]
    assert main(["launch-command", "dataflow", "--image", IMAGE, "--project", "my-proj",
                 "--region", "us-central1", "--temp-location", "gs://my-proj-tmp/s",
                 "--", *job]) == 0
    printed = shlex.split(capsys.readouterr().out)
    assert printed[0] == "synthsieve"

    graphs = []

    def submit(self):
        graphs.append(self.to_runner_api())  # what Dataflow would receive, DoFns pickled
        raise _Submitted

    monkeypatch.setattr(beam.Pipeline, "run", submit)
    with pytest.raises(_Submitted):
        main(printed[1:])
    assert graphs and any("Score" in t.unique_name
                          for t in graphs[0].components.transforms.values())


def test_a_model_read_on_the_workers_loads_there(tmp_path, tiny_model):
    import pickle

    from synthsieve.inference.spec import WorkerModelSpec, load_spec

    assert isinstance(load_spec(str(tmp_path / "absent"), on_workers_only=True),
                      WorkerModelSpec)
    on_submitter = load_spec(str(tiny_model), on_workers_only=True)
    assert on_submitter.model_id == "tiny-test@0"  # present here: read here
    deferred = WorkerModelSpec(str(tiny_model))
    on_worker = pickle.loads(pickle.dumps(deferred))
    assert on_worker.model_id == f"model at {tiny_model}"  # nothing read yet
    assert 0 < on_worker.threshold_ai <= 1 and on_worker.model_id == "tiny-test@0"
