"""The sandbox's VNF: a simulated VNF (sshd + swtpm) attested through the real trust-proxy charm, in-process.

The path is the production one minus Juju: the charm's own action code runs (``vca.driver: local``), logs into
the VNF over SSH, and answers ``identity``, ``activate`` and ``attest``; the Trust Manager enrolls the vTPM
(EK chain, credential activation) and judges the quote against the VNF image's signed reference policy.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from osm_trustmgr.enrollment import Enrollment, begin_enrollment, complete_enrollment
from osm_trustmgr.evidence.charm_local import CharmRunner
from osm_trustmgr.evidence.document import parse_evidence_document
from osm_trustmgr.evidence.vca import CharmClient, LocalVcaDriver, VnfTarget
from osm_trustmgr.policy.model import TrustPolicy
from osm_trustmgr.policy.result import AttestationResult, VerifierState
from osm_trustmgr.sandbox.demo import VerifiedRounds, signed_golden_policy
from osm_trustmgr.sandbox.swtpm import LocalCa
from osm_trustmgr.sandbox.vnf import SimulatedVnf

REPOSITORY_CHARM = Path(__file__).resolve().parents[2] / "charms" / "trust-proxy"
APP = "sandbox-vnf-1"


def default_charm_dir() -> Path:
    """The charm of this source tree (the sandbox runs from a checkout; the charm is not part of the wheel)."""
    if not (REPOSITORY_CHARM / "charmcraft.yaml").exists():
        raise FileNotFoundError(f"the trust-proxy charm is not at {REPOSITORY_CHARM}: pass --charm-dir")
    return REPOSITORY_CHARM


@dataclass
class VnfSandbox(VerifiedRounds):
    vnf: SimulatedVnf
    client: CharmClient
    enrollment: Enrollment
    policy: TrustPolicy
    state: VerifierState | None = None

    def attest(self) -> AttestationResult:
        """One round through the charm's ``attest`` action."""
        return self.judge(f"vnf:{APP}", lambda nonce, selection, offset: parse_evidence_document(
            asyncio.run(self.client.quote(nonce, selection, offset))).evidence)  # fmt: skip


async def _enroll(client: CharmClient, ca: LocalCa) -> Enrollment:
    challenge = begin_enrollment(await client.identity(), ca_bundle=ca.certificates, now=datetime.now(timezone.utc))
    return complete_enrollment(challenge, await client.activate(challenge.credential_blob, challenge.encrypted_secret))


@contextmanager
def vnf_sandbox(charm_dir: Path | None = None) -> Iterator[VnfSandbox]:
    """Start a vTPM vendor CA and the VNF, configure the charm with the VNF's SSH credentials (what OSM's day-1
    ``config`` does), enroll its vTPM through the charm; everything is stopped on exit."""
    runner = CharmRunner(charm_dir or default_charm_dir())
    try:
        with tempfile.TemporaryDirectory(prefix="osm-trustmgr-sandbox-vnf-") as tmp:
            yield from _started(Path(tmp), runner)
    finally:
        runner.close()


def _started(root: Path, runner: CharmRunner) -> Iterator[VnfSandbox]:
    ca = LocalCa(root / "vtpm-ca").ensure()
    with SimulatedVnf(root / "vnf-1", ca=ca) as vnf:
        runner.configure(APP, vnf.ssh_config)
        target = VnfTarget(nsr_id="sandbox-ns", vnfr_id=APP, member_vnf_index="1", ee_id=APP)
        client = CharmClient(LocalVcaDriver(runner), target)
        enrollment = asyncio.run(_enroll(client, ca))
        yield VnfSandbox(vnf, client, enrollment, signed_golden_policy(vnf.host))
