"""The charm against simulated VNFs: a real sshd in front of a booted swtpm (osm_trustmgr.sandbox.vnf), once
with osm-trust-agent in the VNF and once with tpm2-tools only. Actions run through ops.testing with the VNF's
SSH config; their results are enrolled and judged by the Trust Manager's own enrollment and verifier."""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import pytest
from charm import TrustProxyCharm
from ops import testing

from osm_trustmgr.agent.tpm import TpmDevice
from osm_trustmgr.enrollment import Enrollment, begin_enrollment, complete_enrollment
from osm_trustmgr.evidence.document import EvidenceDocument, parse_evidence_document
from osm_trustmgr.failures import Failure
from osm_trustmgr.policy.evaluate import Request, evaluate
from osm_trustmgr.policy.model import TrustPolicy
from osm_trustmgr.policy.result import AttestationResult
from osm_trustmgr.sandbox.swtpm import LocalCa
from osm_trustmgr.sandbox.vnf import SimulatedVnf
from osm_trustmgr.tpm.credential import make_credential
from osm_trustmgr.tpm.identity import Identity, parse_ek_public
from osm_trustmgr.tpm.pcr import format_selection_spec, parse_selection_spec
from tests.charm.helpers import (
    TrustManagerStub,
    VerifyingTrustManager,
    evidence_from_results,
    failure,
    presented_identity,
    run_action,
)

OSM_PARAMS = "{ns_id: ns-1, vnf_id: vnfr-1, member_vnf_index: '1'}"
INTRUDER = "/usr/local/bin/cryptominer"


@dataclass
class Enrolled:
    ctx: testing.Context[TrustProxyCharm]
    state: testing.State  # carries the charm's stored state (the pinned host key) from action to action
    identity: dict[str, str]
    enrollment: Enrollment
    policy: TrustPolicy

    def attest(self, nonce: bytes, **params: Any) -> tuple[dict[str, str], EvidenceDocument]:
        pcrs = format_selection_spec(self.policy.selection())
        results, self.state = run_action(
            self.ctx, "attest", {}, {"nonce": nonce.hex(), "pcrs": pcrs, **params}, state=self.state
        )
        return results, parse_evidence_document(evidence_from_results(results))

    def judge(self, doc: EvidenceDocument, nonce: bytes, policy: TrustPolicy | None) -> AttestationResult:
        request = Request(nonce, self.policy.selection())
        now = datetime.now(timezone.utc)
        return evaluate(doc.evidence, self.enrollment.claim(), request, entity="vnf", now=now, policy=policy)


def enroll(vnf: SimulatedVnf, ca: LocalCa) -> Enrolled:
    """identity → EK chain and MakeCredential → the charm's activate → complete (DESIGN.md §5, Enrollment)."""
    ctx = testing.Context(TrustProxyCharm)
    identity, state = run_action(ctx, "identity", vnf.ssh_config)
    now = datetime.now(timezone.utc)
    challenge = begin_enrollment(presented_identity(identity), ca_bundle=ca.certificates, now=now)
    params = {"credential": base64.b64encode(challenge.credential_blob).decode(),
              "secret": base64.b64encode(challenge.encrypted_secret).decode()}  # fmt: skip
    returned, state = run_action(ctx, "activate", {}, params, state=state)
    enrollment = complete_enrollment(challenge, base64.b64decode(returned["secret"]))
    return Enrolled(ctx, state, identity, enrollment, TrustPolicy.model_validate(vnf.host.reference_policy()))


@pytest.fixture(scope="module")
def enrolled(vnf: SimulatedVnf, swtpm_ca: LocalCa) -> Enrolled:
    return enroll(vnf, swtpm_ca)


def _tpm_is_clean(vnf: SimulatedVnf) -> None:
    """No transient object or session left behind: swtpm has no resource manager to clean up after us."""
    with TpmDevice(vnf.swtpm.tcti) as tpm:
        assert (tpm.transient_handles(), tpm.loaded_sessions()) == ([], [])


def test_verify_ssh_credentials_pins_the_host_key(vnf: SimulatedVnf) -> None:
    assert vnf.sshd is not None
    ctx = testing.Context(TrustProxyCharm)
    results, out = run_action(ctx, "verify-ssh-credentials", vnf.ssh_config)
    assert results == {"verified": "true"}
    stored = next(s for s in out.stored_states if s.owner_path == "TrustProxyCharm")
    assert stored.content["host_keys"] == {f"127.0.0.1:{vnf.sshd.port}": vnf.sshd.host_public_key}


def test_identity_is_the_vnf_tpm(vnf: SimulatedVnf, enrolled: Enrolled) -> None:
    ident = enrolled.identity
    with TpmDevice(vnf.swtpm.tcti) as tpm:
        assert base64.b64decode(ident["ek-public"]) == tpm.create_ek("rsa").public  # the TCG default EK template
        assert base64.b64decode(ident["ek-certificate"]) == tpm.read_ek_certificate("rsa")
    expected = Identity.from_publics(base64.b64decode(ident["ek-public"]), base64.b64decode(ident["ak-public"]))
    assert ident["ak-name"] == expected.ak_name.hex()
    assert enrolled.enrollment.method == "ek_certificate"
    # The AK is created once and reused: a later identity is the enrolled one.
    again, enrolled.state = run_action(enrolled.ctx, "identity", {}, state=enrolled.state)
    assert again == ident
    _tpm_is_clean(vnf)


