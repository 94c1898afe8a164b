"""TPM2_Quote evidence: TPMS_ATTEST (Part 2 §10.12), TPMT_SIGNATURE (§11.3.4) and their verification.

The order of checks matters: the signature is verified over the raw attest bytes before any field is
trusted, so a tampered quote is reported as a bad signature rather than as whatever its garbled fields say.
"""

from __future__ import annotations

import hmac
import struct
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any, NamedTuple

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from osm_trustmgr.failures import Failure
from osm_trustmgr.tpm import algorithms as alg
from osm_trustmgr.tpm.algorithms import HASHES_BY_ID, HashAlg, hash_by_id
from osm_trustmgr.tpm.errors import EvidenceError
from osm_trustmgr.tpm.pcr import PcrBanks, PcrSelection, marshal_selection, parse_selection
from osm_trustmgr.tpm.public import TpmPublic
from osm_trustmgr.tpm.wire import Reader

TPM_GENERATED_VALUE = 0xFF544347
ST_ATTEST_QUOTE = 0x8018


class ClockInfo(NamedTuple):
    """TPMS_CLOCK_INFO: ``reset_count`` grows on every TPM reset (reboot), ``restart_count`` on resume."""

    clock: int
    reset_count: int
    restart_count: int
    safe: bool


class Quote(NamedTuple):
    """A parsed TPMS_ATTEST of type TPM_ST_ATTEST_QUOTE."""

    qualified_signer: bytes
    extra_data: bytes
    clock_info: ClockInfo
    firmware_version: int
    pcr_selection: tuple[PcrSelection, ...]
    pcr_digest: bytes


class Signature(NamedTuple):
    """A parsed TPMT_SIGNATURE; ``value`` is PKCS#1 bytes for RSA and DER (r, s) for ECDSA."""

    sig_alg: int
    hash: HashAlg
    value: bytes


# Quotes are parsed on the verifier's hot path (see bench/verify.py), hence direct struct access with explicit
# bounds checks instead of the generic Reader.
_U16 = struct.Struct(">H")
_HEADER = struct.Struct(">IH")
_CLOCK = struct.Struct(">QIIBQ")


def _tpm2b(data: bytes, pos: int, limit: int, what: str, code: Failure) -> tuple[bytes, int]:
    if pos + 2 > len(data):
        raise EvidenceError(code, f"truncated {what} size at offset {pos}")
    (size,) = _U16.unpack_from(data, pos)
    end = pos + 2 + size
    if size > limit or end > len(data):
        raise EvidenceError(code, f"{what} of {size} bytes does not fit at offset {pos}")
    return data[pos + 2 : end], end


def parse_attest(data: bytes) -> Quote:
    """Parse TPMS_ATTEST bytes (``TPM2B_ATTEST`` without its size). Raises EvidenceError."""
    bad = Failure.QUOTE_MALFORMED
    size = len(data)
    if size < 6:
        raise EvidenceError(bad, f"TPMS_ATTEST of {size} bytes is truncated")
    magic, st = _HEADER.unpack_from(data, 0)
    if magic != TPM_GENERATED_VALUE:
        raise EvidenceError(Failure.QUOTE_MAGIC, f"magic 0x{magic:08x} is not TPM_GENERATED_VALUE")
    if st != ST_ATTEST_QUOTE:
        raise EvidenceError(Failure.QUOTE_TYPE, f"attestation type 0x{st:04x} is not a quote")
    try:
        # qualifiedSigner (TPM2B_NAME) and extraData (TPM2B_DATA), sizes checked against their maximum
        end = 8 + (n := data[6] << 8 | data[7])
        signer = data[8:end]
        m = data[end] << 8 | data[end + 1]
        extra = data[end + 2 : end + 2 + m]
        pos = end + 2 + m
        clock, reset_count, restart_count, safe, firmware = _CLOCK.unpack_from(data, pos)
    except (IndexError, struct.error):
        raise EvidenceError(bad, "truncated qualifiedSigner, extraData or clockInfo") from None
    if n > 2 + 64 or m > 64 or len(signer) != n or len(extra) != m:
        raise EvidenceError(bad, f"qualifiedSigner ({n} bytes) or extraData ({m} bytes) does not fit")
    if safe > 1:
        raise EvidenceError(bad, f"clockInfo.safe is {safe}, not a TPMI_YES_NO")
    selection, pos = _selection_at(data, pos + _CLOCK.size)
    digest, pos = _tpm2b(data, pos, 64, "pcrDigest", bad)
    if pos != size:
        raise EvidenceError(bad, f"{size - pos} trailing bytes after TPMS_ATTEST")
    return Quote(signer, extra, ClockInfo(clock, reset_count, restart_count, bool(safe)), firmware, selection, digest)


