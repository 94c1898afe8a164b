"""IMA runtime policy: which measured files and buffers a machine may have run or loaded.

Pure evaluation over already verified entries (:mod:`osm_trustmgr.tpm.ima`). A file entry is
allowed when its digest is in the allow-list under its path, when its path matches an exclude
pattern, or (if enabled) when it carries a valid v2 IMA signature by a trusted key. ``ima-buf``
entries are allowed only by the allow-list under their name (e.g. ``kexec-cmdline``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils

from osm_trustmgr.failures import Failure
from osm_trustmgr.tpm.errors import EvidenceError
from osm_trustmgr.tpm.ima_templates import (
    BOOT_AGGREGATE,
    DIGEST_SIZES,
    IMA_BUF,
    ImaEntry,
    PublicKey,
    crypto_hash,
    display_path,
    ima_keyids,
    parse_signature_v2,
)


@dataclass(frozen=True)
class ImaFinding:
    """Why one entry is not allowed; ``index`` is its position in the log (0-based)."""

    code: Failure
    index: int
    path: str
    detail: str


@dataclass(frozen=True)
class ImaPolicy:
    """A compiled IMA policy; build it with :meth:`build` from the policy document's values."""

    allow: Mapping[str, frozenset[bytes]] = field(default_factory=dict)
    exclude: re.Pattern[str] | None = None
    keys: Mapping[int, tuple[PublicKey, ...]] = field(default_factory=dict)
    accept_signatures: bool = False
    ignore_violations: bool = False

    @classmethod
    def build(
        cls,
        *,
        allow: Mapping[str, Iterable[str]] | None = None,
        exclude: Iterable[str] = (),
        keys: Iterable[str | bytes] = (),
        accept_signatures: bool = False,
        ignore_violations: bool = False,
    ) -> ImaPolicy:
        """Compile a policy; invalid values raise ``EvidenceError(POLICY_MALFORMED)``.

        ``allow`` maps a path (or ``ima-buf`` name) to hex digests, bare or ``<algo>:``-prefixed;
        any algorithm, told apart by size. ``exclude`` regexes must match at the start of a path
        (``re.match``, as keylime does). ``keys`` are PEM or DER public keys or X.509 certificates.
        """
        digests = {path: _digests(path, values) for path, values in (allow or {}).items()}
        trusted: dict[int, tuple[PublicKey, ...]] = {}
        for key in keys:
            public_key, keyids = _load_key(key)
            for keyid in keyids:
                trusted[keyid] = (*trusted.get(keyid, ()), public_key)
        return cls(digests, _compile(list(exclude)), trusted, accept_signatures, ignore_violations)


def _digests(path: str, values: Iterable[str]) -> frozenset[bytes]:
    try:
        return frozenset(map(_digest, values))
    except EvidenceError as e:
        raise EvidenceError(e.code, f"runtime.ima.allow[{path!r}]: {e.detail}") from None


def _digest(text: str) -> bytes:
    alg, _, hex_digest = text.rpartition(":")
    try:
        digest = bytes.fromhex(hex_digest)
    except ValueError:
        raise EvidenceError(Failure.POLICY_MALFORMED, f"allow-list digest {text[:80]!r} is not hex") from None
    if not alg and len(digest) not in set(DIGEST_SIZES.values()):
        raise EvidenceError(Failure.POLICY_MALFORMED, f"allow-list digest {text[:80]!r} has no known digest size")
    if alg and DIGEST_SIZES.get(alg.lower()) != len(digest):
        raise EvidenceError(Failure.POLICY_MALFORMED, f"allow-list digest {text[:80]!r} is not a {alg} digest")
    if not any(digest):
        # A zero digest is what violations record: allowing it would hide them.
        raise EvidenceError(Failure.POLICY_MALFORMED, f"allow-list digest {text[:80]!r} is empty or all zeros")
    return digest


def _compile(patterns: list[str]) -> re.Pattern[str] | None:
    if not patterns:
        return None
    try:
        return re.compile("|".join(f"(?:{p})" for p in patterns))
    except re.error as exc:
        raise EvidenceError(Failure.POLICY_MALFORMED, f"bad exclude pattern: {exc}") from None


