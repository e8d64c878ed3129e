"""A small, real Pub/Sub emulator: the gRPC Publisher and Subscriber services that
google-cloud-pubsub and Beam call, on 127.0.0.1.

Google's emulator ships only with the gcloud SDK, which cannot be installed here. Clients
reach this one exactly as they reach Google's: PUBSUB_EMULATOR_HOST=127.0.0.1:PORT.

Implemented: CreateTopic, GetTopic, ListTopics, DeleteTopic, ListTopicSubscriptions, Publish;
CreateSubscription, GetSubscription, ListSubscriptions, DeleteSubscription, Pull,
StreamingPull, Acknowledge, ModifyAckDeadline. Semantics that matter to a consumer:
- each subscription gets every message published to its topic after it was created;
- a pulled message is outstanding until acknowledged; when its ack deadline passes (or it
  is nacked with ModifyAckDeadline 0) it is delivered again, with a new ack id, so delivery
  is at least once, as with the real service;
- Pull waits for messages up to a few seconds, like the service, instead of spinning.
Not implemented: snapshots, seek, push, ordering guarantees, filters, dead-letter policies,
schemas, exactly-once delivery; those RPCs answer UNIMPLEMENTED.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
import uuid
from collections import deque
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import empty_pb2, timestamp_pb2
from google.pubsub_v1.types import pubsub as t

from synthsieve.emulators.common import HOST

__all__ = ["DEFAULT_ACK_DEADLINE_S", "PULL_WAIT_S", "PubSubEmulator", "PubSubState"]

log = logging.getLogger("synthsieve.pubsub")

PULL_WAIT_S = 5.0  # how long an empty Pull waits for a message before answering empty
DEFAULT_ACK_DEADLINE_S = 10


def _pb(message_type: Any) -> Any:
    """The raw protobuf class behind a proto-plus type (what goes on the wire)."""
    return message_type.pb()


@dataclass
class _Message:
    message_id: str
    data: bytes
    attributes: dict[str, str]
    ordering_key: str
    publish_time: float


@dataclass
class _Subscription:
    name: str
    topic: str
    ack_deadline_s: int
    pending: deque[_Message] = field(default_factory=deque)
    # ack_id -> (message, deadline as time.monotonic(), delivery attempt)
    outstanding: dict[str, tuple[_Message, float, int]] = field(default_factory=dict)
    attempts: dict[str, int] = field(default_factory=dict)  # message_id -> deliveries


class PubSubState:
    """Topics, subscriptions and messages; every method holds the one condition lock."""

    def __init__(self):
        self.cond = threading.Condition()
        self.topics: dict[str, set[str]] = {}
        self.subs: dict[str, _Subscription] = {}
        self._ids = itertools.count(1)
        self.stats = {"published": 0, "delivered": 0, "redelivered": 0, "acked": 0}

    # --- topics -------------------------------------------------------------------------
    def create_topic(self, name: str) -> bool:
        with self.cond:
            if name in self.topics:
                return False
            self.topics[name] = set()
            return True

    def publish(self, topic: str, messages: list[Any]) -> list[str] | None:
        with self.cond:
            if topic not in self.topics:
                return None
            ids = []
            now = time.time()
            for m in messages:
                msg = _Message(str(next(self._ids)), bytes(m.data), dict(m.attributes),
                               m.ordering_key, now)
                for sub in self.topics[topic]:
                    self.subs[sub].pending.append(msg)
                ids.append(msg.message_id)
            self.stats["published"] += len(ids)
            self.cond.notify_all()
            return ids

    # --- subscriptions ------------------------------------------------------------------
    def create_subscription(self, name: str, topic: str, ack_deadline_s: int) -> str | None:
        """None when created, else the reason it was not."""
        with self.cond:
            if name in self.subs:
                return "exists"
            if topic not in self.topics:
                return "no topic"
            self.subs[name] = _Subscription(name, topic, ack_deadline_s or
                                            DEFAULT_ACK_DEADLINE_S)
            self.topics[topic].add(name)
            return None

    def delete_subscription(self, name: str) -> bool:
        with self.cond:
            sub = self.subs.pop(name, None)
            if sub is None:
                return False
            self.topics.get(sub.topic, set()).discard(name)
            return True

    def _expire(self, sub: _Subscription) -> None:
        now = time.monotonic()
        expired = [a for a, (_, deadline, _) in sub.outstanding.items() if deadline <= now]
        for ack_id in reversed(expired):  # back at the front, oldest first
            msg, _, _ = sub.outstanding.pop(ack_id)
            sub.pending.appendleft(msg)
            self.stats["redelivered"] += 1

    def take(self, name: str, max_messages: int, deadline_s: float | None = None
             ) -> list[tuple[str, _Message, int]] | None:
        """Up to max_messages (ack_id, message, delivery attempt); None if no such
        subscription."""
        with self.cond:
            sub = self.subs.get(name)
            if sub is None:
                return None
            self._expire(sub)
            out = []
            now = time.monotonic()
            while sub.pending and len(out) < max_messages:
                msg = sub.pending.popleft()
                ack_id = f"{msg.message_id}-{uuid.uuid4().hex[:12]}"
                attempt = sub.attempts.get(msg.message_id, 0) + 1
                sub.attempts[msg.message_id] = attempt
                seconds = deadline_s if deadline_s is not None else sub.ack_deadline_s
                sub.outstanding[ack_id] = (msg, now + seconds, attempt)
                out.append((ack_id, msg, attempt))
            self.stats["delivered"] += len(out)
            return out

    def wait_for_messages(self, name: str, timeout: float) -> None:
        """Returns when the subscription may have something to deliver, or at timeout."""
        end = time.monotonic() + timeout
        with self.cond:
            while True:
                sub = self.subs.get(name)
                if sub is None or sub.pending:
                    return
                now = time.monotonic()
                next_expiry = min((d for _, d, _ in sub.outstanding.values()), default=end)
                if next_expiry <= now or now >= end:
                    return
                self.cond.wait(min(end, next_expiry) - now)

    def acknowledge(self, name: str, ack_ids: list[str]) -> bool:
        with self.cond:
            sub = self.subs.get(name)
            if sub is None:
                return False
            for ack_id in ack_ids:
                if sub.outstanding.pop(ack_id, None) is not None:
                    self.stats["acked"] += 1
            return True

    def modify_deadline(self, name: str, ack_ids: list[str], seconds: int) -> bool:
        with self.cond:
            sub = self.subs.get(name)
            if sub is None:
                return False
            now = time.monotonic()
            for ack_id in ack_ids:
                if ack_id in sub.outstanding:
                    msg, _, attempt = sub.outstanding[ack_id]
                    sub.outstanding[ack_id] = (msg, now + seconds, attempt)
            if seconds == 0:
                self._expire(sub)
                self.cond.notify_all()
            return True


def _received(ack_id: str, msg: _Message, attempt: int) -> Any:
    ts = timestamp_pb2.Timestamp()
    ts.FromNanoseconds(int(msg.publish_time * 1e9))
    return _pb(t.ReceivedMessage)(
        ack_id=ack_id, delivery_attempt=attempt,
        message=_pb(t.PubsubMessage)(data=msg.data, attributes=msg.attributes,
                                     message_id=msg.message_id, publish_time=ts,
                                     ordering_key=msg.ordering_key))


class _Services:
    def __init__(self, state: PubSubState):
        self.state = state
        self._stopping = threading.Event()

    # --- Publisher ----------------------------------------------------------------------
    def CreateTopic(self, request, context):
        if not self.state.create_topic(request.name):
            context.abort(grpc.StatusCode.ALREADY_EXISTS, "Topic already exists")
        return _pb(t.Topic)(name=request.name)

    def GetTopic(self, request, context):
        if request.topic not in self.state.topics:
            context.abort(grpc.StatusCode.NOT_FOUND, "Topic not found")
        return _pb(t.Topic)(name=request.topic)

    def ListTopics(self, request, context):
        prefix = request.project + "/topics/"
        return _pb(t.ListTopicsResponse)(topics=[
            _pb(t.Topic)(name=n) for n in sorted(self.state.topics) if n.startswith(prefix)])

    def ListTopicSubscriptions(self, request, context):
        if request.topic not in self.state.topics:
            context.abort(grpc.StatusCode.NOT_FOUND, "Topic not found")
        return _pb(t.ListTopicSubscriptionsResponse)(
            subscriptions=sorted(self.state.topics[request.topic]))

    def DeleteTopic(self, request, context):
        with self.state.cond:
            if self.state.topics.pop(request.topic, None) is None:
                context.abort(grpc.StatusCode.NOT_FOUND, "Topic not found")
        return empty_pb2.Empty()

    def Publish(self, request, context):
        if not request.messages:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "No messages to publish")
        for m in request.messages:
            if not m.data and not m.attributes:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                              "A message needs data or attributes")
        ids = self.state.publish(request.topic, list(request.messages))
        if ids is None:
            context.abort(grpc.StatusCode.NOT_FOUND, "Topic not found")
        return _pb(t.PublishResponse)(message_ids=ids)

    # --- Subscriber ---------------------------------------------------------------------
    def CreateSubscription(self, request, context):
        why = self.state.create_subscription(request.name, request.topic,
                                             request.ack_deadline_seconds)
        if why == "exists":
            context.abort(grpc.StatusCode.ALREADY_EXISTS, "Subscription already exists")
        if why == "no topic":
            context.abort(grpc.StatusCode.NOT_FOUND, "Topic not found")
        return self._subscription(request.name)

    def _subscription(self, name: str) -> Any:
        sub = self.state.subs[name]
        return _pb(t.Subscription)(name=name, topic=sub.topic,
                                   ack_deadline_seconds=sub.ack_deadline_s)

    def GetSubscription(self, request, context):
        if request.subscription not in self.state.subs:
            context.abort(grpc.StatusCode.NOT_FOUND, "Subscription does not exist")
        return self._subscription(request.subscription)

    def ListSubscriptions(self, request, context):
        prefix = request.project + "/subscriptions/"
        return _pb(t.ListSubscriptionsResponse)(subscriptions=[
            self._subscription(n) for n in sorted(self.state.subs) if n.startswith(prefix)])

    def DeleteSubscription(self, request, context):
        if not self.state.delete_subscription(request.subscription):
            context.abort(grpc.StatusCode.NOT_FOUND, "Subscription does not exist")
        return empty_pb2.Empty()

    def Pull(self, request, context):
        if request.max_messages <= 0:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "max_messages must be positive")
        got = self.state.take(request.subscription, request.max_messages)
        if got is None:
            context.abort(grpc.StatusCode.NOT_FOUND, "Subscription does not exist")
        if not got and not request.return_immediately:
            remaining = context.time_remaining()
            wait = PULL_WAIT_S if remaining is None else max(0.0, min(PULL_WAIT_S,
                                                                      remaining - 0.5))
            self.state.wait_for_messages(request.subscription, wait)
            got = self.state.take(request.subscription, request.max_messages) or []
        return _pb(t.PullResponse)(received_messages=[_received(*g) for g in got])

    def Acknowledge(self, request, context):
        if not self.state.acknowledge(request.subscription, list(request.ack_ids)):
            context.abort(grpc.StatusCode.NOT_FOUND, "Subscription does not exist")
        return empty_pb2.Empty()

    def ModifyAckDeadline(self, request, context):
        if not 0 <= request.ack_deadline_seconds <= 600:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          "ack_deadline_seconds must be between 0 and 600")
        if not self.state.modify_deadline(request.subscription, list(request.ack_ids),
                                          request.ack_deadline_seconds):
            context.abort(grpc.StatusCode.NOT_FOUND, "Subscription does not exist")
        return empty_pb2.Empty()

    def StreamingPull(self, request_iterator, context):
        first = next(request_iterator)
        name = first.subscription
        if name not in self.state.subs:
            context.abort(grpc.StatusCode.NOT_FOUND, "Subscription does not exist")
        deadline_s = first.stream_ack_deadline_seconds or None
        done = threading.Event()

        def handle(req) -> None:
            if req.ack_ids:
                self.state.acknowledge(name, list(req.ack_ids))
            for ack_id, seconds in zip(req.modify_deadline_ack_ids,
                                       req.modify_deadline_seconds, strict=False):
                self.state.modify_deadline(name, [ack_id], seconds)

        def read_requests() -> None:
            try:
                for req in request_iterator:
                    handle(req)
            except Exception:  # the client went away
                pass
            finally:
                done.set()
                with self.state.cond:
                    self.state.cond.notify_all()

        handle(first)
        threading.Thread(target=read_requests, daemon=True).start()
        while not done.is_set() and context.is_active() and not self._stopping.is_set():
            got = self.state.take(name, 100, deadline_s)
            if got is None:
                context.abort(grpc.StatusCode.NOT_FOUND, "Subscription does not exist")
            if got:
                yield _pb(t.StreamingPullResponse)(
                    received_messages=[_received(*g) for g in got])
            else:
                self.state.wait_for_messages(name, 1.0)


_PUBLISHER = {
    "CreateTopic": (t.Topic, "unary"), "GetTopic": (t.GetTopicRequest, "unary"),
    "ListTopics": (t.ListTopicsRequest, "unary"),
    "ListTopicSubscriptions": (t.ListTopicSubscriptionsRequest, "unary"),
    "DeleteTopic": (t.DeleteTopicRequest, "unary"), "Publish": (t.PublishRequest, "unary"),
}
_SUBSCRIBER = {
    "CreateSubscription": (t.Subscription, "unary"),
    "GetSubscription": (t.GetSubscriptionRequest, "unary"),
    "ListSubscriptions": (t.ListSubscriptionsRequest, "unary"),
    "DeleteSubscription": (t.DeleteSubscriptionRequest, "unary"),
    "Pull": (t.PullRequest, "unary"), "Acknowledge": (t.AcknowledgeRequest, "unary"),
    "ModifyAckDeadline": (t.ModifyAckDeadlineRequest, "unary"),
    "StreamingPull": (t.StreamingPullRequest, "stream"),
}


def _handler(service: str, methods: dict, impl: _Services) -> grpc.GenericRpcHandler:
    handlers = {}
    for method, (request_type, kind) in methods.items():
        make = (grpc.unary_unary_rpc_method_handler if kind == "unary"
                else grpc.stream_stream_rpc_method_handler)
        handlers[method] = make(getattr(impl, method),
                                request_deserializer=_pb(request_type).FromString,
                                response_serializer=lambda m: m.SerializeToString())
    return grpc.method_handlers_generic_handler(service, handlers)


class PubSubEmulator:
    """The server; `with PubSubEmulator(port=0) as emu:` then PUBSUB_EMULATOR_HOST=emu.host."""

    def __init__(self, port: int = 0, workers: int = 32):
        self.state = PubSubState()
        self._services = _Services(self.state)
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers))
        self._server.add_generic_rpc_handlers((
            _handler("google.pubsub.v1.Publisher", _PUBLISHER, self._services),
            _handler("google.pubsub.v1.Subscriber", _SUBSCRIBER, self._services),
        ))
        self.port = self._server.add_insecure_port(f"{HOST}:{port}")
        if not self.port:
            raise OSError(f"cannot bind {HOST}:{port}")

    @property
    def host(self) -> str:
        return f"{HOST}:{self.port}"

    def start(self) -> PubSubEmulator:
        self._server.start()
        return self

    def stop(self, grace: float = 1.0) -> None:
        self._services._stopping.set()
        with self.state.cond:
            self.state.cond.notify_all()
        self._server.stop(grace).wait()

    def __enter__(self) -> PubSubEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait(self) -> None:
        self._server.wait_for_termination()
