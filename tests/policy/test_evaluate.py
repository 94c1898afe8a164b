"""The LoA ladder on a real swtpm-backed host: honest → 4, and each kind of tampering → the right LoA and code."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta, timezone

import pytest

from osm_trustmgr.failures import Failure
from osm_trustmgr.policy.evaluate import Evidence, IdentityClaim, Request, evaluate
from osm_trustmgr.policy.model import TrustPolicy
from osm_trustmgr.policy.result import AttestationResult, VerifierState
from osm_trustmgr.sandbox.demo import Sandbox, start_host
from osm_trustmgr.sandbox.host import CMDLINE
from osm_trustmgr.tpm.eventlog import parse_eventlog, replay
from osm_trustmgr.tpm.eventlog_builder import build_eventlog, typical_boot
from osm_trustmgr.tpm.pcr import parse_selection_spec
from osm_trustmgr.tpm.public import parse_public

NONCE = bytes(range(20))


@pytest.fixture
def box(swtpm, tpm, swtpm_ca) -> Sandbox:  # type: ignore[no-untyped-def]
    return start_host(swtpm, tpm, swtpm_ca.certificates)


def _selection(policy: TrustPolicy, pcrs: list[int] | None = None) -> str:
    return "+".join(f"{b}:{','.join(map(str, pcrs or policy.quoted_pcrs()))}" for b in policy.pcr_banks)


def _judge(
    box: Sandbox,
    *,
    evidence: Evidence | None = None,
    policy: TrustPolicy | None = None,
    identity: IdentityClaim | None = None,
    previous: VerifierState | None = None,
    collected_at: datetime | None = None,
    host_loa: int | None = None,
    pcrs: list[int] | None = None,
    ima_offset: int = 0,
) -> AttestationResult:
    policy = policy or box.policy
    selection = parse_selection_spec(_selection(policy, pcrs))
    wanted = {s.bank.name: list(s.pcrs) for s in selection}
    if evidence is None:
        evidence = box.host.evidence(box.ak, NONCE, wanted, ima_offset=ima_offset)
    now = datetime.now(timezone.utc)
    return evaluate(
        evidence,
        identity or box.enrollment.claim(),
        Request(NONCE, selection),
        entity="host-1",
        now=now,
        policy=policy,
        previous=previous,
        collected_at=collected_at,
        host_loa=host_loa,
    )


def _policy_with(box: Sandbox, **changes: object) -> TrustPolicy:
    doc = box.host.reference_policy()
    for path, value in changes.items():
        target = doc
        *parents, leaf = path.split("__")
        for p in parents:
            target = target[p]
        target[leaf] = value
    return TrustPolicy.model_validate(doc)


def test_honest_host_reaches_runtime(box: Sandbox) -> None:
    result = _judge(box)
    assert result.failures == []
    assert (result.loa, result.loa_name) == (4, "runtime")
    assert result.claims["secure_boot"] is True
    assert result.claims["boot_aggregate"] == "pcr0-9"
    assert result.state is not None and result.state.ima_offset == len(box.host.ima.entries)


def test_resume_from_verified_offset(box: Sandbox) -> None:
    first = _judge(box)
    assert first.state is not None
    box.host.execute("/tmp/scratch.sh", b"excluded by policy")
    second = _judge(box, previous=first.state, ima_offset=first.state.ima_offset)
    assert second.loa == 4, second.failures
    assert second.claims["ima"]["entries_verified"] == 1
    assert second.state is not None and second.state.ima_offset == first.state.ima_offset + 1
    # evidence starting past what was verified leaves a gap nobody checked
    gap = _judge(box, previous=first.state, ima_offset=first.state.ima_offset + 1)
    assert Failure.IMA_REPLAY.value in gap.codes() and gap.loa == 3


def test_unknown_binary_drops_to_os_level_and_names_the_file(box: Sandbox) -> None:
    box.host.execute("/usr/local/bin/cryptominer", b"not in the golden image")
    result = _judge(box)
    assert result.loa == 3
    assert result.codes() == [Failure.IMA_UNKNOWN_DIGEST.value]
    assert "/usr/local/bin/cryptominer" in result.failures[0].detail


def test_modified_allowed_binary_is_unknown(box: Sandbox) -> None:
    box.host.execute("/usr/sbin/sshd", b"OpenSSH 9.6 with a backdoor")
    result = _judge(box)
    assert result.loa == 3 and "/usr/sbin/sshd" in result.failures[0].detail


def test_secure_boot_off(swtpm, tpm, swtpm_ca) -> None:  # type: ignore[no-untyped-def]
    box = start_host(swtpm, tpm, swtpm_ca.certificates, secure_boot=False)
    result = _judge(box)
    assert result.loa == 1
    assert result.codes() == [Failure.SECUREBOOT_DISABLED.value]
    assert "disabled" in result.failures[0].detail


def test_reboot_restarts_ima_offset(box: Sandbox) -> None:
    first = _judge(box)
    assert first.state is not None
    box.host.reboot()
    # the verifier asked from its old offset; the agent answers the whole new boot's log, as after a reboot
    second = _judge(box, previous=first.state)
    assert second.claims["rebooted"] is True
    assert second.loa == 4, second.failures
    assert second.state is not None
    assert second.state.reset_count == first.state.reset_count + 1
    assert second.state.ima_offset == len(box.host.ima.entries)


def test_counter_rollback_is_rejected(box: Sandbox) -> None:
    first = _judge(box)
    assert first.state is not None
    future = first.state.model_copy(update={"reset_count": first.state.reset_count + 5})
    result = _judge(box, previous=future)
    assert Failure.CLOCK_ROLLBACK.value in result.codes() and result.loa == 0


def test_tampered_uefi_log(box: Sandbox) -> None:
    ev = _evidence(box)
    assert ev.uefi_log is not None
    # flip one bit of the SecureBoot variable event's SHA-256 digest (PCR 7)
    first_pcr7 = next(e for e in parse_eventlog(ev.uefi_log).events if e.pcr == 7)
    at = ev.uefi_log.index(first_pcr7.digests["sha256"])
    log = bytearray(ev.uefi_log)
    log[at] ^= 0x01
    result = _judge(box, evidence=dataclasses.replace(ev, uefi_log=bytes(log)))
    assert Failure.EVENTLOG_REPLAY.value in result.codes()
    assert any("PCR 7" in f.detail for f in result.failures)
    assert result.loa == 1


def test_log_of_another_boot(box: Sandbox) -> None:
    """A log claiming a different kernel command line than the one measured does not replay to PCR 8."""
    ev = _evidence(box)
    other = build_eventlog(typical_boot(cmdline=CMDLINE + " init=/bin/sh"), box.host.banks).data
    result = _judge(box, evidence=dataclasses.replace(ev, uefi_log=other))
    assert Failure.EVENTLOG_REPLAY.value in result.codes()
    assert {f.level for f in result.failures} == {3}
    assert result.loa == 2


def test_missing_uefi_log(box: Sandbox) -> None:
    result = _judge(box, evidence=dataclasses.replace(_evidence(box), uefi_log=None))
    assert Failure.EVENTLOG_MISSING.value in result.codes() and result.loa == 1


def test_truncated_ima_log(box: Sandbox) -> None:
    ev = _evidence(box)
    assert ev.ima_log is not None
    lines = ev.ima_log.splitlines(keepends=True)
    result = _judge(box, evidence=dataclasses.replace(ev, ima_log=b"".join(lines[:-2])))
    assert result.codes() == [Failure.IMA_REPLAY.value] and result.loa == 3


def test_edited_ima_line(box: Sandbox) -> None:
    ev = _evidence(box)
    assert ev.ima_log is not None
    lines = ev.ima_log.decode().splitlines(keepends=True)
    lines[2] = lines[2].replace("/usr/bin/bash", "/usr/bin/bosh")
    result = _judge(box, evidence=dataclasses.replace(ev, ima_log="".join(lines).encode()))
    assert result.codes() == [Failure.IMA_TEMPLATE_HASH.value] and result.loa == 3


def test_missing_ima_log(box: Sandbox) -> None:
    result = _judge(box, evidence=dataclasses.replace(_evidence(box), ima_log=None))
    assert result.codes() == [Failure.IMA_MISSING.value] and result.loa == 3


def test_wrong_ak_and_unenrolled_identity(box: Sandbox, tpm) -> None:  # type: ignore[no-untyped-def]
    other = tpm.create_ak("ecc")
    claim = IdentityClaim(parse_public(other.public), "ek_certificate", other.qualified_name)
    result = _judge(box, identity=claim)
    assert result.codes() == [Failure.SIGNATURE_INVALID.value] and result.loa == 0
    unenrolled = dataclasses.replace(box.enrollment.claim(), method="none")
    result = _judge(box, identity=unenrolled)
    assert Failure.AK_NOT_ENROLLED.value in result.codes() and result.loa == 0


def test_stale_evidence(box: Sandbox) -> None:
    old = datetime.now(timezone.utc) - timedelta(seconds=box.policy.runtime.max_age + 60)  # type: ignore[union-attr]
    result = _judge(box, collected_at=old)
    assert result.codes() == [Failure.REPORT_STALE.value] and result.loa == 3


def test_workload_level_needs_a_trusted_host(box: Sandbox) -> None:
    assert _judge(box, host_loa=4).loa == 5
    weak_host = _judge(box, host_loa=3)
    assert weak_host.loa == 4 and weak_host.claims["host_loa"] == 3


def test_kernel_cmdline_and_boot_components(box: Sandbox) -> None:
    cmdline = _judge(box, policy=_policy_with(box, os__kernel_cmdline=[r".* ro quiet"]))
    assert cmdline.codes() == [Failure.BOOT_CMDLINE.value] and cmdline.loa == 2
    apps = _judge(box, policy=_policy_with(box, os__boot_components=["ab" * 32]))
    assert set(apps.codes()) == {Failure.BOOT_COMPONENT.value} and apps.loa == 2
    assert len(apps.failures) == 2  # shim and GRUB, each named
    assert any("grubx64.efi" in f.detail for f in apps.failures)


def test_platform_reference_values(box: Sandbox) -> None:
    policy = _policy_with(box, platform__pcrs={"sha256": {0: ["00" * 32]}})
    result = _judge(box, policy=policy)
    assert result.codes() == [Failure.FIRMWARE_MISMATCH.value] and result.loa == 1


def test_pcr10_not_quoted(box: Sandbox) -> None:
    result = _judge(box, pcrs=list(range(10)))
    assert Failure.PCR_MISSING.value in result.codes()
    assert result.loa == 3


def test_without_policy_identity_and_quote_give_loa1(box: Sandbox) -> None:
    ev = _evidence(box)
    result = evaluate(ev, box.enrollment.claim(), Request(NONCE), entity="host-1", now=datetime.now(timezone.utc))
    assert (result.loa, result.failures) == (1, [])
    assert result.evidence_digest and result.nonce == NONCE.hex()


def _evidence(box: Sandbox) -> Evidence:
    selection = parse_selection_spec(_selection(box.policy))
    return box.host.evidence(box.ak, NONCE, {s.bank.name: list(s.pcrs) for s in selection})


def test_generated_log_replays_to_swtpm_quote(box: Sandbox) -> None:
    """The generated UEFI log, extended event by event into the swtpm, replays to what the TPM quotes."""
    assert box.host.uefi is not None
    replayed = replay(parse_eventlog(box.host.uefi.data))
    quoted = box.host.tpm.quote(box.ak, NONCE, {"sha1": list(range(10)), "sha256": list(range(10))}).pcrs
    for bank in ("sha1", "sha256"):
        assert {i: replayed[bank][i] for i in range(10)} == quoted[bank]
    assert quoted["sha256"][7] != bytes(32)  # the log really moved the PCRs
