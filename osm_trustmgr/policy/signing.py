"""Detached signatures over trust policies (Ed25519 or ECDSA P-256) on a canonical encoding.

Canonical encoding: the policy as JSON with sorted keys, no insignificant white space, UTF-8, and without its
``signature`` member. Reference values are security decisions; a policy from the wrong hands must not load.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from osm_trustmgr.failures import Failure
from osm_trustmgr.tpm.errors import EvidenceError

SignerKey = ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey
PrivateSignerKey = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey


def json_compatible(value: Any) -> Any:
    # YAML reads `0: [...]` as an int key; JSON has only string keys, so both spellings sign the same.
    if isinstance(value, Mapping):
        return {str(k): json_compatible(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_compatible(v) for v in value]
    return value


def canonical_bytes(document: Mapping[str, Any]) -> bytes:
    body = json_compatible({k: v for k, v in document.items() if k != "signature"})
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def key_id(key: SignerKey) -> str:
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


def load_signer_keys(pems: Sequence[bytes]) -> dict[str, SignerKey]:
    """Trusted signer public keys by key id; anything but Ed25519 or P-256 is refused."""
    keys: dict[str, SignerKey] = {}
    for pem in pems:
        key = serialization.load_pem_public_key(pem)
        if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
            keys[key_id(key)] = key
        elif isinstance(key, ed25519.Ed25519PublicKey):
            keys[key_id(key)] = key
        else:
            raise ValueError(f"policy signer keys must be Ed25519 or ECDSA P-256, not {type(key).__name__}")
    return keys


def sign_policy(document: Mapping[str, Any], private_key: PrivateSignerKey) -> dict[str, Any]:
    """Return a copy of ``document`` with a detached ``signature`` member."""
    data = canonical_bytes(document)
    if isinstance(private_key, ed25519.Ed25519PrivateKey):
        alg, sig = "ed25519", private_key.sign(data)
    else:
        alg, sig = "ecdsa-p256-sha256", private_key.sign(data, ec.ECDSA(hashes.SHA256()))
    signature = {"alg": alg, "keyid": key_id(private_key.public_key()), "value": base64.b64encode(sig).decode()}
    return {**{k: v for k, v in document.items() if k != "signature"}, "signature": signature}


def verify_policy_signature(
    document: Mapping[str, Any], signers: Mapping[str, SignerKey], *, required: bool
) -> str | None:
    """Check the detached signature; returns the signer's key id, or None for an accepted unsigned policy."""
    sig = document.get("signature")
    if sig is None:
        if required:
            raise EvidenceError(Failure.POLICY_UNSIGNED, "policy has no signature and signatures are required")
        return None
    if not isinstance(sig, Mapping):
        raise EvidenceError(Failure.POLICY_SIGNATURE, "signature member is not an object")
    key = signers.get(str(sig.get("keyid", "")))
    if key is None:
        raise EvidenceError(Failure.POLICY_SIGNATURE, f"signer {sig.get('keyid')!r} is not a trusted policy signer")
    try:
        value = base64.b64decode(str(sig.get("value", "")), validate=True)
    except ValueError:  # binascii.Error, or non-ASCII text
        raise EvidenceError(Failure.POLICY_SIGNATURE, "signature value is not base64") from None
    data = canonical_bytes(document)
    try:
        if isinstance(key, ed25519.Ed25519PublicKey) and sig.get("alg") == "ed25519":
            key.verify(value, data)
        elif isinstance(key, ec.EllipticCurvePublicKey) and sig.get("alg") == "ecdsa-p256-sha256":
            key.verify(value, data, ec.ECDSA(hashes.SHA256()))
        else:
            raise EvidenceError(Failure.POLICY_SIGNATURE, f"algorithm {sig.get('alg')!r} does not fit the signer key")
    except InvalidSignature:
        raise EvidenceError(Failure.POLICY_SIGNATURE, "policy signature does not verify") from None
    return key_id(key)
