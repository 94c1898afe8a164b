"""Host attestation (DESIGN.md §5): inventory, enrollment through the agent, and one attestation round.

A round: fresh nonce (stored, single-use, short TTL) → the agent's quote over the policy's PCRs with the IMA
log from the last verified offset → the pure verifier → report stored (``_id`` = nonce, so a round is never
stored twice) → host state updated → a transition published on ``trust``/``host_trust``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography import x509

from osm_trustmgr.attestation import (
    AttestationSettings,
    Publisher,
    Rounds,
    Subject,
    failed,
    utcnow,
)
from osm_trustmgr.evidence.host_agent import AgentPool, AgentUnreachable, HostAgentClient
from osm_trustmgr.failures import Failure
from osm_trustmgr.policy.result import AttestationResult
from osm_trustmgr.policy_book import PolicyBook
from osm_trustmgr.store.mongo import TrustStore
from osm_trustmgr.store.records import AgentEndpoint, HostRecord, HostSpec, IdentityRecord

__all__ = ["TRUST_TOPIC", "HostAttestor", "HostSettings", "Outcome", "Publisher", "Scheduler", "entity_of", "utcnow"]

log = logging.getLogger(__name__)

TRUST_TOPIC = "trust"
HostSettings = AttestationSettings


Scheduler = Callable[[HostRecord], datetime]
"""When a host is due next, from its record after a round (the monitor's interval, jitter and backoff)."""


@dataclass(frozen=True)
class Outcome:
    """One round's end: the stored report (None when nothing was judged) and the host record after it."""

    host: HostRecord
    result: AttestationResult | None


def entity_of(host_id: str) -> str:
    return f"host:{host_id}"


class HostAttestor:
    def __init__(
        self,
        store: TrustStore,
        policies: PolicyBook,
        publisher: Publisher,
        settings: HostSettings,
        *,
        client_factory: Callable[[AgentEndpoint], HostAgentClient] = HostAgentClient,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.store, self.policies, self.publisher = store, policies, publisher
        self.rounds = Rounds(store, policies, settings, clock=clock)
        self.agents = AgentPool(client_factory)
        self._clock = clock

    @property
    def settings(self) -> HostSettings:
        return self.rounds.settings

    @settings.setter
    def settings(self, value: HostSettings) -> None:
        self.rounds.settings = value

    async def close(self) -> None:
        """Close the kept-alive agent connections (at shutdown)."""
        await self.agents.close()

    # -- inventory ----------------------------------------------------------------------------------

    async def register(self, spec: HostSpec) -> HostRecord:
        record = HostRecord(**spec.model_dump())
        if not await self.store.add_host(record):
            raise ValueError(f"host {spec.id!r} is already registered")
        log.info("host %s registered (VIM account %s, agent %s)", spec.id, spec.vim_account_id, spec.agent.url)
        return record

    async def reenroll(self, host_id: str) -> None:
        """An administrator accepts a new TPM identity (e.g. a replaced mainboard): forget the old one."""
        await self.store.delete_identity(entity_of(host_id))
        await self.store.set_host_state(host_id, {"state": "new", "reason": "re-enrollment requested"})

    async def due(self, now: datetime) -> list[HostRecord]:
        return await self.store.due_hosts(now)

    async def reschedule(self, host_id: str, when: datetime) -> None:
        await self.store.set_host_state(host_id, {"next_attempt_at": when})

    # -- enrollment and attestation ----------------------------------------------------------------------

    def subject(self, host: HostRecord) -> Subject:
        return Subject(entity_of(host.id), host.policy_id, host.verifier_state, self._ca_bundle(host), host.pinned_ek)

    async def enroll(self, host: HostRecord, agent: HostAgentClient) -> IdentityRecord:
        """Enroll the host's TPM; raises EvidenceError (enrollment refused) or AgentUnreachable/AgentError."""
        return await self.rounds.enroll(self.subject(host), agent)

    def _ca_bundle(self, host: HostRecord) -> Sequence[x509.Certificate] | None:
        if host.ek_ca_file:
            from osm_trustmgr.tpm.ekcert import load_ca_bundle

            with open(host.ek_ca_file, "rb") as f:
                return load_ca_bundle(f.read())
        return None

    async def attest(self, host: str | HostRecord, *, schedule: Scheduler | None = None) -> Outcome:
        """One round for ``host`` (an id, or the record a caller just read). ``schedule`` gives the next
        attempt from the outcome, written with the verdict in the same update."""
        if isinstance(host, str):
            record = await self.store.get_host(host)
            if record is None:
                raise KeyError(f"host {host!r} is not registered")
            host = record
        if host.state == "rejected":
            log.warning("host %s is rejected (%s): not attested until re-enrolled", host.id, host.reason)
            return Outcome(host, None)
        agent = self.agents.get(host.id, host.agent)
        try:
            result = await self.rounds.run(self.subject(host), agent)
        except AgentUnreachable as e:
            await self.agents.drop(host.id)
            return await self._unreachable(host, str(e), schedule)
        return await self._record(host, result, schedule)

    # -- recording -----------------------------------------------------------------------------------

    async def _record(self, host: HostRecord, result: AttestationResult, schedule: Scheduler | None) -> Outcome:
        report_id = result.nonce
        await self.store.insert_report(report_id, "host", result)
        rejected = Failure.IDENTITY_CHANGED.value in result.codes()
        changes: dict[str, Any] = {
            "state": "rejected" if rejected else "attested",
            "loa": result.loa,
            "last_report": report_id,
            "attested_at": result.time,
            "unreachable_count": 0,
            "reason": "; ".join(f"{f.code}: {f.detail}" for f in result.failures[:3]) or None,
        }
        if result.state is not None and result.loa >= 1:
            changes["verifier_state"] = result.state.model_dump()
        return await self._transition(host, changes, result, schedule)

    async def mark_unreachable(self, host_id: str, reason: str, schedule: Scheduler | None = None) -> Outcome | None:
        """A round that did not finish in time: the host's trust is unknown, so it is not trusted."""
        await self.agents.drop(host_id)
        host = await self.store.get_host(host_id)
        return await self._unreachable(host, reason, schedule) if host else None

    async def _unreachable(self, host: HostRecord, reason: str, schedule: Scheduler | None) -> Outcome:
        log.warning("host %s unreachable: %s", host.id, reason)
        nonce = os.urandom(20)
        result = failed(self.subject(host), nonce, self._clock(), Failure.AGENT_UNREACHABLE, reason)
        await self.store.insert_report(result.nonce, "host", result)
        changes = {
            "state": "unreachable",
            "loa": 0,
            "last_report": result.nonce,
            "unreachable_count": host.unreachable_count + 1,
            "reason": reason,
        }
        return await self._transition(host, changes, result, schedule)

    async def _transition(
        self, host: HostRecord, changes: dict[str, Any], result: AttestationResult, schedule: Scheduler | None
    ) -> Outcome:
        after = HostRecord.model_validate({**host.model_dump(), **changes})  # validated, unlike model_copy
        if schedule is not None:
            changes["next_attempt_at"] = after.next_attempt_at = schedule(after)
        # Compare-and-set against the record this round started from: one plain update in the normal case,
        # and a correct "before" (for the transition) even if something else changed the host meanwhile.
        expected = {"state": host.state, "loa": host.loa, "last_report": host.last_report}
        before = host
        if not await self.store.update_host_if(host.id, expected, changes):
            before = await self.store.set_host_state(host.id, changes) or host
            after = HostRecord.model_validate({**before.model_dump(), **changes})
        if (before.state, before.loa) != (after.state, after.loa):
            log.info("host %s: %s/LoA %d -> %s/LoA %d (%s)", host.id, before.state, before.loa, after.state,
                     after.loa, ", ".join(result.codes()) or "no failures")  # fmt: skip
            await self.publisher.publish(TRUST_TOPIC, "host_trust", _transition_message(before, after, result))
        return Outcome(after, result)


def _transition_message(before: HostRecord, after: HostRecord, result: AttestationResult) -> dict[str, Any]:
    return {
        "id": after.id,
        "vim_account_id": after.vim_account_id,
        "previous_loa": before.loa,
        "loa": after.loa,
        "previous_state": before.state,
        "state": after.state,
        "report_id": after.last_report,
        "reasons": [f"{f.code}: {f.detail}" for f in result.failures],
        "time": result.time.isoformat(),
    }
