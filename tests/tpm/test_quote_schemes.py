"""Signature schemes and hashes a TPM can use for quotes, signed here with software keys.

swtpm AKs cover RSASSA/ECDSA with SHA-256 (test_quote.py); RSAPSS, SHA-1 and SHA-384 are exercised with
software-signed TPMS_ATTEST so every TPMT_SIGNATURE path of the verifier is tested.
"""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from osm_trustmgr.failures import Failure
from osm_trustmgr.sandbox.softtpm import SoftTpm, marshal_signature
from osm_trustmgr.tpm import algorithms as alg
from osm_trustmgr.tpm.errors import EvidenceError
from osm_trustmgr.tpm.pcr import parse_selection_spec
from osm_trustmgr.tpm.public import marshal_public, parse_public
from osm_trustmgr.tpm.quote import marshal_attest, parse_attest, parse_signature, verify_quote

NONCE = b"\x42" * 32
SEL = parse_selection_spec("sha1:0,1+sha256:0-7")


@pytest.fixture(scope="module")
def keys() -> dict[str, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey]:
    return {
        "rsa": rsa.generate_private_key(65537, 2048),
        "p256": ec.generate_private_key(ec.SECP256R1()),
        "p384": ec.generate_private_key(ec.SECP384R1()),
    }


def _attest(digest_alg: alg.HashAlg) -> tuple[bytes, SoftTpm]:
    soft = SoftTpm(banks=("sha1", "sha256"))
    q = soft.quote(NONCE, SEL, digest_alg)
    return q["attest"], soft  # type: ignore[return-value]


def _sign(key, scheme: int, h: alg.HashAlg, message: bytes) -> bytes:  # type: ignore[no-untyped-def]
    if scheme == alg.ALG_ECDSA:
        return marshal_signature(scheme, h, key.sign(message, ec.ECDSA(h.crypto())), key.curve.key_size)
    pad = padding.PKCS1v15() if scheme == alg.ALG_RSASSA else padding.PSS(padding.MGF1(h.crypto()), h.size)
    return marshal_signature(scheme, h, key.sign(message, pad, h.crypto()))


CASES = [
    ("rsa", alg.ALG_RSASSA, alg.SHA1),
    ("rsa", alg.ALG_RSASSA, alg.SHA256),
    ("rsa", alg.ALG_RSASSA, alg.SHA384),
    ("rsa", alg.ALG_RSAPSS, alg.SHA256),
    ("rsa", alg.ALG_RSAPSS, alg.SHA384),
    ("p256", alg.ALG_ECDSA, alg.SHA256),
    ("p256", alg.ALG_ECDSA, alg.SHA1),
    ("p384", alg.ALG_ECDSA, alg.SHA384),
]


@pytest.mark.parametrize(("key_name", "scheme", "h"), CASES, ids=[f"{k}-{s:x}-{h.name}" for k, s, h in CASES])
def test_scheme_verifies_and_tamper_fails(keys, key_name, scheme, h) -> None:  # type: ignore[no-untyped-def]
    key = keys[key_name]
    attest, soft = _attest(h)
    sig = _sign(key, scheme, h, attest)
    assert parse_signature(sig).sig_alg == scheme
    ak_any = parse_public(marshal_public(key.public_key(), scheme=alg.ALG_NULL))
    ak_fixed = parse_public(marshal_public(key.public_key(), scheme=scheme, scheme_hash=h))
    pcrs = soft.read(SEL)
    for ak in (ak_any, ak_fixed):
        verified = verify_quote(attest, sig, ak, NONCE, pcrs, expected_selection=SEL)
        assert not verified.signer_checked
        assert verified.quote.pcr_digest == parse_attest(attest).pcr_digest
    tampered = attest[:-1] + bytes([attest[-1] ^ 1])
    with pytest.raises(EvidenceError) as err:
        verify_quote(tampered, sig, ak_any, NONCE, pcrs)
    assert err.value.code is Failure.SIGNATURE_INVALID


def test_ak_scheme_is_enforced(keys) -> None:  # type: ignore[no-untyped-def]
    attest, soft = _attest(alg.SHA256)
    rsa_key = keys["rsa"]
    pss = _sign(rsa_key, alg.ALG_RSAPSS, alg.SHA256, attest)
    ssa_only = parse_public(marshal_public(rsa_key.public_key(), scheme=alg.ALG_RSASSA, scheme_hash=alg.SHA256))
    with pytest.raises(EvidenceError) as err:
        verify_quote(attest, pss, ssa_only, NONCE, soft.read(SEL))
    assert err.value.code is Failure.SIGNATURE_SCHEME
    sha1_sig = _sign(rsa_key, alg.ALG_RSASSA, alg.SHA1, attest)
    with pytest.raises(EvidenceError) as err:
        verify_quote(attest, sha1_sig, ssa_only, NONCE, soft.read(SEL))
    assert err.value.code is Failure.SIGNATURE_SCHEME
    ecdsa = _sign(keys["p256"], alg.ALG_ECDSA, alg.SHA256, attest)
    with pytest.raises(EvidenceError) as err:
        verify_quote(attest, ecdsa, parse_public(marshal_public(rsa_key.public_key(), scheme=alg.ALG_NULL)), NONCE,
                     soft.read(SEL))  # fmt: skip
    assert err.value.code is Failure.SIGNATURE_SCHEME


def test_pcr_digest_uses_the_signing_hash(keys) -> None:  # type: ignore[no-untyped-def]
    """A TPM hashes the PCR values with the signing scheme's hash; SHA-384 here, over sha1+sha256 banks."""
    attest, soft = _attest(alg.SHA384)
    assert len(parse_attest(attest).pcr_digest) == 48
    sig = _sign(keys["p384"], alg.ALG_ECDSA, alg.SHA384, attest)
    ak = parse_public(marshal_public(keys["p384"].public_key(), scheme=alg.ALG_NULL))
    verify_quote(attest, sig, ak, NONCE, soft.read(SEL))
    q = parse_attest(attest)
    forged = marshal_attest(q._replace(pcr_digest=bytes(48)))
    with pytest.raises(EvidenceError) as err:
        verify_quote(forged, _sign(keys["p384"], alg.ALG_ECDSA, alg.SHA384, forged), ak, NONCE, soft.read(SEL))
    assert err.value.code is Failure.PCR_DIGEST
