"""Test material for identity checks: EK-like certificates, EK public areas, and a software ActivateCredential.

The software ActivateCredential is written from TPM 2.0 Part 1 §24 with ``cryptography``'s own KDFs
(KBKDFHMAC for KDFa, ConcatKDFHash for KDFe), independently of ``osm_trustmgr.tpm.credential``.
"""

from __future__ import annotations

import functools
import hmac
import struct
from collections.abc import Iterable
from datetime import datetime, timedelta, timezone
from typing import Any, Literal

from cryptography import x509
from cryptography.hazmat.decrepit.ciphers.modes import CFB
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.kdf.concatkdf import ConcatKDFHash
from cryptography.hazmat.primitives.kdf.kbkdf import KBKDFHMAC, CounterLocation, Mode
from cryptography.x509.oid import NameOID

from osm_trustmgr.tpm import algorithms as alg
from osm_trustmgr.tpm.algorithms import HashAlg
from osm_trustmgr.tpm.identity import TCG_TPM_MANUFACTURER, TCG_TPM_MODEL, TCG_TPM_VERSION
from osm_trustmgr.tpm.public import TpmPublic
from osm_trustmgr.tpm.wire import tpm2b

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
YEAR = timedelta(days=365)

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
Signing = Literal["pkcs1", "pss"]

# Default EK template attributes (TCG EK Credential Profile, template L-1/L-2): fixedTPM | fixedParent |
# sensitiveDataOrigin | adminWithPolicy | restricted | decrypt.
EK_ATTRIBUTES = 0x000300B2
EK_POLICY = bytes.fromhex("837197674484b3f81a90cc8d46a5d724fd52d76e06520b64f2a1da1b331469aa")
UNKNOWN_CRITICAL = x509.ObjectIdentifier("1.3.6.1.4.1.55555.1.1")
SUBJECT_DIRECTORY_ATTRIBUTES = x509.ObjectIdentifier("2.5.29.9")
# SEQUENCE { SEQUENCE { OID tcg-at-tpmSpecification, SET { SEQUENCE { UTF8String "2.0", INTEGER 0, INTEGER 138 }}}}
TPM_SPECIFICATION = bytes.fromhex("301d301b06056781050210311230100c03322e30020100020200" + "8a")


@functools.cache
def rsa_key(index: int = 0, bits: int = 2048) -> rsa.RSAPrivateKey:
    """RSA keys are slow to make: tests share them by index."""
    return rsa.generate_private_key(65537, bits)


@functools.cache
def ec_key(index: int = 0, curve: str = "secp256r1") -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP384R1() if curve == "secp384r1" else ec.SECP256R1())


def name(common_name: str, organization: str = "Example TPM Vendor") -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def issue(
    subject: x509.Name,
    public_key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey,
    issuer: x509.Name,
    signer: PrivateKey,
    *,
    ca: bool | None = None,
    path_length: int | None = None,
    key_cert_sign: bool | None = None,
    not_before: datetime = NOW - 5 * YEAR,
    not_after: datetime = NOW + 10 * YEAR,
    signing: Signing = "pkcs1",
    extensions: Iterable[tuple[x509.ExtensionType, bool]] = (),
    key_ids: bool = True,
    serial: int | None = None,
) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(serial if serial is not None else x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
    )
    if ca is not None:
        builder = builder.add_extension(x509.BasicConstraints(ca=ca, path_length=path_length), critical=True)
    if key_cert_sign is not None:
        usage = dict.fromkeys(
            ("content_commitment", "key_encipherment", "data_encipherment", "key_agreement", "crl_sign"), False
        )
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=key_cert_sign,
                encipher_only=False,
                decipher_only=False,
                **usage,
            ),
            critical=True,
        )
    if key_ids:
        builder = builder.add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()), critical=False
        )
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    return sign(builder, signer, signing)


def sign(builder: x509.CertificateBuilder, signer: PrivateKey, signing: Signing = "pkcs1") -> x509.Certificate:
    if isinstance(signer, rsa.RSAPrivateKey) and signing == "pss":
        pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.DIGEST_LENGTH)
        return builder.sign(signer, hashes.SHA256(), rsa_padding=pss)
    return builder.sign(signer, hashes.SHA256())


def root_ca(common_name: str, key: PrivateKey, **kwargs: Any) -> x509.Certificate:
    subject = name(common_name)
    return issue(subject, key.public_key(), subject, key, ca=True, key_cert_sign=True, **kwargs)


def sub_ca(
    common_name: str, key: PrivateKey, issuer: x509.Certificate, issuer_key: PrivateKey, **kwargs: Any
) -> x509.Certificate:
    return issue(name(common_name), key.public_key(), issuer.subject, issuer_key, ca=True, key_cert_sign=True, **kwargs)


def tcg_oddities(critical_unknown: bool = True) -> list[tuple[x509.ExtensionType, bool]]:
    """What real EK certificates carry: critical SAN directoryName with TCG attributes, TPM spec, policies."""
    tpm = x509.Name(
        [
            x509.RelativeDistinguishedName([x509.NameAttribute(TCG_TPM_MANUFACTURER, "id:49465800")]),
            x509.RelativeDistinguishedName([x509.NameAttribute(TCG_TPM_MODEL, "SLB9670")]),
            x509.RelativeDistinguishedName([x509.NameAttribute(TCG_TPM_VERSION, "id:0007003F")]),
        ]
    )
    policy = x509.PolicyInformation(
        x509.ObjectIdentifier("1.2.276.0.4711.1.1"),
        [x509.UserNotice(None, "TCPA Trusted Platform Module Endorsement")],
    )
    odd: list[tuple[x509.ExtensionType, bool]] = [
        (x509.SubjectAlternativeName([x509.DirectoryName(tpm)]), True),
        (x509.UnrecognizedExtension(SUBJECT_DIRECTORY_ATTRIBUTES, TPM_SPECIFICATION), False),
        (x509.CertificatePolicies([policy]), False),
        (x509.BasicConstraints(ca=False, path_length=None), True),
    ]
    if critical_unknown:
        odd.append((x509.UnrecognizedExtension(UNKNOWN_CRITICAL, b"\x05\x00"), True))
    return odd


