"""EK certificate chains (TCG EK Credential Profile for TPM Family 2.0), verified without strict X.509 policy.

An EK certificate proves that an EK belongs to a genuine TPM. Real ones break rules that generic X.509
validators enforce: an empty subject with a critical subjectAltName directoryName, unknown critical
extensions, RSA-OAEP subject keys, zero padding after the DER in NV. So the chain is built here by hand,
keeping the checks that carry the trust: issuer names and key identifiers, signatures, CA flags, validity
periods, and an anchor from the configured bundle. Everything is pure.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TypeVar

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from osm_trustmgr.failures import Failure
from osm_trustmgr.tpm import der
from osm_trustmgr.tpm.errors import EvidenceError
from osm_trustmgr.tpm.public import PublicKey, TpmPublic

MAX_CHAIN_DEPTH = 5  # issuers above the EK certificate; real EK chains have one to three
_MAX_SIGNATURE_CHECKS = 64  # bounds the search when many bundle certificates share a name

# TCG EK Credential Profile, "Subject Alternative Name": the TPM described in a directoryName.
TCG_TPM_MANUFACTURER = x509.ObjectIdentifier("2.23.133.2.1")
TCG_TPM_MODEL = x509.ObjectIdentifier("2.23.133.2.2")
TCG_TPM_VERSION = x509.ObjectIdentifier("2.23.133.2.3")

_Ext = TypeVar("_Ext", bound=x509.ExtensionType)

# What ``cryptography`` raises for certificate parts it cannot decode; it decodes most parts on first access.
_DECODE_ERRORS = (ValueError, TypeError, x509.InvalidVersion, x509.DuplicateExtension, x509.UnsupportedGeneralNameType)


@dataclass(frozen=True)
class EkCertificateInfo:
    """A verified EK certificate. ``chain`` lists the issuers' subjects, the trust anchor last."""

    subject: str
    issuer: str
    serial: int
    not_before: datetime
    not_after: datetime
    manufacturer: str | None
    model: str | None
    version: str | None
    fingerprint: str  # SHA-256 of ``der``, lowercase hex
    chain: tuple[str, ...]
    der: bytes = field(repr=False)  # the certificate alone, NV padding removed


def load_ca_bundle(pem_bytes: bytes) -> list[x509.Certificate]:
    """The configured EK CAs (PEM, or one DER certificate). Every certificate in it is a trust anchor.

    Raises ValueError: a broken bundle is a configuration error, not bad evidence.
    """
    try:
        if b"-----BEGIN" in pem_bytes:
            return x509.load_pem_x509_certificates(pem_bytes)
        return [x509.load_der_x509_certificate(pem_bytes)]
    except ValueError as e:
        raise ValueError(f"EK CA bundle holds no readable certificate: {e}") from None


def verify_ek_certificate(
    cert_der_or_pem: bytes,
    ca_bundle: Sequence[x509.Certificate],
    at: datetime,
    ek_public: TpmPublic | None = None,
    *,
    intermediates: Sequence[x509.Certificate] = (),
) -> EkCertificateInfo:
    """Check that an EK certificate chains to ``ca_bundle`` at time ``at`` and, if given, certifies ``ek_public``.

    ``intermediates`` (and any certificates after the first in a PEM input) may be used to build the chain
    but are not trusted themselves, e.g. ones the agent read from the TPM's NV. Raises EvidenceError.
    """
    if at.tzinfo is None:
        raise ValueError("`at` must be timezone-aware")
    leaf, *sent = _parse_certificates(cert_der_or_pem)
    leaf_key = _public_key(leaf)
    if leaf_key is not None and _same_name(leaf.subject, leaf.issuer) and _signed_by(leaf, leaf_key):
        raise EvidenceError(Failure.EK_CERT_SELF_SIGNED, f"{_label(leaf)} is self-signed")
    path = _trusted_path(leaf, ca_bundle, [*sent, *intermediates], at)
    if ek_public is not None:
        if leaf_key is None:
            raise EvidenceError(Failure.EK_CERT_MALFORMED, "EK certificate key is not an RSA or ECC key")
        if not _same_key(leaf_key, ek_public.key):
            raise EvidenceError(Failure.EK_KEY_MISMATCH, "EK certificate certifies another key than the TPM's EK")
    return _info(leaf, path)


def _parse_certificates(data: bytes) -> list[x509.Certificate]:
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            certs = x509.load_pem_x509_certificates(data)
        else:
            certs = [x509.load_der_x509_certificate(der.strip_nv_padding(data))]
        for cert in certs:
            _decode_core(cert)
    except _DECODE_ERRORS as e:
        raise EvidenceError(Failure.EK_CERT_MALFORMED, f"not an X.509 certificate: {e}") from None
    return certs


def _decode_core(cert: x509.Certificate) -> None:
    """Decode now the fields every check reads, so that later checks cannot trip over them."""
    _ = (cert.subject, cert.issuer, cert.serial_number, cert.not_valid_before_utc, cert.not_valid_after_utc)


