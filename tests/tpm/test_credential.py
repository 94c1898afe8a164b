"""KDFa/KDFe against published vectors and independent implementations, and MakeCredential without a TPM."""

from __future__ import annotations

import os
import random
import struct
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.hazmat.primitives.kdf.concatkdf import ConcatKDFHash
from cryptography.hazmat.primitives.kdf.kbkdf import KBKDFHMAC, CounterLocation, Mode

from osm_trustmgr.failures import Failure
from osm_trustmgr.tpm import algorithms as alg
from osm_trustmgr.tpm.credential import (
    _CURVE_ORDERS,
    SymmetricDef,
    check_activation,
    ek_symmetric,
    kdfa,
    kdfe,
    make_credential,
)
from osm_trustmgr.tpm.errors import EvidenceError
from osm_trustmgr.tpm.public import (
    AK_REQUIRED,
    DECRYPT,
    USER_WITH_AUTH,
    TpmPublic,
    marshal_public,
    parse_public,
    public_from_pem,
)
from tests.tpm import pki

DER = serialization.Encoding.DER


# The TPM 2.0 reference implementation's KDFa self-test vector (libtpms src/tpm2/KdfTestData.h): 160 bits
# from a 20-byte key, label "KDFSELFTESTLABEL\0" (already zero-terminated), two 8-byte contexts.
KDF_SELF_TEST = {
    "key": bytes.fromhex("271FA08BBDC5060EC3DFA928FF9B73123A12DA0C"),
    "label": b"KDFSELFTESTLABEL\x00",
    "context_u": bytes.fromhex("CE244F395DCA7391"),
    "context_v": bytes.fromhex("DA504031DDF12E83"),
}


@pytest.mark.parametrize(
    ("hash_alg", "expected"),
    [
        (alg.SHA1, "55b5a7184aa07423c47dae766c26a2377d7cf851"),
        (alg.SHA256, "bb0259e1c8ba607e6a2cd704b69a902e9ade84c4"),
        (alg.SHA384, "1dce70c9113eb2dba47bd9cfc72bf46f45b09312"),
        (alg.SHA512, "8be2c1b85b78569b9fa759f5857c56d684810fd3"),
    ],
)
def test_kdfa_reference_implementation_vector(hash_alg: alg.HashAlg, expected: str) -> None:
    assert kdfa(hash_alg, bits=160, **KDF_SELF_TEST).hex() == expected


@pytest.mark.parametrize("hash_alg", [alg.SHA1, alg.SHA256, alg.SHA384])
@pytest.mark.parametrize("size", [16, 32, 33, 100])
def test_kdfa_is_sp800_108_counter_mode(hash_alg: alg.HashAlg, size: int) -> None:
    rng = random.Random(size * hash_alg.alg_id)
    key, context_u, context_v = rng.randbytes(32), rng.randbytes(size % 23), rng.randbytes(7)
    independent = KBKDFHMAC(
        algorithm=hash_alg.crypto(),
        mode=Mode.CounterMode,
        length=size,
        rlen=4,
        llen=4,
        location=CounterLocation.BeforeFixed,
        label=b"STORAGE",
        context=context_u + context_v,
        fixed=None,
    ).derive(key)
    assert kdfa(hash_alg, key, b"STORAGE", context_u, context_v, size * 8) == independent


# Vectors generated with go-tpm's KDFe (github.com/chrisfenner/tpm-test-vectors, vectors/kdfe.json), including
# sizes that are not whole bytes (the leading byte is masked).
@pytest.mark.parametrize(
    ("name", "hash_alg", "z", "use", "party_u", "party_v", "bits", "expected"),
    [
        (
            "00_SHA1_111", alg.SHA1, "beefefba63c91e8eb318785c374600", b"ATH", "ff8318b65e46b3",
            "32aa861b336c991a52b15c0c72889895e8cad4ff", 111, "123decb8050fca8d6585f61946e2",
        ),
        (
            "06_SHA1_32", alg.SHA1, "9b050039c8e5ca60deeb978f2faf573c94af61", b"IDENTITY",
            "ff1a1852db7b60a5c963f17eb306f3a905d100ae", "0047ee45771a256d58b091b6d6", 32, "94c3c160",
        ),
        (
            "30_SHA256_109", alg.SHA256, "c3e3c34e82ccfa82d8999bf2635bb7cd01f3d65f03ff", b"CFB",
            "55576a51c0e45b86557535e9ea50d5e7f4a80bb426e7ff", "dffdece923181dc335c1e936ff", 109,
            "1106264c89948737c140d2f5b40e",
        ),
    ],
)  # fmt: skip
def test_kdfe_vectors(
    name: str, hash_alg: alg.HashAlg, z: str, use: bytes, party_u: str, party_v: str, bits: int, expected: str
) -> None:
    out = kdfe(hash_alg, bytes.fromhex(z), use, bytes.fromhex(party_u), bytes.fromhex(party_v), bits)
    assert out.hex() == expected, name


