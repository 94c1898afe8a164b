"""TPM2B_PUBLIC / TPMT_PUBLIC (TPM 2.0 Part 2 §12.2): keys, object attributes, Names and qualified Names.

A TPM object's Name is ``nameAlg || H_nameAlg(TPMT_PUBLIC)``; its qualified Name chains the parent's
qualified Name (Part 1 §16). The quote's ``qualifiedSigner`` is the AK's qualified Name, which is how a
verifier knows the AK lives under the enrolled EK.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from osm_trustmgr.failures import Failure
from osm_trustmgr.tpm import algorithms as alg
from osm_trustmgr.tpm.algorithms import HashAlg, hash_by_id
from osm_trustmgr.tpm.errors import EvidenceError
from osm_trustmgr.tpm.wire import Reader, tpm2b

# TPMA_OBJECT bits (Part 2 §8.3)
FIXED_TPM = 0x00000002
ST_CLEAR = 0x00000004
FIXED_PARENT = 0x00000010
SENSITIVE_DATA_ORIGIN = 0x00000020
USER_WITH_AUTH = 0x00000040
ADMIN_WITH_POLICY = 0x00000080
NO_DA = 0x00000400
RESTRICTED = 0x00010000
DECRYPT = 0x00020000
SIGN_ENCRYPT = 0x00040000

AK_REQUIRED = FIXED_TPM | FIXED_PARENT | SENSITIVE_DATA_ORIGIN | RESTRICTED | SIGN_ENCRYPT

RH_ENDORSEMENT = 0x4000000B

_CURVES: dict[int, type[ec.EllipticCurve]] = {
    alg.ECC_NIST_P256: ec.SECP256R1,
    alg.ECC_NIST_P384: ec.SECP384R1,
    alg.ECC_NIST_P521: ec.SECP521R1,
}
_CURVE_IDS = {"secp256r1": alg.ECC_NIST_P256, "secp384r1": alg.ECC_NIST_P384, "secp521r1": alg.ECC_NIST_P521}

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey


@dataclass(frozen=True)
class TpmPublic:
    """A parsed TPMT_PUBLIC. ``name`` is None when the key came from a PEM (no TPM structure to hash)."""

    type: int
    name_alg: HashAlg | None
    attributes: int
    auth_policy: bytes
    scheme: int
    scheme_hash: int
    key: PublicKey
    symmetric: int
    name: bytes | None
    tpmt: bytes | None

    @property
    def is_restricted_signing(self) -> bool:
        return self.attributes & AK_REQUIRED == AK_REQUIRED and not self.attributes & DECRYPT


def _parse_scheme(r: Reader) -> tuple[int, int]:
    scheme = r.u16("scheme")
    if scheme == alg.ALG_NULL:
        return scheme, alg.ALG_NULL
    scheme_hash = r.u16("scheme.hashAlg") if scheme != alg.ALG_RSAES else alg.ALG_NULL
    if scheme == alg.ALG_ECDAA:
        r.u16("scheme.count")
    return scheme, scheme_hash


def _parse_symmetric(r: Reader) -> int:
    sym = r.u16("symmetric.algorithm")
    if sym != alg.ALG_NULL:
        r.u16("symmetric.keyBits")
        r.u16("symmetric.mode")
    return sym


def parse_public(data: bytes) -> TpmPublic:
    """Parse a TPM2B_PUBLIC (size-prefixed) or a bare TPMT_PUBLIC. Raises EvidenceError(ak.malformed)."""
    if len(data) >= 2 and struct.unpack(">H", data[:2])[0] == len(data) - 2:
        data = data[2:]
    r = Reader(data, Failure.AK_MALFORMED)
    obj_type = r.u16("type")
    name_alg_id = r.u16("nameAlg")
    name_alg = hash_by_id(name_alg_id)
    if name_alg is None:
        raise r.fail(f"unsupported nameAlg 0x{name_alg_id:04x}")
    attributes = r.u32("objectAttributes")
    auth_policy = r.tpm2b("authPolicy", limit=64)
    symmetric = _parse_symmetric(r)
    key: PublicKey
    if obj_type == alg.ALG_RSA:
        scheme, scheme_hash = _parse_scheme(r)
        key_bits = r.u16("keyBits")
        exponent = r.u32("exponent") or 65537
        modulus = r.tpm2b("unique.rsa", limit=512)
        if len(modulus) * 8 != key_bits or key_bits < 1024:
            raise r.fail(f"RSA modulus of {len(modulus)} bytes does not match keyBits {key_bits}")
        try:
            key = rsa.RSAPublicNumbers(exponent, int.from_bytes(modulus, "big")).public_key()
        except ValueError as e:
            raise r.fail(f"invalid RSA key: {e}") from None
    elif obj_type == alg.ALG_ECC:
        scheme, scheme_hash = _parse_scheme(r)
        curve_id = r.u16("curveID")
        kdf = r.u16("kdf.scheme")
        if kdf != alg.ALG_NULL:
            r.u16("kdf.hashAlg")
        x, y = r.tpm2b("unique.x", limit=66), r.tpm2b("unique.y", limit=66)
        curve = _CURVES.get(curve_id)
        if curve is None:
            raise r.fail(f"unsupported curve 0x{curve_id:04x}")
        try:
            key = ec.EllipticCurvePublicNumbers(
                int.from_bytes(x, "big"), int.from_bytes(y, "big"), curve()
            ).public_key()
        except ValueError as e:
            raise r.fail(f"invalid ECC point: {e}") from None
    else:
        raise r.fail(f"unsupported key type 0x{obj_type:04x}")
    r.end("TPMT_PUBLIC")
    name = struct.pack(">H", name_alg.alg_id) + name_alg.digest(data)
    return TpmPublic(
        obj_type, name_alg, attributes, auth_policy, scheme, scheme_hash, key, symmetric, name, bytes(data)
    )


def public_from_pem(pem: bytes) -> TpmPublic:
    """A bare public key (PEM/DER SubjectPublicKeyInfo), e.g. an admin-pinned AK; it has no TPM Name."""
    try:
        key = (
            serialization.load_pem_public_key(pem)
            if pem.lstrip().startswith(b"-----")
            else serialization.load_der_public_key(pem)
        )
    except (ValueError, TypeError) as e:
        raise EvidenceError(Failure.AK_MALFORMED, f"not a public key: {e}") from None
    if isinstance(key, rsa.RSAPublicKey):
        return TpmPublic(alg.ALG_RSA, None, 0, b"", alg.ALG_NULL, alg.ALG_NULL, key, alg.ALG_NULL, None, None)
    if isinstance(key, ec.EllipticCurvePublicKey):
        return TpmPublic(alg.ALG_ECC, None, 0, b"", alg.ALG_NULL, alg.ALG_NULL, key, alg.ALG_NULL, None, None)
    raise EvidenceError(Failure.AK_MALFORMED, f"unsupported key type {type(key).__name__}")


def load_public(data: bytes) -> TpmPublic:
    """A TPM2B_PUBLIC/TPMT_PUBLIC or a PEM/DER public key, whichever ``data`` is."""
    if data.lstrip().startswith(b"-----") or data[:1] == b"\x30":
        try:
            return public_from_pem(data)
        except EvidenceError:
            if data[:1] != b"\x30":
                raise
    return parse_public(data)


def qualified_name(parent_qualified_name: bytes, name: bytes, name_alg: HashAlg) -> bytes:
    """QN(child) = nameAlg || H(QN(parent) || Name(child)) (TPM 2.0 Part 1 §16)."""
    return struct.pack(">H", name_alg.alg_id) + name_alg.digest(parent_qualified_name + name)


def hierarchy_name(handle: int) -> bytes:
    """A permanent handle's Name (and qualified Name) is the handle itself."""
    return struct.pack(">I", handle)


