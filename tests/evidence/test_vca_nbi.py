"""NbiVcaDriver against the OSM simulator's NBI (real HTTP, SecantusDB): NS actions run on the fake charm by the
simulator's VCA (charm_action_handler), results read back from the nslcmop's detailed-status."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from osm_trustmgr.bus.local import LocalBus
from osm_trustmgr.evidence.charm_local import CharmRunner
from osm_trustmgr.evidence.document import parse_evidence_document
from osm_trustmgr.evidence.vca import CharmClient, NbiVcaDriver, VcaError, VcaUnavailable, VnfTarget
from osm_trustmgr.osm.nbi import NbiClient
from osm_trustmgr.sandbox.osmsim import ActionRequest, OsmSimulator, SimUser, VnfSpec, charm_action_handler
from osm_trustmgr.tpm.pcr import parse_selection_spec
from osm_trustmgr.tpm.public import parse_public
from osm_trustmgr.tpm.quote import verify_quote

from .conftest import charm_module, deployed_vca, start_sim

SEL = parse_selection_spec("sha256:0,7")
# the charm's attest with strict-mode parameters too, so that a day-2 strict attest passes NBI's checks
ATTEST = {"nonce": "", "pcrs": "sha256:0-10", "ima-offset": 0, "trustmgr-url": "", "osm-params": ""}
PRIMITIVES = {"attest": ATTEST, "identity": {}, "activate": {"credential": None, "secret": None}}
DAY1 = {"config": {"ssh-hostname": "<rw_mgmt_ip>", "ssh-username": "ubuntu"}}


@dataclass
class World:
    sim: OsmSimulator
    runner: CharmRunner
    nbi: NbiClient
    nsr_id: str
    vnfr_ids: dict[str, str]

    def target(self, member: str = "1", **kw: Any) -> VnfTarget:
        return VnfTarget(self.nsr_id, self.vnfr_ids[member], member, **kw)


def overrides(request: ActionRequest) -> dict[str, Any]:
    # member 2's VNF cannot be logged into: point its charm at a host the fake charm treats as unreachable
    return {"ssh-hostname": "unreachable"} if request.member_vnf_index == "2" else {}


@pytest.fixture
async def world(mongo_uri: str, mongo_db: str, local_bus: LocalBus, runner: CharmRunner) -> AsyncIterator[World]:
    users = (SimUser("admin", "admin"), SimUser("alice", "pw", projects=("tenant",), roles=("project_admin",)))
    handler = charm_action_handler(runner, config_overrides=overrides)
    async with start_sim(mongo_uri, mongo_db, local_bus, action_handler=handler, users=users) as sim:
        vim = await sim.add_vim_account("vim-a", project="tenant")
        vnfs = [VnfSpec(m, vnfd_id="nbi-vnf", primitives=PRIMITIVES, day1=DAY1) for m in ("1", "2")]
        ns = await sim.create_ns("ns-vca", vim, vnfs=vnfs, project="tenant")
        assert (await sim.wait_operation(ns.nslcmop_id))["operationState"] == "COMPLETED"
        async with NbiClient(sim.nbi_url, user="admin", password="admin", project="admin", retries=1,
                             backoff=0.01) as nbi:  # fmt: skip
            yield World(sim, runner, nbi, ns.nsr_id, ns.vnfr_ids)


async def test_identity_activate_quote_through_osm(world: World) -> None:
    driver = NbiVcaDriver(world.nbi, poll_interval=0.02, timeout=20)
    vca = await deployed_vca(world.sim, world.nsr_id)
    tenant = world.sim.auth.project_id("tenant")
    client = CharmClient(driver, world.target(project=tenant))
    presented = await client.identity()
    tpm = charm_module(world.runner).TPMS["10.0.1.10"]  # day-1 config set ssh-hostname to <rw_mgmt_ip>
    assert presented.ek_public == tpm.ek_public and presented.ak_public == tpm.ak_public
    assert world.runner.config(vca["ee_id"]) == {"ssh-hostname": "10.0.1.10", "ssh-username": "ubuntu"}
    assert await client.activate(b"blob", b"secret") == b"blob"
    nonce = b"\x42" * 20
    doc = await client.quote(nonce, SEL, 0)
    ev = parse_evidence_document(doc).evidence
    verify_quote(ev.attest, ev.signature, parse_public(tpm.ak_public), nonce, ev.pcrs,
                 expected_signer=tpm.ak_qualified_name, expected_selection=SEL)  # fmt: skip
    # every action is an OSM operation, in the tenant's project, with the charm's results as detailed-status
    actions = [c for c in world.sim.calls if c.path.endswith(f"/{world.nsr_id}/action") and c.status == 202]
    assert len(actions) == 3
    ops = await world.sim.db.get_list("nslcmops", {"nsInstanceId": world.nsr_id, "lcmOperationType": "action"})
    assert {o["operationState"] for o in ops} == {"COMPLETED"} and len(ops) == 3
    assert all(o["_admin"]["projects_read"] == [tenant] for o in ops)
    attest = next(o for o in ops if o["operationParams"]["primitive"] == "attest")
    assert attest["detailed-status"]["nonce"] == nonce.hex() and attest["operationParams"]["timeout_ns_action"] == 20
    # without ADMIN=<tenant>, the admin account's project does not see the NS: NBI refuses, nothing ran
    with pytest.raises(VcaUnavailable, match="404"):
        await CharmClient(driver, world.target()).identity()


async def test_failed_actions_are_vca_errors(world: World) -> None:
    driver = NbiVcaDriver(world.nbi, poll_interval=0.02, timeout=20)
    tenant = world.sim.auth.project_id("tenant")
    vca2 = await deployed_vca(world.sim, world.nsr_id, "2")
    with pytest.raises(VcaError) as failed:
        await CharmClient(driver, world.target("2", project=tenant)).identity()
    # N2VC's text: the charm's fail message is not in it unless the charm also set an "output" result
    expected = f"Error executing primitive identity in ee={vca2['ee_id']}: failed: No further information received"
    assert failed.value.detail.startswith(expected) and failed.value.operation
    op = await world.sim.db.get_one("nslcmops", {"_id": failed.value.operation})
    assert op is not None and op["operationState"] == "FAILED"
    strict = {"trustmgr-url": "http://trustmgr/reject", "osm-params": f"vnf_id: {world.vnfr_ids['1']}"}
    with pytest.raises(VcaError, match=f"failed: Trust Manager rejected VNF {world.vnfr_ids['1']}: loa 0 < 4"):
        await driver.run(world.target(project=tenant), "attest", strict)


async def test_nbi_problems_are_vca_unavailable(world: World) -> None:
    tenant = world.sim.auth.project_id("tenant")
    driver = NbiVcaDriver(world.nbi, poll_interval=0.02, timeout=20)
    with pytest.raises(VcaUnavailable, match="Invalid primitive 'reboot'"):
        await driver.run(world.target(project=tenant), "reboot", {})
    world.sim.add_fault(r"/action$", 503, count=2)
    with pytest.raises(VcaUnavailable, match="503"):
        await driver.run(world.target(project=tenant), "identity", {})
    # a brief NBI outage while polling is waited out
    world.sim.add_fault(r"/ns_lcm_op_occs/", 503, count=3, method="GET")
    results = await driver.run(world.target(project=tenant), "identity", {})
    assert results["ek-public"] and not [f for f in world.sim.faults if f.count > 0]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    async with NbiClient(f"http://127.0.0.1:{port}/osm", user="admin", password="admin", project="admin",
                         retries=0) as down:  # fmt: skip
        with pytest.raises(VcaUnavailable, match="unreachable"):
            await NbiVcaDriver(down, timeout=5).run(world.target(), "identity", {})


async def test_timeout(mongo_uri: str, mongo_db: str, local_bus: LocalBus) -> None:
    release = asyncio.Event()

    async def slow(request: ActionRequest) -> tuple[str, Any]:
        if not request.day1:  # the instantiation's day-1 config is quick; the day-2 action is not
            await release.wait()
        return "COMPLETED", {"secret": "YQ=="}

    async with start_sim(mongo_uri, mongo_db, local_bus, action_handler=slow) as sim:
        ns = await sim.create_ns("ns-slow", await sim.add_vim_account("v"))
        await sim.wait_operation(ns.nslcmop_id)
        async with NbiClient(sim.nbi_url, user="admin", password="admin", project="admin") as nbi:
            driver = NbiVcaDriver(nbi, poll_interval=0.05, timeout=0.5)
            target = VnfTarget(ns.nsr_id, ns.vnfr_ids["1"], "1")
            with pytest.raises(VcaUnavailable, match=r"still PROCESSING after 0\.5s") as late:
                await driver.run(target, "activate", {"credential": "YQ==", "secret": "YQ=="})
            assert late.value.operation
            release.set()
            op = await sim.wait_operation(late.value.operation)
            assert op["operationState"] == "COMPLETED"  # LCM finished later; the driver had given up
