"""From OSM's Kafka topics to the gate: parse, fail closed on unreadable instantiations, never crash.

Handlers are idempotent (the gate document per nslcmop), so the bus's at-least-once delivery is safe.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from osm_trustmgr.bus.base import Message
from osm_trustmgr.gate import NsGate
from osm_trustmgr.osm.messages import Ignored, OsmMessageError, parse_osm_message

log = logging.getLogger(__name__)

OSM_TOPICS = ("ns", "nslcmops", "pla")


class GateConsumer:
    def __init__(self, gate: NsGate, *, resume_every: float = 15.0) -> None:
        self.gate = gate
        self.resume_every = resume_every

    async def on_message(self, message: Message) -> None:
        try:
            event = parse_osm_message(message.topic, message.key, message.value)
        except OsmMessageError as e:
            log.warning("skipping %s/%s at %s: %s", message.topic, message.key, message.coordinates, e)
            if message.topic == "ns" and message.key == "instantiate" and e.nslcmop_id:
                await self.gate.reject_unreadable(e.nslcmop_id, e.nsr_id, str(e))
            return
        if isinstance(event, Ignored):
            log.debug("ignoring %s/%s at %s: %s", message.topic, message.key, message.coordinates, event.reason)
            return
        await self.gate.handle(event)

    async def resume_loop(self, stop: asyncio.Event) -> None:
        """Finish gates left unfinished (a crash, an NBI outage) now and then, until ``stop``."""
        while not stop.is_set():
            try:
                await self.gate.resume()
            except Exception:
                log.exception("resuming unfinished gates failed; retrying")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), self.resume_every)
