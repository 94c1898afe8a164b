"""Vendor oddities of real UEFI event logs, isolated so the parser itself stays strict.

Every workaround tolerates one documented deviation from the TCG PC Client Platform Firmware
Profile (PFP) and reports it as a warning string in :attr:`EventLog.warnings`: an operator can see
that a host's firmware is odd, and nothing is silently ignored. None of them changes what is
replayed: a tolerated oddity can make a replay *fail* against the quote, never make it pass.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

from osm_trustmgr.tpm.algorithms import hash_by_name
from osm_trustmgr.tpm.eventlog_types import Event, EventLog, EventType

# PFP: PCRs 0-7 each get exactly one EV_SEPARATOR before control passes to the OS loader.
SEPARATOR_PCRS = range(8)

_PAD_BYTES = (0x00, 0xFF)
_EVENT_HEADER = 8  # pcrIndex + eventType


def padding_length(data: bytes, offset: int) -> int | None:
    """Length of trailing padding at ``offset``, or None if what follows must be parsed as events.

    Why: the ACPI TCPA/TPM2 table describes a fixed-size log area (LAML) and firmware leaves the
    unused part as it found it: zeroed RAM (0x00) or erased flash (0xFF). Reading the whole area
    (e.g. from /sys/firmware/acpi/tables/data) therefore ends in padding, not in an event.
    A 0xFF tail can never start an event (its PCR index would be >= 255). A zero tail shorter
    than an event's (pcr, type) header could be a log cut inside a PCR 0 event, so it stays a
    truncation error; from 8 bytes on it would be a PCR 0 event of type 0 (EV_PREBOOT_CERT,
    which UEFI firmware never logs), so treating it as padding hides nothing.
    """
    first = data[offset]
    if first not in _PAD_BYTES:
        return None
    tail = len(data) - offset
    if first == 0x00 and tail < _EVENT_HEADER:
        return None
    # Cheap check on the (pcr, type) header before counting the rest: most PCR 0 events start
    # with a zero byte too.
    head = data[offset : offset + _EVENT_HEADER]
    if head.count(first) != len(head) or data.count(first, offset) != tail:
        return None
    return tail


def padding_warning(length: int, pad: int, after_event: int) -> str:
    return f"trailing_padding: {length} bytes of 0x{pad:02x} after event {after_event} ignored"


def digest_bank_warning(event: Event, banks: Sequence[str]) -> str | None:
    """Warn when an event's digests are not exactly the Spec ID event's banks.

    Why: PFP requires every TCG_PCR_EVENT2 to carry one digest per algorithm announced in the
    Spec ID event, but some firmware omit banks for events they log late (e.g. after a bank was
    deactivated) and some tools append events with fewer digests. We keep what is there; replay
    then drops the affected PCR from the banks the event lacks (see ``replay``), so a verifier
    reports that PCR as missing rather than trusting a value we could not compute.
    """
    if len(event.digests) == len(banks) and all(b in event.digests for b in banks):
        return None
    have = ",".join(event.digests) or "none"
    return (
        f"digest_count_mismatch: event {event.index} (PCR {event.pcr}) has digests for {have}, "
        f"the Spec ID event lists {','.join(banks)}"
    )


def separator_warnings(events: Iterable[Event]) -> list[str]:
    """Warn about PCRs 0-7 without exactly one EV_SEPARATOR.

    Why: a log read by the OS before ExitBootServices (or truncated by a full log area) can lack
    the final separators; some old firmware never measured one into PCR 7. The log still replays
    (the separator is an ordinary extend) but facts that depend on "before/after the separator",
    such as Secure Boot authorities, become less certain, so the policy should know.
    """
    counts = Counter(e.pcr for e in events if e.type == EventType.EV_SEPARATOR)
    out = []
    for pcr in SEPARATOR_PCRS:
        if counts[pcr] == 0:
            out.append(f"missing_separator: no EV_SEPARATOR in PCR {pcr}")
        elif counts[pcr] > 1:
            out.append(f"duplicate_separator: {counts[pcr]} EV_SEPARATOR events in PCR {pcr}")
    return out


EBS_INVOCATION = b"Exit Boot Services Invocation"
EBS_SUCCESS = b"Exit Boot Services Returned with Success"
EBS_FAILURE = b"Exit Boot Services Returned with Failure"
# What firmware measures into PCR 5 during ExitBootServices(), in the orders seen in the field.
EXIT_BOOT_SERVICES_SEQUENCES: tuple[tuple[bytes, ...], ...] = (
    (EBS_INVOCATION, EBS_SUCCESS),
    (EBS_INVOCATION, EBS_FAILURE),
    (EBS_INVOCATION, EBS_FAILURE, EBS_SUCCESS),
)


def exit_boot_services_warning(events: Iterable[Event]) -> str | None:
    """Warn when PCR 5 has events but no "Exit Boot Services Invocation" action.

    Why: the OS copies the log before it calls ExitBootServices(); the firmware measures the EBS
    actions into PCR 5 during that call, and unless the kernel appends the TCG2 Final Events
    Table they are missing from the log while the TPM's PCR 5 contains them. Such a log cannot
    replay PCR 5; :func:`with_exit_boot_services` builds the candidates a verifier may try.
    """
    pcr5 = [e for e in events if e.pcr == 5]
    if not pcr5 or any(e.type == EventType.EV_EFI_ACTION and e.data == EBS_INVOCATION for e in pcr5):
        return None
    return "missing_exit_boot_services: PCR 5 has no 'Exit Boot Services Invocation' event"


def with_exit_boot_services(log: EventLog, actions: Sequence[bytes]) -> EventLog:
    """A copy of ``log`` with the EV_EFI_ACTION ``actions`` appended to PCR 5 (see
    :func:`exit_boot_services_warning`). The EBS actions are fixed strings whose digest is their
    hash, so nothing unknown is invented: the variant replays to the quote only if the firmware
    really measured exactly these actions. The returned log's warnings say it was synthesized."""
    events = list(log.events)
    for action in actions:
        digests = {b: alg.digest(action) for b in log.banks if (alg := hash_by_name(b)) is not None}
        events.append(Event(len(events), 5, EventType.EV_EFI_ACTION, "EV_EFI_ACTION", digests, action))
    added = ", ".join(a.decode() for a in actions)
    warning = f"synthesized_exit_boot_services: appended to PCR 5: {added}"
    return EventLog(tuple(events), log.banks, log.spec_version, (*log.warnings, warning))
