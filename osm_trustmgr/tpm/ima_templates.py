"""Linux IMA template encodings: the bytes the kernel hashes for each template, and file signatures.

Shared by the parsers (:mod:`osm_trustmgr.tpm.ima`), the replay code and the log builder, so that
parsing and generating a log cannot disagree on a layout. Kernel references are to
``security/integrity/ima/`` unless another directory is named.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from typing import NamedTuple

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from osm_trustmgr.failures import Failure
from osm_trustmgr.tpm.errors import EvidenceError

# Template names (ima_template.c, builtin_templates[]) and the fields they record.
IMA = "ima"  # d|n: legacy, SHA-1/MD5 file digest, name <= 255 bytes
IMA_NG = "ima-ng"  # d-ng|n-ng
IMA_SIG = "ima-sig"  # d-ng|n-ng|sig
IMA_BUF = "ima-buf"  # d-ng|n-ng|buf: measured buffers (kexec-cmdline, keys, critical data)
TEMPLATES = (IMA, IMA_NG, IMA_SIG, IMA_BUF)

BOOT_AGGREGATE = "boot_aggregate"  # ima_init.c, boot_aggregate_name
IMA_PCR = 10  # CONFIG_IMA_MEASURE_PCR_IDX

# IMA_EVENT_NAME_LEN_MAX (ima.h): the legacy 'n' field is hashed as a zero-padded 256-byte buffer.
IMA_NAME_LEN_MAX = 255
# Sanity bounds, far above anything a kernel writes (PATH_MAX is 4096; RSA-16384 signs in 2 KiB).
MAX_PATH = 8192
MAX_SIGNATURE = 8192
MAX_BUFFER = 1 << 20

# enum hash_algo (include/uapi/linux/hash_info.h), in order, with hash_algo_name[] (crypto/hash_info.c)
# and hash_digest_size[]. The index is the algorithm id stored in v2 signature headers.
KERNEL_HASH_ALGOS: tuple[tuple[str, int], ...] = (
    ("md4", 16),
    ("md5", 16),
    ("sha1", 20),
    ("rmd160", 20),
    ("sha256", 32),
    ("sha384", 48),
    ("sha512", 64),
    ("sha224", 28),
    ("rmd128", 16),
    ("rmd256", 32),
    ("rmd320", 40),
    ("wp256", 32),
    ("wp384", 48),
    ("wp512", 64),
    ("tgr128", 16),
    ("tgr160", 20),
    ("tgr192", 24),
    ("sm3", 32),
    ("streebog256", 32),
    ("streebog512", 64),
    ("sha3-256", 32),
    ("sha3-384", 48),
    ("sha3-512", 64),
)
# "sm3-256" is how kernels before 5.12 spelled SM3.
DIGEST_SIZES: dict[str, int] = {**dict(KERNEL_HASH_ALGOS), "sm3-256": 32}
HASH_ALGO_IDS: dict[str, int] = {name: i for i, (name, _) in enumerate(KERNEL_HASH_ALGOS)}
HASH_ALGO_IDS["sm3-256"] = HASH_ALGO_IDS["sm3"]

# Template hashes: the hash is told apart by its size (SM3 logs would be read as SHA-256).
TEMPLATE_HASH_ALGS: dict[int, str] = {20: "sha1", 32: "sha256", 48: "sha384", 64: "sha512"}

_CRYPTO_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha1": hashes.SHA1,
    "sha224": hashes.SHA224,
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
    "sha3-256": hashes.SHA3_256,
    "sha3-384": hashes.SHA3_384,
    "sha3-512": hashes.SHA3_512,
    "sm3": hashes.SM3,
    "sm3-256": hashes.SM3,
}

_U32 = struct.Struct("<I")


class ImaEntry(NamedTuple):
    """One IMA measurement (immutable; a NamedTuple because logs have 10^5 entries and a frozen
    dataclass is several times slower to build).

    ``template_data`` is exactly what the kernel hashes into ``template_hash`` (and, per bank, into
    PCR 10): the binary template data for the ``ima-*`` templates, the 20-byte digest followed by
    the name padded to 256 bytes for the legacy ``ima`` template. ``path`` is the file path or, for
    ``ima-buf``, the buffer name; non-UTF-8 bytes are kept as surrogate escapes. ``signature`` is
    the ``sig`` field of ``ima-sig`` entries (``None`` when empty), ``buf`` the ``ima-buf`` buffer.
    """

    pcr: int
    template_hash: bytes
    template_name: str
    template_data: bytes
    digest_alg: str
    file_digest: bytes
    path: str
    signature: bytes | None = None
    buf: bytes | None = None

    @property
    def is_violation(self) -> bool:
        """A measurement violation: the kernel records a zero template hash and extends 0xFF..FF."""
        return not any(self.template_hash)


def path_bytes(path: str) -> bytes:
    """The kernel's bytes for a path decoded with ``surrogateescape``."""
    return path.encode("utf-8", "surrogateescape")


def display_path(path: str) -> str:
    """A path safe to log: undecodable bytes as ``\\xNN``, control characters escaped."""
    shown = path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return shown if shown.isprintable() else shown.encode("unicode_escape").decode("ascii")


def encode_digest_ng(digest_alg: str, digest: bytes) -> bytes:
    """The ``d-ng`` field: ``<hash_algo_name>:\\0<digest>`` (ima_template_lib.c,
    ima_eventdigest_init_common, DATA_FMT_DIGEST_WITH_ALGO)."""
    return digest_alg.encode() + b":\0" + digest


