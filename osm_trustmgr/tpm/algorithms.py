"""TPM algorithm identifiers (TPM 2.0 Part 2, TPM_ALG_ID) and the hash banks a verifier supports."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes

ALG_RSA = 0x0001
ALG_SHA1 = 0x0004
ALG_HMAC = 0x0005
ALG_AES = 0x0006
ALG_KEYEDHASH = 0x0008
ALG_SHA256 = 0x000B
ALG_SHA384 = 0x000C
ALG_SHA512 = 0x000D
ALG_NULL = 0x0010
ALG_SM3_256 = 0x0012
ALG_RSASSA = 0x0014
ALG_RSAES = 0x0015
ALG_RSAPSS = 0x0016
ALG_OAEP = 0x0017
ALG_ECDSA = 0x0018
ALG_ECDH = 0x0019
ALG_ECDAA = 0x001A
ALG_SM2 = 0x001B
ALG_ECSCHNORR = 0x001C
ALG_ECC = 0x0023
ALG_SYMCIPHER = 0x0025
ALG_CFB = 0x0043

ECC_NIST_P256 = 0x0003
ECC_NIST_P384 = 0x0004
ECC_NIST_P521 = 0x0005


@dataclass(frozen=True)
class HashAlg:
    """A PCR bank's hash: TPM id, the name tpm2-tools uses, digest size."""

    alg_id: int
    name: str
    size: int

    def new(self, data: bytes = b"") -> hashlib._Hash:
        return _CONSTRUCTORS[self.name](data)

    def digest(self, data: bytes) -> bytes:
        return _CONSTRUCTORS[self.name](data).digest()

    def crypto(self) -> hashes.HashAlgorithm:
        """The matching ``cryptography`` hash object (stateless, so one instance is shared)."""
        return _CRYPTO[self.alg_id]


SHA1 = HashAlg(ALG_SHA1, "sha1", 20)
SHA256 = HashAlg(ALG_SHA256, "sha256", 32)
SHA384 = HashAlg(ALG_SHA384, "sha384", 48)
SHA512 = HashAlg(ALG_SHA512, "sha512", 64)

# hashlib.sha256 is measurably faster than hashlib.new("sha256") on the per-quote and per-IMA-entry paths.
_CONSTRUCTORS = {"sha1": hashlib.sha1, "sha256": hashlib.sha256, "sha384": hashlib.sha384, "sha512": hashlib.sha512}

_CRYPTO: dict[int, hashes.HashAlgorithm] = {
    ALG_SHA1: hashes.SHA1(),
    ALG_SHA256: hashes.SHA256(),
    ALG_SHA384: hashes.SHA384(),
    ALG_SHA512: hashes.SHA512(),
}

HASHES_BY_ID: dict[int, HashAlg] = {h.alg_id: h for h in (SHA1, SHA256, SHA384, SHA512)}
HASHES_BY_NAME: dict[str, HashAlg] = {h.name: h for h in HASHES_BY_ID.values()}

# Digest sizes of banks we can parse but not hash ourselves (SM3 logs still parse, replay is skipped).
DIGEST_SIZES: dict[int, int] = {**{h.alg_id: h.size for h in HASHES_BY_ID.values()}, ALG_SM3_256: 32}


def hash_by_id(alg_id: int) -> HashAlg | None:
    return HASHES_BY_ID.get(alg_id)


def hash_by_name(name: str) -> HashAlg | None:
    return HASHES_BY_NAME.get(name.lower().replace("-", ""))
