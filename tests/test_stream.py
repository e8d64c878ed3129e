"""The streaming job on the Pub/Sub emulator: references in, windowed Parquet, flags and
dead letters out, each reference accounted for exactly once."""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from corpus import noise_png

from synthsieve.io.messages import parse_message
from synthsieve.io.sources import image_id_for
from synthsieve.pipelines.stream import StreamConfig, run_stream

PROJECT = "test-project"


def read_rows(out: Path, table: str) -> list[dict]:
    files = sorted((out / table).glob("window=*/part-*.parquet"))
    return pa.concat_tables([pq.read_table(f) for f in files]).to_pylist() if files else []


def test_message_forms_become_the_same_refs_and_bad_ones_error_rows():
    ref = parse_message(b"gs://b/x.jpg", {"caption": "a cat"}, "7", "r")
    assert (ref.uri, ref.image_id) == ("gs://b/x.jpg", image_id_for("gs://b/x.jpg"))
    assert ref.extra == {"pubsub_caption": "a cat", "pubsub_message_id": "7"}
    assert parse_message(b"file:///data/x.png", {}, "8", "r").uri == "/data/x.png"
    assert parse_message(b"https://h/x.png", {"image_id": "u1"}, "9", "r").image_id == "u1"
    notification = parse_message(
        json.dumps({"kind": "storage#object", "bucket": "up", "name": "a b.jpg",
                    "generation": "12"}).encode(),
        {"eventType": "OBJECT_FINALIZE", "bucketId": "up", "objectId": "a b.jpg",
         "objectGeneration": "12", "payloadFormat": "JSON_API_V1"}, "10", "r")
    assert notification.uri == "gs://up/a b.jpg"
    assert notification.image_id == image_id_for("gs://up/a b.jpg#12")
    assert parse_message(b"", {"eventType": "OBJECT_FINALIZE", "bucketId": "up",
                               "objectId": "c.png"}, "11", "r").uri == "gs://up/c.png"
    deleted = parse_message(b"", {"eventType": "OBJECT_DELETE", "bucketId": "up",
                                  "objectId": "c.png"}, "12", "r")
    assert (deleted["stage"], deleted["error_type"]) == ("read", "not_a_new_object")
    for bad, why in ((b"hello", "invalid_uri"), (b"ftp://h/x", "invalid_uri"),
                     (b"x" * 10000, "invalid_message"), (b"", "invalid_uri")):
        row = parse_message(bad, {}, "13", "r")
        assert row["error_type"] == why, bad[:20]


@pytest.fixture()
def pubsub(pubsub_emulator):
    from google.cloud import pubsub_v1

    pub, sub = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
    names = {}
    for t in ("uploads", "flags", "dead"):
        names[t] = pub.topic_path(PROJECT, t)
        pub.create_topic(name=names[t])
        names[f"{t}-sub"] = sub.subscription_path(PROJECT, f"{t}-sub")
        sub.create_subscription(name=names[f"{t}-sub"], topic=names[t],
                                ack_deadline_seconds=60)
    yield pub, sub, names
    sub.close()


def drain(sub, subscription: str) -> list:
    got = []
    while True:
        batch = sub.pull(subscription=subscription, max_messages=100, timeout=5)
        if not batch.received_messages:
            return got
        got += batch.received_messages
        sub.acknowledge(subscription=subscription,
                        ack_ids=[m.ack_id for m in batch.received_messages])


