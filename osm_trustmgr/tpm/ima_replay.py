"""Replay IMA entries into PCR 10, resume from a verified prefix, and check ``boot_aggregate``.

What the kernel extends (ima_queue.c, ima_add_template_entry -> ima_pcr_extend): since Linux 5.8
(commit 1ea973df6e21) each bank gets its own hash of the template data (ima_crypto.c,
ima_calc_field_array_hash; banks the kernel cannot hash get the SHA-1 digest zero-padded). A
violation records a zero template hash and extends 0xFF..FF into every bank (ima_init_digests).
Before 5.8 the SHA-1 template hash was extended into every bank, zero-padded
(drivers/char/tpm/tpm-interface.c, tpm_pcr_extend): pass ``legacy_sha1_padding=True`` for those.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from functools import partial

from osm_trustmgr.failures import Failure
from osm_trustmgr.tpm.algorithms import HashAlg, hash_by_name
from osm_trustmgr.tpm.errors import EvidenceError
from osm_trustmgr.tpm.ima_templates import BOOT_AGGREGATE, IMA_PCR, TEMPLATE_HASH_ALGS, ImaEntry

_HASH_CONSTRUCTORS: dict[str, Callable[[bytes], hashlib._Hash]] = {
    "sha1": hashlib.sha1,
    "sha256": hashlib.sha256,
    "sha384": hashlib.sha384,
    "sha512": hashlib.sha512,
}


def _hasher(bank: HashAlg) -> Callable[[bytes], hashlib._Hash]:
    return _HASH_CONSTRUCTORS.get(bank.name) or partial(hashlib.new, bank.name)


def _extend_values(entries: Iterable[ImaEntry], bank: HashAlg, legacy_sha1_padding: bool) -> Iterator[bytes | None]:
    """Per entry, the digest the kernel extends into ``bank``'s PCR 10, or ``None`` for entries a
    policy rule (``pcr=``) sent to another PCR."""
    size = bank.size
    violation = b"\xff" * size
    if legacy_sha1_padding:
        padding = bytes(size - 20)
        for entry in entries:
            stated = entry.template_hash
            if len(stated) != 20:
                raise EvidenceError(Failure.IMA_REPLAY, "legacy PCR 10 replay needs SHA-1 template hashes")
            yield None if entry.pcr != IMA_PCR else (stated if any(stated) else b"\xff" * 20) + padding
        return
    hasher = _hasher(bank)
    # The stated template hash was verified by the parser, so it is reused when it is this bank's.
    reusable = size if TEMPLATE_HASH_ALGS.get(size) == bank.name else -1
    for entry in entries:
        stated = entry.template_hash
        if entry.pcr != IMA_PCR:
            yield None
        elif not any(stated):
            yield violation
        elif len(stated) == reusable:
            yield stated
        else:
            yield hasher(entry.template_data).digest()


def pcr10_digests(entries: Iterable[ImaEntry], bank: HashAlg, *, legacy_sha1_padding: bool = False) -> Iterator[bytes]:
    """The digests the kernel extends into ``bank``'s PCR 10 for ``entries``, in order."""
    return (d for d in _extend_values(entries, bank, legacy_sha1_padding) if d is not None)


def _start(bank: HashAlg, start_value: bytes | None) -> bytes:
    if start_value is None:
        return bytes(bank.size)
    if len(start_value) != bank.size:
        raise EvidenceError(Failure.IMA_REPLAY, f"{bank.name} start value has {len(start_value)} bytes")
    return start_value


def replay_ima(
    entries: Iterable[ImaEntry],
    bank: HashAlg,
    start_value: bytes | None = None,
    *,
    legacy_sha1_padding: bool = False,
) -> bytes:
    """PCR 10 of ``bank`` after ``entries`` (those for other PCRs are skipped), from ``start_value``
    or, by default, the zeros of TPM2_Startup."""
    hasher = _hasher(bank)
    value = _start(bank, start_value)
    for digest in pcr10_digests(entries, bank, legacy_sha1_padding=legacy_sha1_padding):
        value = hasher(value + digest).digest()
    return value


