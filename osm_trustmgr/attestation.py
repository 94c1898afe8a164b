"""One attestation round and enrollment, for any attested entity (NFVI host or VNF) — DESIGN.md §5.

A round: fresh nonce (stored, single-use, short TTL) → evidence from the entity's source (the host agent, or
the trust-proxy charm through OSM) over the policy's PCRs with the IMA log from the last verified offset →
the pure verifier. Hosts and VNFs differ only in where evidence comes from and where the verdict is kept
(``hosts.py``, ``vnfs.py``); everything between is here, once.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Protocol

from cryptography import x509

from osm_trustmgr.enrollment import Enrollment, PresentedIdentity, begin_enrollment, complete_enrollment
from osm_trustmgr.evidence.document import parse_evidence_document
from osm_trustmgr.evidence.errors import SourceError, SourceUnreachable
from osm_trustmgr.evidence.host_agent import ImaOffsetBeyondLog
from osm_trustmgr.failures import Failure
from osm_trustmgr.policy.evaluate import Evidence, IdentityClaim, Request, evaluate
from osm_trustmgr.policy.model import TrustPolicy
from osm_trustmgr.policy.result import AttestationResult, FailureRecord, VerifierState
from osm_trustmgr.policy_book import PolicyBook
from osm_trustmgr.store.mongo import TrustStore
from osm_trustmgr.store.records import IdentityRecord
from osm_trustmgr.tpm.errors import EvidenceError
from osm_trustmgr.tpm.identity import Identity, check_same_identity
from osm_trustmgr.tpm.pcr import PcrSelection, select
from osm_trustmgr.tpm.public import parse_public

log = logging.getLogger(__name__)

IDENTITY_FAILURES = {Failure.SIGNATURE_INVALID.value, Failure.SIGNER_MISMATCH.value, Failure.SIGNATURE_SCHEME.value}


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Publisher(Protocol):
    async def publish(self, topic: str, key: str, value: Mapping[str, Any]) -> None: ...


class EvidenceSource(Protocol):
    """Where an entity's TPM answers: ``HostAgentClient`` or the charm's ``CharmClient``."""

    async def identity(self) -> PresentedIdentity: ...

    async def activate(self, credential_blob: bytes, encrypted_secret: bytes) -> bytes: ...

    async def quote(self, nonce: bytes, selection: Sequence[PcrSelection], ima_offset: int) -> dict[str, Any]: ...


@dataclass(frozen=True)
class AttestationSettings:
    ek_ca_bundle: Sequence[x509.Certificate]
    banks: Sequence[str] = ("sha256",)
    nonce_ttl: timedelta = timedelta(seconds=60)


@dataclass(frozen=True)
class Subject:
    """What a round needs to know about the entity it attests."""

    entity: str  # ``host:<id>`` or ``vnf:<vnfr id>``
    policy_id: str | None = None
    previous: VerifierState | None = None
    ca_bundle: Sequence[x509.Certificate] | None = None  # None: the configured tpm.ek_ca_bundle
    pinned_ek: bytes | None = None
    host_loa: int | None = None  # a VNF's: the LoA of the hosts it runs on now (LoA 5 needs both at >= 4)


class Rounds:
    """Enrollment and attestation rounds against the store, the policies and the verifier."""

    def __init__(
        self,
        store: TrustStore,
        policies: PolicyBook,
        settings: AttestationSettings,
        *,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.store, self.policies, self.settings, self._clock = store, policies, settings, clock

    async def enroll(self, subject: Subject, source: EvidenceSource) -> IdentityRecord:
        """Enroll the entity's TPM; raises EvidenceError (enrollment refused), SourceError or SourceUnreachable."""
        challenge = begin_enrollment(
            await source.identity(), ca_bundle=self.ca_bundle(subject), now=self._clock(), pinned_ek=subject.pinned_ek
        )
        try:
            returned = await source.activate(challenge.credential_blob, challenge.encrypted_secret)
        except SourceError as e:
            raise EvidenceError(Failure.CREDENTIAL_FAILED, f"ActivateCredential refused: {e.detail}") from None
        return await self.store_enrollment(subject.entity, complete_enrollment(challenge, returned))

    async def store_enrollment(self, entity: str, enrollment: Enrollment) -> IdentityRecord:
        record = identity_record(entity, enrollment, self._clock())
        if not await self.store.put_identity(record):
            other = await self.store.identity_with_ak(record.ak_name)
            if other is not None and other.entity != entity:
                # one AK, one entity: the same TPM identity behind two hosts/VNFs is a clone (or a reused vTPM)
                raise EvidenceError(Failure.IDENTITY_CHANGED, f"this AK is already enrolled as {other.entity}")
            raise EvidenceError(Failure.IDENTITY_CHANGED, f"{entity} was enrolled concurrently")
        log.info("%s enrolled (%s)", entity, enrollment.method)
        return record

    def ca_bundle(self, subject: Subject) -> Sequence[x509.Certificate]:
        return self.settings.ek_ca_bundle if subject.ca_bundle is None else subject.ca_bundle

    async def policy(self, policy_id: str | None) -> TrustPolicy | None:
        return await self.policies.get(policy_id) if policy_id else None

    async def run(self, subject: Subject, source: EvidenceSource) -> AttestationResult:
        """One round (enrolling first if needed). Raises SourceUnreachable; every other failure is a verdict."""
        nonce = os.urandom(20)
        identity = await self.store.get_identity(subject.entity)
        try:
            if identity is None:
                identity = await self.enroll(subject, source)
            policy = await self.policy(subject.policy_id)
        except (EvidenceError, SourceError) as e:
            return self.without_evidence(subject, nonce, e)
        selection = policy_selection(policy, self.settings.banks)
        offset = subject.previous.ima_offset if subject.previous else 0
        result = await self._judge(subject, source, identity, policy, selection, nonce, offset)
        if result.claims.get("rebooted") and offset > 0:
            # the log of the new boot must be read from its start: one more round at offset 0
            log.info("%s rebooted: re-reading its IMA log from the start", subject.entity)
            result = await self._judge(subject, source, identity, policy, selection, os.urandom(20), 0)
        if IDENTITY_FAILURES.intersection(result.codes()):
            result = await self._check_identity(subject, source, identity, result)
        return result

    async def _judge(
        self,
        subject: Subject,
        source: EvidenceSource,
        identity: IdentityRecord,
        policy: TrustPolicy | None,
        selection: tuple[PcrSelection, ...],
        nonce: bytes,
        offset: int,
    ) -> AttestationResult:
        await self.store.issue_nonce(nonce, subject.entity, self._clock(), self.settings.nonce_ttl)
        try:
            try:
                doc = await source.quote(nonce, selection, offset)
            except ImaOffsetBeyondLog:  # the log restarted (reboot): read it from its start
                doc = await source.quote(nonce, selection, 0)
            evidence = parse_evidence_document(doc).evidence
        except (SourceError, EvidenceError) as e:
            await self.store.consume_nonce(nonce, subject.entity, self._clock())
            return self.without_evidence(subject, nonce, e)
        collected = self._clock()
        if not await self.store.consume_nonce(nonce, subject.entity, collected):
            return failed(subject, nonce, collected, Failure.NONCE_REPLAYED, "nonce unknown or used")
        return self.verify(subject, identity, policy, Request(nonce, selection), evidence, collected)

    def verify(
        self,
        subject: Subject,
        identity: IdentityRecord,
        policy: TrustPolicy | None,
        request: Request,
        evidence: Evidence,
        collected: datetime,
    ) -> AttestationResult:
        claim = IdentityClaim(parse_public(identity.ak_public), identity.method, identity.ak_qualified_name)
        return evaluate(
            evidence, claim, request, entity=subject.entity, now=collected, policy=policy,
            previous=subject.previous, collected_at=collected, host_loa=subject.host_loa,
        )  # fmt: skip

    async def _check_identity(
        self, subject: Subject, source: EvidenceSource, enrolled: IdentityRecord, result: AttestationResult
    ) -> AttestationResult:
        """A quote the enrolled AK did not sign: ask the source who it is now. A new AK is an attack."""
        try:
            presented = await source.identity()
            check_same_identity(
                enrolled_identity(enrolled),
                Identity.from_publics(presented.ek_public, presented.ak_public, presented.ek_certificate),
            )
        except EvidenceError as e:
            log.error("ALARM %s: %s", subject.entity, e.detail)
            return with_failure(result, e)
        except (SourceError, SourceUnreachable):
            pass
        return result

    def without_evidence(self, subject: Subject, nonce: bytes, error: Exception) -> AttestationResult:
        if isinstance(error, EvidenceError):
            return failed(subject, nonce, self._clock(), error.code, error.detail)
        return failed(subject, nonce, self._clock(), Failure.AGENT_ERROR, str(error))


def with_failure(result: AttestationResult, error: EvidenceError) -> AttestationResult:
    """``result`` with one more failure, and LoA 0 (identity failures void everything above them)."""
    failure = FailureRecord.of(error.code, error.detail, 1)
    return result.model_copy(update={"failures": [*result.failures, failure], "loa": 0})


def failed(subject: Subject, nonce: bytes, now: datetime, code: Failure, detail: str) -> AttestationResult:
    return AttestationResult(
        entity=subject.entity,
        loa=0,
        failures=[FailureRecord.of(code, detail, 1)],
        evidence_digest="",
        nonce=nonce.hex(),
        policy_id=subject.policy_id,
        time=now,
    )


def policy_selection(policy: TrustPolicy | None, banks: Sequence[str]) -> tuple[PcrSelection, ...]:
    # without a policy only identity and quote are judged; PCRs 0-10 still give the report its claims
    return policy.selection() if policy is not None else select(banks, range(11))


def enrolled_identity(record: IdentityRecord) -> Identity:
    return Identity(record.ek_public, record.ek_certificate, record.ak_public, record.ak_name, record.ak_qualified_name)


def identity_record(entity: str, enrollment: Enrollment, now: datetime) -> IdentityRecord:
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
