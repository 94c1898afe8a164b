"""UEFI event log: real logs against tpm2_eventlog, Secure Boot / boot facts, generated logs.

tpm2_eventlog (tpm2-tools) is the oracle. Set TPM2_EVENTLOG to use another build than the one on
PATH. tpm2-tools before 5.6 extends EV_NO_ACTION events and ignores StartupLocality (fixed
upstream by commits 9735dc33 and 576a31bc); with such a build, PCRs holding EV_NO_ACTION events
are compared with a replay that reproduces that documented behaviour instead.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from osm_trustmgr.tpm import eventlog_builder as b
from osm_trustmgr.tpm.algorithms import hash_by_name
from osm_trustmgr.tpm.eventlog import (
    EXIT_BOOT_SERVICES_SEQUENCES,
    EventLog,
    EventType,
    boot_components,
    decode_event,
    kernel_cmdline,
    parse_eventlog,
    replay,
    secure_boot_state,
    to_dict,
    with_exit_boot_services,
)
from osm_trustmgr.tpm.pcr import PcrBanks, extend, initial_value

REAL_LOGS = ["uefi-eventlog-a.bin", "uefi-eventlog-b.bin", "uefi-eventlog-secureboot.bin"]


# --- the oracle ------------------------------------------------------------------------------


def _oracle_exe() -> str:
    exe = os.environ.get("TPM2_EVENTLOG") or shutil.which("tpm2_eventlog")
    if not exe:
        pytest.skip("tpm2_eventlog (tpm2-tools) is not installed")
    return exe


def _oracle_version(exe: str) -> tuple[int, int]:
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, check=True).stdout
    match = re.search(r'version="(\d+)\.(\d+)', out)
    assert match, out
    return int(match[1]), int(match[2])


def _oracle(path: Path) -> dict[str, Any]:
    """tpm2_eventlog's YAML; PCR values come back as ints (YAML reads 0x… as hex)."""
    out = subprocess.run([_oracle_exe(), str(path)], capture_output=True, text=True, check=True).stdout
    doc: dict[str, Any] = yaml.load(out, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    return doc


def _oracle_pcrs(doc: dict[str, Any]) -> PcrBanks:
    out: PcrBanks = {}
    for bank, values in doc["pcrs"].items():
        size = hash_by_name(bank).size  # type: ignore[union-attr]
        out[bank] = {int(pcr): int(v).to_bytes(size, "big") for pcr, v in values.items()}
    return out


def _old_tools_replay(log: EventLog) -> PcrBanks:
    """Replay as tpm2-tools < 5.6 does: EV_NO_ACTION events extended, no StartupLocality."""
    events = tuple(
        dataclasses.replace(ev, type=EventType.EV_UNUSED) if ev.type == EventType.EV_NO_ACTION else ev
        for ev in log.events[1:]
    )
    return replay(dataclasses.replace(log, events=log.events[:1] + events))


def _assert_replays_like_oracle(path: Path) -> EventLog:
    log = parse_eventlog(path.read_bytes())
    ours, theirs = replay(log), _oracle_pcrs(_oracle(path))
    assert set(ours) == set(theirs) and ours
    old_tools = _oracle_version(_oracle_exe()) < (5, 6)
    no_action_pcrs = {ev.pcr for ev in log.events[1:] if ev.type == EventType.EV_NO_ACTION}
    emulated = _old_tools_replay(log) if old_tools else ours
    for bank, values in theirs.items():
        assert set(ours[bank]) == set(values), bank
        for pcr, value in values.items():
            expected = emulated if old_tools and pcr in no_action_pcrs else ours
            assert expected[bank][pcr] == value, f"{path.name} {bank} PCR {pcr}"
    return log


# --- (a) real logs ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", REAL_LOGS)
def test_real_log_replays_to_tpm2_eventlog_pcrs(realdata: Path, name: str) -> None:
    _assert_replays_like_oracle(realdata / name)


@pytest.mark.parametrize("name", REAL_LOGS)
def test_real_log_events_match_tpm2_eventlog(realdata: Path, name: str) -> None:
    log = parse_eventlog((realdata / name).read_bytes())
    oracle_events = _oracle(realdata / name)["events"]
    assert len(log.events) == len(oracle_events)
    for ev, theirs in zip(log.events[1:], oracle_events[1:], strict=True):
        assert (ev.index, ev.pcr, len(ev.data)) == (theirs["EventNum"], theirs["PCRIndex"], theirs["EventSize"])
        if theirs["EventType"] != "Unknown event type":
            assert ev.type_name == theirs["EventType"]
        assert {k: v.hex() for k, v in ev.digests.items()} == {d["AlgorithmId"]: d["Digest"] for d in theirs["Digests"]}


@pytest.mark.parametrize("name", REAL_LOGS)
def test_real_log_decodes_like_tpm2_eventlog(realdata: Path, name: str) -> None:
    log = parse_eventlog((realdata / name).read_bytes())
    oracle_events = _oracle(realdata / name)["events"]
    for ev, theirs in zip(log.events, oracle_events, strict=True):
        decoded, event = decode_event(ev), theirs.get("Event")
        assert "error" not in decoded, (ev.index, decoded)
        if isinstance(event, dict) and "UnicodeName" in event:
            assert decoded["unicode_name"] == event["UnicodeName"]
            assert decoded["variable_guid"] == event["VariableName"]
        if isinstance(event, dict) and "DevicePath" in event:
            assert decoded["device_path"] == event["DevicePath"]
            assert decoded["image_length"] == event["ImageLengthInMemory"]


@pytest.mark.parametrize("name", REAL_LOGS)
def test_missing_exit_boot_services_is_reported(realdata: Path, name: str) -> None:
    log = parse_eventlog((realdata / name).read_bytes())
    has_ebs = "Exit Boot Services Invocation" in json.dumps(_oracle(realdata / name)["events"])
    assert any(w.startswith("missing_exit_boot_services") for w in log.warnings) is not has_ebs


def test_exit_boot_services_workaround_recovers_pcr5(realdata: Path) -> None:
    """Cut the two EBS events off a real log: the workaround variant replays PCR 5 again."""
    path = realdata / "uefi-eventlog-b.bin"
    full = parse_eventlog(path.read_bytes())
    assert [ev.data for ev in full.events[-2:]] == list(EXIT_BOOT_SERVICES_SEQUENCES[0])
    tail = sum(16 + sum(2 + len(d) for d in ev.digests.values()) + len(ev.data) for ev in full.events[-2:])
    cut = parse_eventlog(path.read_bytes()[:-tail])
    quoted_pcr5 = _oracle_pcrs(_oracle(path))["sha256"][5]
    assert replay(cut)["sha256"][5] != quoted_pcr5
    variants = [replay(with_exit_boot_services(cut, seq))["sha256"][5] for seq in EXIT_BOOT_SERVICES_SEQUENCES]
    assert variants.count(quoted_pcr5) == 1 and variants[0] == quoted_pcr5


def test_real_log_kernel_cmdline_and_boot_path(realdata: Path) -> None:
    path = realdata / "uefi-eventlog-secureboot.bin"
    log = parse_eventlog(path.read_bytes())
    # tpm2-tools 5.4 prints a block scalar holding the quoted string with a literal "\0"; later
    # versions a YAML string whose "\0" YAML itself turns into NUL.
    strings = [str(e["Event"]["String"]) for e in _oracle(path)["events"] if e["EventType"] == "EV_IPL"]
    cleaned = [s.strip().strip('"').removesuffix("\\0").rstrip("\0") for s in strings]
    expected = [s.removeprefix("kernel_cmdline: ") for s in cleaned if s.startswith("kernel_cmdline: ")]
    assert kernel_cmdline(log) == expected[-1]
    apps = [c for c in boot_components(log) if c.kind == "efi_application"]
    assert apps[0].path == "\\EFI\\redhat\\shimx64.efi" and apps[1].path == "\\EFI\\redhat\\grubx64.efi"
    grub = [c for c in boot_components(log) if c.pcr == 8]
    assert grub and all(c.verified for c in grub)


# --- (b) Secure Boot facts -------------------------------------------------------------------


def _oracle_secure_boot(path: Path) -> bool:
    for ev in _oracle(path)["events"]:
        event = ev.get("Event")
        if isinstance(event, dict) and event.get("UnicodeName") == "SecureBoot":
            return bool(event["VariableData"] == "01")
    raise AssertionError("no SecureBoot variable in the oracle output")


@pytest.mark.parametrize("name", REAL_LOGS)
def test_secure_boot_state_matches_the_log(realdata: Path, name: str) -> None:
    state = secure_boot_state(parse_eventlog((realdata / name).read_bytes()))
    assert state.enabled is _oracle_secure_boot(realdata / name)
    assert {"PK", "KEK", "db", "dbx"} <= set(state.variables)
    assert state.separator_seen and not state.problems
    assert state.db_certificates and state.dbx_hashes


def test_secure_boot_authority_is_a_db_certificate(realdata: Path) -> None:
    state = secure_boot_state(parse_eventlog((realdata / "uefi-eventlog-secureboot.bin").read_bytes()))
    assert state.enabled is True
    db_authorities = [a for a in state.authorities if a.name == "db"]
    assert db_authorities and db_authorities[0].certificate_sha256 in state.db_certificates
    sbat = [a for a in state.authorities if a.name == "SbatLevel"]
    assert sbat and sbat[0].certificate_sha256 is None  # shim's SBAT text is not a certificate


# --- (c) generated logs ----------------------------------------------------------------------


def _certificate() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "osm-trustmgr test db")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.DER)


