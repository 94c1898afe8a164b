"""Delivery semantics every bus must have, run against KafkaBus (real Tansu broker) and LocalBus.

A test module subclasses ``BusSemantics`` and provides a ``harness`` fixture: a factory of bus clients
that share one "cluster", and a way to write raw bytes to a topic (what a buggy or hostile producer sends).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol

import pytest

from osm_trustmgr.bus.base import Bus, BusError, Handler, Message
from osm_trustmgr.bus.codec import MessageError

RETRIES = 2  # harnesses build buses with handler_retries=RETRIES and a tiny backoff


class Harness(Protocol):
    def bus(self, group_id: str) -> Bus: ...

    async def publish_raw(self, topic: str, key: bytes | None, value: bytes | None) -> None: ...


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def wait_until(predicate: Callable[[], bool], timeout: float = 15.0, what: str = "condition") -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


class Recorder:
    """A handler that records what it got."""

    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def __call__(self, message: Message) -> None:
        self.messages.append(message)

    @property
    def keys(self) -> list[str]:
        return [m.key for m in self.messages]

    @property
    def values(self) -> list[dict[str, Any]]:
        return [m.value for m in self.messages]

    async def wait(self, count: int, timeout: float = 15.0) -> None:
        await wait_until(lambda: len(self.messages) >= count, timeout, f"{count} messages (have {self.keys})")


@contextlib.asynccontextmanager
async def consuming(bus: Bus, topics: list[str], handler: Handler, group_id: str | None = None) -> AsyncIterator[Any]:
    """A started bus with one consumer running; stopped (and the consumer awaited) on exit."""
    await bus.start()
    task = asyncio.create_task(bus.run_consumer(topics, handler, group_id=group_id))
    try:
        yield task
    finally:
        await bus.stop()
        await asyncio.wait_for(task, 15)


def records(caplog: pytest.LogCaptureFixture, text: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name.startswith("osm_trustmgr.bus") and text in r.getMessage()]


NSLCMOP = {
    "_id": "a639fac7-e0bb-4225-8ecb-c1f8efcc125e",
    "nsInstanceId": "f48163a6-c807-47bc-9682-f72caef5af85",
    "lcmOperationType": "instantiate",
    "operationState": "PROCESSING",
    "operationParams": {
        "nsName": "trusted ns é",
        "vimAccountId": "4a4425f7-3e72-4d45-a4ec-4241186f3547",
        "vnf": [{"member-vnf-index": "1", "vimAccountId": "4a4425f7-3e72-4d45-a4ec-4241186f3547"}],
        "additionalParamsForNs": {"trust_loa": 3},
        "lcmOperationType": "instantiate",
    },
    "isAutomaticInvocation": False,
    "startTime": 1575034637.0444312,
    "_admin": {"projects_read": ["d0d4f1b3"], "projects_write": ["d0d4f1b3"]},
}


class BusSemantics:
    """The shared suite. Fixtures a subclass provides: ``harness``."""

    async def test_round_trip_with_string_key(self, harness: Harness) -> None:
        topic, got = unique("ns"), Recorder()
        bus = harness.bus(unique("trustmgr"))
        async with consuming(bus, [topic], got):
            await bus.publish(topic, "instantiate", NSLCMOP)
            await got.wait(1)
        [message] = got.messages
        assert (message.topic, message.key, message.value) == (topic, "instantiate", NSLCMOP)
        assert message.offset >= 0 and message.partition >= 0 and message.raw_size > len("instantiate")

    async def test_own_group_gets_every_message_next_to_lcm(self, harness: Harness) -> None:
        topic, ours, lcm = unique("ns"), Recorder(), Recorder()
        trust_bus, lcm_bus = harness.bus(unique("trustmgr")), harness.bus(unique("lcm-server"))
        async with consuming(trust_bus, [topic], ours), consuming(lcm_bus, [topic], lcm):
            for i in range(6):
                await trust_bus.publish(topic, f"op{i}", {"i": i})
            await ours.wait(6)
            await lcm.wait(6)
            await asyncio.sleep(0.2)
        assert sorted(ours.keys) == sorted(lcm.keys) == [f"op{i}" for i in range(6)]

    async def test_stop_during_handler_redelivers_to_the_same_group(self, harness: Harness) -> None:
        topic, group = unique("ns"), unique("trustmgr")
        started = asyncio.Event()

        async def stuck(message: Message) -> None:
            started.set()
            await asyncio.Event().wait()  # never returns: the bus is stopped meanwhile

        publisher = harness.bus(unique("nbi-server"))
        await publisher.start()
        try:
            async with consuming(harness.bus(group), [topic], stuck) as first:
                await publisher.publish(topic, "instantiate", {"n": 1})
                await asyncio.wait_for(started.wait(), 15)
        finally:
            await publisher.stop()
        assert first.done() and first.exception() is None  # stop() makes run_consumer return normally

        again = Recorder()
        async with consuming(harness.bus(group), [topic], again):
            await again.wait(1)
        assert again.values == [{"n": 1}]

    async def test_handled_messages_are_not_redelivered(self, harness: Harness) -> None:
        topic, group, first, second = unique("ns"), unique("trustmgr"), Recorder(), Recorder()
        bus = harness.bus(group)
        async with consuming(bus, [topic], first):
            for key in ("a", "b"):
                await bus.publish(topic, key, {"k": key})
            await first.wait(2)
        bus = harness.bus(group)
        async with consuming(bus, [topic], second):
            await bus.publish(topic, "c", {"k": "c"})
            await second.wait(1)
            await asyncio.sleep(0.5)  # a redelivery of a or b would arrive with the first fetch
        assert sorted(first.keys) == ["a", "b"] and second.keys == ["c"]

    async def test_malformed_messages_are_skipped_and_logged(
        self, harness: Harness, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.INFO, logger="osm_trustmgr.bus")
        topic, got = unique("ns"), Recorder()
        bad = {
            b"yaml": (b"{a: [1, 2", "invalid YAML"),
            b"list": (b"[1, 2, 3]", "not a mapping"),
            b"huge": (b"{a: " + b"x" * (2 << 20) + b"}", "too large"),
            b"latin1": ("{a: caf\u00e9}".encode("latin-1"), "not UTF-8"),
            b"tombstone": (None, "no value"),
        }
        for key, (value, _) in bad.items():
            await harness.publish_raw(topic, key, value)
        await harness.publish_raw(topic, None, b"{a: 1}")
        await harness.publish_raw(topic, b"ok", b'{"json": [true, null]}')  # JSON is YAML too
        async with consuming(harness.bus(unique("trustmgr")), [topic], got):
            await got.wait(1)
            await wait_until(lambda: len(records(caplog, "skipping undecodable")) >= 6, what="6 skip records")
        assert got.keys == ["ok"] and got.values == [{"json": [True, None]}]
        skipped = records(caplog, "skipping undecodable")
        assert len(skipped) == 6
        reasons = " | ".join(r.getMessage() for r in skipped)
        for _, reason in bad.values():
            assert reason in reasons
        assert "no key" in reasons
        for record in skipped:  # coordinates are in the message and as structured fields
            assert record.levelno == logging.WARNING and record.topic == topic  # type: ignore[attr-defined]
            assert f"{topic}/{record.partition}@{record.offset}" in record.getMessage()  # type: ignore[attr-defined]

    async def test_failing_handler_is_skipped_after_retries(
        self, harness: Harness, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.INFO, logger="osm_trustmgr.bus")
        topic, attempts, handled = unique("ns"), [], Recorder()

        async def handler(message: Message) -> None:
            if message.value["poison"]:
                attempts.append(message.offset)
                raise RuntimeError("handler bug")
            await handled(message)

        bus = harness.bus(unique("trustmgr"))
        async with consuming(bus, [topic], handler):
            await bus.publish(topic, "instantiate", {"poison": True})  # same key: same partition, in order
            await bus.publish(topic, "instantiate", {"poison": False})
            await handled.wait(1)
        assert len(attempts) == RETRIES + 1 and len(set(attempts)) == 1
        [given_up] = records(caplog, "giving up")
        assert given_up.levelno == logging.ERROR and given_up.exc_info is not None
        assert f"{topic}/" in given_up.getMessage()
        assert len(records(caplog, "handler failed")) == RETRIES

    async def test_handler_that_recovers_is_not_skipped(self, harness: Harness) -> None:
        topic, calls = unique("ns"), []

        async def flaky(message: Message) -> None:
            calls.append(message.key)
            if len(calls) == 1:
                raise ConnectionError("database away for a moment")

        bus = harness.bus(unique("trustmgr"))
        async with consuming(bus, [topic], flaky):
            await bus.publish(topic, "instantiate", {"n": 1})
            await wait_until(lambda: len(calls) >= 2, what="a retry")
            await asyncio.sleep(0.2)
        assert calls == ["instantiate", "instantiate"]

    async def test_publish_refuses_what_osm_could_not_read(self, harness: Harness) -> None:
        bus = harness.bus(unique("trustmgr"))
        with pytest.raises(BusError):
            await bus.publish(unique("ns"), "k", {"a": 1})  # not started
        await bus.start()
        try:
            with pytest.raises(MessageError, match="cannot be encoded"):
                await bus.publish(unique("ns"), "k", {"a": object()})
            with pytest.raises(MessageError, match="too large"):
                await bus.publish(unique("ns"), "k", {"a": "x" * (1 << 20)})
            with pytest.raises(MessageError, match="key"):
                await bus.publish(unique("ns"), "", {"a": 1})
        finally:
            await bus.stop()

    async def test_run_consumer_needs_a_started_bus(self, harness: Harness) -> None:
        with pytest.raises(BusError, match="not started"):
            await harness.bus(unique("trustmgr")).run_consumer([unique("ns")], Recorder())