def test_attest_reaches_runtime_loa(vnf: SimulatedVnf, enrolled: Enrolled) -> None:
    nonce = os.urandom(32)
    results, doc = enrolled.attest(nonce)
    assert results["nonce"] == nonce.hex() and doc.ak_public == enrolled.enrollment.identity.ak_public
    assert doc.evidence.uefi_log == vnf.host.uefi_log_path.read_bytes()
    result = enrolled.judge(doc, nonce, enrolled.policy)
    assert result.failures == []
    assert (result.loa, result.loa_name) == (4, "runtime")
    assert enrolled.judge(doc, nonce, None).loa == 1  # without a policy: identity and quote only
    _tpm_is_clean(vnf)


def test_quote_over_two_banks(vnf: SimulatedVnf, enrolled: Enrolled) -> None:
    nonce, spec = os.urandom(16), "sha1:0,1,7+sha256:0-10"
    _, doc = enrolled.attest(nonce, pcrs=spec)
    assert {bank: sorted(values) for bank, values in doc.evidence.pcrs.items()} == {
        "sha1": [0, 1, 7], "sha256": list(range(11))}  # fmt: skip
    with TpmDevice(vnf.swtpm.tcti) as tpm:
        assert doc.evidence.pcrs["sha1"][7] == tpm.pcr_read({"sha1": [7]})["sha1"][7]
    now = datetime.now(timezone.utc)
    request = Request(nonce, parse_selection_spec(spec))
    result = evaluate(doc.evidence, enrolled.enrollment.claim(), request, entity="vnf", now=now)
    assert (result.loa, result.failures) == (1, [])


def test_quote_for_another_nonce_is_rejected(enrolled: Enrolled) -> None:
    _, doc = enrolled.attest(os.urandom(20))
    result = enrolled.judge(doc, os.urandom(20), enrolled.policy)
    assert result.loa == 0
    assert Failure.NONCE_MISMATCH.value in result.codes()


def test_ima_log_from_offset(vnf: SimulatedVnf, enrolled: Enrolled) -> None:
    lines = vnf.host.ima_log_path.read_text().splitlines(keepends=True)
    results, doc = enrolled.attest(os.urandom(20), **{"ima-offset": 2})
    assert results["ima-log"] == "".join(lines[2:])
    assert (doc.evidence.ima_offset, doc.ima_next_offset) == (2, len(lines))
    past_end, _ = enrolled.attest(os.urandom(20), **{"ima-offset": len(lines) + 5})
    assert (past_end["ima-log"], past_end["ima-next-offset"]) == ("", str(len(lines)))  # as the agent does


def test_activate_refuses_a_credential_for_another_ak(vnf: SimulatedVnf, enrolled: Enrolled) -> None:
    ek = parse_ek_public(base64.b64decode(enrolled.identity["ek-public"]))
    blob, encrypted = make_credential(ek, bytes.fromhex("000b") + bytes(32), os.urandom(32))
    params = {"credential": base64.b64encode(blob).decode(), "secret": base64.b64encode(encrypted).decode()}
    message = failure(enrolled.ctx, "activate", {}, params, state=enrolled.state)
    # The TPM's own refusal reaches the operator, on either path.
    assert "activate" in message and "integrity check failed" in message
    _tpm_is_clean(vnf)


def test_strict_mode_accepts_a_trusted_vnf(vnf: SimulatedVnf, enrolled: Enrolled, swtpm_ca: LocalCa) -> None:
    trustmgr = VerifyingTrustManager(swtpm_ca.certificates, enrolled.policy, required_loa=4)
    with TrustManagerStub(trustmgr) as server:
        params = {"trustmgr-url": server.url, "osm-params": OSM_PARAMS, "pcrs": "sha256:0-10", "ima-offset": 0}
        results, enrolled.state = run_action(enrolled.ctx, "attest", {}, params, state=enrolled.state)
    assert results["decision"] == "accept" and results["loa"] == "4" and results["required-loa"] == "4"
    assert "vnfr-1" in trustmgr.enrollments  # first contact: enrolled through the activation in the challenge
    assert [r.loa for r in trustmgr.results] == [4]


@pytest.mark.parametrize("with_agent", [True, False], ids=["agent", "tpm2-tools"])
def test_ima_tampered_vnf_is_runtime_untrusted(make_vnf: Any, swtpm_ca: LocalCa, with_agent: bool) -> None:
    vnf = make_vnf(with_agent=with_agent)
    enrolled = enroll(vnf, swtpm_ca)
    vnf.host.execute(INTRUDER, b"not in the golden image")

    nonce = os.urandom(20)
    _, doc = enrolled.attest(nonce)
    result = enrolled.judge(doc, nonce, enrolled.policy)
    assert result.loa == 3
    assert result.codes() == [Failure.IMA_UNKNOWN_DIGEST.value] and INTRUDER in result.failures[0].detail

    # Strict mode: the same VNF fails the action, so LCM would fail the instantiation.
    trustmgr = VerifyingTrustManager(swtpm_ca.certificates, enrolled.policy, required_loa=4)
    with TrustManagerStub(trustmgr) as server:
        params = {"trustmgr-url": server.url, "osm-params": OSM_PARAMS}
        message = failure(enrolled.ctx, "attest", {}, params, state=enrolled.state)
    assert message.startswith("VNF not trusted: LoA 3 < required 4: ima.unknown_digest")
    assert INTRUDER in message
