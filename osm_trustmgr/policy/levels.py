"""The checks of LoA 2 (platform), 3 (os) and 4 (runtime) against a trust policy.

Each check compares evidence that the quote has already proven (PCR values) or that replays to proven PCRs
(event logs) with the policy's reference values, and records failures at its level in ``Findings``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import lru_cache
from typing import TYPE_CHECKING

from osm_trustmgr.failures import Failure
from osm_trustmgr.policy.ima_policy import evaluate_ima
from osm_trustmgr.policy.model import PcrReference, TrustPolicy
from osm_trustmgr.policy.result import VerifierState
from osm_trustmgr.tpm import eventlog
from osm_trustmgr.tpm.algorithms import hash_by_name
from osm_trustmgr.tpm.errors import EvidenceError
from osm_trustmgr.tpm.eventlog_facts import boot_components, secure_boot_state
from osm_trustmgr.tpm.ima import parse_ima_ascii
from osm_trustmgr.tpm.ima_replay import find_quoted_prefix, match_boot_aggregate
from osm_trustmgr.tpm.ima_templates import ImaEntry
from osm_trustmgr.tpm.pcr import PcrBanks

if TYPE_CHECKING:
    from osm_trustmgr.policy.evaluate import Evidence, Findings
    from osm_trustmgr.tpm.quote import VerifiedQuote

PLATFORM_PCRS = range(8)
OS_PCRS = (4, 8, 9)
IMA_PCR = 10


def check_policy(
    evidence: Evidence,
    verified: VerifiedQuote,
    policy: TrustPolicy,
    found: Findings,
    *,
    previous: VerifierState | None,
    state: VerifierState,
    age: float,
) -> tuple[int, VerifierState]:
    """Run every level the policy configures; returns (highest configured level, state for the next round)."""
    quoted = verified.pcrs()
    _require_pcrs(policy, quoted, found)
    ceiling = 1
    parsed = _eventlog(evidence, found) if policy.platform or policy.os else None
    log, replayed = parsed if parsed is not None else (None, None)
    if policy.platform is not None:
        ceiling = 2
        _check_platform(policy, log, replayed, quoted, found)
    if policy.os is not None and ceiling == 2:
        ceiling = 3
        _check_os(policy, log, replayed, quoted, found)
    if policy.runtime is not None and ceiling == 3:
        ceiling = 4
        state = _check_runtime(evidence, policy, quoted, found, previous, state)
        if age > policy.runtime.max_age:
            found.fail(Failure.REPORT_STALE, f"evidence is {age:.0f}s old, max_age is {policy.runtime.max_age}s", 4)
    return ceiling, state


def _require_pcrs(policy: TrustPolicy, quoted: PcrBanks, found: Findings) -> None:
    needed = policy.quoted_pcrs()
    for bank in policy.pcr_banks:
        missing = [i for i in needed if i not in quoted.get(bank, {})]
        if missing:
            level = 2 if min(missing) < 8 else 3 if min(missing) != IMA_PCR else 4
            found.fail(Failure.PCR_MISSING, f"policy needs {bank} PCRs {missing} in the quote", level)


@lru_cache(maxsize=128)
def _parsed(data: bytes) -> tuple[eventlog.EventLog, PcrBanks]:
    # A host sends the same boot log every round until it reboots; parsing it again is most of the
    # verifier's work for a fleet (bench/hosts.py). Keyed by the bytes themselves, so never stale.
    log = eventlog.parse_eventlog(data)
    return log, eventlog.replay(log)


def _eventlog(evidence: Evidence, found: Findings) -> tuple[eventlog.EventLog, PcrBanks] | None:
    if evidence.uefi_log is None:
        found.fail(Failure.EVENTLOG_MISSING, "no UEFI event log in the evidence", 2)
        return None
    try:
        log, replayed = _parsed(evidence.uefi_log)
    except EvidenceError as e:
        found.fail(e.code, e.detail, 2)
        return None
    found.claims["eventlog"] = {"events": len(log.events), "banks": list(log.banks), "warnings": list(log.warnings)}
    return log, replayed


def _check_replay(
    replayed: PcrBanks, quoted: PcrBanks, pcrs: tuple[int, ...] | range, found: Findings, level: int
) -> None:
    for bank, values in quoted.items():
        for i in pcrs:
            if i not in values or bank not in replayed:
                continue
            if replayed[bank].get(i) != values[i]:
                found.fail(Failure.EVENTLOG_REPLAY, f"UEFI log does not replay to quoted {bank} PCR {i}", level)


def _check_reference(ref: PcrReference, quoted: PcrBanks, code: Failure, level: int, found: Findings) -> None:
    for bank, values in ref.items():
        for i, allowed in values.items():
            value = quoted.get(bank, {}).get(i)
            if value is None:
                found.fail(Failure.PCR_MISSING, f"policy has reference values for {bank} PCR {i}, not quoted", level)
            elif value.hex() not in allowed:
                found.fail(code, f"{bank} PCR {i} is {value.hex()}, not a reference value", level)


def _check_platform(
    policy: TrustPolicy, log: eventlog.EventLog | None, replayed: PcrBanks | None, quoted: PcrBanks, found: Findings
) -> None:
    platform = policy.platform
    assert platform is not None
    _check_reference(platform.pcrs, quoted, Failure.FIRMWARE_MISMATCH, 2, found)
    if log is None or replayed is None:
        return
    _check_replay(replayed, quoted, PLATFORM_PCRS, found, 2)
    sb = secure_boot_state(log)
    found.claims["secure_boot"] = sb.enabled
    if platform.secure_boot == "required" and sb.enabled is not True:
        state = "disabled" if sb.enabled is False else "not measured"
        found.fail(Failure.SECUREBOOT_DISABLED, f"Secure Boot is {state} but the policy requires it", 2)
    for name, allowed in (("PK", platform.pk), ("KEK", platform.kek), ("db", platform.db), ("dbx", platform.dbx)):
        fact = sb.variables.get(name)
        measured = fact.data_sha256 if fact else None
        if allowed and measured not in allowed:
            shown = measured[:16] + "…" if measured else "not measured"
            found.fail(Failure.SECUREBOOT_DB, f"Secure Boot {name} ({shown}) is not an allowed value", 2)


def _check_os(
    policy: TrustPolicy, log: eventlog.EventLog | None, replayed: PcrBanks | None, quoted: PcrBanks, found: Findings
) -> None:
    os_policy = policy.os
    assert os_policy is not None
    _check_reference(os_policy.pcrs, quoted, Failure.BOOT_PCR, 3, found)
    if log is None or replayed is None:
        return
    _check_replay(replayed, quoted, OS_PCRS, found, 3)
    components = boot_components(log)
    applications = [c for c in components if c.kind == "efi_application"]
    cmdlines = [c for c in components if c.kind == "kernel_cmdline"]
    found.claims["boot"] = {
        "applications": [{"path": a.path, "digests": a.digests} for a in applications],
        "kernel_cmdlines": [c.value for c in cmdlines],
    }
    if os_policy.boot_components:
        allowed = set(os_policy.boot_components)
        for app in applications:
            if not allowed.intersection(app.digests.values()):
                name = app.path or f"event {app.index}"
                found.fail(Failure.BOOT_COMPONENT, f"boot application {name} is not allowed", 3)
    if os_policy.kernel_cmdline:
        patterns = [re.compile(p) for p in os_policy.kernel_cmdline]
        for c in cmdlines:
            if c.verified is False:
                found.fail(Failure.BOOT_CMDLINE, f"event {c.index}: command line text does not match its digest", 3)
            elif not any(p.fullmatch(c.value or "") for p in patterns):
                found.fail(Failure.BOOT_CMDLINE, f"kernel command line {c.value!r} is not allowed", 3)


def _check_runtime(
    evidence: Evidence,
    policy: TrustPolicy,
    quoted: PcrBanks,
    found: Findings,
    previous: VerifierState | None,
    state: VerifierState,
) -> VerifierState:
    rules = policy.runtime
    assert rules is not None
    if evidence.ima_log is None:
        found.fail(Failure.IMA_MISSING, "no IMA log in the evidence", 4)
        return state
    start = previous.ima_offset if previous else 0
    start_pcr10 = {b: bytes.fromhex(v) for b, v in previous.ima_pcr10.items()} if previous else {}
    if evidence.ima_offset > start:
        found.fail(Failure.IMA_REPLAY, f"IMA log starts at entry {evidence.ima_offset}, verified up to {start}", 4)
        return state
    try:
        entries = parse_ima_ascii(evidence.ima_log, start_line=start - evidence.ima_offset)
    except EvidenceError as e:
        found.fail(e.code, e.detail, 4)
        return state
    # Entries for other PCRs (an IMA policy `pcr=` rule) stay in the list: offsets count log lines.
    verified_count, pcr10 = _replay_quoted(entries, quoted, start_pcr10, found)
    if verified_count is None:
        return state
    verified = entries[:verified_count]
    if start == 0 and rules.ima.require_boot_aggregate:
        _check_boot_aggregate(verified, quoted, found)
    for finding in evaluate_ima(verified, rules.ima.compiled(), first_index=start):
        found.fail(finding.code, finding.detail, 4)
    found.claims["ima"] = {"entries_verified": verified_count, "offset": start + verified_count}
    return state.model_copy(update={"ima_offset": start + verified_count, "ima_pcr10": pcr10})


def _replay_quoted(
    entries: list[ImaEntry], quoted: PcrBanks, start: Mapping[str, bytes], found: Findings
) -> tuple[int | None, dict[str, str]]:
    """Longest prefix of ``entries`` that replays to every quoted bank's PCR 10 (the log may have grown)."""
    counts, values = [], {}
    for bank_name, pcrs in quoted.items():
        bank = hash_by_name(bank_name)
        if bank is None or IMA_PCR not in pcrs:
            continue
        count = find_quoted_prefix(entries, bank, pcrs[IMA_PCR], start.get(bank_name))
        if count is None:
            found.fail(Failure.IMA_REPLAY, f"IMA log does not replay to quoted {bank_name} PCR 10", 4)
            return None, {}
        counts.append(count)
        values[bank_name] = pcrs[IMA_PCR].hex()
    if not counts:
        found.fail(Failure.PCR_MISSING, "PCR 10 is not quoted", 4)
        return None, {}
    if len(set(counts)) > 1:
        found.fail(Failure.IMA_REPLAY, f"PCR 10 banks disagree on the IMA log ({counts} entries)", 4)
        return None, {}
    return counts[0], values


def _check_boot_aggregate(entries: list[ImaEntry], quoted: PcrBanks, found: Findings) -> None:
    if not entries:
        return
    first = entries[0]
    bank = hash_by_name(first.digest_alg)
    pcrs = quoted.get(first.digest_alg)
    if bank is None or pcrs is None:
        found.fail(Failure.IMA_BOOT_AGGREGATE, f"boot_aggregate uses {first.digest_alg}, a bank not quoted", 4)
        return
    form = match_boot_aggregate(first, pcrs, bank)
    if form is None:
        found.fail(Failure.IMA_BOOT_AGGREGATE, "first IMA entry is not the boot_aggregate of quoted PCRs 0-9", 4)
    else:
        found.claims["boot_aggregate"] = form.value
