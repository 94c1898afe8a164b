"""TCG PC Client UEFI event log: parse, replay, and the facts a policy needs. Pure functions over bytes.

Two formats exist (TCG PC Client Platform Firmware Profile, "PFP"):

* crypto-agile (TPM 2.0): the first event is a SHA1-format ``TCG_PCClientPCREvent`` carrying the
  ``Spec ID Event03`` structure, which lists every PCR bank and its digest size; all later events
  are ``TCG_PCR_EVENT2`` with one digest per bank;
* legacy (TPM 1.2 style): every event is a ``TCG_PCClientPCREvent`` with a single SHA-1 digest,
  optionally headed by a ``Spec ID Event02`` event.

Every malformed input raises :class:`EvidenceError` with ``Failure.EVENTLOG_MALFORMED``; vendor
oddities that are safe to tolerate are handled in :mod:`.eventlog_workarounds` and reported in
``EventLog.warnings``. Parsing only establishes what the log *claims*: its facts mean something
only once :func:`replay` matches PCR values from a verified quote.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from osm_trustmgr.failures import Failure
from osm_trustmgr.tpm.algorithms import DIGEST_SIZES, HashAlg, hash_by_name
from osm_trustmgr.tpm.errors import EvidenceError
from osm_trustmgr.tpm.eventlog_decode import decode_event, to_dict
from osm_trustmgr.tpm.eventlog_facts import (
    BootComponent,
    SecureBootState,
    boot_components,
    kernel_cmdline,
    secure_boot_state,
)
from osm_trustmgr.tpm.eventlog_types import Event, EventLog, EventType, LeReader, bank_name, event_type_name
from osm_trustmgr.tpm.eventlog_workarounds import (
    EXIT_BOOT_SERVICES_SEQUENCES,
    digest_bank_warning,
    exit_boot_services_warning,
    padding_length,
    padding_warning,
    separator_warnings,
    with_exit_boot_services,
)
from osm_trustmgr.tpm.pcr import NUM_PCRS, PcrBanks, extend, initial_value

__all__ = [
    "EXIT_BOOT_SERVICES_SEQUENCES",
    "BootComponent",
    "Event",
    "EventLog",
    "EventType",
    "SecureBootState",
    "boot_components",
    "decode_event",
    "kernel_cmdline",
    "parse_eventlog",
    "replay",
    "secure_boot_state",
    "startup_locality",
    "to_dict",
    "with_exit_boot_services",
]

# Bounds no real log comes near; they stop a hostile size field from costing memory or time.
MAX_EVENT_DATA = 16 * 1024 * 1024
MAX_DIGESTS = 16
MAX_DIGEST_SIZE = 64

SPEC_ID_03 = b"Spec ID Event03\x00"
SPEC_ID_02 = b"Spec ID Event02\x00"
STARTUP_LOCALITY = b"StartupLocality\x00"
_SHA1_SIZE = 20
_LEGACY_HEADER = struct.Struct("<II")  # pcrIndex, eventType
_EVENT2_HEADER = struct.Struct("<III")  # pcrIndex, eventType, TPML_DIGEST_VALUES.count


def _fail(detail: str) -> EvidenceError:
    return EvidenceError(Failure.EVENTLOG_MALFORMED, detail)


@dataclass(frozen=True)
class _SpecHeader:
    version: str
    # alg id -> (bank name, digest size); empty for a legacy Spec ID Event02 header.
    algs: dict[int, tuple[str, int]]


def parse_eventlog(data: bytes) -> EventLog:
    """Parse a crypto-agile or legacy SHA-1 event log."""
    if not data:
        raise _fail("empty event log")
    r = LeReader(data)
    warnings: list[str] = []
    first = _read_legacy_event(r, 0)
    header = _spec_header(first)
    if header is not None and header.algs:
        agile = _AgileEvents(header.algs, warnings)
        read: Callable[[LeReader, int], Event] = agile
        banks = agile.banks
        warnings += _unreplayable_bank_warnings(banks)
    else:
        read, banks = _read_legacy_event, ("sha1",)
    events = [first]
    while r.remaining:
        pad = padding_length(data, r.offset)
        if pad is not None:
            warnings.append(padding_warning(pad, data[r.offset], len(events) - 1))
            break
        events.append(read(r, len(events)))
    warnings += separator_warnings(events)
    _, locality_warning = _pcr0_locality(events)
    ebs_warning = exit_boot_services_warning(events)
    warnings += [w for w in (locality_warning, ebs_warning) if w]
    return EventLog(tuple(events), banks, header.version if header else None, tuple(warnings))


def _read_legacy_event(r: LeReader, index: int) -> Event:
    """TCG_PCClientPCREvent: pcrIndex, eventType, SHA-1 digest[20], eventDataSize, event."""
    pcr, etype = _LEGACY_HEADER.unpack(r.take(_LEGACY_HEADER.size, "event header"))
    _check_pcr(pcr, index)
    digest = r.take(_SHA1_SIZE, "SHA-1 digest")
    return Event(index, pcr, etype, event_type_name(etype), {"sha1": digest}, _event_data(r, index))


class _AgileEvents:
    """Reads TCG_PCR_EVENT2 events (pcrIndex, eventType, TPML_DIGEST_VALUES, eventSize, event)
    with the digest sizes the Spec ID event announced."""

    def __init__(self, algs: dict[int, tuple[str, int]], warnings: list[str]) -> None:
        self.algs = algs
        self.banks = tuple(name for name, _ in algs.values())
        self.warnings = warnings

    def __call__(self, r: LeReader, index: int) -> Event:
        pcr, etype, count = _EVENT2_HEADER.unpack(r.take(_EVENT2_HEADER.size, "event header"))
        _check_pcr(pcr, index)
        if count > MAX_DIGESTS:
            raise _fail(f"event {index}: digest count {count} exceeds {MAX_DIGESTS}")
        digests: dict[str, bytes] = {}
        for _ in range(count):
            alg_id = r.u16("TPMT_HA.hashAlg")
            spec = self.algs.get(alg_id)
            if spec is None:
                # Without the Spec ID event's size we cannot even find where the next field starts.
                raise _fail(f"event {index}: digest algorithm 0x{alg_id:04x} is not in the Spec ID event")
            name, size = spec
            if name in digests:
                raise _fail(f"event {index}: duplicate {name} digest")
            digests[name] = r.take(size, "digest")
        event = Event(index, pcr, etype, event_type_name(etype), digests, _event_data(r, index))
        warning = digest_bank_warning(event, self.banks)
        if warning:
            self.warnings.append(warning)
        return event


def _check_pcr(pcr: int, index: int) -> None:
    if pcr >= NUM_PCRS:
        raise _fail(f"event {index}: PCR index {pcr} out of range")


def _event_data(r: LeReader, index: int) -> bytes:
    size = r.u32("eventSize")
    if size > MAX_EVENT_DATA:
        raise _fail(f"event {index}: event size {size} exceeds {MAX_EVENT_DATA}")
    return r.take(size, "event data")


def _spec_header(first: Event) -> _SpecHeader | None:
    """The Spec ID header if the first event is one; None for a legacy log without header."""
    if first.type != EventType.EV_NO_ACTION or not first.data.startswith(b"Spec ID Event"):
        return None
    if first.pcr != 0 or any(first.digests["sha1"]):
        raise _fail("Spec ID event must be in PCR 0 with a zero digest")
    r = LeReader(first.data)
    signature = r.take(16, "Spec ID signature")
    if signature not in (SPEC_ID_03, SPEC_ID_02):
        raise _fail(f"unsupported Spec ID signature {signature!r}")
    r.u32("platformClass")
    minor, major, errata, uintn_size = r.take(4, "Spec ID version")
    version = f"{major}.{minor}.{errata}"
    algs = _spec_algorithms(r) if signature == SPEC_ID_03 else {}
    if signature == SPEC_ID_03 and (major != 2 or uintn_size not in (1, 2)):
        raise _fail(f"Spec ID Event03 version {version} / uintnSize {uintn_size} not supported")
    vendor_size = r.u8("vendorInfoSize")
    r.take(vendor_size, "vendorInfo")
    r.end("Spec ID event")
    return _SpecHeader(version, algs)


def _spec_algorithms(r: LeReader) -> dict[int, tuple[str, int]]:
    count = r.u32("numberOfAlgorithms")
    if not 1 <= count <= MAX_DIGESTS:
        raise _fail(f"Spec ID numberOfAlgorithms {count} not in 1..{MAX_DIGESTS}")
    algs: dict[int, tuple[str, int]] = {}
    for _ in range(count):
        alg_id, size = r.u16("algorithmId"), r.u16("digestSize")
        expected = DIGEST_SIZES.get(alg_id)
        if alg_id in algs:
            raise _fail(f"Spec ID lists algorithm 0x{alg_id:04x} twice")
        if (expected is not None and size != expected) or not 1 <= size <= MAX_DIGEST_SIZE:
            raise _fail(f"Spec ID digest size {size} for algorithm 0x{alg_id:04x} is wrong")
        algs[alg_id] = (bank_name(alg_id), size)
    return algs


def _unreplayable_bank_warnings(banks: Iterable[str]) -> list[str]:
    return [f"unsupported_bank: {b} digests are parsed but not replayed" for b in banks if not hash_by_name(b)]


def startup_locality(event: Event) -> int | None:
    """The locality of a PFP StartupLocality EV_NO_ACTION event, None for any other event."""
    data = event.data
    if event.type != EventType.EV_NO_ACTION or len(data) != 17 or not data.startswith(STARTUP_LOCALITY):
        return None
    return data[16]


def _pcr0_locality(events: Iterable[Event]) -> tuple[int, str | None]:
    """PCR 0's starting locality: from a StartupLocality event, or 4 for an H-CRTM event.

    Only events before the first PCR 0 extend can describe its initial value (a later
    StartupLocality is reported, not honoured).
    """
    locality: int | None = None
    first_extend: Event | None = None
    for ev in events:
        if ev.pcr != 0:
            continue
        found = startup_locality(ev)
        if found is not None and first_extend is not None:
            return _locality(locality, first_extend), (
                f"late_startup_locality: StartupLocality event {ev.index} after PCR 0 event "
                f"{first_extend.index} ignored"
            )
        if found is not None and locality is None:
            locality = found
        elif ev.type != EventType.EV_NO_ACTION and first_extend is None:
            first_extend = ev
    return _locality(locality, first_extend), None


def _locality(found: int | None, first_extend: Event | None) -> int:
    if found is not None:
        return found
    # TPM 2.0 Part 1 §34.3: an H-CRTM sequence resets PCR 0 to 4 before extending its digest.
    if first_extend is not None and first_extend.type == EventType.EV_EFI_HCRTM_EVENT:
        return 4
    return 0


def replay(log: EventLog, banks: Iterable[str] | None = None) -> PcrBanks:
    """PCR values the log's events extend to, per bank (default: every bank of the log).

    EV_NO_ACTION events are not extended. A PCR appears when at least one event was extended
    into it (PCR 0 also when a StartupLocality event sets its initial value). Banks the log does
    not have, or that cannot be hashed here (e.g. SM3), are left out. A PCR in which some measured
    event lacks the bank's digest is left out of that bank: its value is unknowable.
    """
    wanted = log.banks if banks is None else tuple(banks)
    locality, _ = _pcr0_locality(log.events)
    result: PcrBanks = {}
    for name in wanted:
        alg = hash_by_name(name)
        if alg is not None and alg.name in log.banks and alg.name not in result:
            result[alg.name] = _replay_bank(log.events, alg, locality)
    return result


def _replay_bank(events: Iterable[Event], alg: HashAlg, locality: int) -> dict[int, bytes]:
    values: dict[int, bytes] = {}
    unknowable: set[int] = set()
    for ev in events:
        if ev.type == EventType.EV_NO_ACTION:
            if ev.pcr == 0 and startup_locality(ev) is not None:
                values.setdefault(0, initial_value(alg, 0, locality))
            continue
        digest = ev.digests.get(alg.name)
        if digest is None:
            unknowable.add(ev.pcr)
            continue
        value = values.get(ev.pcr)
        if value is None:
            value = initial_value(alg, ev.pcr, locality)
        values[ev.pcr] = extend(alg, value, digest)
    return {pcr: values[pcr] for pcr in sorted(values) if pcr not in unknowable}
