"""Enrollment (DESIGN.md §5): prove an AK is resident in the TPM whose EK a trusted CA certified.

Steps: EK certificate chain → MakeCredential(EK, AK name, secret) → the TPM must return the secret through
ActivateCredential → the identity is recorded. The agent side is anything with ``identity``/``activate``
(the HTTPS host agent, the charm's actions, or a local TPM in the sandbox).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from cryptography import x509

from osm_trustmgr.failures import Failure
from osm_trustmgr.policy.evaluate import IdentityClaim, IdentityMethod
from osm_trustmgr.tpm.credential import check_activation, make_credential
from osm_trustmgr.tpm.ekcert import EkCertificateInfo, verify_ek_certificate
from osm_trustmgr.tpm.errors import EvidenceError
from osm_trustmgr.tpm.identity import Identity, check_ak_attributes, parse_ek_public
from osm_trustmgr.tpm.public import parse_public

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PresentedIdentity:
    """What an agent reports about its TPM (``GET /v1/identity``)."""

    ek_public: bytes
    ek_certificate: bytes | None
    ak_public: bytes


class Attester(Protocol):
    def identity(self) -> PresentedIdentity: ...

    def activate(self, credential_blob: bytes, encrypted_secret: bytes) -> bytes: ...


@dataclass(frozen=True)
class Enrollment:
    identity: Identity
    method: IdentityMethod
    certificate: EkCertificateInfo | None

    def claim(self) -> IdentityClaim:
        """What the verifier needs for every later quote of this TPM."""
        ak = parse_public(self.identity.ak_public)
        return IdentityClaim(ak, self.method, self.identity.ak_qualified_name)


@dataclass(frozen=True)
class Challenge:
    """An enrollment in progress: the credential sent to the agent and the secret it must return."""

    presented: PresentedIdentity
    method: IdentityMethod
    certificate: EkCertificateInfo | None
    secret: bytes
    credential_blob: bytes
    encrypted_secret: bytes


def begin_enrollment(
    presented: PresentedIdentity,
    *,
    ca_bundle: Sequence[x509.Certificate],
    now: datetime,
    pinned_ek: bytes | None = None,
) -> Challenge:
    """Check the EK (certificate chain, or an administrator-pinned EK) and the AK; build the credential.

    Raises EvidenceError with the failing check's code.
    """
    ek = parse_ek_public(presented.ek_public)
    ak = parse_public(presented.ak_public)
    check_ak_attributes(ak)
    certificate: EkCertificateInfo | None = None
    method: IdentityMethod
    if pinned_ek is not None:
        if parse_ek_public(pinned_ek).name != ek.name:
            raise EvidenceError(Failure.IDENTITY_CHANGED, "the agent's EK is not the administrator-pinned EK")
        method = "pinned_ek"
    else:
        if presented.ek_certificate is None:
            raise EvidenceError(Failure.EK_CERT_UNTRUSTED, "no EK certificate and no pinned EK")
        certificate = verify_ek_certificate(presented.ek_certificate, ca_bundle, now, ek)
        method = "ek_certificate"
    assert ak.name is not None
    secret = os.urandom(32)
    blob, encrypted = make_credential(ek, ak.name, secret)
    return Challenge(presented, method, certificate, secret, blob, encrypted)


def complete_enrollment(challenge: Challenge, returned: bytes) -> Enrollment:
    """The TPM returned ``returned`` for the credential: only the TPM holding both EK and AK can match."""
    if not check_activation(challenge.secret, returned):
        raise EvidenceError(Failure.CREDENTIAL_FAILED, "the TPM returned another secret: AK not under this EK")
    p = challenge.presented
    identity = Identity.from_publics(p.ek_public, p.ak_public, p.ek_certificate)
    log.info("enrolled TPM: AK %s (%s)", identity.ak_name.hex(), challenge.method)
    return Enrollment(identity, challenge.method, challenge.certificate)


def enroll(
    attester: Attester,
    *,
    ca_bundle: Sequence[x509.Certificate],
    now: datetime,
    pinned_ek: bytes | None = None,
) -> Enrollment:
    """Enroll one TPM through a synchronous attester (a local TPM); raises EvidenceError."""
    challenge = begin_enrollment(attester.identity(), ca_bundle=ca_bundle, now=now, pinned_ek=pinned_ek)
    try:
        returned = attester.activate(challenge.credential_blob, challenge.encrypted_secret)
    except Exception as e:  # the agent's own failure is the enrollment's failure, whatever its transport
        raise EvidenceError(Failure.CREDENTIAL_FAILED, f"ActivateCredential failed: {e}") from None
    return complete_enrollment(challenge, returned)
