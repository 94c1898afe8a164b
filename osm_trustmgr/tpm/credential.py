"""TPM2_MakeCredential in software, so a verifier can prove an AK lives in the same TPM as an EK.

The verifier wraps a random secret to the EK, bound to the AK's Name (TPM 2.0 Part 1 §24 "Credential
Protection"); only the TPM holding the EK private key can unwrap it, and TPM2_ActivateCredential only does so
when the AK with that Name is loaded in the same TPM. The byte formats are exactly those TPM2_MakeCredential
returns and TPM2_ActivateCredential takes (Part 3 §12.5–12.6), so either side can be a real TPM.
"""

from __future__ import annotations

import hmac
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass

# TPM 2.0 mandates CFB, which cryptography >= 47 files under its "decrepit" modes
from cryptography.hazmat.decrepit.ciphers.modes import CFB
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

from osm_trustmgr.failures import Failure
from osm_trustmgr.tpm import algorithms as alg
from osm_trustmgr.tpm.algorithms import HashAlg, hash_by_id
from osm_trustmgr.tpm.errors import EvidenceError
from osm_trustmgr.tpm.public import DECRYPT, RESTRICTED, SIGN_ENCRYPT, TpmPublic
from osm_trustmgr.tpm.wire import Reader, tpm2b

# Shorter secrets could be guessed by an AK holder without the EK; longer ones do not fit a TPM2B_DIGEST.
MIN_SECRET_SIZE = 16

# Group orders of the curves EKs use (SEC 2 §2.4.2, §2.5.1, §2.6.1), to draw ephemeral scalars from ``rng``.
_CURVE_ORDERS = {
    "secp256r1": 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551,
    "secp384r1": int(
        "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFC7634D81F4372DDF581A0DB248B0A77AECEC196ACCC52973", 16
    ),
    "secp521r1": int(
        "01FF" + "FFFFFFFF" * 7 + "FFFFFFFA51868783BF2F966B7FCC0148F709A5D03BB5C9B8899C47AEBB6FB71E91386409", 16
    ),
}

Rng = Callable[[int], bytes]


@dataclass(frozen=True)
class SymmetricDef:
    """A TPMT_SYM_DEF_OBJECT (Part 2 §11.1.7): the storage key's inner cipher."""

    algorithm: int
    key_bits: int
    mode: int


def kdfa(hash_alg: HashAlg, key: bytes, label: bytes, context_u: bytes, context_v: bytes, bits: int) -> bytes:
    """KDFa (Part 1 §11.4.10.2): NIST SP 800-108 counter mode with HMAC.

    Each block is HMAC(key, [i]₃₂ ‖ label ‖ 00 ‖ contextU ‖ contextV ‖ [bits]₃₂). Like the reference
    implementation, a label that already ends in a zero octet gets no second one.
    """
    if not label.endswith(b"\x00"):
        label += b"\x00"
    fixed = label + context_u + context_v + struct.pack(">I", bits)
    return _expand(bits, lambda i: hmac.new(key, struct.pack(">I", i) + fixed, hash_alg.name).digest())


def kdfe(hash_alg: HashAlg, z: bytes, use: bytes, party_u: bytes, party_v: bytes, bits: int) -> bytes:
    """KDFe (Part 1 §11.4.10.3): the SP 800-56A concatenation KDF, H([i]₃₂ ‖ Z ‖ use ‖ 00 ‖ U ‖ V)."""
    other = use + b"\x00" + party_u + party_v
    return _expand(bits, lambda i: hash_alg.digest(struct.pack(">I", i) + z + other))


def _expand(bits: int, block: Callable[[int], bytes]) -> bytes:
    """Concatenate blocks 1, 2, … to ``bits``; a partial leading byte keeps only its low bits (Part 1 §11.4.10.1)."""
    if bits <= 0:
        raise ValueError(f"KDF output size must be positive, got {bits} bits")
    size = (bits + 7) // 8
    out = bytearray()
    counter = 1
    while len(out) < size:
        out += block(counter)
        counter += 1
    del out[size:]
    if bits % 8:
        out[0] &= (1 << (bits % 8)) - 1
    return bytes(out)


def ek_symmetric(ek: TpmPublic) -> SymmetricDef:
    """The EK's TPMT_SYM_DEF_OBJECT, read from its TPMT_PUBLIC (``TpmPublic`` keeps only the algorithm)."""
    if ek.tpmt is None:
        raise EvidenceError(Failure.EK_MALFORMED, "EK is a bare public key, not a TPM public area")
    r = Reader(ek.tpmt, Failure.EK_MALFORMED)
    r.take(8, "type, nameAlg, objectAttributes")
    r.tpm2b("authPolicy", limit=64)
    algorithm = r.u16("symmetric.algorithm")
    if algorithm == alg.ALG_NULL:
        return SymmetricDef(algorithm, 0, alg.ALG_NULL)
    return SymmetricDef(algorithm, r.u16("symmetric.keyBits"), r.u16("symmetric.mode"))


