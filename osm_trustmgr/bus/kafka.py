"""The bus on Apache Kafka (aiokafka), speaking OSM's encoding (see ``codec``) with its own consumer group.

Unlike OSM's own ``MsgKafka`` (auto-commit, a new producer per write, errors end the read loop), this client
commits by hand after each handled message, keeps one producer, and never gives up on the broker: the
producer retries until the publish deadline, and a consumer that fails is recreated with capped, jittered
exponential backoff and resumes from its group's committed offsets. Semantics: ``osm_trustmgr.bus.base``.

Handlers run one at a time per consumer and must return well within ``max_poll_interval_ms`` (5 min):
a consumer that does not poll for that long is dropped from its group, and its message is delivered again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import (
    CommitFailedError,
    IllegalStateError,
    InvalidTopicError,
    KafkaError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    RecordTooLargeError,
    TopicAuthorizationFailedError,
    UnsupportedVersionError,
)

from .base import Backoff, BusError, ConsumerTasks, Handler, deliver
from .codec import encode_key, encode_value

__all__ = ["KafkaBus"]

log = logging.getLogger("osm_trustmgr.bus.kafka")

# retrying these cannot help: the request itself is wrong or not allowed
_PUBLISH_FATAL = (
    InvalidTopicError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    TopicAuthorizationFailedError,
    UnsupportedVersionError,
)
_TRANSIENT = (KafkaError, OSError, asyncio.TimeoutError)


class KafkaBus:
    """``Bus`` on Kafka. Only ``bootstrap`` is required; the defaults suit OSM's Kafka in Kubernetes."""

    def __init__(
        self,
        bootstrap: str,
        *,
        group_id: str = "trustmgr",
        client_id: str = "osm-trustmgr",
        session_timeout_ms: int = 10_000,
        heartbeat_interval_ms: int = 3_000,
        max_poll_interval_ms: int = 300_000,
        fetch_max_wait_ms: int = 500,
        request_timeout_ms: int = 30_000,
        publish_timeout: float = 60.0,
        reconnect_backoff: float = 0.5,
        reconnect_backoff_max: float = 30.0,
        handler_retries: int = 3,
        handler_retry_backoff: float = 0.5,
        commit_timeout: float = 15.0,
        close_timeout: float = 5.0,
    ) -> None:
        self.bootstrap = bootstrap
        self.group_id = group_id
        self.client_id = client_id
        self.session_timeout_ms = session_timeout_ms
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.max_poll_interval_ms = max_poll_interval_ms
        # Apache Kafka answers a waiting fetch as soon as data arrives; Tansu (tests, sandbox) only on a timer of
        # about half this value, so there a low value (10 ms) keeps each hop short.
        self.fetch_max_wait_ms = fetch_max_wait_ms
        self.request_timeout_ms = request_timeout_ms
        self.publish_timeout = publish_timeout
        self.reconnect_backoff = reconnect_backoff
        self.reconnect_backoff_max = reconnect_backoff_max
        self.handler_retries = handler_retries
        self.handler_retry_backoff = handler_retry_backoff
        self.commit_timeout = commit_timeout
        self.close_timeout = close_timeout
        self._producer: AIOKafkaProducer | None = None
        self._producer_lock = asyncio.Lock()
        self._consumers = ConsumerTasks()

    # -- lifecycle ------------------------------------------------------------------------------------

    async def start(self) -> None:
        self._consumers.running = True
        try:  # connect early to surface a wrong address in the log, but never fail: publish retries
            await asyncio.wait_for(self._ensure_producer(), self.request_timeout_ms / 1000)
        except _TRANSIENT as exc:
            log.warning("Kafka %s not reachable at start (%r); will keep retrying", self.bootstrap, exc)

    async def stop(self) -> None:
        await self._consumers.cancel_all()
        async with self._producer_lock:
            producer, self._producer = self._producer, None
        if producer is not None:
            await self._close(producer)

    # -- producer -------------------------------------------------------------------------------------

    async def publish(self, topic: str, key: str, value: Mapping[str, Any]) -> None:
        data, raw_key = encode_value(value), encode_key(key)
        if not self._consumers.running:
            raise BusError("bus is not started")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.publish_timeout
        backoff = Backoff(self.reconnect_backoff, self.reconnect_backoff_max)
        attempt = 0
        while True:
            attempt += 1
            if not self._consumers.running:  # stop() came while we waited: do not reconnect after it
                raise BusError(f"bus stopped while publishing to {topic!r} key {key!r}")
            try:
                producer = await asyncio.wait_for(self._ensure_producer(), max(0.0, deadline - loop.time()))
                await asyncio.wait_for(
                    producer.send_and_wait(topic, data, key=raw_key), max(0.0, deadline - loop.time())
                )
            except _PUBLISH_FATAL as exc:
                raise BusError(f"cannot publish to {topic!r} key {key!r}: {exc!r}") from exc
            except _TRANSIENT as exc:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise BusError(
                        f"cannot publish to {topic!r} key {key!r} within {self.publish_timeout}s "
                        f"({attempt} attempts): {exc!r}"
                    ) from exc
                delay = min(backoff.next_delay(), remaining)
                log.warning(
                    "publish to %s key %r failed (%r); reconnecting to %s in %.2fs (attempt %d)",
                    topic,
                    key,
                    exc,
                    self.bootstrap,
                    delay,
                    attempt,
                )
                await asyncio.sleep(delay)
                continue
            if attempt > 1:
                log.info("published to %s key %r after %d attempts: Kafka is back", topic, key, attempt)
            return

    async def _ensure_producer(self) -> AIOKafkaProducer:
        async with self._producer_lock:
            if self._producer is not None:
                return self._producer
            producer = AIOKafkaProducer(
                bootstrap_servers=self.bootstrap,
                client_id=self.client_id,
                acks="all",
                enable_idempotence=False,  # also OSM's choice; some Kafka-protocol brokers lack it
                request_timeout_ms=self.request_timeout_ms,
                retry_backoff_ms=int(self.reconnect_backoff * 1000),
            )
            try:
                await producer.start()
            except BaseException:
                await self._close(producer)
                raise
            log.info("Kafka producer connected to %s", self.bootstrap)
            self._producer = producer
            return producer

    # -- consumer -------------------------------------------------------------------------------------

    async def run_consumer(self, topics: Sequence[str], handler: Handler, *, group_id: str | None = None) -> None:
        await self._consumers.run(self._consume_forever(list(topics), handler, group_id or self.group_id))

    def _new_consumer(self, topics: list[str], group_id: str) -> AIOKafkaConsumer:
        return AIOKafkaConsumer(
            *topics,
            bootstrap_servers=self.bootstrap,
            client_id=self.client_id,
            group_id=group_id,
            enable_auto_commit=False,  # commit after the handler, not on a timer: at-least-once
            auto_offset_reset="earliest",  # a new group sees what was written before it first joined
            session_timeout_ms=self.session_timeout_ms,
            heartbeat_interval_ms=self.heartbeat_interval_ms,
            max_poll_interval_ms=self.max_poll_interval_ms,
            fetch_max_wait_ms=self.fetch_max_wait_ms,
            request_timeout_ms=self.request_timeout_ms,
            retry_backoff_ms=int(self.reconnect_backoff * 1000),
        )

    async def _consume_forever(self, topics: list[str], handler: Handler, group_id: str) -> None:
        backoff = Backoff(self.reconnect_backoff, self.reconnect_backoff_max)
        failures = 0
        while True:
            consumer = self._new_consumer(topics, group_id)
            delay = backoff.next_delay()
            try:
                await consumer.start()
                log.info(
                    "Kafka consumer group %s on %s connected to %s%s",
                    group_id,
                    ",".join(topics),
                    self.bootstrap,
                    f" after {failures} failures" if failures else "",
                )
                failures = 0
                await self._consume(consumer, handler, group_id, backoff)
            except _TRANSIENT as exc:
                failures += 1
                log.warning(
                    "Kafka consumer group %s on %s failed (%r); reconnecting to %s in %.2fs (attempt %d)",
                    group_id,
                    ",".join(topics),
                    exc,
                    self.bootstrap,
                    delay,
                    failures,
                )
            finally:
                await self._close(consumer)
            await asyncio.sleep(delay)

    async def _consume(self, consumer: AIOKafkaConsumer, handler: Handler, group_id: str, backoff: Backoff) -> None:
        while True:
            try:
                record: ConsumerRecord[bytes, bytes] = await consumer.getone()
            except RecordTooLargeError as exc:
                # aiokafka already moved past it; a newer broker would have returned it and codec refused it
                log.warning("skipping a message larger than the fetch size (group %s): %s", group_id, exc)
                continue
            await deliver(
                record.topic,
                record.partition,
                record.offset,
                record.key,
                record.value,
                handler,
                retries=self.handler_retries,
                retry_backoff=self.handler_retry_backoff,
                group_id=group_id,
            )
            await self._commit(consumer, record, group_id)
            backoff.reset()

    async def _commit(self, consumer: AIOKafkaConsumer, record: ConsumerRecord[bytes, bytes], group_id: str) -> None:
        """Commit past ``record``. A commit that does not finish in ``commit_timeout`` raises TimeoutError, so
        the consumer is recreated and resumes from the committed offsets (aiokafka retries retriable commit
        errors forever, e.g. UNKNOWN_TOPIC_OR_PARTITION from a broker that lost its state)."""
        tp = TopicPartition(record.topic, record.partition)
        commit = asyncio.ensure_future(asyncio.wait_for(consumer.commit({tp: record.offset + 1}), self.commit_timeout))
        try:
            # shielded: the commit of a handled message completes even when stop() comes meanwhile, so a
            # clean stop never redelivers what was handled
            await asyncio.shield(commit)
        except asyncio.CancelledError:
            await asyncio.wait({commit}, timeout=self.close_timeout)
            if not commit.done():
                commit.cancel()
            elif not commit.cancelled():
                commit.exception()  # retrieved: a failed commit here needs no "never retrieved" warning
            raise
        except (CommitFailedError, IllegalStateError) as exc:
            # the group rebalanced (or the broker lost the group): the partition's new owner gets the
            # message again, which at-least-once allows
            log.warning(
                "commit of %s/%d@%d (group %s) failed, it may be delivered again: %r",
                record.topic,
                record.partition,
                record.offset,
                group_id,
                exc,
            )

    # -- helpers --------------------------------------------------------------------------------------

    async def _close(self, client: AIOKafkaProducer | AIOKafkaConsumer) -> None:
        """Stop a client without hanging on a dead broker (a producer's stop waits to flush)."""
        try:
            await asyncio.wait_for(client.stop(), self.close_timeout)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.debug("closing Kafka client: %r", exc)