def test_kdfe_is_the_sp800_56a_concatenation_kdf() -> None:
    z, party_u, party_v = os.urandom(32), os.urandom(32), os.urandom(32)
    independent = ConcatKDFHash(hashes.SHA256(), 48, otherinfo=b"IDENTITY\x00" + party_u + party_v).derive(z)
    assert kdfe(alg.SHA256, z, b"IDENTITY", party_u, party_v, 48 * 8) == independent


def test_kdf_rejects_empty_output() -> None:
    with pytest.raises(ValueError):
        kdfa(alg.SHA256, b"k", b"L", b"", b"", 0)


@pytest.mark.parametrize("curve", [ec.SECP256R1(), ec.SECP384R1(), ec.SECP521R1()])
def test_curve_orders(curve: ec.EllipticCurve) -> None:
    """(n−1)·G = −G has G's x-coordinate, and n·G is the point at infinity: n is the group order."""
    order = _CURVE_ORDERS[curve.name]
    g = ec.derive_private_key(1, curve).public_key().public_numbers()
    minus_g = ec.derive_private_key(order - 1, curve).public_key().public_numbers()
    assert (minus_g.x, minus_g.y) != (g.x, g.y) and minus_g.x == g.x
    with pytest.raises(ValueError):
        ec.derive_private_key(order, curve)


# --- MakeCredential ----------------------------------------------------------------------------------------------

AK = parse_public(marshal_public(pki.ec_key(50).public_key(), attributes=AK_REQUIRED | USER_WITH_AUTH))
assert AK.name is not None
AK_NAME = AK.name


def _ek(kind: str, **template: Any) -> tuple[Any, TpmPublic]:
    keys: dict[str, pki.PrivateKey] = {
        "rsa": pki.rsa_key(2),
        "ecc": pki.ec_key(51),
        "ecc384": pki.ec_key(52, "secp384r1"),
    }
    key = keys[kind]
    name_alg = alg.SHA384 if kind == "ecc384" else alg.SHA256
    return key, parse_public(pki.ek_public(key.public_key(), name_alg=name_alg, **template))


@pytest.mark.parametrize("kind", ["rsa", "ecc", "ecc384"])
@pytest.mark.parametrize("sym_bits", [128, 256])
def test_make_credential_round_trip(kind: str, sym_bits: int) -> None:
    key, ek = _ek(kind, sym_bits=sym_bits)
    assert ek.name_alg is not None
    secret = os.urandom(ek.name_alg.size)
    blob, encrypted = make_credential(ek, AK_NAME, secret)
    assert struct.unpack(">H", blob[:2])[0] == len(blob) - 2
    assert struct.unpack(">H", encrypted[:2])[0] == len(encrypted) - 2
    # TPM2B_ID_OBJECT = size ‖ TPM2B_DIGEST(HMAC) ‖ encIdentity (encrypted TPM2B_DIGEST of the secret)
    assert len(blob) == 2 + 2 + ek.name_alg.size + 2 + len(secret)
    assert pki.soft_activate(key, ek, AK_NAME, blob, encrypted, sym_bytes=sym_bits // 8) == secret


@pytest.mark.parametrize("kind", ["rsa", "ecc"])
def test_wrong_ak_name_or_tampering_fails_activation(kind: str) -> None:
    key, ek = _ek(kind)
    secret = os.urandom(32)
    blob, encrypted = make_credential(ek, AK_NAME, secret)
    other_name = AK_NAME[:-1] + bytes([AK_NAME[-1] ^ 1])
    with pytest.raises(pki.ActivationFailed):
        pki.soft_activate(key, ek, other_name, blob, encrypted)
    tampered = blob[:-1] + bytes([blob[-1] ^ 0x80])
    with pytest.raises(pki.ActivationFailed):
        pki.soft_activate(key, ek, AK_NAME, tampered, encrypted)


def test_another_eks_key_cannot_activate() -> None:
    _, ek = _ek("ecc")
    blob, encrypted = make_credential(ek, AK_NAME, os.urandom(32))
    other = pki.ec_key(53)
    with pytest.raises(pki.ActivationFailed):
        pki.soft_activate(other, ek, AK_NAME, blob, encrypted)


def test_ecc_credential_is_driven_by_rng() -> None:
    _, ek = _ek("ecc")
    secret = bytes(range(32))
    first = make_credential(ek, AK_NAME, secret, rng=random.Random(7).randbytes)
    assert make_credential(ek, AK_NAME, secret, rng=random.Random(7).randbytes) == first
    assert make_credential(ek, AK_NAME, secret, rng=random.Random(8).randbytes) != first


def test_rsa_seed_comes_from_rng() -> None:
    key, ek = _ek("rsa")
    seed = bytes(range(32))
    _, encrypted = make_credential(ek, AK_NAME, os.urandom(32), rng=lambda n: seed[:n])
    oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=b"IDENTITY\x00")
    assert key.decrypt(encrypted[2:], oaep) == seed


