"""The trust policy document: reference values per Level of Assurance (DESIGN.md §4).

A level whose section is absent cannot be reached: LoA 2 without platform reference values would be a claim
nobody checked. Digests are lowercase hex; PCR reference values are lists because a fleet legitimately runs
several firmware or kernel versions at once.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator

from osm_trustmgr.policy.ima_policy import ImaPolicy
from osm_trustmgr.tpm.algorithms import hash_by_name
from osm_trustmgr.tpm.pcr import PcrSelection, select

# SHA-1, SHA-256, SHA-384 or SHA-512, lowercase hex
HexDigest = Annotated[str, Field(pattern=r"^(?:[0-9a-f]{40}|[0-9a-f]{64}|[0-9a-f]{96}|[0-9a-f]{128})$")]
# {bank: {"<pcr index>": [allowed hex values]}}
PcrReference = dict[str, dict[int, list[HexDigest]]]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_banks(ref: PcrReference) -> PcrReference:
    for bank, values in ref.items():
        h = hash_by_name(bank)
        if h is None:
            raise ValueError(f"unknown PCR bank {bank!r}")
        for index, allowed in values.items():
            if not 0 <= index < 24:
                raise ValueError(f"PCR index {index} out of range")
            for v in allowed:
                if len(v) != 2 * h.size:
                    raise ValueError(f"{bank}:{index} value {v[:16]}… is not a {bank} digest")
    return ref


class PlatformPolicy(_Strict):
    """LoA 2: UEFI event log replays to PCR 0-7, firmware and Secure Boot as expected."""

    pcrs: PcrReference = Field(default_factory=dict, description="reference values for PCR 0-7")
    secure_boot: Literal["required", "optional"] = "required"
    # SHA-256 over the EFI variable data of PK/KEK/db/dbx as measured into PCR 7
    pk: list[HexDigest] = Field(default_factory=list)
    kek: list[HexDigest] = Field(default_factory=list)
    db: list[HexDigest] = Field(default_factory=list)
    dbx: list[HexDigest] = Field(default_factory=list)

    _banks = field_validator("pcrs")(_check_banks)


class OsPolicy(_Strict):
    """LoA 3: boot loader, kernel, initrd and command line (PCR 4, 8, 9; TXT: 17-18)."""

    pcrs: PcrReference = Field(default_factory=dict, description="reference values for PCR 4, 8, 9, 17, 18")
    # digests (any bank, hex) of EFI applications measured into PCR 4: shim, grub, kernel (EFI stub), UKI
    boot_components: list[HexDigest] = Field(default_factory=list)
    # regular expressions, each must match a whole kernel command line measured by the boot loader
    kernel_cmdline: list[str] = Field(default_factory=list)

    _banks = field_validator("pcrs")(_check_banks)

    @field_validator("kernel_cmdline")
    @classmethod
    def _regexes(cls, v: list[str]) -> list[str]:
        for pattern in v:
            try:
                re.compile(pattern)
            except re.error as e:  # not a ValueError: pydantic would let it escape validation
                raise ValueError(f"invalid regular expression {pattern!r}: {e}") from None
        return v


class ImaRules(_Strict):
    """LoA 4: IMA measurement list rules."""

    # path -> allowed file digests ("sha256:hex" or bare hex of any algorithm)
    allow: dict[str, list[str]] = Field(default_factory=dict)
    exclude: list[str] = Field(default_factory=list, description="regexes of paths never checked")
    keys: list[str] = Field(default_factory=list, description="PEM public keys trusted for ima-sig")
    accept_signatures: bool = True
    require_boot_aggregate: bool = True
    _compiled: ImaPolicy | None = PrivateAttr(default=None)

    def compiled(self) -> ImaPolicy:
        """The allow-list compiled once (digests decoded, regexes joined, keys loaded) and then reused."""
        if self._compiled is None:
            self._compiled = ImaPolicy.build(
                allow=self.allow, exclude=self.exclude, keys=self.keys, accept_signatures=self.accept_signatures
            )
        return self._compiled


class RuntimePolicy(_Strict):
    ima: ImaRules = Field(default_factory=ImaRules)
    max_age: int = Field(300, gt=0, description="seconds a report counts as current for LoA 4")


class PolicySignature(_Strict):
    alg: Literal["ed25519", "ecdsa-p256-sha256"]
    keyid: str = Field(pattern=r"^[0-9a-f]{64}$", description="SHA-256 of the signer's SubjectPublicKeyInfo DER")
    value: str = Field(description="base64 signature over the canonical encoding")


class TrustPolicy(_Strict):
    """A reference-value document; ``signature`` is detached over everything else (see signing.py)."""

    id: str = Field(pattern=r"^[A-Za-z0-9_.:-]{1,128}$")
    version: int = Field(1, ge=1)
    description: str = ""
    pcr_banks: list[str] = Field(default_factory=lambda: ["sha256"], min_length=1)
    platform: PlatformPolicy | None = None
    os: OsPolicy | None = None
    runtime: RuntimePolicy | None = None
    signature: PolicySignature | None = None

    @field_validator("pcr_banks")
    @classmethod
    def _known_banks(cls, v: list[str]) -> list[str]:
        for bank in v:
            if hash_by_name(bank) is None:
                raise ValueError(f"unknown PCR bank {bank!r}")
        return v

    def selection(self) -> tuple[PcrSelection, ...]:
        """The quote to ask for: :meth:`quoted_pcrs` in each of the policy's banks."""
        return select(self.pcr_banks, self.quoted_pcrs())

    def quoted_pcrs(self) -> list[int]:
        """PCRs a quote must cover so every configured level can be checked."""
        pcrs: set[int] = set()
        if self.platform is not None:
            pcrs.update(range(8))
        if self.os is not None:
            pcrs.update((4, 8, 9))
            for values in self.os.pcrs.values():
                pcrs.update(values)
        if self.runtime is not None:
            pcrs.update(range(11))
        return sorted(pcrs) or [0]
