"""Strict mode (DESIGN.md §5): the VNF's own day-1 ``attest`` primitive asks for a challenge and sends evidence.

The trust-proxy charm, listed as the last day-1 primitive with the Trust Manager URL, calls
``POST /challenges`` then ``POST /evidence`` and fails its action (so LCM fails the instantiation) unless the
verdict is ``accept``. No NBI action is needed while the NS is still instantiating.

The exchange authenticates itself: a challenge's nonce is random, single-use, bound to one VNF and short-lived
(kept in ``trust_nonces``, so a restart loses nothing). A VNF not yet enrolled gets a MakeCredential challenge
with its nonce; its evidence is judged only after the TPM returned the credential's secret, i.e. only for an
enrolled identity. A known VNF presenting another AK is refused and marked ``rejected`` (never re-enrolled
silently).
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from osm_trustmgr.attestation import Rounds, Subject, enrolled_identity, failed, policy_selection, utcnow
from osm_trustmgr.enrollment import Challenge, PresentedIdentity, begin_enrollment, complete_enrollment
from osm_trustmgr.evidence.document import parse_evidence_document
from osm_trustmgr.failures import Failure
from osm_trustmgr.osm.records import OsmRecords
from osm_trustmgr.policy.evaluate import Request
from osm_trustmgr.policy.result import AttestationResult
from osm_trustmgr.store.gates import GateStore
from osm_trustmgr.store.records import VnfTrustRecord
from osm_trustmgr.tpm.errors import EvidenceError
from osm_trustmgr.tpm.identity import Identity, check_same_identity
from osm_trustmgr.tpm.pcr import format_selection_spec, parse_selection_spec
from osm_trustmgr.vnfs import VnfAttestor, vnf_entity

log = logging.getLogger(__name__)


class StrictError(Exception):
    """A request the Trust Manager refuses; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status, self.detail = status, detail


@dataclass(frozen=True)
class StrictSettings:
    challenge_ttl: timedelta = timedelta(seconds=120)


@dataclass(frozen=True)
class StrictVerdict:
    decision: str  # accept | reject
    loa: int
    required_loa: int
    reasons: list[str]
    report_id: str

    def to_json(self) -> dict[str, Any]:
        return {"decision": self.decision, "loa": self.loa, "required_loa": self.required_loa,
                "reasons": self.reasons, "report_id": self.report_id}  # fmt: skip


