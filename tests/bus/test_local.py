"""LocalBus: the shared delivery semantics, plus what only the in-process broker has."""

from __future__ import annotations

import asyncio

import pytest

from osm_trustmgr.bus.base import Bus, Message
from osm_trustmgr.bus.local import LocalBroker, LocalBus

from .semantics import RETRIES, BusSemantics, Recorder, consuming, unique


class LocalHarness:
    def __init__(self) -> None:
        self.broker = LocalBroker()

    def bus(self, group_id: str) -> Bus:
        return LocalBus(self.broker, group_id=group_id, handler_retries=RETRIES, handler_retry_backoff=0.01)

    async def publish_raw(self, topic: str, key: bytes | None, value: bytes | None) -> None:
        self.broker.append(topic, key, value)


@pytest.fixture
def harness() -> LocalHarness:
    return LocalHarness()


class TestLocalBus(BusSemantics):
    pass


async def test_consumers_of_one_group_share_the_messages(harness: LocalHarness) -> None:
    topic, group, seen = unique("ns"), unique("trustmgr"), []

    async def slow(message: Message) -> None:
        seen.append(message.offset)
        await asyncio.sleep(0.001)

    one, two = harness.bus(group), harness.bus(group)
    async with consuming(one, [topic], slow), consuming(two, [topic], slow):
        for i in range(50):
            await one.publish(topic, "k", {"i": i})
        while len(seen) < 50:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
    assert seen == list(range(50))  # each once, in order, although two consumers competed
    assert harness.broker.committed(group, topic) == 50


async def test_one_consumer_serves_several_topics_in_turn(harness: LocalHarness) -> None:
    topics, got = [unique("ns"), unique("nslcmops")], Recorder()
    for i in range(3):
        for topic in topics:
            await harness.publish_raw(topic, b"k", f"{{i: {i}}}".encode())
    async with consuming(harness.bus(unique("trustmgr")), topics, got):
        await got.wait(6)
    assert [(m.topic, m.value["i"]) for m in got.messages] == [(t, i) for i in range(3) for t in topics]


async def test_retention_drops_the_oldest_and_new_groups_start_there() -> None:
    broker, topic, got = LocalBroker(retention=3), unique("ns"), Recorder()
    for i in range(5):
        broker.append(topic, b"k", f"{{i: {i}}}".encode())
    assert broker.end_offset(topic) == 5
    async with consuming(LocalBus(broker), [topic], got):
        await got.wait(3)
    assert [m.offset for m in got.messages] == [2, 3, 4]