@pytest.mark.slow
def test_500_references_stream_to_windowed_tables_flags_and_dead_letters(
        tmp_path, pubsub, tiny_model, caplog):
    caplog.set_level(logging.INFO, logger="synthsieve.stream")
    pub, sub, names = pubsub
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    messages: list[tuple[bytes, dict]] = []
    expected_errors = set()
    params = "a cat\nSteps: 20, Sampler: Euler, Model: sd_xl_base_1.0, Version: v1.9.4"
    for i in range(500):
        path = corpus / f"{i:03d}.png"
        if i % 25 == 0:  # 20 files that are not images
            path.write_bytes(b"not an image")
            expected_errors.add(image_id_for(str(path)))
        elif i % 25 == 1:  # 20 references to files that do not exist
            expected_errors.add(image_id_for(str(path)))
        elif i % 25 == 2:  # 20 messages that are no reference at all
            messages.append((f"no uri {i}".encode(), {}))
            expected_errors.add(image_id_for(f"no uri {i}"))
            continue
        else:  # generator parameters make every tenth image flagged whatever the pixels
            path.write_bytes(noise_png(i, params if i % 10 == 3 else None, side=48))
        messages.append((f"file://{path}".encode(), {"n": str(i)}))
    out = tmp_path / "out"
    cfg = StreamConfig(subscription=names["uploads-sub"], out_dir=str(out),
                       flag_topic=names["flags"], dead_letter_topic=names["dead"],
                       window_s=2, model_dir=str(tiny_model))

    def done() -> bool:
        return len(read_rows(out, "scores")) + len(read_rows(out, "errors")) >= 500

    result: dict = {}
    runner = threading.Thread(target=lambda: result.update(
        run_stream(cfg, [], stop=done, run_for_s=240)), daemon=True)
    runner.start()
    for data, attrs in messages:
        pub.publish(names["uploads"], data, **attrs)
    runner.join(300)
    assert result.get("ended") == "stopped", result

    scores, errors = read_rows(out, "scores"), read_rows(out, "errors")
    ids = [r["image_id"] for r in scores + errors]
    assert len(ids) == len(set(ids)) == 500, "every reference exactly once"
    assert {r["image_id"] for r in errors} == expected_errors
    assert {r["error_type"] for r in errors} == {"not_an_image", "not_found", "invalid_uri"}

    flags = drain(sub, names["flags-sub"])
    flagged = {r["image_id"] for r in scores if r["evidence_verdict"] == "ai_generated"}
    assert len(flagged) >= 45
    assert {m.message.attributes["image_id"] for m in flags} == flagged
    body = json.loads(flags[0].message.data)
    assert body["evidence_verdict"] == "ai_generated" and body["uri"]
    dead = drain(sub, names["dead-sub"])
    assert {m.message.attributes["image_id"] for m in dead} == expected_errors
    assert all(m.message.attributes["stage"] for m in dead)
    assert all(r["extra"] is None or "pubsub_message_id" in dict(r["extra"]) for r in scores)
    # the totals it ends with, and a log line per file each window wrote
    assert (result["scored"], result["errors"]) == (len(scores), len(errors))
    assert result["flagged"] == len(flags)
    written = [r.message for r in caplog.records if ": 0 rows" not in r.message
               and r.message.startswith("stream: window=")]
    assert any(", scores: " in m for m in written) and any(", errors: " in m for m in written)
    assert written[-1].endswith("errors dead-lettered")


@pytest.mark.slow
def test_stream_command_runs_for_a_while_and_writes_what_it_read(tmp_path, pubsub, tiny_model,
                                                                 capsys):
    from synthsieve.cli import main

    pub, _, names = pubsub
    for i in range(5):
        path = tmp_path / f"{i}.png"
        path.write_bytes(noise_png(100 + i, side=48))
        pub.publish(names["uploads"], f"file://{path}".encode()).result(10)
    pub.publish(names["uploads"], b"s3:///no-bucket.png").result(10)
    out = tmp_path / "out"
    assert main(["stream", "--subscription", names["uploads-sub"], "--out", str(out),
                 "--window", "1", "--run-for", "12", "--model", str(tiny_model)]) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out)  # stdout: the JSON summary only
    assert summary["ended"] == "ran 12 s"
    assert "stream: ended (ran 12 s) after " in captured.err
    assert "5 scored, 0 flagged, 1 error; output: " in captured.err
    assert len(read_rows(out, "scores")) == 5
    assert [r["error_type"] for r in read_rows(out, "errors")] == ["invalid_uri"]
    assert main(["-q", "stream", "--subscription", "nope", "--out", str(out)]) == 2


@pytest.mark.slow
def test_a_restart_loses_nothing_published_while_the_job_was_down(tmp_path, pubsub,
                                                                   tiny_model):
    """Stop the job once what it pulled is written, publish while it is down, restart: the
    subscription kept those messages, so every reference is written once. (A stop with
    messages in flight is another matter on the DirectRunner: see pipelines/stream.py.)"""
    pub, _, names = pubsub
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    refs = []
    for i in range(120):
        path = corpus / f"{i:03d}.png"
        path.write_bytes(noise_png(200 + i, side=48))
        refs.append(f"file://{path}".encode())
    out = tmp_path / "out"

    def run_until(total: int) -> dict:
        cfg = StreamConfig(subscription=names["uploads-sub"], out_dir=str(out), window_s=1,
                           model_dir=str(tiny_model))
        return run_stream(cfg, [], stop=lambda: len(read_rows(out, "scores")) >= total,
                          run_for_s=120)

    for data in refs[:60]:
        pub.publish(names["uploads"], data).result(10)
    assert run_until(60)["ended"] == "stopped"
    for data in refs[60:]:  # the job is down
        pub.publish(names["uploads"], data).result(10)
    assert run_until(120)["ended"] == "stopped"
    rows = read_rows(out, "scores")
    assert sorted(r["uri"] for r in rows) == sorted(d.decode()[len("file://"):] for d in refs)
    assert len({r["run_id"] for r in rows}) == 2


