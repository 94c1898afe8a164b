"""Periodic re-attestation of every host and of every gated VNF (DESIGN.md §5 Monitor).

Schedules live in the database (``trust_hosts.next_attempt_at``), not in memory: a Trust Manager restarted in
the middle of a cycle picks up exactly the hosts that were still due, and reports are keyed by their nonce, so
nothing is lost and nothing is stored twice. Each attestation runs under a timeout and a concurrency bound;
one slow or dead agent never holds up the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol, TypeVar

from osm_trustmgr.attestation import utcnow

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MonitorSettings:
    interval: float = 300.0
    concurrency: int = 16
    jitter: float = 0.1
    retry_base: float = 5.0
    round_timeout: float = 60.0
    idle_poll: float = 1.0


class Attested(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def state(self) -> str: ...
    @property
    def unreachable_count(self) -> int: ...


R = TypeVar("R", bound=Attested)


class Fleet(Protocol[R]):
    """What the monitor attests: hosts (``HostAttestor``) or gated VNFs (``VnfAttestor``)."""

    async def due(self, now: datetime) -> Sequence[R]: ...

    async def attest(self, record: str | R, *, schedule: Callable[[R], datetime]) -> Any: ...

    async def mark_unreachable(self, entity_id: str, reason: str, schedule: Callable[[R], datetime]) -> Any: ...

    async def reschedule(self, entity_id: str, when: datetime) -> None: ...


class Monitor:
    def __init__(
        self,
        attestor: Fleet[Any],
        settings: MonitorSettings,
        *,
        clock: Callable[[], datetime] = utcnow,
        rng: random.Random | None = None,
    ) -> None:
        self.attestor = attestor
        self.settings = settings
        self._clock = clock
        self._rng = rng or random.Random()
        self._limit = asyncio.Semaphore(settings.concurrency)

    def next_attempt(self, host: Attested | None) -> datetime:
        """Healthy hosts every ``interval`` ± jitter (spreads the fleet); unreachable ones back off
        exponentially from ``retry_base`` up to ``interval``, so a recovered agent is noticed quickly."""
        s = self.settings
        if host is None or host.state == "unreachable":
            failures = host.unreachable_count if host else 1
            delay = min(s.interval, s.retry_base * 2 ** max(failures - 1, 0))
        else:
            delay = s.interval * (1 + self._rng.uniform(-s.jitter, s.jitter))
        return self._clock() + timedelta(seconds=delay)

    async def attest_one(self, host: str | Attested) -> Any:
        host_id = host if isinstance(host, str) else host.id
        async with self._limit:
            try:
                return await asyncio.wait_for(
                    self.attestor.attest(host, schedule=self.next_attempt), self.settings.round_timeout
                )
            except KeyError:
                return None  # deleted meanwhile
            except asyncio.TimeoutError:
                reason = f"no verdict within {self.settings.round_timeout:.0f}s (agent hung?)"
                return await self.attestor.mark_unreachable(host_id, reason, self.next_attempt)
            except Exception:  # a bug in one round must not stop the monitor; it is retried later
                log.exception("attestation of %s failed", host_id)
                await self.attestor.reschedule(host_id, self.next_attempt(None))
                return None

    async def run_cycle(self) -> int:
        """Attest everything due once; returns how many were attested."""
        due = await self.attestor.due(self._clock())
        if due:
            log.debug("monitor cycle: %d due", len(due))
            await asyncio.gather(*(self.attest_one(h) for h in due))
        return len(due)

    async def run(self, stop: asyncio.Event) -> None:
        """Cycle until ``stop`` is set; database errors are logged and retried, never fatal."""
        while not stop.is_set():
            try:
                await self.run_cycle()
            except Exception:
                log.exception("monitor cycle failed; retrying")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), self.settings.idle_poll)


HostMonitor = Monitor  # the name the host monitor had before VNFs were monitored too
