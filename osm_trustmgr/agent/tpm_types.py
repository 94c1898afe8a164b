"""Plain data the agent's TPM layer returns: importable without tpm2-pytss (API layer, serializers, tests).

Byte formats are those documented in :mod:`osm_trustmgr.agent.tpm`.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

Selection = Mapping[str, Iterable[int]]
"""PCRs to quote or read: bank name (``sha1``, ``sha256``, …) to PCR indices."""

PcrValues = dict[str, dict[int, bytes]]
"""PCR values by bank name and index, e.g. ``{"sha256": {0: b"..."}}``."""


class TpmError(RuntimeError):
    """The TPM refused an operation or returned something inconsistent."""


@dataclass(frozen=True)
class Ek:
    """An endorsement key, derived from the TCG template named by ``alg`` (``rsa``, ``ecc``, ``ecc384``)."""

    alg: str
    public: bytes  # TPM2B_PUBLIC
    name: bytes


@dataclass(frozen=True)
class AkBlobs:
    """What the agent stores to reload its AK after a restart or reboot (useless on any other TPM).

    The blobs stay valid as long as the endorsement seed does: TPM2_Clear keeps it, TPM2_ChangeEPS does not.
    """

    ek_alg: str  # the EK the AK was created under (its parent)
    public: bytes  # TPM2B_PUBLIC
    private: bytes  # TPM2B_PRIVATE

    def to_dict(self) -> dict[str, str]:
        return {
            "ek_alg": self.ek_alg,
            "public": base64.b64encode(self.public).decode(),
            "private": base64.b64encode(self.private).decode(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, str]) -> AkBlobs:
        return cls(data["ek_alg"], base64.b64decode(data["public"]), base64.b64decode(data["private"]))


@dataclass(frozen=True)
class Ak:
    """An attestation key: restricted signing key under the EK."""

    blobs: AkBlobs
    name: bytes
    qualified_name: bytes  # through the EK: the quote's ``qualifiedSigner``
    persistent_handle: int | None = None

    @property
    def public(self) -> bytes:
        return self.blobs.public


@dataclass(frozen=True)
class QuoteResult:
    """One TPM2_Quote, as the agent sends it to the verifier."""

    attest: bytes  # TPMS_ATTEST
    signature: bytes  # TPMT_SIGNATURE
    pcrs: PcrValues  # the quoted PCRs, read right after the quote and checked against its pcrDigest


@dataclass(frozen=True)
class ClockInfo:
    """TPMS_TIME_INFO: ``time`` is ms since the TPM was last powered; the counters drive reboot detection."""

    time: int
    clock: int
    reset_count: int
    restart_count: int
    safe: bool