def _decodable(cert: x509.Certificate) -> bool:
    try:
        _decode_core(cert)
    except _DECODE_ERRORS:
        return False
    return True


def _trusted_path(
    leaf: x509.Certificate,
    anchors: Sequence[x509.Certificate],
    intermediates: Sequence[x509.Certificate],
    at: datetime,
) -> list[x509.Certificate]:
    """The first chain from ``leaf`` to an anchor whose certificates are all valid at ``at``.

    Signatures and CA flags decide whether a chain exists (else EK_CERT_UNTRUSTED); validity periods are
    checked per chain so that a renewed CA with the same name and key still wins over an expired one.
    """
    search = _PathSearch(anchors, intermediates)
    outside_validity: str | None = None
    for path in search.paths(leaf):
        problem = _validity_problem(path, at)
        if problem is None:
            return path
        outside_validity = outside_validity or problem
    if outside_validity is not None:
        raise EvidenceError(Failure.EK_CERT_EXPIRED, outside_validity)
    raise EvidenceError(Failure.EK_CERT_UNTRUSTED, search.explain())


class _PathSearch:
    """Depth-first search for issuer chains (RFC 5280 §6.1 without the policy and name-constraint machinery)."""

    def __init__(self, anchors: Sequence[x509.Certificate], intermediates: Sequence[x509.Certificate]) -> None:
        self._anchors = {_fingerprint(c) for c in anchors}
        by_fingerprint = {_fingerprint(c): c for c in [*intermediates, *anchors]}
        self._pool = [c for c in by_fingerprint.values() if _decodable(c)]
        self._budget = _MAX_SIGNATURE_CHECKS
        self._reasons: list[str] = []

    def paths(self, leaf: x509.Certificate) -> Iterator[list[x509.Certificate]]:
        yield from self._extend([leaf], frozenset({_fingerprint(leaf)}))

    def explain(self) -> str:
        return "; ".join(dict.fromkeys(self._reasons))  # deduplicated, in the order found

    def _extend(self, path: list[x509.Certificate], seen: frozenset[bytes]) -> Iterator[list[x509.Certificate]]:
        child = path[-1]
        named = [c for c in self._pool if _same_name(c.subject, child.issuer)]
        if not named:
            self._reasons.append(f"no CA certificate is named {child.issuer.rfc4514_string()!r}")
        for issuer in named:
            fingerprint = _fingerprint(issuer)
            if not _key_ids_match(child, issuer):
                self._reasons.append(f"{_label(issuer)} has another key identifier than the issuer of {_label(child)}")
            elif fingerprint in seen:
                self._reasons.append(f"issuer loop at {_label(issuer)}")
            elif self._issued(child, issuer, cas_below=len(path) - 1):
                if fingerprint in self._anchors:
                    yield [*path, issuer]
                elif len(path) >= MAX_CHAIN_DEPTH:
                    self._reasons.append(f"chain longer than {MAX_CHAIN_DEPTH} issuers")
                else:
                    yield from self._extend([*path, issuer], seen | {fingerprint})

    def _issued(self, child: x509.Certificate, issuer: x509.Certificate, cas_below: int) -> bool:
        """Whether ``issuer`` may issue certificates and signed ``child``; records why not."""
        problem = _ca_problem(issuer, cas_below)
        if problem is None:
            if self._budget <= 0:
                problem = "too many candidate issuers"
            else:
                self._budget -= 1
                key = _public_key(issuer)
                if key is None or not _signed_by(child, key):
                    problem = f"signature of {_label(child)} does not verify with the key of {_label(issuer)}"
        if problem is not None:
            self._reasons.append(problem)
        return problem is None


def _ca_problem(issuer: x509.Certificate, cas_below: int) -> str | None:
    """RFC 5280 §4.2.1.9/§4.2.1.3: an issuer's basicConstraints and keyUsage, when present, must allow it."""
    extensions = _extensions(issuer)
    if extensions is None:
        return f"{_label(issuer)} has undecodable extensions"
    constraints = _extension(extensions, x509.BasicConstraints)
    if constraints is not None and not constraints.ca:
        return f"{_label(issuer)} is not a CA"
    if constraints is not None and constraints.path_length is not None and cas_below > constraints.path_length:
        return f"{_label(issuer)} allows {constraints.path_length} intermediate CAs below it, not {cas_below}"
    usage = _extension(extensions, x509.KeyUsage)
    if usage is not None and not usage.key_cert_sign:
        return f"{_label(issuer)} may not sign certificates (keyUsage)"
    return None


def _validity_problem(path: Sequence[x509.Certificate], at: datetime) -> str | None:
    for cert in path:
        if at < cert.not_valid_before_utc:
            return f"{_label(cert)} is not valid before {cert.not_valid_before_utc.isoformat()}"
        if at > cert.not_valid_after_utc:
            return f"{_label(cert)} expired at {cert.not_valid_after_utc.isoformat()}"
    return None


