"""The Pub/Sub emulator, driven by the official google-cloud-pubsub client only, exactly as
a client reaches Google's emulator (PUBSUB_EMULATOR_HOST)."""

from __future__ import annotations

import sys
import threading
import time

import pytest
from google.api_core import exceptions
from servers import CLOUD_ENV, free_port, listening_addresses, running


@pytest.fixture()
def clients(pubsub_emulator):
    from google.cloud import pubsub_v1

    pub, sub = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
    topic, subscription = pub.topic_path("p", "uploads"), sub.subscription_path("p", "s")
    pub.create_topic(name=topic)
    yield pubsub_emulator, pub, sub, topic, subscription
    sub.close()


def pull_all(sub, subscription, want: int, timeout: float = 20.0) -> list:
    got: list = []
    end = time.monotonic() + timeout
    while len(got) < want and time.monotonic() < end:
        got += sub.pull(subscription=subscription, max_messages=50, timeout=5).received_messages
    return got


def test_publish_pull_ack_delivers_each_message_with_its_attributes(clients):
    emu, pub, sub, topic, subscription = clients
    sub.create_subscription(name=subscription, topic=topic, ack_deadline_seconds=30)
    ids = [pub.publish(topic, f"gs://b/{i}.jpg".encode(), kind="ref", n=str(i)).result(10)
           for i in range(120)]
    assert len(set(ids)) == 120
    got = pull_all(sub, subscription, 120)
    assert sorted(m.message.data.decode() for m in got) == sorted(
        f"gs://b/{i}.jpg" for i in range(120))
    assert all(m.message.attributes["kind"] == "ref" for m in got)
    assert all(m.message.publish_time is not None and m.delivery_attempt == 1 for m in got)
    sub.acknowledge(subscription=subscription, ack_ids=[m.ack_id for m in got])
    start = time.monotonic()
    empty = sub.pull(subscription=subscription, max_messages=10, timeout=3)
    assert not empty.received_messages
    assert time.monotonic() - start > 1.0  # an empty pull waits instead of spinning
    assert emu.state.stats["acked"] == 120


def test_unacked_messages_are_redelivered_after_the_deadline_and_nacks_at_once(clients):
    _, pub, sub, topic, subscription = clients
    sub.create_subscription(name=subscription, topic=topic, ack_deadline_seconds=1)
    for i in range(3):
        pub.publish(topic, f"m{i}".encode()).result(10)
    first = pull_all(sub, subscription, 3)
    by_data = {m.message.data: m for m in first}
    sub.acknowledge(subscription=subscription, ack_ids=[by_data[b"m0"].ack_id])
    sub.modify_ack_deadline(subscription=subscription, ack_ids=[by_data[b"m1"].ack_id],
                            ack_deadline_seconds=0)  # nack: m1 now, m2 after its deadline
    again = pull_all(sub, subscription, 1, timeout=5)
    assert [m.message.data for m in again] == [b"m1"]
    assert again[0].delivery_attempt == 2 and again[0].ack_id != by_data[b"m1"].ack_id
    time.sleep(1.2)
    late = pull_all(sub, subscription, 2, timeout=5)
    assert sorted(m.message.data for m in late) == [b"m1", b"m2"]  # m1 unacked again
    sub.acknowledge(subscription=subscription, ack_ids=[m.ack_id for m in late])
    # acking an ack id that was superseded by a redelivery does not ack the message
    assert not sub.pull(subscription=subscription, max_messages=5, timeout=2).received_messages


def test_streaming_pull_through_subscribe(clients):
    _, pub, sub, topic, subscription = clients
    sub.create_subscription(name=subscription, topic=topic)
    seen: list[bytes] = []
    done = threading.Event()

    def callback(message) -> None:
        seen.append(message.data)
        message.ack()
        if len(seen) == 50:
            done.set()

    future = sub.subscribe(subscription, callback)
    try:
        for i in range(50):
            pub.publish(topic, f"x{i}".encode())
        assert done.wait(20), f"only {len(seen)} of 50 arrived"
    finally:
        future.cancel()
    assert sorted(seen) == sorted(f"x{i}".encode() for i in range(50))