def _fold(extends: tuple[tuple[int, dict[str, bytes]], ...], locality: int = 0) -> PcrBanks:
    """The PCR values a TPM reaches by performing the builder's extends (independent of replay)."""
    out: PcrBanks = {}
    for pcr, digests in extends:
        for bank, digest in digests.items():
            alg = hash_by_name(bank)
            assert alg is not None
            values = out.setdefault(bank, {})
            values[pcr] = extend(alg, values.get(pcr, initial_value(alg, pcr, locality)), digest)
    return {bank: dict(sorted(v.items())) for bank, v in out.items()}


def test_generated_log_round_trips() -> None:
    items = b.typical_boot(db=[_certificate()])
    built = b.build_eventlog(items)
    log = parse_eventlog(built.data)
    assert log.banks == ("sha1", "sha256") and log.spec_version == "2.0.0" and log.warnings == ()
    assert [(e.pcr, e.type, e.data) for e in log.events[1:]] == [(i.pcr, i.event_type, i.data) for i in items]
    assert replay(log) == _fold(built.extends)


def test_generated_log_replays_like_tpm2_eventlog(tmp_path: Path) -> None:
    path = tmp_path / "generated.bin"
    path.write_bytes(b.build_eventlog(b.typical_boot(db=[_certificate()])).data)
    _assert_replays_like_oracle(path)