@pytest.mark.parametrize("size", [0, 15, 33])
def test_secret_size_is_checked(size: int) -> None:
    _, ek = _ek("rsa")
    with pytest.raises(EvidenceError) as caught:
        make_credential(ek, AK_NAME, bytes(size))
    assert caught.value.code is Failure.CREDENTIAL_FAILED


@pytest.mark.parametrize(
    "ek_bytes",
    [
        pki.ek_public(pki.ec_key(51).public_key(), attributes=pki.EK_ATTRIBUTES & ~DECRYPT),
        pki.ek_public(pki.ec_key(51).public_key(), attributes=pki.EK_ATTRIBUTES | 0x00040000),  # sign too
        pki.ek_public(pki.ec_key(51).public_key(), sym_alg=alg.ALG_NULL),
        pki.ek_public(pki.ec_key(51).public_key(), sym_bits=64),
        marshal_public(pki.ec_key(51).public_key()),  # an AK, not an EK
    ],
    ids=["no-decrypt", "sign", "no-symmetric", "bad-key-bits", "signing-key"],
)
def test_ek_must_be_a_restricted_decryption_key(ek_bytes: bytes) -> None:
    with pytest.raises(EvidenceError) as caught:
        make_credential(parse_public(ek_bytes), AK_NAME, os.urandom(32))
    assert caught.value.code is Failure.EK_MALFORMED


def test_ek_that_is_no_rsa_key_is_malformed() -> None:
    ek = bytearray(pki.ek_public(pki.rsa_key(2).public_key()))
    ek[-1] &= 0xFE  # an even modulus parses, but no RSA key has one
    with pytest.raises(EvidenceError) as caught:
        make_credential(parse_public(bytes(ek)), AK_NAME, os.urandom(32))
    assert caught.value.code is Failure.EK_MALFORMED


def test_bare_public_key_is_not_an_ek() -> None:
    spki = pki.ec_key(51).public_key().public_bytes(DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    with pytest.raises(EvidenceError) as caught:
        make_credential(public_from_pem(spki), AK_NAME, os.urandom(32))
    assert caught.value.code is Failure.EK_MALFORMED


@pytest.mark.parametrize(
    "name", [b"", b"\x00", b"\x00\x0b" + bytes(31), b"\x00\x0b" + bytes(33), b"\x12\x34" + bytes(32)]
)
def test_ak_name_must_be_a_name(name: bytes) -> None:
    _, ek = _ek("rsa")
    with pytest.raises(EvidenceError) as caught:
        make_credential(ek, name, os.urandom(32))
    assert caught.value.code is Failure.AK_MALFORMED


def test_ek_symmetric() -> None:
    assert ek_symmetric(_ek("rsa", sym_bits=256)[1]) == SymmetricDef(alg.ALG_AES, 256, alg.ALG_CFB)
    assert ek_symmetric(_ek("ecc")[1]) == SymmetricDef(alg.ALG_AES, 128, alg.ALG_CFB)


def test_check_activation() -> None:
    secret = os.urandom(32)
    assert check_activation(secret, bytes(secret))
    assert not check_activation(secret, secret[:-1] + bytes([secret[-1] ^ 1]))
    assert not check_activation(secret, secret[:16])
    assert not check_activation(b"", b"")
