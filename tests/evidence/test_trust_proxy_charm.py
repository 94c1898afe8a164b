"""The real trust-proxy charm (charms/trust-proxy) behind the VCA drivers, against a simulated VNF (a booted
swtpm behind a real sshd on 127.0.0.1, osm_trustmgr.sandbox.vnf): enrollment (EK certificate chain,
MakeCredential/ActivateCredential) and a verified quote — directly (LocalVcaDriver) and through the OSM
simulator's NBI and LCM (NbiVcaDriver; day-1 config with the loopback override)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from osm_trustmgr.bus.local import LocalBus
from osm_trustmgr.enrollment import begin_enrollment, complete_enrollment
from osm_trustmgr.evidence.charm_local import CharmRunner, run_config_primitive
from osm_trustmgr.evidence.document import parse_evidence_document
from osm_trustmgr.evidence.vca import CharmClient, LocalVcaDriver, NbiVcaDriver, VcaDriver, VnfTarget
from osm_trustmgr.osm.nbi import NbiClient
from osm_trustmgr.sandbox.osmsim import ActionRequest, VnfSpec, charm_action_handler
from osm_trustmgr.sandbox.swtpm import LocalCa
from osm_trustmgr.tpm.pcr import parse_selection_spec
from osm_trustmgr.tpm.public import parse_public
from osm_trustmgr.tpm.quote import verify_quote

from .conftest import TRUST_PROXY, start_sim

SEL = parse_selection_spec("sha256:0-10")


@pytest.fixture
def vnf(tmp_path: Path, swtpm_state_template: Path, swtpm_ca: LocalCa) -> Iterator[Any]:
    if not Path("/usr/sbin/sshd").exists() or shutil.which("tpm2_quote") is None:
        pytest.skip("sshd and tpm2-tools are needed for a simulated VNF")
    from osm_trustmgr.sandbox.vnf import SimulatedVnf

    with SimulatedVnf(tmp_path / "vnf", ca=swtpm_ca, state_template=swtpm_state_template) as started:
        yield started


@pytest.fixture
def trust_proxy() -> Iterator[CharmRunner]:
    runner = CharmRunner(TRUST_PROXY)
    yield runner
    runner.close()


async def enroll_and_quote(driver: VcaDriver, target: VnfTarget, ca: LocalCa) -> None:
    client = CharmClient(driver, target)
    challenge = begin_enrollment(await client.identity(), ca_bundle=ca.certificates, now=datetime.now(timezone.utc))
    assert challenge.method == "ek_certificate"
    returned = await client.activate(challenge.credential_blob, challenge.encrypted_secret)
    enrollment = complete_enrollment(challenge, returned)  # only the VNF's TPM holding EK and AK can answer
    nonce = b"\x5a" * 20
    doc = await client.quote(nonce, SEL, 0)
    parsed = parse_evidence_document(doc)
    assert parsed.ak_public == enrollment.identity.ak_public and parsed.nonce == nonce
    assert parsed.evidence.uefi_log and parsed.evidence.ima_log and doc["ima_next_offset"] > 0
    ev = parsed.evidence
    verified = verify_quote(ev.attest, ev.signature, parse_public(enrollment.identity.ak_public), nonce, ev.pcrs,
                            expected_signer=enrollment.identity.ak_qualified_name, expected_selection=SEL)  # fmt: skip
    assert verified.signer_checked and set(verified.pcrs()["sha256"]) == set(range(11))


async def test_local_driver_with_the_real_charm(vnf: Any, trust_proxy: CharmRunner, swtpm_ca: LocalCa) -> None:
    assert run_config_primitive(trust_proxy, "m.vnf-1.0", vnf.ssh_config, strict=True) == "CONFIG OK"
    await enroll_and_quote(LocalVcaDriver(trust_proxy), VnfTarget("m", "vnfr-1", "1", ee_id="m.vnf-1.0"), swtpm_ca)


async def test_nbi_driver_through_the_osm_simulator_with_the_real_charm(
    vnf: Any, trust_proxy: CharmRunner, swtpm_ca: LocalCa, mongo_uri: str, mongo_db: str, local_bus: LocalBus
) -> None:
    def loopback(request: ActionRequest) -> dict[str, Any]:
        return {**vnf.ssh_config, "ssh-password": ""}  # the simulator's 10.0.x.y is not routable here

    handler = charm_action_handler(trust_proxy, config_overrides=loopback, strict_verify=True)
    day1 = {"config": {"ssh-hostname": "<rw_mgmt_ip>", "ssh-username": "ubuntu", "ssh-password": "osm4u"}}
    async with start_sim(mongo_uri, mongo_db, local_bus, action_handler=handler) as sim:
        ns = await sim.create_ns("ns-real", await sim.add_vim_account("v"), vnfs=(VnfSpec("1", day1=day1),))
        op = await sim.wait_operation(ns.nslcmop_id, timeout=60)
        assert op["operationState"] == "COMPLETED", op.get("detailed-status")
        async with NbiClient(sim.nbi_url, user="admin", password="admin", project="admin") as nbi:
            driver = NbiVcaDriver(nbi, poll_interval=0.05, timeout=60)
            await enroll_and_quote(driver, VnfTarget(ns.nsr_id, ns.vnfr_ids["1"], "1"), swtpm_ca)