def test_generated_legacy_sha1_log(tmp_path: Path) -> None:
    built = b.build_legacy_eventlog(b.typical_boot())
    log = parse_eventlog(built.data)
    assert log.banks == ("sha1",) and log.spec_version is None
    assert replay(log) == _fold(built.extends)
    path = tmp_path / "legacy.bin"
    path.write_bytes(built.data)
    _assert_replays_like_oracle(path)


@pytest.mark.parametrize("enabled", [True, False])
def test_generated_secure_boot_facts(enabled: bool) -> None:
    der = _certificate()
    log = parse_eventlog(b.build_eventlog(b.typical_boot(secure_boot_enabled=enabled, db=[der])).data)
    state = secure_boot_state(log)
    fingerprint = hashlib.sha256(der).hexdigest()
    assert state.enabled is enabled
    assert state.db_certificates == (fingerprint,)
    assert [a.certificate_sha256 for a in state.authorities] == [fingerprint]
    assert state.dbx_hashes == ("11" * 32,)
    assert state.variables["SecureBoot"].data_sha256 == hashlib.sha256(bytes([enabled])).hexdigest()


def test_startup_locality_and_hcrtm_set_pcr0_initial_value() -> None:
    blob = b.firmware_blob(0xFF000000, b"fw")
    built = b.build_eventlog([b.startup_locality(3), blob])
    assert replay(parse_eventlog(built.data)) == _fold(built.extends, locality=3)
    hcrtm = b.LogItem(0, EventType.EV_EFI_HCRTM_EVENT, b"HCRTM")
    built = b.build_eventlog([hcrtm, blob])
    assert replay(parse_eventlog(built.data)) == _fold(built.extends, locality=4)
    assert _fold(built.extends, locality=4) != _fold(built.extends)


