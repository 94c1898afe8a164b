"""A tap on OSM's topics for the simulator's tests: every message, seen by a consumer group of its own."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from osm_trustmgr.bus.base import Message
from osm_trustmgr.bus.local import LocalBroker, LocalBus

TOPICS = ["ns", "nslcmops", "pla"]


class Tap:
    """Everything published on OSM's topics, seen by a consumer group of its own."""

    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def __call__(self, message: Message) -> None:
        self.messages.append(message)

    def find(self, topic: str, key: str, **fields: Any) -> list[dict[str, Any]]:
        return [
            m.value
            for m in self.messages
            if m.topic == topic and m.key == key and all(m.value.get(k) == v for k, v in fields.items())
        ]

    async def wait(self, topic: str, key: str, timeout: float = 10.0, **fields: Any) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while not (found := self.find(topic, key, **fields)):
            if time.monotonic() > deadline:
                seen = [(m.topic, m.key) for m in self.messages]
                raise AssertionError(f"no {topic}/{key} {fields} within {timeout}s; seen {seen}")
            await asyncio.sleep(0.01)
        return found[0]


async def tapped_local_bus() -> AsyncIterator[tuple[LocalBus, Tap]]:
    """A local bus for the simulator and a tap on the same broker; both stopped at the end."""
    broker = LocalBroker()
    bus, tap_bus, tap = LocalBus(broker), LocalBus(broker), Tap()
    await bus.start()
    await tap_bus.start()
    task = asyncio.create_task(tap_bus.run_consumer(TOPICS, tap, group_id="tap"))
    yield bus, tap
    await tap_bus.stop()
    await bus.stop()
    await task
