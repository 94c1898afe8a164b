"""Host attestation (DESIGN.md §5): inventory, enrollment through the agent, and one attestation round.

A round: fresh nonce (stored, single-use, short TTL) → the agent's quote over the policy's PCRs with the IMA
log from the last verified offset → the pure verifier → report stored (``_id`` = nonce, so a round is never
stored twice) → host state updated → a transition published on ``trust``/``host_trust``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Protocol

from cryptography import x509

from osm_trustmgr.enrollment import Enrollment, begin_enrollment, complete_enrollment
from osm_trustmgr.evidence.document import parse_evidence_document
from osm_trustmgr.evidence.host_agent import (
    AgentError,
    AgentPool,
    AgentUnreachable,
    HostAgentClient,
    ImaOffsetBeyondLog,
)
from osm_trustmgr.failures import Failure
from osm_trustmgr.policy.evaluate import IdentityClaim, Request, evaluate
from osm_trustmgr.policy.model import TrustPolicy
from osm_trustmgr.policy.result import AttestationResult, FailureRecord
from osm_trustmgr.policy_book import PolicyBook
from osm_trustmgr.store.mongo import TrustStore
from osm_trustmgr.store.records import AgentEndpoint, HostRecord, HostSpec, IdentityRecord
from osm_trustmgr.tpm.errors import EvidenceError
from osm_trustmgr.tpm.identity import Identity, check_same_identity
from osm_trustmgr.tpm.pcr import PcrSelection, select
from osm_trustmgr.tpm.public import parse_public

log = logging.getLogger(__name__)

TRUST_TOPIC = "trust"
IDENTITY_FAILURES = {Failure.SIGNATURE_INVALID.value, Failure.SIGNER_MISMATCH.value, Failure.SIGNATURE_SCHEME.value}


Scheduler = Callable[[HostRecord], datetime]
"""When a host is due next, from its record after a round (the monitor's interval, jitter and backoff)."""


class Publisher(Protocol):
    async def publish(self, topic: str, key: str, value: Mapping[str, Any]) -> None: ...


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(frozen=True)
class HostSettings:
    ek_ca_bundle: Sequence[x509.Certificate]
    banks: Sequence[str] = ("sha256",)
    nonce_ttl: timedelta = timedelta(seconds=60)


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
        self.store, self.policies, self.publisher, self.settings = store, policies, publisher, settings
        self.agents = AgentPool(client_factory)
        self._clock = clock

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

    # -- enrollment ----------------------------------------------------------------------------------

    async def enroll(self, host: HostRecord, agent: HostAgentClient) -> IdentityRecord:
        """Enroll the host's TPM; raises EvidenceError (enrollment refused) or AgentUnreachable/AgentError."""
        presented = await agent.identity()
        challenge = begin_enrollment(
            presented, ca_bundle=self._ca_bundle(host), now=self._clock(), pinned_ek=host.pinned_ek
        )
        returned = await _activation(agent, challenge.credential_blob, challenge.encrypted_secret)
        enrollment = complete_enrollment(challenge, returned)
        record = _identity_record(entity_of(host.id), enrollment, self._clock())
        if not await self.store.put_identity(record):
            raise EvidenceError(Failure.IDENTITY_CHANGED, "host was enrolled concurrently")
        log.info("host %s enrolled (%s)", host.id, enrollment.method)
        return record

    def _ca_bundle(self, host: HostRecord) -> Sequence[x509.Certificate]:
        if host.ek_ca_file:
            from osm_trustmgr.tpm.ekcert import load_ca_bundle

            with open(host.ek_ca_file, "rb") as f:
                return load_ca_bundle(f.read())
        return self.settings.ek_ca_bundle

    # -- attestation ---------------------------------------------------------------------------------

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
            result = await self._round(host, agent)
        except AgentUnreachable as e:
            await self.agents.drop(host.id)
            return await self._unreachable(host, str(e), schedule)
        return await self._record(host, result, schedule)

    async def _round(self, host: HostRecord, agent: HostAgentClient) -> AttestationResult:
        nonce = os.urandom(20)
        entity = entity_of(host.id)
        identity = await self.store.get_identity(entity)
        try:
            if identity is None:
                identity = await self.enroll(host, agent)
            policy = await self.policies.get(host.policy_id) if host.policy_id else None
        except (EvidenceError, AgentError) as e:
            return self._verdict_without_evidence(entity, nonce, host.policy_id, e)
        selection = _selection(policy, self.settings.banks)
        offset = host.verifier_state.ima_offset if host.verifier_state else 0
        result = await self._judge(host, agent, identity, policy, selection, nonce, offset)
        if result.claims.get("rebooted") and offset > 0:
            # the log of the new boot must be read from its start: one more round at offset 0
            log.info("host %s rebooted: re-reading its IMA log from the start", host.id)
            result = await self._judge(host, agent, identity, policy, selection, os.urandom(20), 0)
        if IDENTITY_FAILURES.intersection(result.codes()):
            result = await self._check_identity(host, agent, identity, result)
        return result

    async def _judge(
        self,
        host: HostRecord,
        agent: HostAgentClient,
        identity: IdentityRecord,
        policy: TrustPolicy | None,
        selection: tuple[PcrSelection, ...],
        nonce: bytes,
        offset: int,
    ) -> AttestationResult:
        entity = entity_of(host.id)
        now = self._clock()
        await self.store.issue_nonce(nonce, entity, now, self.settings.nonce_ttl)
        try:
            try:
                doc = await agent.quote(nonce, selection, offset)
            except ImaOffsetBeyondLog:  # the log restarted (reboot): read it from its start
                doc = await agent.quote(nonce, selection, 0)
            evidence = parse_evidence_document(doc).evidence
        except (AgentError, EvidenceError) as e:
            await self.store.consume_nonce(nonce, entity, self._clock())
            return self._verdict_without_evidence(entity, nonce, host.policy_id, e)
        collected = self._clock()
        if not await self.store.consume_nonce(nonce, entity, collected):
            return _failed(entity, nonce, host.policy_id, collected, Failure.NONCE_REPLAYED, "nonce unknown or used")
        claim = IdentityClaim(parse_public(identity.ak_public), identity.method, identity.ak_qualified_name)
        return evaluate(
            evidence,
            claim,
            Request(nonce, selection),
            entity=entity,
            now=collected,
            policy=policy,
            previous=host.verifier_state,
            collected_at=collected,
        )

    async def _check_identity(
        self, host: HostRecord, agent: HostAgentClient, enrolled: IdentityRecord, result: AttestationResult
    ) -> AttestationResult:
        """A quote the enrolled AK did not sign: ask the agent who it is now. A new AK is an attack."""
        try:
            presented = await agent.identity()
            check_same_identity(
                Identity(enrolled.ek_public, enrolled.ek_certificate, enrolled.ak_public, enrolled.ak_name,
                         enrolled.ak_qualified_name),
                Identity.from_publics(presented.ek_public, presented.ak_public, presented.ek_certificate),
            )  # fmt: skip
        except EvidenceError as e:
            log.error("ALARM host %s: %s", host.id, e.detail)
            failure = FailureRecord.of(e.code, e.detail, 1)
            return result.model_copy(update={"failures": [*result.failures, failure], "loa": 0})
        except (AgentError, AgentUnreachable):
            pass
        return result

    def _verdict_without_evidence(
        self, entity: str, nonce: bytes, policy_id: str | None, error: Exception
    ) -> AttestationResult:
        if isinstance(error, EvidenceError):
            return _failed(entity, nonce, policy_id, self._clock(), error.code, error.detail)
        return _failed(entity, nonce, policy_id, self._clock(), Failure.AGENT_ERROR, str(error))

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
        result = _failed(entity_of(host.id), nonce, host.policy_id, self._clock(), Failure.AGENT_UNREACHABLE, reason)
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


def _failed(
    entity: str, nonce: bytes, policy_id: str | None, now: datetime, code: Failure, detail: str
) -> AttestationResult:
    return AttestationResult(
        entity=entity,
        loa=0,
        failures=[FailureRecord.of(code, detail, 1)],
        evidence_digest="",
        nonce=nonce.hex(),
        policy_id=policy_id,
        time=now,
    )


def _selection(policy: TrustPolicy | None, banks: Sequence[str]) -> tuple[PcrSelection, ...]:
    # without a policy only identity and quote are judged; PCRs 0-10 still give the report its claims
    return policy.selection() if policy is not None else select(banks, range(11))


async def _activation(agent: HostAgentClient, blob: bytes, secret: bytes) -> bytes:
    try:
        return await agent.activate(blob, secret)
    except AgentError as e:
        raise EvidenceError(Failure.CREDENTIAL_FAILED, f"agent refused ActivateCredential: {e.detail}") from None


def _identity_record(entity: str, enrollment: Enrollment, now: datetime) -> IdentityRecord:
    i = enrollment.identity
    return IdentityRecord(
        entity=entity,
        method=enrollment.method,
        ek_public=i.ek_public,
        ek_certificate=i.ek_certificate,
        ak_public=i.ak_public,
        ak_name=i.ak_name,
        ak_qualified_name=i.ak_qualified_name,
        enrolled_at=now,
    )