def _load_key(data: str | bytes) -> tuple[PublicKey, frozenset[int]]:
    raw = data.encode() if isinstance(data, str) else data
    pem = b"-----BEGIN" in raw
    try:
        loaded: object = (x509.load_pem_x509_certificate if pem else x509.load_der_x509_certificate)(raw)
    except ValueError:
        try:
            loaded = (serialization.load_pem_public_key if pem else serialization.load_der_public_key)(raw)
        except (ValueError, UnsupportedAlgorithm):
            raise EvidenceError(Failure.POLICY_MALFORMED, "IMA key is not a public key or certificate") from None
    try:
        key = loaded.public_key() if isinstance(loaded, x509.Certificate) else loaded
    except UnsupportedAlgorithm:
        key = None
    if not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        raise EvidenceError(Failure.POLICY_MALFORMED, "IMA signing keys must be RSA or ECDSA")
    return key, ima_keyids(loaded if isinstance(loaded, x509.Certificate) else key)


def evaluate_ima(entries: Sequence[ImaEntry], policy: ImaPolicy, *, first_index: int = 0) -> list[ImaFinding]:
    """Every entry the policy does not allow; ``first_index`` numbers ``entries[0]`` in the log."""
    findings = []
    allowed_for = policy.allow.get
    for index, entry in enumerate(entries, first_index):
        allowed = allowed_for(entry.path)
        # Fast path; violations cannot pass here since zero digests are never allowed.
        if allowed is not None and entry.file_digest in allowed:
            continue
        finding = _judge(entry, index, policy)
        if finding is not None:
            findings.append(finding)
    return findings


def _judge(entry: ImaEntry, index: int, policy: ImaPolicy) -> ImaFinding | None:
    """An entry whose digest is not allowed under its path."""
    if entry.is_violation:
        # Not excludable by path: a violation's template data is not covered by PCR 10 (the
        # kernel extends 0xFF..FF), so its path could have been rewritten.
        if policy.ignore_violations:
            return None
        why = "measurement violation (file measured while open for write, or written while measured)"
        return _finding(Failure.IMA_VIOLATION, index, entry, why)
    if index == 0 and entry.path == BOOT_AGGREGATE:
        # Checked against the quoted PCRs instead (check_boot_aggregate). Only the first entry: a
        # file whose path cannot be resolved is recorded by its bare name (ima_api.c, ima_d_path).
        return None
    if entry.template_name != IMA_BUF:
        if policy.exclude is not None and policy.exclude.match(entry.path):
            return None
        if entry.signature is not None and policy.accept_signatures:
            problem = _signature_problem(entry, policy)
            return None if problem is None else _finding(Failure.IMA_SIGNATURE, index, entry, problem)
    what = "buffer" if entry.template_name == IMA_BUF else "file"
    why = f"{what} digest {entry.digest_alg}:{entry.file_digest.hex()} is not in the allow-list"
    return _finding(Failure.IMA_UNKNOWN_DIGEST, index, entry, why)


def _finding(code: Failure, index: int, entry: ImaEntry, why: str) -> ImaFinding:
    return ImaFinding(code, index, entry.path, f"entry {index} ({display_path(entry.path)}): {why}")


def _signature_problem(entry: ImaEntry, policy: ImaPolicy) -> str | None:
    """Why the entry's signature does not allow it, or ``None`` when a trusted key signed it."""
    assert entry.signature is not None
    try:
        sig = parse_signature_v2(entry.signature)
    except EvidenceError as exc:
        return exc.detail
    algorithm = crypto_hash(sig.hash_alg)
    if sig.hash_alg != entry.digest_alg or algorithm is None:
        return f"signature hash {sig.hash_alg} does not fit the {entry.digest_alg} file digest"
    if len(entry.file_digest) != algorithm.digest_size:
        return f"{entry.digest_alg} file digest has {len(entry.file_digest)} bytes"
    keys = policy.keys.get(sig.keyid, ())
    if not keys:
        return f"signed by key id {sig.keyid:08x}, which is not trusted"
    if any(_verifies(key, sig.signature, entry.file_digest, algorithm) for key in keys):
        return None
    return f"signature does not verify with trusted key {sig.keyid:08x}"


def _verifies(key: PublicKey, signature: bytes, digest: bytes, algorithm: hashes.HashAlgorithm) -> bool:
    """v2 signatures sign the file digest itself: PKCS#1 v1.5 (RSA) or DER ECDSA over a prehash."""
    prehashed = utils.Prehashed(algorithm)
    try:
        if isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, digest, padding.PKCS1v15(), prehashed)
        else:
            key.verify(signature, digest, ec.ECDSA(prehashed))
    except (InvalidSignature, ValueError):
        return False
    return True
