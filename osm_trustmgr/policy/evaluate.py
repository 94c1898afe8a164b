"""The Level-of-Assurance ladder (DESIGN.md §4): evidence + identity + policy → AttestationResult.

Every check of every configured level runs, so an operator sees all that is wrong at once; the LoA is the
highest level whose checks, and those of every level below, all passed. The only early exit is a quote that
does not verify: its PCR values are then unproven and checking logs against them would mean nothing.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from osm_trustmgr.failures import Failure
from osm_trustmgr.policy import levels
from osm_trustmgr.policy.model import TrustPolicy
from osm_trustmgr.policy.result import AttestationResult, FailureRecord, VerifierState
from osm_trustmgr.tpm.errors import EvidenceError
from osm_trustmgr.tpm.pcr import PcrBanks, PcrSelection
from osm_trustmgr.tpm.public import TpmPublic
from osm_trustmgr.tpm.quote import ClockInfo, VerifiedQuote, check_counters, verify_quote

IdentityMethod = Literal["ek_certificate", "pinned_ek", "pinned_ak", "none"]


@dataclass(frozen=True)
class Evidence:
    """One round of evidence in the agent's format (DESIGN.md §7), decoded to bytes."""

    attest: bytes
    signature: bytes
    pcrs: PcrBanks
    uefi_log: bytes | None = None
    ima_log: bytes | None = None
    ima_offset: int = 0


@dataclass(frozen=True)
class IdentityClaim:
    """How the verifier knows the AK: enrolled through an EK certificate, an admin-pinned EK or AK, or not at all.

    ``qualified_name`` is the AK's qualified Name under the EK when known, so the quote's signer is checked.
    """

    ak: TpmPublic
    method: IdentityMethod
    qualified_name: bytes | None = None


@dataclass(frozen=True)
class Request:
    """What the verifier asked for: the single-use nonce and the PCR selection."""

    nonce: bytes
    selection: Sequence[PcrSelection] | None = None


@dataclass
class Findings:
    """Accumulates failures and claims while the levels run."""

    failures: list[FailureRecord] = field(default_factory=list)
    claims: dict[str, Any] = field(default_factory=dict)

    def fail(self, code: Failure, detail: str, level: int) -> None:
        self.failures.append(FailureRecord.of(code, detail, level))

    def passed(self, level: int) -> bool:
        return not any(f.level <= level for f in self.failures)


def evidence_digest(ev: Evidence) -> str:
    """SHA-256 over every evidence byte, so a stored report names exactly what was judged."""
    h = hashlib.sha256()
    for part in (ev.attest, ev.signature, ev.uefi_log or b"", ev.ima_log or b""):
        h.update(len(part).to_bytes(8, "big") + part)
    pcrs = {b: {str(i): v.hex() for i, v in sorted(vals.items())} for b, vals in sorted(ev.pcrs.items())}
    h.update(json.dumps(pcrs, sort_keys=True).encode())
    h.update(ev.ima_offset.to_bytes(8, "big"))
    return h.hexdigest()


def evaluate(
    evidence: Evidence,
    identity: IdentityClaim,
    request: Request,
    *,
    entity: str,
    now: datetime,
    policy: TrustPolicy | None = None,
    previous: VerifierState | None = None,
    collected_at: datetime | None = None,
    host_loa: int | None = None,
) -> AttestationResult:
    """Judge one round of evidence. Pure: time, previous state and policy are all passed in."""
    found = Findings()
    result = _result(evidence, request, entity, now, policy)
    verified = _check_identity_and_quote(evidence, identity, request, previous, found)
    if verified is None:
        return result.model_copy(update={"loa": 0, "claims": found.claims, "failures": found.failures})
    state = VerifierState(
        reset_count=verified.quote.clock_info.reset_count,
        restart_count=verified.quote.clock_info.restart_count,
        clock=verified.quote.clock_info.clock,
    )
    ceiling = 1
    if policy is not None:
        rebooted = bool(found.claims.get("rebooted"))
        ceiling, state = levels.check_policy(
            evidence,
            verified,
            policy,
            found,
            previous=None if rebooted else previous,
            state=state,
            age=(now - collected_at).total_seconds() if collected_at else 0.0,
        )
    loa = max((lvl for lvl in range(ceiling + 1) if found.passed(lvl)), default=0)
    if host_loa is not None:
        found.claims["host_loa"] = host_loa
        if loa >= 4 and host_loa >= 4:
            loa = 5
    found.claims["policy_ceiling"] = ceiling
    return result.model_copy(update={"loa": loa, "claims": found.claims, "failures": found.failures, "state": state})


def _result(ev: Evidence, req: Request, entity: str, now: datetime, policy: TrustPolicy | None) -> AttestationResult:
    return AttestationResult(
        entity=entity,
        loa=0,
        evidence_digest=evidence_digest(ev),
        nonce=req.nonce.hex(),
        policy_id=policy.id if policy else None,
        time=now,
    )


def _check_identity_and_quote(
    ev: Evidence, identity: IdentityClaim, req: Request, previous: VerifierState | None, found: Findings
) -> VerifiedQuote | None:
    """LoA 1. Returns the verified quote, or None when the quote itself cannot be trusted."""
    found.claims["identity"] = {
        "method": identity.method,
        "ak_name": identity.ak.name.hex() if identity.ak.name else None,
    }
    if identity.method == "none":
        found.fail(Failure.AK_NOT_ENROLLED, "the AK is neither enrolled nor pinned by an administrator", 1)
    if identity.ak.name is not None and not identity.ak.is_restricted_signing:
        found.fail(
            Failure.AK_ATTRIBUTES, f"AK attributes 0x{identity.ak.attributes:08x} are not a restricted signing key", 1
        )
    try:
        verified = verify_quote(
            ev.attest,
            ev.signature,
            identity.ak,
            req.nonce,
            ev.pcrs,
            expected_signer=identity.qualified_name,
            expected_selection=req.selection,
        )
    except EvidenceError as e:
        found.fail(e.code, e.detail, 1)
        return None
    clock = verified.quote.clock_info
    found.claims["quote"] = {
        "reset_count": clock.reset_count,
        "restart_count": clock.restart_count,
        "clock": clock.clock,
        "clock_safe": clock.safe,
        "firmware_version": f"{verified.quote.firmware_version:016x}",
        "signer_checked": verified.signer_checked,
        "pcrs": {b: {str(i): v.hex() for i, v in sorted(vals.items())} for b, vals in verified.pcrs().items()},
    }
    prev_clock = ClockInfo(previous.clock, previous.reset_count, previous.restart_count, True) if previous else None
    try:
        found.claims["rebooted"] = check_counters(prev_clock, clock)
    except EvidenceError as e:
        found.fail(e.code, e.detail, 1)
    return verified
