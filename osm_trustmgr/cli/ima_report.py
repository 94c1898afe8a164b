"""The report ``osm-trustmgr evidence ima`` prints: entries, violations, policy findings, replayed PCR 10."""

from __future__ import annotations

from typing import Any

from osm_trustmgr.failures import Failure
from osm_trustmgr.policy.ima_policy import ImaPolicy, evaluate_ima
from osm_trustmgr.tpm.algorithms import SHA1, SHA256
from osm_trustmgr.tpm.errors import EvidenceError
from osm_trustmgr.tpm.ima import parse_ima_ascii, parse_ima_binary
from osm_trustmgr.tpm.ima_replay import replay_ima
from osm_trustmgr.tpm.ima_templates import ImaEntry

IMA_PCR = 10


def parse_any(data: bytes) -> tuple[str, list[ImaEntry]]:
    """ASCII lists start with the PCR number in decimal; binary ones with a little-endian u32."""
    if not data:
        # even a kernel that measured nothing has its boot_aggregate entry: an empty file is a wrong path
        raise EvidenceError(Failure.IMA_MALFORMED, "empty file: an IMA log holds at least boot_aggregate")
    if data[:1].isdigit():
        return "ascii", parse_ima_ascii(data)
    try:
        return "binary", parse_ima_binary(data, template_hash_size=20)
    except EvidenceError:
        # binary_runtime_measurements_sha256 (Linux >= 6.x) carries 32-byte template hashes
        return "binary", parse_ima_binary(data, template_hash_size=32)


def _entry(index: int, e: ImaEntry) -> dict[str, Any]:
    out: dict[str, Any] = {
        "index": index,
        "pcr": e.pcr,
        "template": e.template_name,
        "template_hash": e.template_hash.hex(),
        "digest": f"{e.digest_alg}:{e.file_digest.hex()}",
        "path": e.path,
    }
    if e.signature:
        out["signature"] = e.signature.hex()
    if e.buf is not None:
        out["buf"] = e.buf.hex()
    return out


def ima_report(data: bytes, policy: ImaPolicy | None) -> dict[str, Any]:
    fmt, entries = parse_any(data)
    pcr10 = [e for e in entries if e.pcr == IMA_PCR]
    report: dict[str, Any] = {
        "format": fmt,
        "entries": [_entry(i, e) for i, e in enumerate(entries)],
        "violations": [_entry(i, e) for i, e in enumerate(entries) if e.is_violation],
        "pcrs": {bank.name: {str(IMA_PCR): replay_ima(pcr10, bank).hex()} for bank in (SHA1, SHA256)},
    }
    if policy is not None:
        report["policy_findings"] = [
            {"code": f.code.value, "index": f.index, "path": f.path, "detail": f.detail}
            for f in evaluate_ima(entries, policy)
        ]
    return report
