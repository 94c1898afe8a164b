"""PCR banks, selections (TPML_PCR_SELECTION) and extend/replay arithmetic."""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

from osm_trustmgr.failures import Failure
from osm_trustmgr.tpm.algorithms import HashAlg, hash_by_id, hash_by_name
from osm_trustmgr.tpm.errors import EvidenceError
from osm_trustmgr.tpm.wire import Reader

NUM_PCRS = 24

# {bank name: {pcr index: value}}, bank names as tpm2-tools spells them ("sha1", "sha256").
PcrBanks = dict[str, dict[int, bytes]]


@dataclass(frozen=True)
class PcrSelection:
    """One TPMS_PCR_SELECTION: a hash bank and the PCR indexes selected in it."""

    bank: HashAlg
    pcrs: tuple[int, ...]


def parse_selection(r: Reader) -> tuple[PcrSelection, ...]:
    """Read a TPML_PCR_SELECTION. Unknown banks are a parse error: a quote we cannot check is no quote."""
    count = r.u32("TPML_PCR_SELECTION.count")
    if count > 16:
        raise r.fail(f"TPML_PCR_SELECTION count {count} too large")
    out = []
    for _ in range(count):
        alg_id = r.u16("TPMS_PCR_SELECTION.hash")
        bank = hash_by_id(alg_id)
        if bank is None:
            raise r.fail(f"unsupported PCR bank 0x{alg_id:04x}")
        size = r.u8("sizeofSelect")
        if size > 32:
            raise r.fail(f"sizeofSelect {size} too large")
        out.append(PcrSelection(bank, _bitmap_pcrs(r.take(size, "pcrSelect"))))
    return tuple(out)


@lru_cache(maxsize=256)
def _bitmap_pcrs(bitmap: bytes) -> tuple[int, ...]:
    # Memoised: a fleet quotes the same few selections millions of times.
    return tuple(i for i in range(len(bitmap) * 8) if bitmap[i // 8] & (1 << (i % 8)))


def marshal_selection(selections: Iterable[PcrSelection]) -> bytes:
    sels = list(selections)
    out = struct.pack(">I", len(sels))
    for sel in sels:
        bitmap = bytearray(3)
        for i in sel.pcrs:
            bitmap[i // 8] |= 1 << (i % 8)
        out += struct.pack(">HB", sel.bank.alg_id, len(bitmap)) + bytes(bitmap)
    return out


def parse_selection_spec(spec: str) -> tuple[PcrSelection, ...]:
    """Parse the tpm2-tools syntax ``sha1:0,1,2+sha256:0,7`` (ranges ``0-7`` allowed)."""
    out = []
    for part in filter(None, spec.split("+")):
        name, _, idx = part.partition(":")
        bank = hash_by_name(name)
        if bank is None:
            raise EvidenceError(Failure.EVIDENCE_MALFORMED, f"unknown PCR bank {name!r}")
        pcrs: set[int] = set()
        for item in filter(None, idx.split(",")):
            lo, _, hi = item.partition("-")
            try:
                first, last = int(lo), int(hi or lo)
            except ValueError:
                raise EvidenceError(Failure.EVIDENCE_MALFORMED, f"bad PCR index {item!r}") from None
            if not 0 <= first <= last < NUM_PCRS:
                raise EvidenceError(Failure.EVIDENCE_MALFORMED, f"PCR index out of range in {item!r}")
            pcrs.update(range(first, last + 1))
        if not pcrs:
            raise EvidenceError(Failure.EVIDENCE_MALFORMED, f"no PCR indexes for bank {name!r}")
        out.append(PcrSelection(bank, tuple(sorted(pcrs))))
    return tuple(out)


def format_selection_spec(selections: Iterable[PcrSelection]) -> str:
    """The tpm2-tools syntax of ``selections`` (inverse of :func:`parse_selection_spec`)."""
    return "+".join(f"{s.bank.name}:{','.join(map(str, s.pcrs))}" for s in selections)


def select(banks: Iterable[str], pcrs: Iterable[int]) -> tuple[PcrSelection, ...]:
    """The same PCRs in each of ``banks``."""
    indexes = tuple(sorted(set(pcrs)))
    return parse_selection_spec("+".join(f"{b}:{','.join(map(str, indexes))}" for b in banks))


def selection_map(selections: Iterable[PcrSelection]) -> dict[str, list[int]]:
    """``{bank name: [pcr, ...]}``, the form the agent's TPM layer takes."""
    return {s.bank.name: list(s.pcrs) for s in selections}


def extend(bank: HashAlg, value: bytes, digest: bytes) -> bytes:
    """PCR extend: new = H(old || digest)."""
    return bank.digest(value + digest)


def initial_value(bank: HashAlg, pcr: int, locality: int = 0) -> bytes:
    """PCR value after TPM2_Startup. PCR 0 starts at the startup locality (H-CRTM / locality 3-4 cases)."""
    if pcr == 0:
        return bytes(bank.size - 1) + bytes([locality])
    if 17 <= pcr <= 22:
        # DRTM PCRs are all-ones until a dynamic launch resets them.
        return b"\xff" * bank.size
    return bytes(bank.size)