def test_sm3_bank_is_parsed_but_not_replayed() -> None:
    sm3 = {"sm3_256": bytes(range(32))}
    built = b.build_eventlog([b.LogItem(0, EventType.EV_POST_CODE, b"POST CODE", digests=sm3)], ("sha256", "sm3_256"))
    log = parse_eventlog(built.data)
    assert log.banks == ("sha256", "sm3_256")
    assert log.events[1].digests["sm3_256"] == bytes(range(32))
    assert any(w.startswith("unsupported_bank: sm3_256") for w in log.warnings)
    assert set(replay(log)) == {"sha256"} and replay(log, ["sm3_256"]) == {}


def test_tampered_variable_data_is_not_a_fact() -> None:
    """Flip SecureBoot=0 to 1 in the data but keep the digest: replay is unchanged, so only the
    digest check in secure_boot_state stops the lie."""
    data = bytearray(b.build_eventlog(b.typical_boot(secure_boot_enabled=False)).data)
    marker = "SecureBoot".encode("utf-16-le") + b"\x00"
    data[data.index(marker) + len(marker) - 1] = 1
    state = secure_boot_state(parse_eventlog(bytes(data)))
    assert state.enabled is None and "SecureBoot" not in state.variables
    assert any("does not match its data" in p for p in state.problems)


def test_decode_generated_events() -> None:
    log = parse_eventlog(b.build_eventlog(b.typical_boot(db=[_certificate()])).data)
    decoded = {ev.type_name: decode_event(ev) for ev in log.events}
    assert decoded["EV_NO_ACTION"]["algorithms"] == [
        {"algorithm": "sha1", "digest_size": 20},
        {"algorithm": "sha256", "digest_size": 32},
    ]
    assert decoded["EV_S_CRTM_VERSION"] == {"string": "osm-trustmgr test firmware 1.0"}
    assert decoded["EV_SEPARATOR"] == {"value": "0x00000000", "error_separator": False}
    assert decoded["EV_EFI_BOOT_SERVICES_APPLICATION"]["file_path"] == "\\EFI\\osm\\grubx64.efi"
    assert decoded["EV_EFI_VARIABLE_AUTHORITY"]["certificate"]["subject"] == "CN=osm-trustmgr test db"
    assert decoded["EV_EFI_VARIABLE_BOOT"]["boot_order"] == ["Boot0001"]
    assert decoded["EV_IPL"]["kind"] == "file"
    assert decode_event(dataclasses.replace(log.events[3], data=b"\x01")).keys() == {"error", "data"}


def test_to_dict_is_json_and_carries_the_replay() -> None:
    log = parse_eventlog(b.build_eventlog(b.typical_boot()).data)
    replayed = replay(log)
    report = json.loads(json.dumps(to_dict(log, replayed)))
    assert report["pcrs"]["sha256"]["7"] == replayed["sha256"][7].hex()
    assert len(report["events"]) == len(log.events)
    kinds = [e["event"].get("kind") for e in report["events"] if e["type_name"] == "EV_IPL"]
    assert "kernel_cmdline" in kinds and "grub_cmd" in kinds