def make_credential(ek: TpmPublic, ak_name: bytes, secret: bytes, *, rng: Rng = os.urandom) -> tuple[bytes, bytes]:
    """Wrap ``secret`` for the TPM holding ``ek``, releasable only to the object named ``ak_name``.

    Returns ``(credential_blob, encrypted_secret)``: a marshalled TPM2B_ID_OBJECT and a marshalled
    TPM2B_ENCRYPTED_SECRET, the two inputs of TPM2_ActivateCredential. ``rng`` supplies the seed (RSA) or the
    ephemeral scalar (ECC); RSA-OAEP padding draws its own randomness.
    """
    name_alg, sym = _check_storage_key(ek)
    _check_name(ak_name)
    if not MIN_SECRET_SIZE <= len(secret) <= name_alg.size:
        raise EvidenceError(
            Failure.CREDENTIAL_FAILED,
            f"secret must be {MIN_SECRET_SIZE}..{name_alg.size} bytes for nameAlg {name_alg.name}, got {len(secret)}",
        )
    seed, encrypted_seed = _share_seed(ek, name_alg, rng)
    # Part 1 §24.4: the credential is a TPM2B_DIGEST encrypted in CFB mode with a zero IV, under a key
    # bound to the AK's Name, so a TPM only decrypts it for that object.
    sym_key = kdfa(name_alg, seed, b"STORAGE", ak_name, b"", sym.key_bits)
    encryptor = Cipher(algorithms.AES(sym_key), CFB(bytes(16))).encryptor()
    enc_identity = encryptor.update(tpm2b(secret)) + encryptor.finalize()
    # Part 1 §24.5: the outer HMAC covers the ciphertext and the Name; the TPM checks it before decrypting.
    hmac_key = kdfa(name_alg, seed, b"INTEGRITY", b"", b"", name_alg.size * 8)
    integrity = hmac.new(hmac_key, enc_identity + ak_name, name_alg.name).digest()
    return tpm2b(tpm2b(integrity) + enc_identity), tpm2b(encrypted_seed)


def check_activation(expected_secret: bytes, returned: bytes) -> bool:
    """Whether the TPM returned the secret; constant-time so timing leaks nothing about the secret."""
    return bool(expected_secret) and hmac.compare_digest(expected_secret, returned)


def _check_storage_key(ek: TpmPublic) -> tuple[HashAlg, SymmetricDef]:
    """MakeCredential needs a restricted decryption key with an AES inner cipher (Part 3 §12.6.1).

    Its mode does not matter: the credential is always encrypted in CFB mode (Part 1 §24.4).
    """
    if ek.name_alg is None or ek.tpmt is None:
        raise EvidenceError(Failure.EK_MALFORMED, "EK is a bare public key, not a TPM public area")
    if ek.attributes & (RESTRICTED | DECRYPT | SIGN_ENCRYPT) != RESTRICTED | DECRYPT:
        raise EvidenceError(
            Failure.EK_MALFORMED, f"EK is not a restricted decryption key (attributes 0x{ek.attributes:08x})"
        )
    sym = ek_symmetric(ek)
    if sym.algorithm != alg.ALG_AES or sym.key_bits not in (128, 192, 256):
        raise EvidenceError(Failure.EK_MALFORMED, f"EK symmetric 0x{sym.algorithm:04x}/{sym.key_bits} bits is not AES")
    return ek.name_alg, sym


def _check_name(name: bytes) -> None:
    """An object Name is nameAlg ‖ digest (Part 1 §16); anything else cannot name an AK."""
    if len(name) < 2:
        raise EvidenceError(Failure.AK_MALFORMED, "AK name is shorter than its algorithm identifier")
    name_alg = hash_by_id(struct.unpack(">H", name[:2])[0])
    if name_alg is None or len(name) != 2 + name_alg.size:
        raise EvidenceError(Failure.AK_MALFORMED, f"AK name {name.hex()} is not nameAlg || digest")


def _share_seed(ek: TpmPublic, name_alg: HashAlg, rng: Rng) -> tuple[bytes, bytes]:
    """A fresh seed and the EK-encrypted form the TPM recovers it from (Part 1 §24.3).

    RSA: OAEP with the EK's nameAlg and label "IDENTITY". ECC: one-pass ECDH with an ephemeral key, the seed
    derived with KDFe from the shared x-coordinate (Part 1 annexes B and C, "Secret Sharing").
    """
    if isinstance(ek.key, rsa.RSAPublicKey):
        seed = _random(rng, name_alg.size)
        oaep = padding.OAEP(mgf=padding.MGF1(name_alg.crypto()), algorithm=name_alg.crypto(), label=b"IDENTITY\x00")
        try:
            return seed, ek.key.encrypt(seed, oaep)
        except ValueError as e:  # OpenSSL refuses moduli no RSA key has, e.g. even ones
            raise EvidenceError(Failure.EK_MALFORMED, f"cannot encrypt to the EK: {e}") from None
    ephemeral = _ephemeral_key(ek.key.curve, rng)
    z = ephemeral.exchange(ec.ECDH(), ek.key)  # the x-coordinate of the shared point, field-size padded
    size = len(z)
    q_e = ephemeral.public_key().public_numbers()
    q_s = ek.key.public_numbers()
    ephemeral_x, ephemeral_y = q_e.x.to_bytes(size, "big"), q_e.y.to_bytes(size, "big")
    seed = kdfe(name_alg, z, b"IDENTITY", ephemeral_x, q_s.x.to_bytes(size, "big"), name_alg.size * 8)
    # The "encrypted" seed of an ECC key is the ephemeral public point, a TPMS_ECC_POINT.
    return seed, tpm2b(ephemeral_x) + tpm2b(ephemeral_y)


def _ephemeral_key(curve: ec.EllipticCurve, rng: Rng) -> ec.EllipticCurvePrivateKey:
    """d = (c mod (n−1)) + 1 from 64 extra random bits (FIPS 186-5 §A.2.1), so ``rng`` drives ECC too."""
    order = _CURVE_ORDERS.get(curve.name)
    if order is None:
        raise EvidenceError(Failure.EK_MALFORMED, f"unsupported EK curve {curve.name}")
    c = int.from_bytes(_random(rng, (order.bit_length() + 64 + 7) // 8), "big")
    return ec.derive_private_key(c % (order - 1) + 1, curve)


def _random(rng: Rng, size: int) -> bytes:
    data = rng(size)
    if len(data) != size:
        raise ValueError(f"rng returned {len(data)} bytes, expected {size}")
    return data
