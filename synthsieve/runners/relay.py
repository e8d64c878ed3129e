"""Acknowledge-after-commit for the streaming job on an in-process runner.

Beam's DirectRunner acknowledges each Pub/Sub message the moment it pulls it
(runners/direct/transform_evaluator.py), so messages whose rows still wait in an open window
are lost when the job stops or dies. Its streaming mode runs no other unbounded source
(splittable DoFns and processing-time polling end at once there), so the fix has to sit in
front of it rather than inside it:

- this relay pulls the user's subscription itself and acknowledges nothing yet; it keeps the
  messages leased (ModifyAckDeadline every lease/3) while they are in flight;
- it republishes each message to a private per-run topic, which the pipeline reads with
  ReadFromPubSub (and which may be acknowledged early: losing it loses nothing);
- the windowed writers report each image_id they have committed (io/commits.py),
  and only then is the original message acknowledged;
- a graceful stop stops pulling and waits for what is in flight to be written; a crash
  leaves the originals unacknowledged, so Pub/Sub delivers them again to the next run.

Dataflow needs none of this: its Pub/Sub source acknowledges after the runner's commit.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from contextlib import ExitStack
from typing import Any

from synthsieve.io import commits
from synthsieve.io.messages import MESSAGE_ID_ATTRIBUTE, parse_message

__all__ = [
    "ACK_CHUNK", "CLOSE_RPC_TIMEOUT_S", "DEFAULT_SOURCE_LOST_AFTER_S", "PULL_MAX",
    "PULL_RPC_TIMEOUT_S", "AckAfterCommitRelay", "relay_names",
]

log = logging.getLogger("synthsieve.stream")

PULL_MAX = 100
PULL_RPC_TIMEOUT_S = 10.0
# Each RPC of the shutdown gets this long and no retries: with the service gone, the client
# library's default retry policy would keep one call going for minutes.
CLOSE_RPC_TIMEOUT_S = 5.0
DEFAULT_SOURCE_LOST_AFTER_S = 120.0
ACK_CHUNK = 1000  # Pub/Sub refuses requests much past this many ack ids


def _once(timeout: float) -> dict[str, Any]:
    """RPC arguments for one attempt of at most `timeout` seconds, no client retries."""
    return {"retry": None, "timeout": timeout}


def _short(exc: BaseException) -> str:
    """An RPC error in one line (gRPC's carry their whole debug context)."""
    return f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"


def _chunks(items: list[str], size: int = ACK_CHUNK) -> list[list[str]]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def relay_names(subscription: str, run_id: str) -> tuple[str, str]:
    """projects/P/subscriptions/S -> the run's private topic and subscription."""
    _, project, _, short = subscription.split("/")
    name = f"{short}-relay-{run_id}"[:255]
    return f"projects/{project}/topics/{name}", f"projects/{project}/subscriptions/{name}"


class AckAfterCommitRelay:
    """Use as a context manager around the pipeline's run; `relay_subscription` is what the
    pipeline reads."""

    def __init__(self, subscription: str, run_id: str, lease_s: float = 30.0,
                 max_outstanding: int = 2000,
                 source_lost_after_s: float = DEFAULT_SOURCE_LOST_AFTER_S):
        self.subscription = subscription
        self.run_id = run_id
        self.relay_topic, self.relay_subscription = relay_names(subscription, run_id)
        self.lease_s = lease_s
        self.max_outstanding = max_outstanding
        self._lock = threading.Lock()
        self._outstanding: dict[str, list[str]] = defaultdict(list)  # image_id -> ack ids
        self._pulling = threading.Event()
        self._closing = threading.Event()
        self._threads: list[threading.Thread] = []
        self.stats = {"pulled": 0, "acknowledged": 0, "returned": 0}
        self.source_lost_after_s = source_lost_after_s
        self.lost: str | None = None  # why the source is deemed gone, once it is
        self.left_behind: list[str] = []  # what close() could not delete
        self._sub: Any = None
        self._pub: Any = None
        self._listening = ExitStack()

    # -- lifecycle --------------------------------------------------------------------------

    def __enter__(self) -> AckAfterCommitRelay:
        from google.cloud import pubsub_v1

        self._sub = pubsub_v1.SubscriberClient()
        self._pub = pubsub_v1.PublisherClient()
        self._pub.create_topic(name=self.relay_topic)
        self._sub.create_subscription(name=self.relay_subscription, topic=self.relay_topic,
                                      ack_deadline_seconds=600)
        self._listening.enter_context(commits.listening(self.run_id, self._on_commit))
        self._pulling.set()
        for target in (self._pull_loop, self._lease_loop):
            thread = threading.Thread(target=target, name=f"relay-{target.__name__}",
                                      daemon=True)
            thread.start()
            self._threads.append(thread)
        log.info("relay %s -> %s (acknowledged after commit)", self.subscription,
                 self.relay_subscription)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def stop_pulling(self) -> None:
        self._pulling.clear()

    def _leased(self) -> list[str]:
        with self._lock:
            return [a for ids in self._outstanding.values() for a in ids]

    @property
    def in_flight(self) -> int:
        return len(self._leased())

    def wait_drained(self, timeout_s: float, gave_up: Any = None) -> bool:
        """After stop_pulling: True once everything pulled has been committed and acked."""
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            if self.in_flight == 0:
                return True
            if gave_up is not None and gave_up():
                break
            time.sleep(0.2)
        return self.in_flight == 0

    def close(self) -> None:
        """Hands back what was never committed (deadline 0: delivered again at once) and
        deletes the private topic."""
        if self._closing.is_set():
            return
        self._pulling.clear()
        self._closing.set()
        for thread in self._threads:
            thread.join(PULL_RPC_TIMEOUT_S + 5)
        self._listening.close()
        with self._lock:
            left = [a for ids in self._outstanding.values() for a in ids]
            self._outstanding.clear()
        if left:
            self._return(left, timeout=CLOSE_RPC_TIMEOUT_S)
        once = _once(CLOSE_RPC_TIMEOUT_S)
        for name, delete in (
                (self.relay_subscription, lambda: self._sub.delete_subscription(
                    subscription=self.relay_subscription, **once)),
                (self.relay_topic, lambda: self._pub.delete_topic(
                    topic=self.relay_topic, **once))):
            try:
                delete()
            except Exception as exc:  # noqa: BLE001 - an orphan to clean up, not lost data
                log.warning("relay: could not delete %s: %s", name, _short(exc))
                self.left_behind.append(name)
        self._sub.close()

    # -- threads ----------------------------------------------------------------------------

    def _pull_loop(self) -> None:
        from google.api_core import exceptions

        failing_since: float | None = None
        while not self._closing.is_set():
            room = self.max_outstanding - self.in_flight
            if not self._pulling.is_set() or room <= 0:
                time.sleep(0.1)
                continue
            try:
                # No client-side retries: this loop retries, and counts how long it fails.
                response = self._sub.pull(subscription=self.subscription,
                                          max_messages=min(PULL_MAX, room),
                                          **_once(PULL_RPC_TIMEOUT_S))
            except exceptions.DeadlineExceeded:
                failing_since = None
                continue
            except Exception as exc:  # noqa: BLE001 - the service may come back, for a while
                now = time.monotonic()
                failing_since = failing_since or now
                if now - failing_since >= self.source_lost_after_s:
                    self.lost = (f"pulling {self.subscription} failed for "
                                 f"{now - failing_since:.0f} s: {_short(exc)}")
                    log.error("relay: %s", self.lost)
                    return
                log.warning("relay: pull from %s failed: %s", self.subscription, _short(exc))
                time.sleep(1.0)
                continue
            failing_since = None
            received = list(response.received_messages)
            if not received:
                continue
            if not self._pulling.is_set():  # stopped while the pull waited: give them back
                self._return([r.ack_id for r in received])
                continue
            self._forward(received)

    def _forward(self, received: list[Any]) -> None:
        self._set_deadline([r.ack_id for r in received], int(self.lease_s))
        keyed = []
        for r in received:
            message = r.message
            attrs = dict(message.attributes)
            # the same function the pipeline parses with, so the ids agree
            parsed = parse_message(bytes(message.data), attrs, message.message_id, self.run_id)
            image_id = parsed.image_id if hasattr(parsed, "image_id") else parsed["image_id"]
            keyed.append((image_id, r.ack_id, message, attrs))
        with self._lock:  # before publishing: the commit may come back before publish returns
            for image_id, ack_id, _, _ in keyed:
                self._outstanding[image_id].append(ack_id)
            self.stats["pulled"] += len(keyed)
        futures = []
        for image_id, ack_id, message, attrs in keyed:
            attrs[MESSAGE_ID_ATTRIBUTE] = message.message_id
            futures.append((image_id, ack_id,
                            self._pub.publish(self.relay_topic, bytes(message.data), **attrs)))
        failed = []
        for image_id, ack_id, future in futures:
            try:
                future.result(timeout=60)
            except Exception as exc:  # noqa: BLE001 - handed back, delivered again
                log.warning("relay: could not forward %s: %s", image_id, exc)
                with self._lock:
                    if ack_id in self._outstanding.get(image_id, []):
                        self._outstanding[image_id].remove(ack_id)
                failed.append(ack_id)
        if failed:
            self._return(failed)

    def _lease_loop(self) -> None:
        while not self._closing.wait(self.lease_s / 3):
            leased = self._leased()
            try:
                self._set_deadline(leased, int(self.lease_s), timeout=PULL_RPC_TIMEOUT_S)
            except Exception as exc:  # noqa: BLE001 - worst case: delivered twice
                log.warning("relay: could not extend %d leases: %s", len(leased), exc)

    def _on_commit(self, image_ids: list[str]) -> None:
        with self._lock:
            done = [a for i in image_ids for a in self._outstanding.pop(i, [])]
        if not done:
            return
        try:
            for chunk in _chunks(done):  # bounded: the writer waits for this call
                self._sub.acknowledge(subscription=self.subscription, ack_ids=chunk,
                                      **_once(PULL_RPC_TIMEOUT_S))
        except Exception as exc:  # noqa: BLE001 - the rows are written; at worst a duplicate
            log.warning("relay: could not acknowledge %d committed messages: %s", len(done),
                        exc)
            return
        with self._lock:
            self.stats["acknowledged"] += len(done)

    def _set_deadline(self, ack_ids: list[str], seconds: int,
                      timeout: float | None = None) -> None:
        once = _once(timeout) if timeout else {}
        for chunk in _chunks(ack_ids):
            self._sub.modify_ack_deadline(subscription=self.subscription, ack_ids=chunk,
                                          ack_deadline_seconds=seconds, **once)

    def _return(self, ack_ids: list[str], timeout: float | None = None) -> None:
        """Deadline 0: Pub/Sub delivers them again at once."""
        try:
            self._set_deadline(ack_ids, 0, timeout)
            self.stats["returned"] += len(ack_ids)
        except Exception as exc:  # noqa: BLE001 - they come back when their lease ends
            log.warning("relay: could not hand back %d messages (%s); Pub/Sub delivers them "
                        "again when their lease of %gs ends", len(ack_ids), _short(exc),
                        self.lease_s)
