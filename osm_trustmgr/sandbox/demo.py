"""The embedded sandbox: enroll and attest one swtpm-backed simulated host, end to end, on defaults.

Everything a real deployment does at this stage runs for real: a private EK CA certifies the swtpm's EK,
enrollment checks the chain and activates a credential on the TPM, the host's boot and IMA measurements are
extended into its PCRs, a signed reference policy is loaded, and the verifier judges a fresh quote.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from osm_trustmgr.agent.tpm import Ak, TpmDevice
from osm_trustmgr.enrollment import Enrollment, PresentedIdentity, enroll
from osm_trustmgr.policy.evaluate import Evidence, Request, evaluate
from osm_trustmgr.policy.load import load_policy
from osm_trustmgr.policy.model import TrustPolicy
from osm_trustmgr.policy.result import AttestationResult, VerifierState
from osm_trustmgr.policy.signing import load_signer_keys, sign_policy
from osm_trustmgr.sandbox.host import SimulatedHost
from osm_trustmgr.sandbox.swtpm import LocalCa, Swtpm
from osm_trustmgr.tpm.pcr import PcrSelection, selection_map


@dataclass
class LocalAttester:
    """The agent side of enrollment, on a TPM in this process (the HTTPS agent does the same remotely)."""

    tpm: TpmDevice
    ak: Ak

    def identity(self) -> PresentedIdentity:
        return PresentedIdentity(self.tpm.create_ek("rsa").public, self.tpm.read_ek_certificate("rsa"), self.ak.public)

    def activate(self, credential_blob: bytes, encrypted_secret: bytes) -> bytes:
        return self.tpm.activate_credential(self.ak, credential_blob, encrypted_secret)


Collect = Callable[[bytes, tuple[PcrSelection, ...], int], Evidence]
"""Evidence for (nonce, PCR selection, IMA offset): from a local TPM, or through the charm."""


class VerifiedRounds:
    """One enrolled TPM judged round after round against its policy, the verifier's state carried over."""

    enrollment: Enrollment
    policy: TrustPolicy
    state: VerifierState | None

    def judge(self, entity: str, collect: Collect) -> AttestationResult:
        """One round: fresh nonce → quote + logs (IMA from the last verified offset) → verdict."""
        nonce = os.urandom(20)
        selection = self.policy.selection()
        evidence = collect(nonce, selection, self.state.ima_offset if self.state else 0)
        result = evaluate(evidence, self.enrollment.claim(), Request(nonce, selection), entity=entity,
                          now=datetime.now(timezone.utc), policy=self.policy, previous=self.state)  # fmt: skip
        if result.state is not None and result.loa >= 1:
            self.state = result.state
        return result


@dataclass
class Sandbox(VerifiedRounds):
    """One enrolled simulated host, its signed reference policy, and the verifier's state for it."""

    host: SimulatedHost
    ak: Ak
    enrollment: Enrollment
    policy: TrustPolicy
    state: VerifierState | None = None

    def attest(self, entity: str = "sandbox-host-1") -> AttestationResult:
        return self.judge(entity, lambda nonce, selection, offset: self.host.evidence(
            self.ak, nonce, selection_map(selection), ima_offset=offset))  # fmt: skip


def start_host(
    swtpm: Swtpm, tpm: TpmDevice, ca_bundle: Sequence[x509.Certificate], *, secure_boot: bool = True
) -> Sandbox:
    """Enroll the TPM, boot its simulated host, and load the golden policy, signed."""
    ak = tpm.create_ak("ecc")
    enrollment = enroll(LocalAttester(tpm, ak), ca_bundle=ca_bundle, now=datetime.now(timezone.utc))
    host = SimulatedHost(swtpm, tpm, secure_boot=secure_boot)
    host.boot()
    return Sandbox(host, ak, enrollment, signed_golden_policy(host))


@contextmanager
def sandbox(workdir: Path | None = None, *, secure_boot: bool = True) -> Iterator[Sandbox]:
    """Start a private EK CA and a swtpm, then :func:`start_host`; everything is stopped on exit."""
    with tempfile.TemporaryDirectory(prefix="osm-trustmgr-sandbox-") as tmp:
        root = workdir or Path(tmp)
        ca = LocalCa(root / "ek-ca").ensure()
        with Swtpm(root / "host-1-tpm", ca=ca) as swtpm, TpmDevice(swtpm.tcti) as tpm:
            yield start_host(swtpm, tpm, ca.certificates, secure_boot=secure_boot)


def signed_golden_policy(host: SimulatedHost) -> TrustPolicy:
    signer = ed25519.Ed25519PrivateKey.generate()
    pem = signer.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    document = sign_policy(host.reference_policy(), signer)
    return load_policy(document, load_signer_keys([pem]), require_signature=True)
