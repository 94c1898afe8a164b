"""Are the NFVI hosts of some VIM accounts trusted at a LoA right now? (the NS gate's host pre-gate)

A host's stored verdict is reused while it is younger than ``max_age``; stale or never-attested hosts are
attested now, all in parallel, within ``timeout``. A VIM account with no registered host is not trusted:
nothing vouches for it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from osm_trustmgr.hosts import HostAttestor
from osm_trustmgr.store.records import HostRecord

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HostVerdict:
    id: str
    vim_account_id: str
    loa: int
    state: str
    report: str | None
    fresh: bool  # reused from a recent round rather than attested for this gate
    reason: str | None = None  # the host's failures ("code: detail; ..."), why it is below the LoA


@dataclass
class VimTrust:
    """Per VIM account: the hosts' verdicts, whether all reach the LoA, and why not."""

    required: int
    hosts: dict[str, list[HostVerdict]] = field(default_factory=dict)
    reasons: dict[str, list[str]] = field(default_factory=dict)

    def trusted(self, vim: str) -> bool:
        return bool(self.hosts.get(vim)) and not self.reasons.get(vim)

    def achieved(self, vims: Iterable[str]) -> int:
        levels = [h.loa for v in vims for h in self.hosts.get(v, [])]
        return min(levels) if levels and all(self.hosts.get(v) for v in vims) else 0

    def all_reasons(self, vims: Iterable[str]) -> list[str]:
        return [r for v in vims for r in self.reasons.get(v, [])]


async def check_vims(
    attestor: HostAttestor, vims: Iterable[str], required: int, *, max_age: float, timeout: float, now: datetime
) -> VimTrust:
    trust = VimTrust(required)
    stale: list[HostRecord] = []
    for vim in sorted(set(vims)):
        hosts = await attestor.store.list_hosts(vim)
        trust.hosts[vim] = []
        if not hosts:
            trust.reasons[vim] = [f"VIM account {vim} has no registered NFVI host to vouch for it"]
        for host in hosts:
            if _fresh(host, now, max_age):
                trust.hosts[vim].append(_verdict(host, fresh=True))
            else:
                stale.append(host)
    if stale:
        await _attest_now(attestor, stale, trust, timeout)
    for vim, verdicts in trust.hosts.items():
        for h in verdicts:
            if h.loa < required:
                trust.reasons.setdefault(vim, []).append(
                    f"host {h.id} (VIM {vim}) is at LoA {h.loa} ({h.state}), LoA {required} required"
                    + (f": {h.reason}" if h.reason else "")
                    + (f" [report {h.report}]" if h.report else "")
                )
    return trust


def _fresh(host: HostRecord, now: datetime, max_age: float) -> bool:
    return (
        host.state == "attested"
        and host.attested_at is not None
        and now - host.attested_at <= timedelta(seconds=max_age)
    )


def _verdict(host: HostRecord, *, fresh: bool) -> HostVerdict:
    return HostVerdict(host.id, host.vim_account_id, host.loa, host.state, host.last_report, fresh, host.reason)


async def _attest_now(attestor: HostAttestor, hosts: list[HostRecord], trust: VimTrust, timeout: float) -> None:
    tasks = {h.id: asyncio.create_task(attestor.attest(h)) for h in hosts}
    done, pending = await asyncio.wait(tasks.values(), timeout=timeout)
    for task in pending:
        task.cancel()
    for host in hosts:
        task = tasks[host.id]
        if task in done and task.exception() is None:
            outcome = task.result()
            trust.hosts[host.vim_account_id].append(_verdict(outcome.host, fresh=False))
        else:
            why = "no verdict within the gate timeout" if task in pending else f"attestation failed: {task.exception()}"
            log.warning("gate: host %s: %s", host.id, why)
            trust.hosts[host.vim_account_id].append(
                HostVerdict(host.id, host.vim_account_id, 0, "unknown", None, False, why)
            )
