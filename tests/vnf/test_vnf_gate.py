"""The VNF gate (DESIGN.md §5): after LCM deployed an NS, every VNF is attested through its trust-proxy charm."""

from __future__ import annotations

from typing import Any

from osm_trustmgr.sandbox.osmsim import VnfSpec
from osm_trustmgr.sandbox.vnf import SimulatedVnf
from osm_trustmgr.store.mongo import REPORTS
from osm_trustmgr.store.vnfs import VnfStore
from osm_trustmgr.vnfs import Remediation
from tests.gate.conftest import poll
from tests.vnf.conftest import VnfWorld

LOA4 = {"trust_loa": 4}


async def _hosts(world: VnfWorld, vim: str, count: int = 1) -> list[str]:
    return [(await world.osm.host(vim)).id for _ in range(count)]


def _specs(hosts: list[str], members: tuple[str, ...] = ("1", "2")) -> list[VnfSpec]:
    return [VnfSpec(m, hosts={"mgmtVM": hosts[0]}) for m in members]


async def test_honest_ns_is_accepted_and_its_vnfs_monitored(world: VnfWorld) -> None:
    vim = await world.osm.sim.add_vim_account("vim-a")
    hosts = await _hosts(world, vim)
    world.vnf("1")
    world.vnf("2", with_agent=False)  # one VNF through osm-trust-agent, the other through tpm2-tools
    await world.vnf_policy()
    tm = await world.trustmgr("enforce", driver="nbi")
    ns = await world.osm.sim.create_ns("ns-vnf", vim, vnfs=_specs(hosts), additional_params_for_ns=LOA4)
    gate = await world.osm.gate_doc(ns.nslcmop_id, timeout=90)
    assert gate["decision"] == "accept", gate["reasons"]
    assert gate["actions"] == {"vnfs": "done"}
    assert sorted((v["member_vnf_index"], v["loa"], v["trusted"]) for v in gate["vnfs"]) == [
        ("1", 5, True), ("2", 5, True)
    ]  # fmt: skip
    # the charm's actions ran as NS actions through NBI (identity, activate, attest per VNF)
    actions = [c for c in world.osm.sim.calls if c.path.endswith(f"/{ns.nsr_id}/action") and c.status < 300]
    assert len(actions) == 6
    messages = await world.osm.trust_gate_messages(ns.nslcmop_id)
    assert [(m["stage"], m["decision"]) for m in messages] == [("hosts", "accept"), ("vnfs", "accept")]
    records = await VnfStore(tm.store.db).list_vnfs(ns.nsr_id)
    assert {r.member_vnf_index: (r.state, r.loa, r.monitored) for r in records} == {
        "1": ("attested", 5, True), "2": ("attested", 5, True)
    }  # fmt: skip
    # reports are the NS project's: the tenant sees them, other projects do not
    project = world.osm.sim.auth.project_id("admin")
    report = await tm.store.db[REPORTS].find_one({"_id": records[0].last_report})
    assert report is not None and report["kind"] == "vnf" and report["_admin"]["projects_read"] == [project]
    assert not world.osm.nbi_calls("terminate", ns.nsr_id)


async def test_modified_binary_in_one_vnf_terminates_the_ns(world: VnfWorld) -> None:
    vim = await world.osm.sim.add_vim_account("vim-a")
    hosts = await _hosts(world, vim)
    world.vnf("1")
    bad = world.vnf("2")
    await world.vnf_policy()
    bad.host.execute("/usr/bin/backdoor", b"a binary the VNF image does not have")
    await world.trustmgr("enforce", driver="nbi")
    ns = await world.osm.sim.create_ns("ns-bad-vnf", vim, vnfs=_specs(hosts), additional_params_for_ns=LOA4)
    gate = await world.osm.gate_doc(ns.nslcmop_id, timeout=90)
    assert gate["decision"] == "reject"
    vnfr_2 = ns.vnfr_ids["2"]
    assert any(f"VNF 2 (vnfr {vnfr_2})" in r and "/usr/bin/backdoor" in r and "LoA 3 < required 4" in r
               for r in gate["reasons"]), gate["reasons"]  # fmt: skip
    assert gate["actions"] == {"vnfs": "done", "terminate": "done"}
    assert len(world.osm.nbi_calls("terminate", ns.nsr_id)) == 1
    assert not world.osm.nbi_calls("cancel", ns.nslcmop_id)  # LCM had finished: nothing to cancel
    messages = await world.osm.trust_gate_messages(ns.nslcmop_id)
    assert [(m["stage"], m["decision"]) for m in messages] == [("hosts", "accept"), ("vnfs", "reject")]
    assert "/usr/bin/backdoor" in " ".join(messages[1]["reasons"])