def _selection_at(data: bytes, pos: int) -> tuple[tuple[PcrSelection, ...], int]:
    """The TPML_PCR_SELECTION at ``pos``; its bytes are measured first so parsing can be memoised."""
    end = pos + 4
    if end > len(data):
        raise EvidenceError(Failure.QUOTE_MALFORMED, "truncated TPML_PCR_SELECTION")
    count = int.from_bytes(data[pos:end], "big")
    for _ in range(min(count, 17)):  # parse_selection rejects > 16; stop scanning past that
        if end + 3 > len(data):
            raise EvidenceError(Failure.QUOTE_MALFORMED, "truncated TPMS_PCR_SELECTION")
        end += 3 + data[end + 2]
    return _parse_selection_bytes(data[pos:end]), end


@lru_cache(maxsize=256)
def _parse_selection_bytes(raw: bytes) -> tuple[PcrSelection, ...]:
    r = Reader(raw, Failure.QUOTE_MALFORMED)
    selection = parse_selection(r)
    r.end("TPML_PCR_SELECTION")
    return selection


def parse_signature(data: bytes) -> Signature:
    """Parse a marshalled TPMT_SIGNATURE (RSASSA, RSAPSS, ECDSA). Raises EvidenceError."""
    bad = Failure.SIGNATURE_MALFORMED
    if len(data) < 4:
        raise EvidenceError(bad, f"TPMT_SIGNATURE of {len(data)} bytes is truncated")
    sig_alg, hash_id = _HEADER_SIG.unpack_from(data, 0)
    h = hash_by_id(hash_id)
    if h is None:
        raise EvidenceError(bad, f"unsupported signature hash 0x{hash_id:04x}")
    if sig_alg in (alg.ALG_RSASSA, alg.ALG_RSAPSS):
        value, pos = _tpm2b(data, 4, 512, "signature.rsa", bad)
    elif sig_alg == alg.ALG_ECDSA:
        sig_r, pos = _tpm2b(data, 4, 66, "signature.r", bad)
        sig_s, pos = _tpm2b(data, pos, 66, "signature.s", bad)
        value = encode_dss_signature(int.from_bytes(sig_r, "big"), int.from_bytes(sig_s, "big"))
    else:
        raise EvidenceError(bad, f"unsupported signature algorithm 0x{sig_alg:04x}")
    if pos != len(data):
        raise EvidenceError(bad, f"{len(data) - pos} trailing bytes after TPMT_SIGNATURE")
    return Signature(sig_alg, h, value)


_HEADER_SIG = struct.Struct(">HH")
_PKCS1V15 = padding.PKCS1v15()
_ECDSA = {h.alg_id: ec.ECDSA(h.crypto()) for h in HASHES_BY_ID.values()}


def verify_signature(ak: TpmPublic, message: bytes, sig: Signature) -> None:
    """Check ``sig`` over ``message`` with the AK, honouring the AK's own scheme when it fixes one."""
    if ak.scheme not in (alg.ALG_NULL, sig.sig_alg) or ak.scheme_hash not in (alg.ALG_NULL, sig.hash.alg_id):
        raise EvidenceError(
            Failure.SIGNATURE_SCHEME,
            f"signature 0x{sig.sig_alg:04x}/{sig.hash.name} but AK scheme is 0x{ak.scheme:04x}",
        )
    # Dispatch on the TPM key type rather than isinstance() on cryptography's ABCs, and reuse padding
    # objects: both are measurable next to an RSA verification (bench/verify.py).
    key: Any = ak.key
    try:
        if ak.type == alg.ALG_RSA and sig.sig_alg == alg.ALG_RSASSA:
            key.verify(sig.value, message, _PKCS1V15, sig.hash.crypto())
        elif ak.type == alg.ALG_RSA and sig.sig_alg == alg.ALG_RSAPSS:
            # TPMs differ on PSS salt length (hash size vs. maximum); AUTO accepts either.
            pss = padding.PSS(mgf=padding.MGF1(sig.hash.crypto()), salt_length=padding.PSS.AUTO)
            key.verify(sig.value, message, pss, sig.hash.crypto())
        elif ak.type == alg.ALG_ECC and sig.sig_alg == alg.ALG_ECDSA:
            key.verify(sig.value, message, _ECDSA[sig.hash.alg_id])
        else:
            raise EvidenceError(Failure.SIGNATURE_SCHEME, f"signature 0x{sig.sig_alg:04x} does not fit the AK type")
    except InvalidSignature:
        raise EvidenceError(Failure.SIGNATURE_INVALID, "quote signature does not verify with the AK") from None


def check_pcr_digest(quote: Quote, pcrs: PcrBanks, digest_alg: HashAlg) -> None:
    """The reported PCR values must hash (with the AK's signing hash) to the quoted pcrDigest."""
    values: list[bytes] = []
    for sel in quote.pcr_selection:
        bank, size = pcrs.get(sel.bank.name, {}), sel.bank.size
        for i in sel.pcrs:
            value = bank.get(i)
            if value is None:
                raise EvidenceError(Failure.PCR_DIGEST, f"PCR {sel.bank.name}:{i} is quoted but not reported")
            # A value of the wrong size could shift bytes between PCRs and still hash the same.
            if len(value) != size:
                raise EvidenceError(Failure.PCR_DIGEST, f"PCR {sel.bank.name}:{i} has {len(value)} bytes")
            values.append(value)
    if not hmac.compare_digest(digest_alg.digest(b"".join(values)), quote.pcr_digest):
        raise EvidenceError(Failure.PCR_DIGEST, "reported PCR values do not match the quoted digest")