def test_each_subscription_gets_every_message_published_after_it_exists(clients):
    _, pub, sub, topic, subscription = clients
    pub.publish(topic, b"before").result(10)
    sub.create_subscription(name=subscription, topic=topic)
    other = sub.subscription_path("p", "other")
    sub.create_subscription(name=other, topic=topic)
    pub.publish(topic, b"after").result(10)
    for name in (subscription, other):
        assert [m.message.data for m in pull_all(sub, name, 1)] == [b"after"]
    assert sorted(pub.list_topic_subscriptions(topic=topic)) == sorted([subscription, other])


def test_errors_are_the_services_status_codes(clients):
    _, pub, sub, topic, subscription = clients
    with pytest.raises(exceptions.AlreadyExists):
        pub.create_topic(name=topic)
    with pytest.raises(exceptions.NotFound):
        pub.get_topic(topic=pub.topic_path("p", "missing"))
    with pytest.raises(exceptions.NotFound):
        sub.create_subscription(name=subscription, topic=pub.topic_path("p", "missing"))
    with pytest.raises(exceptions.NotFound):
        sub.pull(subscription=sub.subscription_path("p", "missing"), max_messages=1, timeout=5)
    future = pub.publish(pub.topic_path("p", "missing"), b"x")
    with pytest.raises(exceptions.NotFound):
        future.result(10)


def test_emulate_command_serves_on_loopback_only(monkeypatch):
    port = free_port()
    cmd = [sys.executable, "-m", "synthsieve.cli", "emulate", "pubsub", "--port", str(port)]
    with running(cmd, port):
        for k, v in {**CLOUD_ENV, "PUBSUB_EMULATOR_HOST": f"127.0.0.1:{port}"}.items():
            monkeypatch.setenv(k, v)
        from google.cloud import pubsub_v1

        pub = pubsub_v1.PublisherClient()
        topic = pub.topic_path("p", "t")
        assert pub.create_topic(name=topic).name == topic
        # bound to 127.0.0.1 only, read from the kernel's socket table (no connection to
        # any other address is ever attempted)
        assert listening_addresses(port) == {"127.0.0.1"}


def test_quick_start_emulator_creates_its_topics_and_publish_sends_one_message_per_image(
        monkeypatch, tmp_path, capsys):
    from corpus import noise_png

    from synthsieve.cli import main
    from synthsieve.io.sources import image_id_for

    port = free_port()
    cmd = [sys.executable, "-m", "synthsieve.cli", "emulate", "pubsub", "--port", str(port),
           "--topic", "uploads", "--subscription", "uploads-sub=uploads",
           "--subscription", "flags-sub=flags"]
    images = tmp_path / "imgs"
    images.mkdir()
    for i in range(3):
        (images / f"{i}.png").write_bytes(noise_png(i, side=16))
    (images / "notes.txt").write_text("listed like any file: the stream makes it an error row")
    with running(cmd, port):
        for k, v in {**CLOUD_ENV, "PUBSUB_EMULATOR_HOST": f"127.0.0.1:{port}"}.items():
            monkeypatch.setenv(k, v)
        from google.cloud import pubsub_v1

        topic = "projects/synthsieve-demo/topics/uploads"
        assert main(["publish", str(images), "--topic", topic]) == 0
        assert capsys.readouterr().out.strip() == f"published 4 references to {topic}"
        got = pull_all(pubsub_v1.SubscriberClient(),
                       "projects/synthsieve-demo/subscriptions/uploads-sub", 4)
        sent = {m.message.data.decode(): dict(m.message.attributes) for m in got}
        files = sorted(images.iterdir())
        assert set(sent) == {f"file://{f}" for f in files}
        # the ids an audit of the same directory gives, so stream and audit rows join
        assert {a["image_id"] for a in sent.values()} == {image_id_for(str(f)) for f in files}
        # the topic a subscription names was created with it
        pub = pubsub_v1.PublisherClient()
        assert pub.get_topic(topic="projects/synthsieve-demo/topics/flags").name
        assert main(["publish", str(images), "--topic",
                     "projects/synthsieve-demo/topics/missing"]) == 1
        assert "does not exist" in capsys.readouterr().err
    assert main(["publish", str(images), "--topic", "uploads"]) == 2
    assert "must look like projects/PROJECT/topics/NAME" in capsys.readouterr().err
