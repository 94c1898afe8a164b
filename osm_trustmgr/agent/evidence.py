"""What the agent answers (DESIGN.md §7): its TPM identity, and a quote with the logs read after it."""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from osm_trustmgr.agent.tpm import Ak, AkBlobs, TpmDevice

UEFI_LOG = Path("/sys/kernel/security/tpm0/binary_bios_measurements")
IMA_LOG = Path("/sys/kernel/security/ima/ascii_runtime_measurements")


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode()


def load_or_create_ak(tpm: TpmDevice, path: Path, alg: str = "ecc", ek_alg: str = "rsa") -> Ak:
    """The agent's AK under the ``ek_alg`` EK, kept across restarts as key blobs in ``path`` (useless on any
    other TPM)."""
    if path.exists():
        return tpm.load_ak(AkBlobs.from_dict(json.loads(path.read_text())))
    ak = tpm.create_ak(alg, ek_alg=ek_alg)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(ak.blobs.to_dict()))
    tmp.chmod(0o600)
    tmp.replace(path)  # atomic: a crash never leaves half a key file
    return ak


def identity_document(tpm: TpmDevice, ak: Ak, ek_alg: str = "rsa") -> dict[str, Any]:
    return {
        "ek_public": _b64(tpm.create_ek(ek_alg).public),
        "ek_certificate": _b64(tpm.read_ek_certificate(ek_alg)),
        "ak_public": _b64(ak.public),
        "ak_name": ak.name.hex(),
    }


def _read_ima(path: Path, offset: int) -> tuple[str | None, int]:
    """IMA lines from ``offset`` on; the log only grows within a boot, so a line count is a stable offset.

    File names in the log are bytes, not always UTF-8: undecodable bytes become surrogate escapes, which JSON
    carries as ``\\udcXX`` (``ensure_ascii``) and the verifier turns back into the same bytes.
    """
    if not path.exists():
        return None, offset
    lines = path.read_text(errors="surrogateescape").splitlines(keepends=True)
    return "".join(lines[offset:]), len(lines)


def boot_time() -> int | None:
    """Seconds since the epoch at boot (``btime`` of /proc/stat): a change means the host rebooted."""
    try:
        for line in Path("/proc/stat").read_text().splitlines():
            if line.startswith("btime "):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def quote_document(
    tpm: TpmDevice,
    ak: Ak,
    nonce: bytes,
    selection: Mapping[str, Sequence[int]],
    *,
    uefi_log: Path = UEFI_LOG,
    ima_log: Path = IMA_LOG,
    ima_offset: int = 0,
) -> dict[str, Any]:
    """Quote first, logs second: a log read after the quote may only be longer than what the quote covers,
    which the verifier handles; the other order could show entries the quote already includes as missing."""
    q = tpm.quote(ak, nonce, selection)
    ima_text, next_offset = _read_ima(ima_log, ima_offset)
    return {
        "attest": _b64(q.attest),
        "signature": _b64(q.signature),
        "pcrs": {b: {str(i): v.hex() for i, v in sorted(vals.items())} for b, vals in q.pcrs.items()},
        "uefi_log": _b64(uefi_log.read_bytes()) if uefi_log.exists() else None,
        "ima_log": ima_text,
        "ima_offset": ima_offset,
        "ima_next_offset": next_offset,
        "boot_time": boot_time(),
        "nonce": nonce.hex(),
        "ak_public": _b64(ak.public),
    }