def ek_cert(
    ek: rsa.RSAPublicKey | ec.EllipticCurvePublicKey,
    issuer: x509.Certificate,
    issuer_key: PrivateKey,
    **kwargs: Any,
) -> x509.Certificate:
    """An EK certificate the way TPM vendors make them: empty subject and the TCG extensions."""
    return issue(x509.Name([]), ek, issuer.subject, issuer_key, extensions=tcg_oddities(), **kwargs)


def ek_public(
    key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey,
    *,
    name_alg: HashAlg = alg.SHA256,
    attributes: int = EK_ATTRIBUTES,
    sym_bits: int = 128,
    sym_alg: int = alg.ALG_AES,
) -> bytes:
    """A TPM2B_PUBLIC for ``key`` shaped like the default EK templates (restricted decryption, AES-CFB)."""
    body = struct.pack(">HHI", _type(key), name_alg.alg_id, attributes) + tpm2b(EK_POLICY)
    if sym_alg == alg.ALG_NULL:
        body += struct.pack(">H", sym_alg)
    else:
        body += struct.pack(">HHH", sym_alg, sym_bits, alg.ALG_CFB)
    if isinstance(key, rsa.RSAPublicKey):
        numbers = key.public_numbers()
        body += struct.pack(">HHI", alg.ALG_NULL, key.key_size, 0) + tpm2b(numbers.n.to_bytes(key.key_size // 8, "big"))
    else:
        point = key.public_numbers()
        size = (key.curve.key_size + 7) // 8
        curve = alg.ECC_NIST_P384 if key.curve.name == "secp384r1" else alg.ECC_NIST_P256
        body += struct.pack(">HHH", alg.ALG_NULL, curve, alg.ALG_NULL)
        body += tpm2b(point.x.to_bytes(size, "big")) + tpm2b(point.y.to_bytes(size, "big"))
    return tpm2b(body)


def _type(key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey) -> int:
    return alg.ALG_RSA if isinstance(key, rsa.RSAPublicKey) else alg.ALG_ECC


class ActivationFailed(Exception):
    """What a TPM answers with TPM_RC_INTEGRITY / TPM_RC_VALUE / TPM_RC_SIZE."""


def soft_activate(
    ek_key: PrivateKey, ek: TpmPublic, ak_name: bytes, blob: bytes, encrypted_secret: bytes, sym_bytes: int = 16
) -> bytes:
    """TPM2_ActivateCredential (Part 3 §12.5) in software, from Part 1 §24, with ``cryptography``'s KDFs."""
    assert ek.name_alg is not None
    digest = ek.name_alg.crypto()
    size = ek.name_alg.size
    secret = _unwrap_tpm2b(encrypted_secret)
    if isinstance(ek_key, rsa.RSAPrivateKey):
        oaep = padding.OAEP(mgf=padding.MGF1(digest), algorithm=digest, label=b"IDENTITY\x00")
        try:
            seed = ek_key.decrypt(secret, oaep)
        except ValueError:
            raise ActivationFailed("seed does not decrypt") from None
    else:
        x, rest = _split_tpm2b(secret)
        y, _ = _split_tpm2b(rest)
        peer = ec.EllipticCurvePublicNumbers(int.from_bytes(x, "big"), int.from_bytes(y, "big"), ek_key.curve)
        z = ek_key.exchange(ec.ECDH(), peer.public_key())
        ek_x = ek_key.public_key().public_numbers().x.to_bytes(len(z), "big")
        seed = ConcatKDFHash(digest, size, otherinfo=b"IDENTITY\x00" + x + ek_x).derive(z)
    integrity, enc_identity = _split_tpm2b(_unwrap_tpm2b(blob))
    hmac_key = _kdfa(digest, seed, b"INTEGRITY", b"", size)
    if not hmac.compare_digest(hmac.new(hmac_key, enc_identity + ak_name, ek.name_alg.name).digest(), integrity):
        raise ActivationFailed("integrity HMAC mismatch")
    sym_key = _kdfa(digest, seed, b"STORAGE", ak_name, sym_bytes)
    decryptor = Cipher(algorithms.AES(sym_key), CFB(bytes(16))).decryptor()
    credential, _ = _split_tpm2b(decryptor.update(enc_identity) + decryptor.finalize())
    return credential


def _kdfa(digest: hashes.HashAlgorithm, key: bytes, label: bytes, context: bytes, size: int) -> bytes:
    kdf = KBKDFHMAC(
        algorithm=digest,
        mode=Mode.CounterMode,
        length=size,
        rlen=4,
        llen=4,
        location=CounterLocation.BeforeFixed,
        label=label,
        context=context,
        fixed=None,
    )
    return kdf.derive(key)


def _unwrap_tpm2b(data: bytes) -> bytes:
    inner, rest = _split_tpm2b(data)
    if rest:
        raise ActivationFailed("trailing bytes")
    return inner


def _split_tpm2b(data: bytes) -> tuple[bytes, bytes]:
    if len(data) < 2 or len(data) < 2 + struct.unpack(">H", data[:2])[0]:
        raise ActivationFailed("truncated TPM2B")
    size = struct.unpack(">H", data[:2])[0]
    return data[2 : 2 + size], data[2 + size :]
