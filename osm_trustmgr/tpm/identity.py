"""TPM identity: what enrollment proves and what every later round must still match.

Enrollment (DESIGN §5) checks the EK certificate (:mod:`~osm_trustmgr.tpm.ekcert`), proves the AK is resident
with the EK through MakeCredential/ActivateCredential (:mod:`~osm_trustmgr.tpm.credential`), and stores an
:class:`Identity`. This module re-exports those entry points so enrollment code needs one import.
"""

from __future__ import annotations

from dataclasses import dataclass

from osm_trustmgr.failures import Failure
from osm_trustmgr.tpm.credential import check_activation, make_credential
from osm_trustmgr.tpm.ekcert import (
    MAX_CHAIN_DEPTH,
    TCG_TPM_MANUFACTURER,
    TCG_TPM_MODEL,
    TCG_TPM_VERSION,
    EkCertificateInfo,
    load_ca_bundle,
    verify_ek_certificate,
)
from osm_trustmgr.tpm.errors import EvidenceError
from osm_trustmgr.tpm.public import (
    DECRYPT,
    FIXED_PARENT,
    FIXED_TPM,
    RESTRICTED,
    SENSITIVE_DATA_ORIGIN,
    SIGN_ENCRYPT,
    TpmPublic,
    ak_qualified_name,
    parse_public,
)

__all__ = [
    "MAX_CHAIN_DEPTH",
    "TCG_TPM_MANUFACTURER",
    "TCG_TPM_MODEL",
    "TCG_TPM_VERSION",
    "EkCertificateInfo",
    "Identity",
    "check_activation",
    "check_ak_attributes",
    "check_same_identity",
    "load_ca_bundle",
    "make_credential",
    "parse_ek_public",
    "verify_ek_certificate",
]

_AK_BITS = {
    FIXED_TPM: "fixedTPM",
    FIXED_PARENT: "fixedParent",
    SENSITIVE_DATA_ORIGIN: "sensitiveDataOrigin",
    RESTRICTED: "restricted",
    SIGN_ENCRYPT: "sign",
}


@dataclass(frozen=True)
class Identity:
    """What enrollment proved about one TPM (``trust_identities``). Public areas are marshalled TPM2B_PUBLIC."""

    ek_public: bytes
    ek_certificate: bytes | None  # DER; None when an administrator pinned the EK
    ak_public: bytes
    ak_name: bytes
    ak_qualified_name: bytes

    @classmethod
    def from_publics(cls, ek_public: bytes, ak_public: bytes, ek_certificate: bytes | None = None) -> Identity:
        """Derive the AK's Name and qualified Name (the quote's signer) from the two public areas."""
        ek, ak = parse_ek_public(ek_public), parse_public(ak_public)
        return cls(ek_public, ek_certificate, ak_public, _object_name(ak), ak_qualified_name(ek, ak))


def parse_ek_public(data: bytes) -> TpmPublic:
    """Parse an EK TPM2B_PUBLIC; failures carry ``ek.malformed`` rather than the AK's code."""
    try:
        return parse_public(data)
    except EvidenceError as e:
        raise EvidenceError(Failure.EK_MALFORMED, e.detail) from None


def check_same_identity(enrolled: Identity, presented: Identity) -> None:
    """Raise IDENTITY_CHANGED unless ``presented`` is the enrolled EK and AK.

    A new AK is never an update: an attacker who could swap the AK could sign quotes with a key outside the
    TPM, so a changed identity needs a new enrollment by an administrator. EK certificates may be reissued
    and are not compared.
    """
    ek_then, ek_now = _ek_name(enrolled), _ek_name(presented)
    if ek_then != ek_now:
        raise EvidenceError(Failure.IDENTITY_CHANGED, f"EK changed: enrolled {ek_then.hex()}, presented {ek_now.hex()}")
    if _ak_names(enrolled) != _ak_names(presented):
        raise EvidenceError(
            Failure.IDENTITY_CHANGED,
            f"AK changed: enrolled {enrolled.ak_name.hex()}, presented {presented.ak_name.hex()}",
        )


def check_ak_attributes(ak: TpmPublic) -> None:
    """An AK must be a TPM-resident restricted signing key (TPMA_OBJECT, Part 2 §8.3); else AK_ATTRIBUTES.

    fixedTPM|fixedParent|sensitiveDataOrigin: the private key was made in this TPM and never leaves it.
    restricted: the TPM signs only digests it produced itself, so a quote cannot be forged with the AK.
    """
    missing = [name for bit, name in _AK_BITS.items() if not ak.attributes & bit]
    if missing or ak.attributes & DECRYPT:
        problems = [f"missing {', '.join(missing)}"] if missing else []
        problems += ["decrypt set"] if ak.attributes & DECRYPT else []
        raise EvidenceError(Failure.AK_ATTRIBUTES, f"AK attributes 0x{ak.attributes:08x}: {'; '.join(problems)}")


def _ek_name(identity: Identity) -> bytes:
    return _object_name(parse_ek_public(identity.ek_public))


def _ak_names(identity: Identity) -> tuple[bytes, bytes, bytes]:
    """The Name computed from the AK public area, and the Names recorded with it."""
    return _object_name(parse_public(identity.ak_public)), identity.ak_name, identity.ak_qualified_name


def _object_name(public: TpmPublic) -> bytes:
    if public.name is None:
        raise EvidenceError(Failure.AK_MALFORMED, "a TPM public area is needed, not a bare key")
    return public.name