def _signed_by(cert: x509.Certificate, key: PublicKey) -> bool:
    """Verify ``cert``'s signature: RSA PKCS#1 v1.5 or PSS, or ECDSA, as its signatureAlgorithm says."""
    try:
        params = cert.signature_algorithm_parameters
        hash_alg = cert.signature_hash_algorithm
        if isinstance(key, rsa.RSAPublicKey) and isinstance(params, padding.PKCS1v15 | padding.PSS):
            if hash_alg is None:
                return False
            key.verify(cert.signature, cert.tbs_certificate_bytes, params, hash_alg)
        elif isinstance(key, ec.EllipticCurvePublicKey) and isinstance(params, ec.ECDSA):
            key.verify(cert.signature, cert.tbs_certificate_bytes, params)
        else:
            return False
    except (InvalidSignature, UnsupportedAlgorithm, *_DECODE_ERRORS):
        return False
    return True


def _public_key(cert: x509.Certificate) -> PublicKey | None:
    """The certified RSA or ECC key, or None.

    Some TPM vendors label EK keys id-RSAES-OAEP (RFC 4055), which ``cryptography`` does not load; the key
    inside is a plain RSAPublicKey.
    """
    try:
        key = cert.public_key()
    except (UnsupportedAlgorithm, *_DECODE_ERRORS):
        if cert.public_key_algorithm_oid.dotted_string != der.RSAES_OAEP:
            return None
        return der.rsa_key_from_tbs(cert.tbs_certificate_bytes)
    return key if isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey) else None


def _same_key(a: PublicKey, b: PublicKey) -> bool:
    spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return a.public_bytes(*spki) == b.public_bytes(*spki)


def _same_name(a: x509.Name, b: x509.Name) -> bool:
    """Name match ignoring string types, case and extra spaces (RFC 5280 §7.1), as vendor CAs need."""
    return _name_key(a) == _name_key(b)


def _name_key(name: x509.Name) -> tuple[frozenset[tuple[str, str | bytes]], ...]:
    def fold(value: str | bytes) -> str | bytes:
        return " ".join(value.split()).casefold() if isinstance(value, str) else value

    return tuple(frozenset((a.oid.dotted_string, fold(a.value)) for a in rdn) for rdn in name.rdns)


def _key_ids_match(child: x509.Certificate, issuer: x509.Certificate) -> bool:
    """When both carry them, the child's authorityKeyIdentifier must equal the issuer's subjectKeyIdentifier."""
    child_extensions, issuer_extensions = _extensions(child), _extensions(issuer)
    if child_extensions is None or issuer_extensions is None:
        return True  # undecodable extensions: let the signature decide
    aki = _extension(child_extensions, x509.AuthorityKeyIdentifier)
    ski = _extension(issuer_extensions, x509.SubjectKeyIdentifier)
    return aki is None or aki.key_identifier is None or ski is None or aki.key_identifier == ski.digest


def _extensions(cert: x509.Certificate) -> x509.Extensions | None:
    try:
        return cert.extensions
    except _DECODE_ERRORS:
        return None


def _extension(extensions: x509.Extensions, kind: type[_Ext]) -> _Ext | None:
    try:
        return extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None


def _fingerprint(cert: x509.Certificate) -> bytes:
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).digest()


def _label(cert: x509.Certificate) -> str:
    subject = cert.subject.rfc4514_string()
    return repr(subject) if subject else f"certificate serial {cert.serial_number:x}"


def _info(leaf: x509.Certificate, path: Sequence[x509.Certificate]) -> EkCertificateInfo:
    tpm = _tpm_attributes(leaf)
    leaf_der = leaf.public_bytes(serialization.Encoding.DER)
    return EkCertificateInfo(
        subject=leaf.subject.rfc4514_string(),
        issuer=leaf.issuer.rfc4514_string(),
        serial=leaf.serial_number,
        not_before=leaf.not_valid_before_utc,
        not_after=leaf.not_valid_after_utc,
        manufacturer=tpm.get(TCG_TPM_MANUFACTURER),
        model=tpm.get(TCG_TPM_MODEL),
        version=tpm.get(TCG_TPM_VERSION),
        fingerprint=hashlib.sha256(leaf_der).hexdigest(),
        chain=tuple(c.subject.rfc4514_string() for c in path[1:]),
        der=leaf_der,
    )


def _tpm_attributes(cert: x509.Certificate) -> dict[x509.ObjectIdentifier, str]:
    """The TCG attributes of the subjectAltName directoryName; informative only, so decoding errors are ignored."""
    extensions = _extensions(cert)
    san = _extension(extensions, x509.SubjectAlternativeName) if extensions is not None else None
    found: dict[x509.ObjectIdentifier, str] = {}
    for name in san.get_values_for_type(x509.DirectoryName) if san is not None else []:
        for attribute in name:
            if isinstance(attribute.value, str):
                found.setdefault(attribute.oid, attribute.value)
    return found