class VerifiedQuote(NamedTuple):
    """A quote whose signature, signer, nonce, selection and PCR digest all checked out.

    ``reported`` are the agent's PCR values; :meth:`pcrs` keeps only the quoted (hence proven) ones.
    """

    quote: Quote
    reported: PcrBanks
    signer_checked: bool

    def pcrs(self) -> PcrBanks:
        return {s.bank.name: {i: self.reported[s.bank.name][i] for i in s.pcrs} for s in self.quote.pcr_selection}


def verify_quote(
    attest: bytes,
    signature: bytes,
    ak: TpmPublic,
    nonce: bytes,
    pcrs: PcrBanks,
    *,
    expected_signer: bytes | None = None,
    expected_selection: Sequence[PcrSelection] | None = None,
) -> VerifiedQuote:
    """Verify one TPM2_Quote; raises EvidenceError with the first failing check's code.

    ``expected_signer`` is the AK's qualified Name (see :func:`public.ak_qualified_name`); without it (an
    admin-pinned PEM AK) the signer check cannot run and ``signer_checked`` is False.
    ``pcrs`` are the values the agent reported; only the quoted ones are kept in the result.
    """
    sig = parse_signature(signature)
    verify_signature(ak, attest, sig)
    quote = parse_attest(attest)
    if expected_signer is not None and not hmac.compare_digest(quote.qualified_signer, expected_signer):
        raise EvidenceError(Failure.SIGNER_MISMATCH, "qualifiedSigner is not the enrolled AK")
    if not hmac.compare_digest(quote.extra_data, nonce):
        raise EvidenceError(Failure.NONCE_MISMATCH, "quote extraData is not the issued nonce")
    if (
        expected_selection is not None
        and quote.pcr_selection != expected_selection
        and not _same_selection(quote.pcr_selection, expected_selection)
    ):
        raise EvidenceError(Failure.PCR_SELECTION, "quoted PCR selection differs from the requested one")
    check_pcr_digest(quote, pcrs, sig.hash)
    return VerifiedQuote(quote, pcrs, expected_signer is not None)


def _same_selection(a: Sequence[PcrSelection], b: Sequence[PcrSelection]) -> bool:
    def norm(sels: Sequence[PcrSelection]) -> dict[str, frozenset[int]]:
        out: dict[str, frozenset[int]] = {}
        for s in sels:
            if s.pcrs:
                out[s.bank.name] = out.get(s.bank.name, frozenset()) | frozenset(s.pcrs)
        return out

    return norm(a) == norm(b)


def check_counters(previous: ClockInfo | None, current: ClockInfo) -> bool:
    """Compare with the last verified quote of the same TPM. Returns True when the TPM rebooted since.

    resetCount only grows (a reboot increments it); restartCount grows within a boot; the clock only moves
    forward within a boot. Anything going backwards is a rollback or a replay: EvidenceError(clock.rollback).
    """
    if previous is None:
        return False
    if current.reset_count < previous.reset_count:
        raise EvidenceError(Failure.CLOCK_ROLLBACK, f"resetCount {current.reset_count} < {previous.reset_count}")
    if current.reset_count > previous.reset_count:
        return True
    if current.restart_count < previous.restart_count:
        raise EvidenceError(Failure.CLOCK_ROLLBACK, f"restartCount {current.restart_count} < {previous.restart_count}")
    if current.restart_count == previous.restart_count and current.clock < previous.clock:
        raise EvidenceError(Failure.CLOCK_ROLLBACK, f"clock {current.clock} < {previous.clock}")
    return False


def marshal_attest(quote: Quote) -> bytes:
    """Marshal a quote's TPMS_ATTEST, for simulated agents that sign with software keys."""
    c = quote.clock_info
    return (
        struct.pack(">IH", TPM_GENERATED_VALUE, ST_ATTEST_QUOTE)
        + struct.pack(">H", len(quote.qualified_signer))
        + quote.qualified_signer
        + struct.pack(">H", len(quote.extra_data))
        + quote.extra_data
        + struct.pack(">QIIBQ", c.clock, c.reset_count, c.restart_count, int(c.safe), quote.firmware_version)
        + marshal_selection(quote.pcr_selection)
        + struct.pack(">H", len(quote.pcr_digest))
        + quote.pcr_digest
    )


def quote_pcr_digest(
    bank_values: Mapping[str, Mapping[int, bytes]], selection: Sequence[PcrSelection], digest_alg: HashAlg
) -> bytes:
    """The pcrDigest a TPM computes: H(selected PCR values, in selection order), H = the signing hash."""
    h = digest_alg.new()
    for sel in selection:
        for i in sel.pcrs:
            h.update(bank_values[sel.bank.name][i])
    return h.digest()
