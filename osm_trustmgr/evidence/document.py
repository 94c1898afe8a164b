"""The evidence document of DESIGN.md §7, shared by the agent, the charm and the offline CLI.

``{attest, signature, pcrs{bank:{index:hex}}, uefi_log, ima_log, ima_next_offset, boot_time}`` with binary
fields base64; the offline format adds ``ak_public`` (PEM or base64 TPM2B_PUBLIC) and ``nonce`` (hex).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from osm_trustmgr.failures import Failure
from osm_trustmgr.policy.evaluate import Evidence
from osm_trustmgr.tpm.algorithms import hash_by_name
from osm_trustmgr.tpm.errors import EvidenceError
from osm_trustmgr.tpm.pcr import NUM_PCRS, PcrBanks

MAX_FIELD = 64 * 1024 * 1024  # an IMA log of a busy host stays far below this


@dataclass(frozen=True)
class EvidenceDocument:
    evidence: Evidence
    ak_public: bytes | None
    nonce: bytes | None
    ima_next_offset: int | None
    boot_time: str | None


def _malformed(detail: str) -> EvidenceError:
    return EvidenceError(Failure.EVIDENCE_MALFORMED, detail)


def _b64(doc: Mapping[str, Any], key: str, required: bool = False) -> bytes | None:
    value = doc.get(key)
    if value is None:
        if required:
            raise _malformed(f"missing field {key!r}")
        return None
    if not isinstance(value, str) or len(value) > MAX_FIELD:
        raise _malformed(f"field {key!r} must be a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except ValueError:  # binascii.Error, or non-ASCII text
        raise _malformed(f"field {key!r} is not valid base64") from None


def _hex(value: Any, what: str) -> bytes:
    if not isinstance(value, str):
        raise _malformed(f"{what} must be a hex string")
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise _malformed(f"{what} is not hex") from None


def parse_pcrs(value: Any) -> PcrBanks:
    if not isinstance(value, Mapping):
        raise _malformed("pcrs must be an object {bank: {index: hex}}")
    banks: PcrBanks = {}
    for bank, values in value.items():
        h = hash_by_name(str(bank))
        if h is None or not isinstance(values, Mapping):
            raise _malformed(f"unknown PCR bank {bank!r}")
        out: dict[int, bytes] = {}
        for index, hexval in values.items():
            try:
                i = int(index)
            except (TypeError, ValueError):
                raise _malformed(f"PCR index {index!r} is not an integer") from None
            if not 0 <= i < NUM_PCRS:
                raise _malformed(f"PCR index {i} out of range")
            out[i] = _hex(hexval, f"pcrs.{bank}.{index}")
        banks[h.name] = out
    return banks


def parse_evidence_document(doc: Any) -> EvidenceDocument:
    """Decode an evidence JSON object; raises EvidenceError(evidence.malformed) naming the bad field."""
    if not isinstance(doc, Mapping):
        raise _malformed("evidence must be a JSON object")
    ima_log = doc.get("ima_log")
    if ima_log is not None and not isinstance(ima_log, str):
        raise _malformed("ima_log must be text (the ascii measurement list)")
    offset = doc.get("ima_offset", 0)
    if not isinstance(offset, int) or offset < 0:
        raise _malformed("ima_offset must be a non-negative integer")
    ak = doc.get("ak_public")
    ak_bytes: bytes | None = None
    if isinstance(ak, str):
        ak_bytes = ak.encode() if ak.lstrip().startswith("-----") else _b64(doc, "ak_public")
    elif ak is not None:
        raise _malformed("ak_public must be PEM or base64 TPM2B_PUBLIC")
    nonce = doc.get("nonce")
    next_offset = doc.get("ima_next_offset")
    evidence = Evidence(
        attest=_b64(doc, "attest", required=True) or b"",
        signature=_b64(doc, "signature", required=True) or b"",
        pcrs=parse_pcrs(doc.get("pcrs", {})),
        uefi_log=_b64(doc, "uefi_log"),
        ima_log=ima_log.encode("utf-8", "surrogateescape") if ima_log is not None else None,
        ima_offset=offset,
    )
    return EvidenceDocument(
        evidence=evidence,
        ak_public=ak_bytes,
        nonce=_hex(nonce, "nonce") if nonce is not None else None,
        ima_next_offset=next_offset if isinstance(next_offset, int) else None,
        boot_time=str(doc["boot_time"]) if doc.get("boot_time") is not None else None,
    )


def evidence_to_document(
    ev: Evidence, *, ak_public: bytes | None = None, nonce: bytes | None = None, **extra: Any
) -> dict[str, Any]:
    """The JSON form of ``ev`` (the inverse of :func:`parse_evidence_document`)."""
    doc: dict[str, Any] = {
        "attest": base64.b64encode(ev.attest).decode(),
        "signature": base64.b64encode(ev.signature).decode(),
        "pcrs": {b: {str(i): v.hex() for i, v in sorted(vals.items())} for b, vals in ev.pcrs.items()},
        "ima_offset": ev.ima_offset,
    }
    if ev.uefi_log is not None:
        doc["uefi_log"] = base64.b64encode(ev.uefi_log).decode()
    if ev.ima_log is not None:
        doc["ima_log"] = ev.ima_log.decode("utf-8", "surrogateescape")
    if ak_public is not None:
        doc["ak_public"] = (
            ak_public.decode() if ak_public.startswith(b"-----") else base64.b64encode(ak_public).decode()
        )
    if nonce is not None:
        doc["nonce"] = nonce.hex()
    doc.update(extra)
    return doc