def find_quoted_prefix(
    entries: Iterable[ImaEntry],
    bank: HashAlg,
    quoted: bytes,
    start_value: bytes | None = None,
    *,
    legacy_sha1_padding: bool = False,
) -> int | None:
    """The shortest prefix of ``entries`` that replays to the quoted PCR 10 (its length, counting
    entries for other PCRs too), or ``None`` if none does.

    The log is read after the quote, so it may hold measurements the quote does not cover yet.
    """
    hasher = _hasher(bank)
    value = _start(bank, start_value)
    if value == quoted:
        return 0
    for count, digest in enumerate(_extend_values(entries, bank, legacy_sha1_padding), 1):
        if digest is not None:
            value = hasher(value + digest).digest()
            if value == quoted:
                return count
    return None


@dataclass(frozen=True)
class ImaCursor:
    """How far a machine's IMA log is verified: ``offset`` entries, and PCR 10 per bank after them.

    Keep it between quotes so the next verification only parses and replays the new entries
    (``parse_ima_ascii(log, start_line=cursor.offset)``). A reboot resets the log: start over.
    """

    offset: int
    pcr10: Mapping[str, bytes]

    @classmethod
    def start(cls, banks: Iterable[HashAlg]) -> ImaCursor:
        return cls(0, {bank.name: bytes(bank.size) for bank in banks})

    def advance(self, entries: Sequence[ImaEntry], *, legacy_sha1_padding: bool = False) -> ImaCursor:
        """The cursor after the verified ``entries`` that follow ``offset``."""
        values = {}
        for name, value in self.pcr10.items():
            bank = hash_by_name(name)
            if bank is None:
                raise EvidenceError(Failure.IMA_REPLAY, f"cannot replay unsupported bank {name!r}")
            values[name] = replay_ima(entries, bank, value, legacy_sha1_padding=legacy_sha1_padding)
        return ImaCursor(self.offset + len(entries), values)


class BootAggregateForm(str, Enum):
    """Which PCRs a ``boot_aggregate`` covers."""

    PCRS_0_7 = "pcr0-7"
    PCRS_0_9 = "pcr0-9"


def boot_aggregate_digest(pcrs: Mapping[int, bytes], bank: HashAlg, form: BootAggregateForm) -> bytes:
    """H(PCR0 || ... || PCR7 [|| PCR8 || PCR9]) with ``bank``'s hash over ``bank``'s values."""
    h = bank.new()
    for index in range(10 if form is BootAggregateForm.PCRS_0_9 else 8):
        h.update(pcrs[index])
    return h.digest()


def match_boot_aggregate(entry: ImaEntry, pcrs: Mapping[int, bytes], bank: HashAlg) -> BootAggregateForm | None:
    """Which form of ``boot_aggregate`` the entry's digest is, or ``None`` if neither matches.

    ima_crypto.c, ima_calc_boot_aggregate / ima_calc_boot_aggregate_tfm: the kernel hashes the PCRs
    of one bank, the one of ``ima_hash`` or else SHA-256 or else SHA-1 (the entry's d-ng algorithm
    says which, so it must be ``bank``). SHA-1 covers PCRs 0-7. Non-SHA-1 banks also cover PCRs
    8-9 since commit 20c59ce010f8 ("ima: extend boot_aggregate with kernel measurements", 5.8). Its
    prerequisite 6f1a1d103b48 (non-SHA-1 banks) reached some stable kernels without it, so for those
    banks PCRs 0-7 are accepted too and the form that matched is returned. A TPM-less boot records
    zeros, which match nothing.
    """
    if entry.path != BOOT_AGGREGATE or entry.digest_alg != bank.name:
        return None
    if bank.name == "sha1":
        forms: tuple[BootAggregateForm, ...] = (BootAggregateForm.PCRS_0_7,)
    else:
        forms = (BootAggregateForm.PCRS_0_9, BootAggregateForm.PCRS_0_7)
    for form in forms:
        count = 10 if form is BootAggregateForm.PCRS_0_9 else 8
        complete = all(len(pcrs.get(i, b"")) == bank.size for i in range(count))
        if complete and boot_aggregate_digest(pcrs, bank, form) == entry.file_digest:
            return form
    return None


def check_boot_aggregate(entry: ImaEntry, pcrs: Mapping[int, bytes], bank: HashAlg) -> bool:
    """True when ``entry`` is a ``boot_aggregate`` of ``bank``'s quoted ``pcrs`` (see above)."""
    return match_boot_aggregate(entry, pcrs, bank) is not None