def _publish_slowly(pub, topic: str, refs: list[bytes], per_s: float) -> threading.Thread:
    def go() -> None:
        for data in refs:
            pub.publish(topic, data).result(10)
            time.sleep(1 / per_s)
    thread = threading.Thread(target=go, daemon=True)
    thread.start()
    return thread


def _corpus(tmp_path: Path, n: int, seed: int) -> list[bytes]:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    refs = []
    for i in range(n):
        path = corpus / f"{i:03d}.png"
        path.write_bytes(noise_png(seed + i, side=48))
        refs.append(f"file://{path}".encode())
    return refs


def _uris_written(out: Path) -> list[str]:
    return [r["uri"] for r in read_rows(out, "scores") + read_rows(out, "errors")]


@pytest.mark.slow
def test_a_stop_mid_stream_writes_what_was_in_flight_before_it_ends(tmp_path, pubsub,
                                                                     tiny_model):
    """Publishing goes on while the job stops: what it had pulled, still waiting in an open
    window, is written before it ends; the rest waits in the subscription for the restart.
    Every reference is written exactly once across the two runs."""
    pub, _, names = pubsub
    refs = _corpus(tmp_path, 150, 400)
    out = tmp_path / "out"
    publisher = _publish_slowly(pub, names["uploads"], refs, per_s=25)
    at_stop: dict = {}

    def stop_once_rows_land() -> bool:
        if len(read_rows(out, "scores")) < 20:
            return False
        at_stop["written"] = len(read_rows(out, "scores"))
        return True

    cfg = StreamConfig(subscription=names["uploads-sub"], out_dir=str(out), window_s=3,
                       model_dir=str(tiny_model), lease_s=10)
    first = run_stream(cfg, [], stop=stop_once_rows_land, run_for_s=120)
    assert first["ended"] == "stopped", first
    acks = first["acknowledged_after_commit"]
    assert acks["drained"] is True
    assert acks["pulled"] > at_stop["written"], "messages were in flight when it stopped"
    assert acks["acknowledged"] == acks["pulled"] == len(_uris_written(out))
    publisher.join(30)

    cfg = StreamConfig(subscription=names["uploads-sub"], out_dir=str(out), window_s=1,
                       model_dir=str(tiny_model), lease_s=10)
    second = run_stream(cfg, [], stop=lambda: len(_uris_written(out)) >= 150, run_for_s=120)
    assert second["ended"] == "stopped", second
    written = _uris_written(out)
    assert sorted(written) == sorted(d.decode()[len("file://"):] for d in refs)
    assert len({r["run_id"] for r in read_rows(out, "scores")}) == 2


