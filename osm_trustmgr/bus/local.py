"""An in-process bus with Kafka's semantics, for the single-process sandbox and for unit tests.

``LocalBroker`` plays the broker: one partition per topic, a bounded in-memory log, committed offsets per
consumer group. ``LocalBus`` plays the client and goes through the same encode/decode and delivery code as
``KafkaBus``, so a malformed value, a failing handler or a stop in the middle of a handler behave the same.
Several ``LocalBus`` objects on one ``LocalBroker`` behave like several processes on one Kafka cluster.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .base import BusError, ConsumerTasks, Handler, deliver
from .codec import encode_key, encode_value

__all__ = ["LocalBroker", "LocalBus"]


@dataclass(frozen=True)
class _Record:
    key: bytes | None
    value: bytes | None


class _Log:
    """One topic: records from ``base`` (the oldest retained offset) on."""

    def __init__(self) -> None:
        self.base = 0
        self.records: deque[_Record] = deque()

    @property
    def end(self) -> int:
        return self.base + len(self.records)


class LocalBroker:
    """In-memory topics and consumer-group offsets; ``retention`` messages are kept per topic."""

    def __init__(self, retention: int = 10_000) -> None:
        self.retention = retention
        self._logs: dict[str, _Log] = {}
        self._committed: dict[tuple[str, str], int] = {}
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._changed = asyncio.Event()

    def append(self, topic: str, key: bytes | None, value: bytes | None) -> int:
        """Store raw bytes as they are (no encoding, no checks) and return the new message's offset."""
        topic_log = self._logs.setdefault(topic, _Log())
        topic_log.records.append(_Record(key, value))
        while len(topic_log.records) > self.retention:
            topic_log.records.popleft()
            topic_log.base += 1
        self._notify()
        return topic_log.end - 1

    def end_offset(self, topic: str) -> int:
        topic_log = self._logs.get(topic)
        return topic_log.end if topic_log else 0

    def committed(self, group_id: str, topic: str) -> int | None:
        return self._committed.get((group_id, topic))

    def _position(self, group_id: str, topic: str) -> int:
        # a new group starts at the oldest retained message, like auto_offset_reset="earliest"
        topic_log = self._logs.get(topic)
        base = topic_log.base if topic_log else 0
        return max(self._committed.get((group_id, topic), 0), base)

    def _record(self, topic: str, offset: int) -> _Record | None:
        topic_log = self._logs.get(topic)
        if topic_log is None or not topic_log.base <= offset < topic_log.end:
            return None
        return topic_log.records[offset - topic_log.base]

    def _commit(self, group_id: str, topic: str, offset: int) -> None:
        self._committed[(group_id, topic)] = offset
        self._notify()

    def _lock(self, group_id: str, topic: str) -> asyncio.Lock:
        # one consumer of a group at a time per topic, as a Kafka partition has one owner per group
        return self._locks.setdefault((group_id, topic), asyncio.Lock())

    def _notify(self) -> None:
        # a fresh event per change: waiters hold the old one, which is set now
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def _change(self) -> asyncio.Event:
        return self._changed


class LocalBus:
    """The ``Bus`` interface in one process (see ``osm_trustmgr.bus.base`` for the delivery semantics)."""

    def __init__(
        self,
        broker: LocalBroker | None = None,
        *,
        group_id: str = "trustmgr",
        handler_retries: int = 3,
        handler_retry_backoff: float = 0.5,
    ) -> None:
        self.broker = broker if broker is not None else LocalBroker()
        self.group_id = group_id
        self.handler_retries = handler_retries
        self.handler_retry_backoff = handler_retry_backoff
        self._consumers = ConsumerTasks()

    async def start(self) -> None:
        self._consumers.running = True

    async def stop(self) -> None:
        await self._consumers.cancel_all()

    async def publish(self, topic: str, key: str, value: Mapping[str, Any]) -> None:
        data, raw_key = encode_value(value), encode_key(key)
        if not self._consumers.running:
            raise BusError("bus is not started")
        self.broker.append(topic, raw_key, data)

    async def run_consumer(self, topics: Sequence[str], handler: Handler, *, group_id: str | None = None) -> None:
        await self._consumers.run(self._consume(list(topics), handler, group_id or self.group_id))

    async def _consume(self, topics: list[str], handler: Handler, group_id: str) -> None:
        broker = self.broker
        while True:
            changed = broker._change()
            progressed = False
            for topic in topics:  # round robin: one message per topic per turn, like partitions
                lock = broker._lock(group_id, topic)
                if lock.locked():
                    continue
                async with lock:
                    offset = broker._position(group_id, topic)
                    record = broker._record(topic, offset)
                    if record is None:
                        continue
                    await deliver(
                        topic,
                        0,
                        offset,
                        record.key,
                        record.value,
                        handler,
                        retries=self.handler_retries,
                        retry_backoff=self.handler_retry_backoff,
                        group_id=group_id,
                    )
                    broker._commit(group_id, topic, offset + 1)
                    progressed = True
            if not progressed:
                await changed.wait()
            else:
                await asyncio.sleep(0)  # let publishers and other consumers run between messages
