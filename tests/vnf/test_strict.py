"""Strict mode end to end: the charm's ``attest`` is the last day-1 primitive, so LCM's instantiation itself
fails when the Trust Manager rejects the VNF (DESIGN.md §5)."""

from __future__ import annotations

from pathlib import Path

import yaml

from osm_trustmgr.sandbox.osmsim import VnfSpec
from osm_trustmgr.store.vnfs import VnfStore
from tests.vnf.conftest import VnfWorld

STRICT_DAY1 = {
    "config": {"ssh-hostname": "<rw_mgmt_ip>", "ssh-username": "ubuntu", "ssh-password": "osm4u"},
    "attest": {"trustmgr-url": "<trustmgr_url>", "osm-params": "<OSM>"},
}


async def _strict_ns(world: VnfWorld, name: str, *, implant: str | None = None) -> tuple[object, str]:
    vim = await world.osm.sim.add_vim_account("vim-a")
    host = await world.osm.host(vim)
    await world.vnf_policy()
    if implant:  # after the reference policy was taken from the image
        world.vnfs["1"].host.execute(implant, b"not in the VNF image")
    tm = await world.trustmgr("enforce", driver="nbi", api=True)
    assert tm.api_url
    spec = VnfSpec("1", day1=STRICT_DAY1, hosts={"mgmtVM": host.id})
    ns = await world.osm.sim.create_ns(name, vim, vnfs=[spec], additional_params_for_ns={"trust_loa": 4},
                                       additional_params_for_vnf={"1": {"trustmgr_url": tm.api_url}})  # fmt: skip
    return tm, ns  # type: ignore[return-value]


async def test_strict_trusted_vnf_instantiates_and_the_gate_reuses_its_verdict(world: VnfWorld) -> None:
    world.vnf("1")
    tm, ns = await _strict_ns(world, "ns-strict-ok")
    op = await world.osm.sim.wait_operation(ns.nslcmop_id, timeout=90)  # type: ignore[attr-defined]
    assert op["operationState"] == "COMPLETED", op.get("errorMessage")
    gate = await world.osm.gate_doc(ns.nslcmop_id, timeout=60)  # type: ignore[attr-defined]
    assert gate["decision"] == "accept" and gate["actions"] == {"vnfs": "done"}, gate["reasons"]
    [vnf] = gate["vnfs"]
    assert vnf["trusted"] and vnf["loa"] == 5
    # the day-1 attest enrolled and attested the VNF; the gate reused that verdict: no NS action from the Trust
    # Manager (the charm's actions ran as day-1 primitives inside LCM's instantiation)
    assert not [c for c in world.osm.sim.calls if c.path.endswith("/action")]
    record = await VnfStore(tm.store.db).get(ns.vnfr_ids["1"])  # type: ignore[attr-defined]
    assert record is not None and record.state == "attested" and record.monitored


async def test_strict_untrusted_vnf_fails_the_instantiation(world: VnfWorld) -> None:
    world.vnf("1")
    tm, ns = await _strict_ns(world, "ns-strict-bad", implant="/usr/bin/rootkit")
    op = await world.osm.sim.wait_operation(ns.nslcmop_id, timeout=90)  # type: ignore[attr-defined]
    assert op["operationState"] == "FAILED"
    assert "attest" in op["errorMessage"] and "/usr/bin/rootkit" in op["errorMessage"], op["errorMessage"]
    gate = await world.osm.gate_doc(ns.nslcmop_id, timeout=60)  # type: ignore[attr-defined]
    assert gate["actions"] == {"vnfs": "not needed: instantiation FAILED"}
    record = await VnfStore(tm.store.db).get(ns.vnfr_ids["1"])  # type: ignore[attr-defined]
    assert record is not None and record.loa == 3 and "/usr/bin/rootkit" in (record.reason or "")


async def test_the_packaged_descriptors_instantiate_in_strict_mode(world: VnfWorld) -> None:
    """descriptors/ as onboarded (VNFD with day-1 config + strict attest, the NSD, params/trust_loa4.yaml):
    both VNFs attest themselves during instantiation, which completes; the gate reuses their verdicts."""
    root = Path(__file__).resolve().parents[2] / "descriptors"
    vnfd = yaml.safe_load((root / "trust_proxy_vnf" / "trust_proxy_vnfd.yaml").read_text())["vnfd"]
    nsd = yaml.safe_load((root / "trust_proxy_ns" / "trust_proxy_nsd.yaml").read_text())["nsd"]["nsd"][0]
    params = yaml.safe_load((root / "params" / "trust_loa4.yaml").read_text())
    world.vnf("1")
    world.vnf("2", with_agent=False)
    vim = await world.osm.sim.add_vim_account("vim-a")
    host = await world.osm.host(vim)
    await world.vnf_policy(vnfd["id"])
    tm = await world.trustmgr("enforce", driver="nbi", api=True)
    nsd_id = await world.osm.sim.onboard_descriptors(nsd, [vnfd])
    vdu = vnfd["vdu"][0]["id"]
    specs = [VnfSpec(m["member-vnf-index"], hosts={vdu: host.id}) for m in params["additionalParamsForVnf"]]
    # the operator's params file, pointed at this test's Trust Manager
    per_vnf = {m["member-vnf-index"]: {**m["additionalParams"], "trustmgr_url": tm.api_url}
               for m in params["additionalParamsForVnf"]}  # fmt: skip
    ns = await world.osm.sim.create_ns("ns-packaged", vim, vnfs=specs, nsd_id=nsd_id,
                                       additional_params_for_ns=params["additionalParamsForNs"],
                                       additional_params_for_vnf=per_vnf)  # fmt: skip
    op = await world.osm.sim.wait_operation(ns.nslcmop_id, timeout=120)
    assert op["operationState"] == "COMPLETED", op.get("errorMessage")
    gate = await world.osm.gate_doc(ns.nslcmop_id, timeout=60)
    assert gate["decision"] == "accept", gate["reasons"]
    assert sorted((v["member_vnf_index"], v["loa"]) for v in gate["vnfs"]) == [("1", 5), ("2", 5)]
    records = await VnfStore(tm.store.db).list_vnfs(ns.nsr_id)
    assert [r.policy_id for r in records] == [f"vnfd:{vnfd['id']}"] * 2