def legacy_template_data(digest: bytes, name: bytes) -> bytes:
    """The legacy ``ima`` template's hash input: no length prefixes, and the ``n`` field copied into
    a zeroed IMA_EVENT_NAME_LEN_MAX + 1 byte buffer (ima_crypto.c, ima_calc_field_array_hash_tfm)."""
    return digest + name.ljust(IMA_NAME_LEN_MAX + 1, b"\0")


def template_data(
    template_name: str,
    digest_alg: str,
    file_digest: bytes,
    path: bytes,
    signature: bytes | None = None,
    buf: bytes | None = None,
) -> bytes:
    """Template data of an entry; for ``ima-*`` templates each field is ``u32 length || bytes``
    (ima_api.c ima_alloc_init_template; ``n-ng`` is the name with its NUL, DATA_FMT_STRING)."""
    if template_name == IMA:
        return legacy_template_data(file_digest, path)
    fields = [encode_digest_ng(digest_alg, file_digest), path + b"\0"]
    if template_name == IMA_SIG:
        fields.append(signature or b"")
    elif template_name == IMA_BUF:
        fields.append(buf or b"")
    elif template_name != IMA_NG:
        raise ValueError(f"unsupported IMA template {template_name!r}")
    return b"".join(_U32.pack(len(f)) + f for f in fields)


# ---------------------------------------------------------------------------------------------------
# File signatures (the security.ima xattr copied into the ima-sig 'sig' field)

EVM_IMA_XATTR_DIGSIG = 3  # security/integrity/integrity.h, enum evm_ima_xattr_type
DIGSIG_VERSION_2 = 2
# struct signature_v2_hdr (integrity.h): type, version, hash_algo, __be32 keyid, __be16 sig_size.
_SIG_V2_HEADER = struct.Struct(">BBBIH")

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey
PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


@dataclass(frozen=True, slots=True)
class ImaSignatureV2:
    """A decoded v2 IMA signature: ``signature`` is over the file digest itself, hashed with
    ``hash_alg`` (digsig_asymmetric.c, asymmetric_verify)."""

    hash_alg: str
    keyid: int
    signature: bytes


def parse_signature_v2(raw: bytes) -> ImaSignatureV2:
    """Decode a signature_v2_hdr blob; anything else (v3, EVM portable signatures) is refused."""
    if len(raw) < _SIG_V2_HEADER.size:
        raise EvidenceError(Failure.IMA_SIGNATURE, f"signature of {len(raw)} bytes is shorter than its header")
    kind, version, algo_id, keyid, size = _SIG_V2_HEADER.unpack_from(raw)
    if kind != EVM_IMA_XATTR_DIGSIG or version != DIGSIG_VERSION_2:
        raise EvidenceError(Failure.IMA_SIGNATURE, f"unsupported signature type {kind} version {version}")
    if algo_id >= len(KERNEL_HASH_ALGOS):
        raise EvidenceError(Failure.IMA_SIGNATURE, f"unknown signature hash algorithm id {algo_id}")
    if size != len(raw) - _SIG_V2_HEADER.size:
        raise EvidenceError(Failure.IMA_SIGNATURE, f"signature size {size} does not fit its {len(raw)} bytes")
    return ImaSignatureV2(KERNEL_HASH_ALGOS[algo_id][0], keyid, raw[_SIG_V2_HEADER.size :])


def encode_signature_v2(sig: ImaSignatureV2) -> bytes:
    header = _SIG_V2_HEADER.pack(
        EVM_IMA_XATTR_DIGSIG, DIGSIG_VERSION_2, HASH_ALGO_IDS[sig.hash_alg], sig.keyid, len(sig.signature)
    )
    return header + sig.signature


def crypto_hash(digest_alg: str) -> hashes.HashAlgorithm | None:
    """The ``cryptography`` hash for a kernel hash name, ``None`` when it has none."""
    cls = _CRYPTO_HASHES.get(digest_alg)
    return cls() if cls else None


def ima_keyid(public_key: PublicKey) -> int:
    """The v2 key id evmctl writes (ima-evm-utils libimaevm.c, calc_keyid_v2): the last 4 bytes of
    the SHA-1 of the SubjectPublicKeyInfo's BIT STRING contents (PKCS#1 RSAPublicKey, X9.62 point).
    """
    if isinstance(public_key, rsa.RSAPublicKey):
        bits = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.PKCS1)
    elif isinstance(public_key, ec.EllipticCurvePublicKey):
        bits = public_key.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    else:
        raise TypeError(f"IMA signatures use RSA or ECDSA keys, not {type(public_key).__name__}")
    return int.from_bytes(hashlib.sha1(bits).digest()[-4:], "big")


def ima_keyids(key_or_cert: PublicKey | x509.Certificate) -> frozenset[int]:
    """Key ids a v2 signature made with this key may carry.

    The kernel looks the key up by "id:<keyid>" (digsig_asymmetric.c, request_asymmetric_key),
    which matches the tail of the certificate's subjectKeyIdentifier. OpenSSL's default SKID is the
    same SHA-1 as :func:`ima_keyid`, but a certificate may carry another one: both are accepted.
    """
    if not isinstance(key_or_cert, x509.Certificate):
        return frozenset({ima_keyid(key_or_cert)})
    public_key = key_or_cert.public_key()
    if not isinstance(public_key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        raise TypeError(f"IMA signatures use RSA or ECDSA keys, not {type(public_key).__name__}")
    ids = {ima_keyid(public_key)}
    try:
        skid = key_or_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    except x509.ExtensionNotFound:
        skid = b""
    if len(skid) >= 4:
        ids.add(int.from_bytes(skid[-4:], "big"))
    return frozenset(ids)
