"""UEFI event log: malformed input is EVENTLOG_MALFORMED, tolerated oddities are warnings."""

from __future__ import annotations

import itertools
import struct
from pathlib import Path

import pytest

from osm_trustmgr.failures import Failure
from osm_trustmgr.tpm import eventlog_builder as b
from osm_trustmgr.tpm.errors import EvidenceError
from osm_trustmgr.tpm.eventlog import Event, EventType, parse_eventlog, replay

BANKS = ("sha1", "sha256")


def _log(items: list[b.LogItem] | None = None) -> bytes:
    return b.build_eventlog(items if items is not None else b.typical_boot()).data


def _event_offsets(data: bytes) -> list[int]:
    """Start offset of every event after the Spec ID event, and the end of the log."""
    log = parse_eventlog(data)
    offset = 32 + len(log.events[0].data)
    offsets = []
    for ev in log.events[1:]:
        offsets.append(offset)
        offset += 16 + sum(2 + len(d) for d in ev.digests.values()) + len(ev.data)
    return [*offsets, offset]


def _malformed(data: bytes, match: str | None = None) -> EvidenceError:
    with pytest.raises(EvidenceError, match=match) as info:
        parse_eventlog(data)
    assert info.value.code is Failure.EVENTLOG_MALFORMED
    return info.value


def _with_spec(spec: bytes, rest: bytes = b"") -> bytes:
    """A first event carrying ``spec`` as its Spec ID data."""
    return struct.pack("<II", 0, EventType.EV_NO_ACTION) + bytes(20) + struct.pack("<I", len(spec)) + spec + rest


def _spec(algs: list[tuple[int, int]], count: int | None = None) -> bytes:
    n = len(algs) if count is None else count
    sizes = b"".join(struct.pack("<HH", a, s) for a, s in algs)
    return b"Spec ID Event03\x00" + struct.pack("<IBBBBI", 0, 0, 2, 0, 2, n) + sizes + b"\x00"


def _event2(pcr: int, etype: int, digests: list[tuple[int, bytes]], data: bytes, count: int | None = None) -> bytes:
    n = len(digests) if count is None else count
    values = b"".join(struct.pack("<H", alg) + d for alg, d in digests)
    return struct.pack("<III", pcr, etype, n) + values + struct.pack("<I", len(data)) + data


SHA256_SPEC = _spec([(0x000B, 32)])


# --- truncation ------------------------------------------------------------------------------


def test_empty_log() -> None:
    _malformed(b"", "empty")


@pytest.mark.parametrize("cut", [1, 4, 9, 30, 31])
def test_truncated_spec_id_event(cut: int) -> None:
    _malformed(_log()[:cut])


@pytest.mark.parametrize("delta", [1, 3, 8, 11, 14, 30, 40])
def test_truncated_inside_an_event(delta: int) -> None:
    data = _log()
    offsets = _event_offsets(data)
    for start, end in itertools.pairwise(offsets):
        if start + delta < end:
            _malformed(data[: start + delta], "truncated")


def test_truncated_real_log_at_many_offsets(realdata: Path) -> None:
    data = (realdata / "uefi-eventlog-a.bin").read_bytes()
    offsets = _event_offsets(data)
    assert offsets[-1] == len(data)
    boundaries = set(offsets)
    for cut in range(33, len(data), 97):
        if cut in boundaries:
            assert len(parse_eventlog(data[:cut]).events) == 1 + offsets.index(cut)
        else:
            _malformed(data[:cut])


def test_log_cut_at_an_event_boundary_is_a_shorter_valid_log() -> None:
    data = _log()
    offsets = _event_offsets(data)
    log = parse_eventlog(data[: offsets[5]])
    assert len(log.events) == 6
    assert any(w.startswith("missing_separator") for w in log.warnings)


# --- Spec ID event ---------------------------------------------------------------------------


@pytest.mark.parametrize("signature", [b"Spec ID Event04\x00", b"Spec ID Event03X"])
def test_unsupported_spec_id_signature(signature: bytes) -> None:
    data = bytearray(_log())
    data[32:48] = signature
    _malformed(bytes(data), "Spec ID signature")


def test_garbled_spec_id_signature_is_not_taken_for_a_legacy_log() -> None:
    data = bytearray(_log())
    data[32] ^= 0xFF  # "Spec ID Event03" no longer recognised: the SHA-1 format cannot fit
    _malformed(bytes(data))


@pytest.mark.parametrize(
    "spec",
    [
        _spec([], count=0),
        _spec([(0x000B, 32)], count=1000),
        _spec([(0x000B, 20)]),
        _spec([(0x000B, 32), (0x000B, 32)]),
        _spec([(0x1234, 0)]),
        _spec([(0x000B, 32)]) + b"\x00",
        _spec([(0x000B, 32)])[:-1] + b"\x05",
    ],
    ids=["no-algs", "1000-algs", "sha256-size-20", "duplicate", "size-0", "trailing", "vendor-overrun"],
)
def test_bad_spec_id_contents(spec: bytes) -> None:
    _malformed(_with_spec(spec))


def test_legacy_log_with_spec_id_event02_header() -> None:
    """TPM 1.2 EFI platforms head a SHA-1 log with "Spec ID Event02" (no algorithm list)."""
    spec02 = b"Spec ID Event02\x00" + struct.pack("<IBBBBB", 0, 2, 1, 0, 2, 0)
    built = b.build_legacy_eventlog([b.separator(0)])
    log = parse_eventlog(_with_spec(spec02, built.data))
    assert (log.banks, log.spec_version, len(log.events)) == (("sha1",), "1.2.0", 2)
    assert replay(log) == replay(parse_eventlog(built.data))