async def test_vnf_with_untrusted_vtpm_ek_is_loa_0(world: VnfWorld, untrusted_ca) -> None:  # type: ignore[no-untyped-def]
    vim = await world.osm.sim.add_vim_account("vim-a")
    hosts = await _hosts(world, vim)
    world.vnf("1", ca=untrusted_ca)
    await world.trustmgr("audit", driver="local")
    ns = await world.osm.sim.create_ns(
        "ns-ek", vim, vnfs=_specs(hosts, ("1",)), additional_params_for_ns={"trust_vnf_loa": 1}
    )
    gate = await world.osm.gate_doc(ns.nslcmop_id, timeout=90)
    [vnf] = gate["vnfs"]
    assert (vnf["loa"], vnf["trusted"]) == (0, False)
    assert "ek.cert_untrusted" in " ".join(vnf["reasons"]), vnf["reasons"]
    assert gate["decision"] == "reject" and gate["actions"] == {"vnfs": "done"}  # audit: recorded only
    assert not world.osm.nbi_calls("terminate", ns.nsr_id)


async def test_loa5_needs_the_vnf_on_an_attested_host(world: VnfWorld) -> None:
    vim = await world.osm.sim.add_vim_account("vim-a")
    hosts = await _hosts(world, vim)
    world.vnf("1")
    world.vnf("2")
    await world.vnf_policy()
    await world.trustmgr("audit", driver="local")
    specs = [VnfSpec("1", hosts={"mgmtVM": hosts[0]}), VnfSpec("2", hosts={"mgmtVM": "compute-unknown"})]
    ns = await world.osm.sim.create_ns("ns-loa5", vim, vnfs=specs, additional_params_for_ns={"trust_loa": 5})
    gate = await world.osm.gate_doc(ns.nslcmop_id, timeout=90)
    by_member = {v["member_vnf_index"]: v for v in gate["vnfs"]}
    assert (by_member["1"]["loa"], by_member["1"]["trusted"]) == (5, True)
    assert (by_member["2"]["loa"], by_member["2"]["trusted"]) == (4, False)
    assert any("compute-unknown" in r for r in by_member["2"]["reasons"]), by_member["2"]["reasons"]


async def _monitored_ns(world: VnfWorld, remediation: Remediation, interval: float) -> tuple[Any, Any, SimulatedVnf]:
    """An accepted NS of one VNF at LoA 4, monitored every ``interval`` seconds (local charm driver)."""
    vim = await world.osm.sim.add_vim_account("vim-a")
    hosts = await _hosts(world, vim)
    vnf = world.vnf("1")
    await world.vnf_policy()
    tm = await world.trustmgr("enforce", driver="local", remediation=remediation, vnf_interval=interval)
    ns = await world.osm.sim.create_ns(f"ns-{remediation}", vim, vnfs=_specs(hosts, ("1",)),
                                       additional_params_for_ns=LOA4)  # fmt: skip
    gate = await world.osm.gate_doc(ns.nslcmop_id, timeout=90)
    assert gate["decision"] == "accept", gate["reasons"]
    return tm, ns, vnf


async def test_monitor_notices_a_vnf_losing_trust_and_remediates(world: VnfWorld) -> None:
    tm, ns, vnf = await _monitored_ns(world, "terminate", 0.5)
    assert await tm.monitor.run_cycle() in (0, 1)  # may not be due yet: the interval is half a second
    vnf.host.execute("/usr/sbin/cryptominer", b"started after instantiation")
    await poll(lambda: tm.monitor.run_cycle(), lambda n: n == 1, 10)
    record = await VnfStore(tm.store.db).get(ns.vnfr_ids["1"])
    assert record is not None and record.loa == 3 and "/usr/sbin/cryptominer" in (record.reason or "")
    lost = [v for k, v in await _trust(world) if k == "trust_lost"]
    assert len(lost) == 1 and lost[0]["vnfr_id"] == ns.vnfr_ids["1"] and lost[0]["required_loa"] == 4
    assert lost[0]["remediation"] == "terminate" and lost[0]["remediation_result"].startswith("terminate requested")
    assert len(world.osm.nbi_calls("terminate", ns.nsr_id)) == 1
    # the NS is terminated: its VNF is retired and no longer monitored
    await poll(lambda: VnfStore(tm.store.db).get(ns.vnfr_ids["1"]), lambda r: r.state == "retired", 30)
    assert await tm.monitor.run_cycle() == 0


async def _trust(world: VnfWorld) -> list[tuple[str, dict]]:  # type: ignore[type-arg]
    from tests.gate.conftest import read_topic

    return await read_topic(world.osm.broker, "trust", 3.0)