@pytest.mark.slow
def test_a_job_killed_mid_stream_loses_nothing_on_restart(tmp_path, pubsub, tiny_model):
    """kill -9 with messages in flight: nothing it pulled was acknowledged before its row
    was written, so Pub/Sub delivers the rest again (within the lease) to the next run."""
    pub, _, names = pubsub
    refs = _corpus(tmp_path, 120, 600)
    out = tmp_path / "out"
    job = subprocess.Popen(
        [sys.executable, "-m", "synthsieve.cli", "-q", "stream", "--subscription",
         names["uploads-sub"], "--out", str(out), "--window", "4", "--lease", "10",
         "--model", str(tiny_model), "--run-for", "200"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        publisher = _publish_slowly(pub, names["uploads"], refs, per_s=10)
        deadline = time.monotonic() + 120
        while not read_rows(out, "scores") and time.monotonic() < deadline:
            assert job.poll() is None, job.stderr.read().decode()[-2000:]
            time.sleep(0.2)
        assert read_rows(out, "scores"), "the job wrote nothing in 120 s"
    finally:
        job.send_signal(signal.SIGKILL)
        job.wait(10)
    written_before = len(_uris_written(out))
    publisher.join(30)
    assert written_before < 120, "killed before it had written everything"

    cfg = StreamConfig(subscription=names["uploads-sub"], out_dir=str(out), window_s=1,
                       model_dir=str(tiny_model), lease_s=10)
    expected = {d.decode()[len("file://"):] for d in refs}
    restarted = run_stream(cfg, [], stop=lambda: set(_uris_written(out)) >= expected,
                           run_for_s=150)
    assert restarted["ended"] == "stopped", restarted
    assert set(_uris_written(out)) == expected, "every reference at least once"
    # at least once: only what was in flight at the kill may have been written twice
    assert len(_uris_written(out)) - len(expected) <= 120 - written_before


def test_local_root_fences_the_local_files_a_message_may_name(tmp_path):
    from types import SimpleNamespace

    from apache_beam.pvalue import TaggedOutput

    from synthsieve.io.messages import _Parse

    root = tmp_path / "incoming"
    root.mkdir()
    (root / "link.png").symlink_to("/etc/hostname")
    parse = _Parse("r", local_roots=(str(root),))

    def outcome(data: bytes):
        [out] = list(parse.process(SimpleNamespace(data=data, attributes={}, message_id="1")))
        return out.value if isinstance(out, TaggedOutput) else out

    assert outcome(f"file://{root}/a.png".encode()).uri == f"{root}/a.png"
    assert outcome(b"gs://b/x.png").uri == "gs://b/x.png"  # not a local file
    for data in (b"file:///etc/passwd", f"file://{root}/../secret.png".encode(),
                 f"file://{root}/link.png".encode()):
        row = outcome(data)
        assert (row["stage"], row["error_type"]) == ("read", "forbidden_path"), data
        assert "outside --local-root" in row["message"]
    # without roots the subscription is trusted, as a local manifest is
    assert _Parse("r").process(SimpleNamespace(data=b"file:///etc/passwd", attributes={},
                                                message_id="2")).__next__().uri == "/etc/passwd"


@contextlib.contextmanager
def _running_stream(tmp_path: Path, pubsub, tiny_model, seed: int, *extra: str):
    """A `synthsieve stream` process that has written the rows of 5 published references;
    killed on the way out if the test left it running."""
    pub, _, names = pubsub
    for data in _corpus(tmp_path, 5, seed):
        pub.publish(names["uploads"], data).result(10)
    out = tmp_path / "out"
    job = subprocess.Popen(
        [sys.executable, "-m", "synthsieve", "-q", "stream", "--subscription",
         names["uploads-sub"], "--out", str(out), "--window", "1", "--model", str(tiny_model),
         *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while len(read_rows(out, "scores")) < 5 and time.monotonic() < deadline:
            assert job.poll() is None, job.stderr.read()[-2000:]
            time.sleep(0.2)
        assert len(read_rows(out, "scores")) == 5, "the job wrote nothing in 120 s"
        yield job
    finally:
        if job.poll() is None:
            job.kill()


@pytest.mark.slow
def test_a_stream_whose_pubsub_goes_away_exits_nonzero_in_bounded_time(tmp_path, pubsub,
                                                                      pubsub_emulator,
                                                                      tiny_model):
    """A supervisor restarts a job that exits; one that hangs on a dead service it cannot
    see. The exit names the relay subscription left behind (the service could not be told
    to delete it)."""
    with _running_stream(tmp_path, pubsub, tiny_model, 700,
                         "--source-lost-after", "10") as job:
        pubsub_emulator.stop()
        stopped = time.monotonic()
        _, err = job.communicate(timeout=150)
    assert time.monotonic() - stopped < 150
    assert job.returncode == 1, err[-3000:]
    lines = err.strip().splitlines()
    assert any("lost its source" in line for line in lines), err[-3000:]
    assert any("uploads-sub-relay-" in line and "left behind" in line for line in lines), \
        err[-3000:]
    assert "Traceback" not in err, err[-3000:]


@pytest.mark.slow
def test_ctrl_c_drains_like_sigterm_and_says_so(tmp_path, pubsub, tiny_model):
    with _running_stream(tmp_path, pubsub, tiny_model, 800) as job:
        job.send_signal(signal.SIGINT)
        stdout, err = job.communicate(timeout=120)
    assert job.returncode == 0, err[-2000:]
    assert "stopping, draining" in err and "Traceback" not in err and "KeyboardInterrupt" not in err
    summary = json.loads(stdout)
    assert summary["ended"] == "terminated"
    assert summary["acknowledged_after_commit"]["drained"] is True
    assert summary["left_behind"] == []
