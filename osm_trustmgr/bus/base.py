"""The message bus interface, and the delivery policy both implementations share.

Delivery semantics (``KafkaBus`` and ``LocalBus`` alike):

* **At least once.** A consumer commits a message's offset only after its handler returned (or the
  message was given up, below). A crash or ``stop()`` while a handler runs means the message is delivered
  again to the same consumer group later, so handlers must be idempotent (the gate keys its records by
  nslcmop ``_id`` for exactly this reason). ``publish`` may also write a message twice when it retries
  after a timeout whose request actually reached the broker.
* **Bad messages are skipped, never fatal.** A message that cannot be decoded (see ``codec``) is logged
  with its topic/partition/offset and the reason, then committed.
* **A failing handler cannot block a partition forever.** A handler exception is logged with the message
  coordinates and retried ``handler_retries`` times with exponential backoff; then the message is logged
  as given up and committed. Cancellation (``stop()``) is not a failure: the message stays uncommitted.
* **Own consumer group.** Every group gets every message of its topics once; new groups start at the
  earliest retained message. Messages are handled one at a time per consumer, in partition order.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from .codec import MessageError, decode

__all__ = ["Backoff", "Bus", "BusError", "ConsumerTasks", "Handler", "Message", "deliver"]

log = logging.getLogger("osm_trustmgr.bus")


class BusError(RuntimeError):
    """The bus cannot do what was asked (e.g. the broker stayed unreachable until the publish deadline)."""


@dataclass(frozen=True)
class Message:
    """One decoded message and where it came from (``partition`` is 0 on the local bus)."""

    topic: str
    partition: int
    offset: int
    key: str
    value: dict[str, Any]
    raw_size: int

    @property
    def coordinates(self) -> str:
        return f"{self.topic}/{self.partition}@{self.offset}"


Handler = Callable[[Message], Awaitable[None]]


class Bus(Protocol):
    """Publish and consume OSM-encoded messages (see the module docstring for the guarantees)."""

    async def start(self) -> None:
        """Get ready; never fails because the broker is unreachable (connections are retried)."""

    async def stop(self) -> None:
        """Stop every consumer (running handlers are cancelled, their messages stay uncommitted) and
        the producer. ``run_consumer`` calls then return normally. The bus can be started again."""

    async def publish(self, topic: str, key: str, value: Mapping[str, Any]) -> None:
        """Write one message; retries until the publish deadline, then raises ``BusError``.
        A value that cannot be encoded raises ``MessageError`` at once."""

    async def run_consumer(self, topics: Sequence[str], handler: Handler, *, group_id: str | None = None) -> None:
        """Consume ``topics`` as ``group_id`` (default: the bus's group) until ``stop()``."""


class Backoff:
    """Exponential backoff with jitter, capped: the n-th delay is uniform in [c/2, c], c = min(cap, base·2^n)."""

    def __init__(self, base: float = 0.1, cap: float = 10.0) -> None:
        self.base, self.cap, self.attempt = base, cap, 0

    def next_delay(self) -> float:
        # jitter keeps the clients of a broker that comes back from reconnecting in lockstep
        ceiling = min(self.cap, self.base * (2**self.attempt))
        self.attempt = min(self.attempt + 1, 32)
        return random.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        self.attempt = 0


class ConsumerTasks:
    """The consumer loops of one bus, run as tasks so that ``stop()`` can cancel them wherever they are."""

    def __init__(self) -> None:
        self.running = False
        self._tasks: set[asyncio.Task[None]] = set()

    async def run(self, loop: Coroutine[Any, Any, None]) -> None:
        """Run ``loop`` until it ends or ``cancel_all()``; the latter returns normally."""
        if not self.running:
            loop.close()
            raise BusError("bus is not started")
        task = asyncio.create_task(loop)
        self._tasks.add(task)
        try:
            await asyncio.wait({task})
        except asyncio.CancelledError:  # our caller was cancelled: take the consumer down with it
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            raise
        finally:
            self._tasks.discard(task)
        if not task.cancelled():
            task.result()  # a bug in the loop surfaces here instead of vanishing

    async def cancel_all(self) -> None:
        self.running = False
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def deliver(
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    handler: Handler,
    *,
    retries: int,
    retry_backoff: float,
    group_id: str,
) -> bool:
    """Decode one raw message and run the handler on it with retries.

    Returns True when the message was handled, False when it was skipped (undecodable, or the handler kept
    failing); either way the caller commits it next. ``CancelledError`` propagates: no commit then.
    """
    where = f"{topic}/{partition}@{offset}"
    raw_size = (len(key) if key else 0) + (len(value) if value else 0)
    try:
        text_key, doc = decode(key, value)
    except Exception as exc:  # MessageError; anything else is a decoder bug, still no reason to stop consuming
        reason = exc.reason if isinstance(exc, MessageError) else f"decoder error {exc!r}"
        log.warning(
            "skipping undecodable message %s (group %s, %d bytes): %s",
            where,
            group_id,
            raw_size,
            reason,
            exc_info=not isinstance(exc, MessageError),
            extra={"topic": topic, "partition": partition, "offset": offset, "reason": reason},
        )
        return False
    message = Message(topic, partition, offset, text_key, doc, raw_size)
    backoff = Backoff(base=retry_backoff, cap=max(retry_backoff, 30.0))
    for attempt in range(retries + 1):
        try:
            await handler(message)
            return True
        except asyncio.CancelledError:
            raise
        except Exception:
            if attempt == retries:
                log.exception(
                    "giving up on message %s key %r (group %s) after %d attempts; skipped",
                    where,
                    text_key,
                    group_id,
                    attempt + 1,
                    extra={"topic": topic, "partition": partition, "offset": offset},
                )
                return False
            delay = backoff.next_delay()
            log.warning(
                "handler failed on message %s key %r (group %s), attempt %d/%d, retrying in %.2fs",
                where,
                text_key,
                group_id,
                attempt + 1,
                retries + 1,
                delay,
                exc_info=True,
            )
            await asyncio.sleep(delay)
    return False  # not reached: the loop always returns