async def test_a_restart_between_the_host_and_vnf_stages_loses_nothing(world: VnfWorld) -> None:
    """The Trust Manager stops after the host stage; LCM finishes while it is down. The restarted one reads the
    ``ns``/instantiated it missed (its group's offsets), attests the VNFs, and terminates exactly once."""
    vim = await world.osm.sim.add_vim_account("vim-a")
    hosts = await _hosts(world, vim)
    bad = world.vnf("1")
    await world.vnf_policy()
    bad.host.execute("/usr/bin/backdoor", b"not in the image")
    first = await world.trustmgr("enforce", driver="local")
    ns = await world.osm.sim.create_ns("ns-restart", vim, vnfs=_specs(hosts, ("1",)), additional_params_for_ns=LOA4)
    gate = await world.osm.gate_doc(ns.nslcmop_id, status="decided", timeout=30)
    assert gate["actions"] == {"vnfs": "todo"} and "lcm_state" not in gate
    await first.stop()
    world.managers.remove(first)
    assert (await world.osm.sim.wait_operation(ns.nslcmop_id, timeout=30))["operationState"] == "COMPLETED"
    second = await world.trustmgr("enforce", driver="local")
    await second.gate.resume()  # what the service does at start, besides consuming what it missed
    gate = await world.osm.gate_doc(ns.nslcmop_id, timeout=90)
    assert gate["decision"] == "reject" and gate["actions"] == {"vnfs": "done", "terminate": "done"}
    assert any("/usr/bin/backdoor" in r for r in gate["reasons"])
    await poll(lambda: world.osm.trust_gate_messages(ns.nslcmop_id, wait=0.5), lambda m: len(m) >= 2, 20)
    assert len(world.osm.nbi_calls("terminate", ns.nsr_id)) == 1
    assert [m["stage"] for m in await world.osm.trust_gate_messages(ns.nslcmop_id)] == ["hosts", "vnfs"]


async def test_heal_remediation_asks_nbi_to_heal_the_vnf(world: VnfWorld) -> None:
    tm, ns, vnf = await _monitored_ns(world, "heal", 0.2)
    vnf.host.execute("/usr/sbin/'odd\"name", b"quotes in the reason must not break NBI's schema")
    await poll(lambda: tm.monitor.run_cycle(), lambda n: n == 1, 10)
    [lost] = [v for k, v in await _trust(world) if k == "trust_lost"]
    assert lost["remediation"] == "heal" and lost["remediation_result"].startswith("heal requested"), lost
    assert len(world.osm.nbi_calls("heal", ns.nsr_id)) == 1
    heal_op = lost["remediation_result"].split("nslcmop ")[1].rstrip(")")
    op = await world.osm.sim.wait_operation(heal_op, timeout=30)
    assert op["lcmOperationType"] == "heal" and op["operationState"] == "COMPLETED"
    [item] = op["operationParams"]["healVnfData"]
    assert item["vnfInstanceId"] == ns.vnfr_ids["1"] and item["additionalParams"] == {"run-day1": True}
    assert "LoA 3 < 4" in item["cause"] and not world.osm.nbi_calls("terminate", ns.nsr_id)
    # LCM's ns/healed: the redeployed VNF has a new vTPM, so it is enrolled again and attested at once
    store = VnfStore(tm.store.db)
    healed = await poll(lambda: store.get(ns.vnfr_ids["1"]), lambda r: r.healing_op is None and r.state == "new", 20)
    assert healed.reason == f"healed by {heal_op}" and healed.verifier_state is None
    assert await tm.store.get_identity(f"vnf:{ns.vnfr_ids['1']}") is None
    assert await tm.monitor.run_cycle() == 1  # due at once
    assert await tm.store.get_identity(f"vnf:{ns.vnfr_ids['1']}") is not None


async def test_a_vnf_without_the_charm_fails_unless_its_vnfd_is_exempt(world: VnfWorld) -> None:
    from osm_trustmgr.hosts import utcnow
    from osm_trustmgr.store.gates import GateStore

    vim = await world.osm.sim.add_vim_account("vim-a")
    hosts = await _hosts(world, vim)
    world.vnf("1")
    world.vnf("3")  # the second NS's charmed VNF: a VM (and vTPM) of its own
    await world.vnf_policy()
    tm = await world.trustmgr("audit", driver="local")
    params = {"trust_vnf_loa": 4}

    def specs(charmed: str, plain: str) -> list[VnfSpec]:
        return [VnfSpec(charmed, hosts={"mgmtVM": hosts[0]}), VnfSpec(plain, vnfd_id="plain-vnf", charm=None, day1={})]

    async def instantiate(name: str, vnfs: list[VnfSpec], nsd_id: str) -> dict:  # type: ignore[type-arg]
        ns = await world.osm.sim.create_ns(name, vim, vnfs=vnfs, nsd_id=nsd_id, additional_params_for_ns=params)
        return await world.osm.gate_doc(ns.nslcmop_id, timeout=90)  # type: ignore[no-any-return]

    first = specs("1", "2")
    gate = await instantiate("ns-plain-1", first, await world.osm.sim.onboard(first))
    assert gate["decision"] == "reject"
    assert any("VNF 2" in r and "no trust-proxy charm" in r for r in gate["reasons"]), gate["reasons"]
    second = specs("3", "4")
    nsd_id = await world.osm.sim.onboard(second)
    await GateStore(tm.store.db).set_nsd_policy(nsd_id, 0, utcnow(), exempt_vnfds=["plain-vnf"])
    gate = await instantiate("ns-plain-2", second, nsd_id)
    assert gate["decision"] == "accept", gate["reasons"]
    by_member = {v["member_vnf_index"]: v for v in gate["vnfs"]}
    assert by_member["4"]["exempt"] and by_member["4"]["trusted"] and by_member["3"]["loa"] == 5
    assert gate["achieved_vnf_loa"] == 5