def ak_qualified_name(ek: TpmPublic, ak: TpmPublic) -> bytes:
    """The qualified Name a quote's ``qualifiedSigner`` holds for an AK created directly under a primary EK."""
    if ek.name is None or ak.name is None or ek.name_alg is None or ak.name_alg is None:
        raise EvidenceError(Failure.AK_MALFORMED, "qualified name needs TPM public structures, not PEM keys")
    ek_qn = qualified_name(hierarchy_name(RH_ENDORSEMENT), ek.name, ek.name_alg)
    return qualified_name(ek_qn, ak.name, ak.name_alg)


def marshal_public(
    key: PublicKey,
    *,
    attributes: int = AK_REQUIRED | USER_WITH_AUTH,
    name_alg: HashAlg = alg.SHA256,
    scheme: int | None = None,
    scheme_hash: HashAlg = alg.SHA256,
    auth_policy: bytes = b"",
) -> bytes:
    """Marshal ``key`` as a TPM2B_PUBLIC (a restricted signing key by default).

    Used to describe software keys the way a TPM would, for simulated agents and tests.
    """
    body = struct.pack(">HHI", _key_type(key), name_alg.alg_id, attributes) + tpm2b(auth_policy)
    body += struct.pack(">H", alg.ALG_NULL)  # symmetric: none for signing keys
    if isinstance(key, rsa.RSAPublicKey):
        nums = key.public_numbers()
        sch = alg.ALG_RSASSA if scheme is None else scheme
        body += struct.pack(">HH", sch, scheme_hash.alg_id) if sch != alg.ALG_NULL else struct.pack(">H", sch)
        exponent = 0 if nums.e == 65537 else nums.e
        body += struct.pack(">HI", key.key_size, exponent)
        body += tpm2b(nums.n.to_bytes(key.key_size // 8, "big"))
    else:
        nums_ec = key.public_numbers()
        sch = alg.ALG_ECDSA if scheme is None else scheme
        body += struct.pack(">HH", sch, scheme_hash.alg_id) if sch != alg.ALG_NULL else struct.pack(">H", sch)
        size = (key.curve.key_size + 7) // 8
        body += struct.pack(">HH", _CURVE_IDS[key.curve.name], alg.ALG_NULL)
        body += tpm2b(nums_ec.x.to_bytes(size, "big")) + tpm2b(nums_ec.y.to_bytes(size, "big"))
    return tpm2b(body)


def _key_type(key: PublicKey) -> int:
    return alg.ALG_RSA if isinstance(key, rsa.RSAPublicKey) else alg.ALG_ECC
