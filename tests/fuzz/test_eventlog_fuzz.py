"""Property: whatever bytes arrive as a UEFI event log, the whole pipeline (parse, replay, decode,
facts, JSON report) either works or raises EvidenceError(EVENTLOG_MALFORMED), nothing else."""

from __future__ import annotations

import json
import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from osm_trustmgr.failures import Failure
from osm_trustmgr.tpm import eventlog_builder as b
from osm_trustmgr.tpm.errors import EvidenceError
from osm_trustmgr.tpm.eventlog import (
    boot_components,
    decode_event,
    kernel_cmdline,
    parse_eventlog,
    replay,
    secure_boot_state,
    to_dict,
)
from tests.conftest import REALDATA

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

GENERATED = [
    b.build_eventlog(b.typical_boot()).data,
    b.build_eventlog(b.typical_boot(secure_boot_enabled=False), ("sha256",)).data,
    b.build_legacy_eventlog(b.typical_boot()).data,
]
REAL = [p.read_bytes() for p in sorted(REALDATA.glob("uefi-eventlog-*.bin"))] if REALDATA.is_dir() else []
SEEDS = GENERATED + REAL
SPEC_HEADER = b.spec_id_event(("sha1", "sha256"))
INTERESTING_U32 = [0, 1, 2, 3, 7, 8, 16, 17, 23, 24, 0x7F, 0xFF, 0x8000, 0xFFFF, 0x10000, 0x7FFFFFFF, 0xFFFFFFFF]


def exercise(data: bytes) -> None:
    try:
        log = parse_eventlog(data)
        replayed = replay(log)
    except EvidenceError as exc:
        assert exc.code is Failure.EVENTLOG_MALFORMED
        return
    for ev in log.events:
        assert isinstance(decode_event(ev), dict)
    secure_boot_state(log)
    boot_components(log)
    kernel_cmdline(log)
    json.dumps(to_dict(log, replayed))


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A seed log with a few bit flips, truncations, insertions, deletions or size-field rewrites."""
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "truncate", "insert", "delete", "u32", "u16"]))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "truncate":
            del data[pos:]
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete":
            del data[pos : pos + draw(st.integers(1, 16))]
        elif op == "u32":
            data[pos : pos + 4] = struct.pack("<I", draw(st.sampled_from(INTERESTING_U32)))
        else:
            data[pos : pos + 2] = struct.pack("<H", draw(st.sampled_from(INTERESTING_U32)) & 0xFFFF)
    return bytes(data)


@FUZZ
@given(st.binary(max_size=2048))
def test_arbitrary_bytes(data: bytes) -> None:
    exercise(data)


@FUZZ
@given(st.binary(max_size=1024))
def test_arbitrary_events_after_a_valid_spec_id_event(data: bytes) -> None:
    exercise(SPEC_HEADER + data)


@FUZZ
@given(mutated())
def test_mutated_logs(data: bytes) -> None:
    exercise(data)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(GENERATED[:2]), st.data())
def test_mutated_event_data_still_decodes(seed: bytes, draw: st.DataObject) -> None:
    """Replace one event's data with random bytes (keeping the framing valid): parsing succeeds
    and every decoder must cope with data it does not expect."""
    log = parse_eventlog(seed)
    index = draw.draw(st.integers(1, len(log.events) - 1))
    items = [b.LogItem(ev.pcr, ev.type, ev.data, digests=ev.digests) for ev in log.events[1:]]
    items[index - 1] = b.LogItem(items[index - 1].pcr, items[index - 1].event_type, draw.draw(st.binary(max_size=300)))
    exercise(b.build_eventlog(items, log.banks).data)