def _b64(value: object, what: str) -> bytes:
    if not isinstance(value, str) or not value:
        raise StrictError(422, f"{what} must be a non-empty base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise StrictError(422, f"{what} is not valid base64") from None


def presented_identity(doc: Mapping[str, Any]) -> PresentedIdentity:
    """The charm's identity (agent format: ek_public, ek_certificate, ak_public, base64)."""
    cert = doc.get("ek_certificate")
    return PresentedIdentity(
        ek_public=_b64(doc.get("ek_public"), "identity.ek_public"),
        ek_certificate=_b64(cert, "identity.ek_certificate") if cert else None,
        ak_public=_b64(doc.get("ak_public"), "identity.ak_public"),
    )


class StrictAttestation:
    def __init__(
        self,
        attestor: VnfAttestor,
        records: OsmRecords,
        gates: GateStore,
        settings: StrictSettings,
        *,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.attestor, self.records, self.gates, self.settings, self._clock = attestor, records, gates, settings, clock

    @property
    def rounds(self) -> Rounds:
        return self.attestor.rounds

    async def challenge(self, vnfr_id: str, identity: Mapping[str, Any]) -> dict[str, Any]:
        vnf = await self._track(vnfr_id)
        presented = presented_identity(identity)
        entity = vnf_entity(vnf.id)
        subject = await self.attestor.subject(vnf)
        enrolled = await self.rounds.store.get_identity(entity)
        pending: dict[str, Any] | None = None
        activation: dict[str, str] | None = None
        try:
            if enrolled is None:
                challenge = begin_enrollment(presented, ca_bundle=self.rounds.ca_bundle(subject), now=self._clock())
                p = presented
                pending = {"secret": challenge.secret, "ek_public": p.ek_public, "ak_public": p.ak_public,
                           "ek_certificate": p.ek_certificate, "method": challenge.method,
                           "credential": challenge.credential_blob,
                           "encrypted": challenge.encrypted_secret}  # fmt: skip
                activation = {"credential": base64.b64encode(challenge.credential_blob).decode(),
                              "secret": base64.b64encode(challenge.encrypted_secret).decode()}  # fmt: skip
            else:
                claimed = Identity.from_publics(presented.ek_public, presented.ak_public, presented.ek_certificate)
                check_same_identity(enrolled_identity(enrolled), claimed)
        except EvidenceError as e:
            result = failed(subject, os.urandom(20), self._clock(), e.code, e.detail)
            await self.attestor.record(vnf, result)
            log.warning("strict mode: VNF %s identity refused: %s: %s", vnf.id, e.code.value, e.detail)
            raise StrictError(403, f"{e.code.value}: {e.detail}") from None
        policy = await self.rounds.policy(vnf.policy_id)
        spec = format_selection_spec(policy_selection(policy, self.rounds.settings.banks))
        nonce = os.urandom(20)
        ttl = self.settings.challenge_ttl
        # the whole IMA log: strict mode runs at day 1 (and a rebooted VNF would otherwise need a second round)
        await self.rounds.store.issue_nonce(nonce, entity, self._clock(), ttl, {"pcrs": spec, "enrollment": pending})
        log.info("strict mode: challenge for VNF %s (member %s of NS %s)%s", vnf.id, vnf.member_vnf_index,
                 vnf.nsr_id, " with enrollment" if pending else "")  # fmt: skip
        return {"nonce": nonce.hex(), "pcrs": spec, "ima_offset": 0, "activation": activation,
                "expires_in": int(ttl.total_seconds())}  # fmt: skip

    async def evidence(
        self, vnfr_id: str, nonce_hex: str, activated_secret: str | None, evidence: Mapping[str, Any]
    ) -> StrictVerdict:
        vnf = await self.attestor.vnfs.get(vnfr_id)
        if vnf is None:
            raise StrictError(404, f"no challenge was issued for VNF {vnfr_id}")
        try:
            nonce = bytes.fromhex(nonce_hex)
        except ValueError:
            raise StrictError(422, "nonce must be hex") from None
        entity = vnf_entity(vnf.id)
        now = self._clock()
        issued = await self.rounds.store.take_nonce(nonce, entity, now)
        if issued is None:
            raise StrictError(409, "unknown, used or expired challenge for this VNF: ask for a new one")
        subject = await self.attestor.subject(vnf)
        result = await self._judge(vnf, subject, nonce, issued, activated_secret, evidence, now)
        outcome = await self.attestor.record(vnf, result)
        required = vnf.required_loa
        accepted = outcome.vnf.state == "attested" and result.loa >= required
        reasons = [f"{f.code}: {f.detail}" for f in result.failures]
        log.log(logging.INFO if accepted else logging.WARNING, "strict mode: VNF %s at LoA %d (required %d): %s%s",
                vnf.id, result.loa, required, "accept" if accepted else "reject",
                "" if accepted else ": " + ("; ".join(reasons) or "below the required LoA"))  # fmt: skip
        return StrictVerdict("accept" if accepted else "reject", result.loa, required, reasons, result.nonce)

    async def _judge(
        self,
        vnf: VnfTrustRecord,
        subject: Subject,
        nonce: bytes,
        issued: Mapping[str, Any],
        activated_secret: str | None,
        evidence: Mapping[str, Any],
        now: datetime,
    ) -> AttestationResult:
        try:
            identity = await self.rounds.store.get_identity(subject.entity)
            pending = issued.get("enrollment")
            if pending:
                returned = _b64(activated_secret, "activated_secret")
                enrollment = complete_enrollment(_challenge(pending), returned)
                identity = await self.rounds.store_enrollment(subject.entity, enrollment)
            if identity is None:
                raise EvidenceError(Failure.IDENTITY_CHANGED, "the VNF's enrollment was withdrawn meanwhile")
            parsed = parse_evidence_document(dict(evidence)).evidence
            policy = await self.rounds.policy(vnf.policy_id)
        except StrictError as e:
            return failed(subject, nonce, now, Failure.EVIDENCE_MALFORMED, e.detail)
        except EvidenceError as e:
            return failed(subject, nonce, now, e.code, e.detail)
        selection = parse_selection_spec(str(issued.get("pcrs")))
        return self.rounds.verify(subject, identity, policy, Request(nonce, selection), parsed, now)

    async def _track(self, vnfr_id: str) -> VnfTrustRecord:
        vnfr = await self.records.vnfr(vnfr_id)
        if vnfr is None:
            raise StrictError(404, f"unknown VNF instance {vnfr_id}")
        nsr = await self.records.nsr(vnfr.nsr_id)
        if nsr is None:
            raise StrictError(404, f"VNF {vnfr_id} belongs to no NS")
        gate = await self.gates.latest_for_ns(nsr.id)
        if gate is None:
            # challenges are only for NSs whose instantiation the Trust Manager gated: it knows their LoA, and an
            # arbitrary caller cannot enroll a TPM of its own for a VNF nobody is instantiating
            raise StrictError(409, f"no instantiation of NS {nsr.id} was gated by the Trust Manager")
        by_member = gate.get("required_vnf_loa") or {}
        required = int(by_member.get(vnfr.member_vnf_index, gate.get("required_vnf_default") or 0))
        return await self.attestor.track(nsr, vnfr, required, gate["_id"])


def _challenge(pending: Mapping[str, Any]) -> Challenge:
    """The enrollment challenge as issued (kept with the nonce); the EK certificate was checked then."""
    presented = PresentedIdentity(bytes(pending["ek_public"]), _opt_bytes(pending.get("ek_certificate")),
                                  bytes(pending["ak_public"]))  # fmt: skip
    return Challenge(presented, pending["method"], None, bytes(pending["secret"]), bytes(pending["credential"]),
                     bytes(pending["encrypted"]))  # fmt: skip


def _opt_bytes(value: Any) -> bytes | None:
    return bytes(value) if value is not None else None