def test_spec_id_event_with_a_digest_is_rejected() -> None:
    data = bytearray(_log())
    data[8] = 1
    _malformed(bytes(data), "zero digest")


# --- absurd sizes ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("event", "match"),
    [
        (_event2(0, 1, [(0x000B, bytes(32))], b"")[:-4] + struct.pack("<I", 0xFFFFFFFF), "event size"),
        (_event2(0, 1, [(0x000B, bytes(32))], b"x" * 10)[:-14] + struct.pack("<I", 1000) + b"x" * 10, "truncated"),
        (_event2(0, 1, [], b"", count=0x10000), "digest count"),
        (_event2(24, 1, [(0x000B, bytes(32))], b""), "PCR index"),
        (_event2(0xFFFFFFFF, 1, [(0x000B, bytes(32))], b""), "PCR index"),
        (_event2(0, 1, [(0x0004, bytes(20))], b""), "not in the Spec ID"),
        (_event2(0, 1, [(0x000B, bytes(32)), (0x000B, bytes(32))], b""), "duplicate"),
    ],
    ids=["data-4GiB", "data-overrun", "65536-digests", "pcr-24", "pcr-max", "unknown-alg", "duplicate-alg"],
)
def test_absurd_event_fields(event: bytes, match: str) -> None:
    _malformed(_with_spec(SHA256_SPEC, event), match)


def test_legacy_event_size_overrun() -> None:
    legacy = struct.pack("<II", 0, EventType.EV_POST_CODE) + bytes(20) + struct.pack("<I", 0x7FFFFFFF)
    _malformed(legacy, "event size")


# --- workarounds: warnings, not failures -----------------------------------------------------


@pytest.mark.parametrize(
    ("pad", "length"), [(b"\x00", 8), (b"\x00", 4096), (b"\xff", 1), (b"\xff", 7), (b"\xff", 4096)]
)
def test_trailing_padding_is_tolerated(pad: bytes, length: int) -> None:
    data = _log()
    log = parse_eventlog(data + pad * length)
    assert replay(log) == replay(parse_eventlog(data))
    assert [w for w in log.warnings if w.startswith("trailing_padding")] == [
        f"trailing_padding: {length} bytes of 0x{pad[0]:02x} after event {len(log.events) - 1} ignored"
    ]


@pytest.mark.parametrize(
    "tail",
    [b"\x01", b"\x00\x00\x00\x01", b"\xff" * 8 + b"\x00", b"\x00" * 16 + b"\x02", b"\x00", b"\x00" * 7],
    ids=["one", "pcr-1", "ff-then-00", "zeros-then-02", "short-zero-1", "short-zero-7"],
)
def test_trailing_garbage_is_not_padding(tail: bytes) -> None:
    """Including fewer zero bytes than an event header: that may be a log cut inside a PCR 0 event."""
    _malformed(_log() + tail)


def test_padding_after_a_real_log(realdata: Path) -> None:
    data = (realdata / "uefi-eventlog-b.bin").read_bytes()
    log = parse_eventlog(data + bytes(65536 - len(data)))
    assert replay(log) == replay(parse_eventlog(data))
    assert any(w.startswith("trailing_padding") for w in log.warnings)


def test_digest_count_mismatch_is_a_warning_and_poisons_only_that_bank() -> None:
    items = b.typical_boot()
    short = b.LogItem(3, EventType.EV_POST_CODE, b"sha1 only", banks=("sha1",))
    log = parse_eventlog(_log([*items, short]))
    assert any(w.startswith(f"digest_count_mismatch: event {len(items) + 1} (PCR 3)") for w in log.warnings)
    replayed, reference = replay(log), replay(parse_eventlog(_log(items)))
    assert 3 not in replayed["sha256"]  # unknowable: an event lacks its sha256 digest
    assert replayed["sha1"][3] != reference["sha1"][3]
    assert {p: v for p, v in replayed["sha256"].items()} == {p: v for p, v in reference["sha256"].items() if p != 3}


def test_missing_final_separator_is_a_warning() -> None:
    items = [i for i in b.typical_boot() if not (i.event_type == EventType.EV_SEPARATOR and i.pcr == 7)]
    log = parse_eventlog(_log(items))
    assert "missing_separator: no EV_SEPARATOR in PCR 7" in log.warnings
    assert [w for w in log.warnings if "separator" in w] == ["missing_separator: no EV_SEPARATOR in PCR 7"]


def test_late_startup_locality_is_ignored_with_a_warning() -> None:
    blob = b.firmware_blob(0, b"fw")
    late = parse_eventlog(_log([blob, b.startup_locality(3)]))
    assert any(w.startswith("late_startup_locality") for w in late.warnings)
    assert replay(late) == replay(parse_eventlog(_log([blob])))


# --- tampering changes the replay ------------------------------------------------------------


def test_flipped_digest_byte_changes_only_that_pcr(realdata: Path) -> None:
    data = (realdata / "uefi-eventlog-secureboot.bin").read_bytes()
    original = parse_eventlog(data)
    victim: Event = next(ev for ev in original.events if ev.type == EventType.EV_EFI_BOOT_SERVICES_APPLICATION)
    offset = _event_offsets(data)[victim.index - 1] + 12 + 2  # header, count, alg id
    assert data[offset : offset + 32] == victim.digests["sha256"]
    tampered = bytearray(data)
    tampered[offset] ^= 0x01
    before, after = replay(original)["sha256"], replay(parse_eventlog(bytes(tampered)))["sha256"]
    assert after[victim.pcr] != before[victim.pcr]
    assert {p: v for p, v in after.items() if p != victim.pcr} == {p: v for p, v in before.items() if p != victim.pcr}
