"""The NS gate end to end (DESIGN.md §5): OSM simulator + Tansu + SecantusDB + swtpm hosts with agents."""

from __future__ import annotations

import asyncio
import logging

import pytest
from aiokafka import AIOKafkaProducer

from osm_trustmgr.sandbox.osmsim import VnfSpec
from tests.gate.conftest import OsmWorld, poll

LOA4 = {"trust_loa": 4}


async def test_honest_hosts_accept_without_any_nbi_call(osm: OsmWorld) -> None:
    vim = await osm.sim.add_vim_account("vim-a")
    await osm.host(vim)
    await osm.host(vim)
    await osm.trustmgr("enforce")
    ns = await osm.sim.create_ns("ns-honest", vim, additional_params_for_ns=LOA4)
    gate = await osm.gate_doc(ns.nslcmop_id)
    assert gate["decision"] == "accept", gate["reasons"]
    assert (gate["required_host_loa"], gate["achieved_loa"]) == (4, 4)
    assert len(gate["hosts"]) == 2 and all(h["loa"] == 4 for h in gate["hosts"])
    op = await osm.sim.wait_operation(ns.nslcmop_id)
    assert op["operationState"] == "COMPLETED"
    assert not osm.nbi_calls("cancel", ns.nslcmop_id) and not osm.nbi_calls("terminate", ns.nsr_id)
    [message] = await osm.trust_gate_messages(ns.nslcmop_id)
    assert message["decision"] == "accept" and message["achieved_loa"] == 4 and message["nsr_id"] == ns.nsr_id


async def test_one_tampered_host_cancels_and_terminates(osm: OsmWorld) -> None:
    vim = await osm.sim.add_vim_account("vim-a")
    await osm.host(vim)
    bad = await osm.host(vim, tampered=True)
    await osm.trustmgr("enforce")
    ns = await osm.sim.create_ns("ns-tampered", vim, additional_params_for_ns=LOA4)
    gate = await osm.gate_doc(ns.nslcmop_id)
    assert gate["decision"] == "reject"
    assert any(bad.id in r and "ima.unknown_digest" in r and "/usr/local/bin/implant" in r for r in gate["reasons"])
    assert gate["actions"]["cancel"] == "done" and gate["actions"]["terminate"] == "done"
    assert len(osm.nbi_calls("cancel", ns.nslcmop_id)) == 1
    assert len(osm.nbi_calls("terminate", ns.nsr_id)) == 1
    op = await osm.sim.wait_operation(ns.nslcmop_id)
    assert op["operationState"] == "FAILED_TEMP"  # what NBI's cancel leaves (LCM: FAILED on the bus)
    [message] = await osm.trust_gate_messages(ns.nslcmop_id)
    assert message["decision"] == "reject" and bad.id in " ".join(message["reasons"])


async def test_audit_mode_records_and_publishes_only(osm: OsmWorld) -> None:
    vim = await osm.sim.add_vim_account("vim-a")
    await osm.host(vim, tampered=True)
    await osm.trustmgr("audit")
    ns = await osm.sim.create_ns("ns-audit", vim, additional_params_for_ns=LOA4)
    gate = await osm.gate_doc(ns.nslcmop_id)
    assert gate["decision"] == "reject" and gate["actions"] == {}
    assert (await osm.sim.wait_operation(ns.nslcmop_id))["operationState"] == "COMPLETED"
    assert not [c for c in osm.sim.calls if c.method == "POST" and "ns_" in c.path]
    assert [m["decision"] for m in await osm.trust_gate_messages(ns.nslcmop_id)] == ["reject"]


async def test_ns_without_loa_is_not_required(osm: OsmWorld) -> None:
    vim = await osm.sim.add_vim_account("vim-a")
    await osm.trustmgr("enforce")
    ns = await osm.sim.create_ns("ns-plain", vim)
    gate = await osm.gate_doc(ns.nslcmop_id)
    assert gate["decision"] == "not_required" and gate["actions"] == {} and gate["hosts"] == []
    assert (await osm.sim.wait_operation(ns.nslcmop_id))["operationState"] == "COMPLETED"


async def test_nsd_policy_is_enforced_when_stricter(osm: OsmWorld) -> None:
    """An NSD-bound LoA applies to an NS whose parameters ask for less (the stricter wins)."""
    from osm_trustmgr.hosts import utcnow

    vim = await osm.sim.add_vim_account("vim-a")
    await osm.host(vim, tampered=True)  # a host at LoA 3
    tm = await osm.trustmgr("enforce")
    nsd_id = await osm.sim.onboard([VnfSpec("1")])
    await tm.gate.gates.set_nsd_policy(nsd_id, 4, utcnow())
    ns = await osm.sim.create_ns("ns-nsd-policy", vim, nsd_id=nsd_id, additional_params_for_ns={"trust_loa": 2})
    gate = await osm.gate_doc(ns.nslcmop_id)
    assert (gate["decision"], gate["required_host_loa"], gate["achieved_loa"]) == ("reject", 4, 3)
    assert len(osm.nbi_calls("cancel", ns.nslcmop_id)) == 1


async def test_invalid_loa_rejects_with_reason(osm: OsmWorld) -> None:
    vim = await osm.sim.add_vim_account("vim-a")
    await osm.trustmgr("enforce")
    ns = await osm.sim.create_ns("ns-bad-loa", vim, additional_params_for_ns={"trust_loa": "high"})
    gate = await osm.gate_doc(ns.nslcmop_id)
    assert gate["decision"] == "reject" and "trust_loa" in gate["reasons"][0]
    assert len(osm.nbi_calls("cancel", ns.nslcmop_id)) == 1


async def test_placement_chooses_the_trusted_vim(osm: OsmWorld) -> None:
    untrusted = await osm.sim.add_vim_account("vim-untrusted")
    trusted = await osm.sim.add_vim_account("vim-trusted")
    await osm.host(untrusted, tampered=True)
    await osm.host(trusted)
    await osm.trustmgr("placement")
    ns = await osm.sim.create_ns("ns-pla", untrusted, vnfs=[VnfSpec("1"), VnfSpec("2")],
                                 additional_params_for_ns=LOA4, placement_engine="PLA")  # fmt: skip
    gate = await osm.gate_doc(ns.nslcmop_id, timeout=40)
    assert gate["decision"] == "accept" and gate["placement"] == {"1": trusted, "2": trusted}
    op = await osm.sim.wait_operation(ns.nslcmop_id, timeout=20)
    assert op["operationState"] == "COMPLETED"
    assert op["_admin"]["pla"]["vnf"] == [{"member-vnf-index": m, "vimAccountId": trusted} for m in ("1", "2")]


async def test_placement_without_trusted_vim_cancels(osm: OsmWorld) -> None:
    vim = await osm.sim.add_vim_account("vim-a")
    await osm.host(vim, tampered=True)
    await osm.trustmgr("placement")
    ns = await osm.sim.create_ns("ns-pla-none", vim, additional_params_for_ns=LOA4, placement_engine="PLA")
    gate = await osm.gate_doc(ns.nslcmop_id, timeout=40)
    assert gate["decision"] == "reject" and gate["placement"] is None
    assert len(osm.nbi_calls("cancel", ns.nslcmop_id)) == 1
    op = await osm.sim.wait_operation(ns.nslcmop_id, timeout=20)
    assert op["operationState"] in ("FAILED", "FAILED_TEMP") and "pla" not in op.get("_admin", {})


async def test_redelivered_instantiate_decides_once(osm: OsmWorld) -> None:
    vim = await osm.sim.add_vim_account("vim-a")
    await osm.host(vim, tampered=True)
    await osm.trustmgr("enforce")
    ns = await osm.sim.create_ns("ns-dup", vim, additional_params_for_ns=LOA4)
    first = await osm.gate_doc(ns.nslcmop_id)
    nslcmop = await osm.sim.db.get_one("nslcmops", {"_id": ns.nslcmop_id})
    assert nslcmop is not None
    await osm.sim.bus.publish("ns", "instantiate", nslcmop)  # the same message again, as a replay
    await asyncio.sleep(2)
    again = await osm.gate_doc(ns.nslcmop_id)
    assert again["decided_at"] == first["decided_at"]
    assert len(osm.nbi_calls("cancel", ns.nslcmop_id)) == 1
    assert len(await osm.trust_gate_messages(ns.nslcmop_id)) == 1


async def test_restart_mid_gate_resumes_with_exactly_one_cancel(osm: OsmWorld) -> None:
    vim = await osm.sim.add_vim_account("vim-a")
    await osm.host(vim, tampered=True)
    first = await osm.trustmgr("enforce")
    osm.sim.add_fault(r"/cancel$", 503, count=100)  # NBI failing for cancels: the gate cannot act
    ns = await osm.sim.create_ns("ns-crash", vim, additional_params_for_ns=LOA4)
    decided = await osm.gate_doc(ns.nslcmop_id, status="decided")
    assert decided["actions"]["cancel"] == "todo"
    await first.stop()  # the Trust Manager dies with the decision made and the cancel not done
    osm.sim.faults.clear()
    second = await osm.trustmgr("enforce")
    assert await second.gate.resume() == 1
    gate = await osm.gate_doc(ns.nslcmop_id)
    assert gate["decision"] == "reject" and gate["actions"]["cancel"] == "done"
    assert len(osm.nbi_calls("cancel", ns.nslcmop_id)) == 1
    assert len(await osm.trust_gate_messages(ns.nslcmop_id)) == 1


async def test_malformed_messages_are_skipped_and_the_next_is_handled(
    osm: OsmWorld, caplog: pytest.LogCaptureFixture
) -> None:
    vim = await osm.sim.add_vim_account("vim-a")
    await osm.trustmgr("enforce")
    producer = AIOKafkaProducer(bootstrap_servers=osm.broker.bootstrap, max_request_size=4 * 1024 * 1024)
    await producer.start()
    try:
        for value in (b"{unclosed: [", b"[1, 2]", b"{operationParams: {}}", b"{_id: [not, a, string]}",
                      b"x" * (2 * 1024 * 1024), b"\xff\xfe"):  # fmt: skip
            await producer.send_and_wait("ns", value, key=b"instantiate")
    finally:
        await producer.stop()
    with caplog.at_level(logging.WARNING, logger="osm_trustmgr"):
        ns = await osm.sim.create_ns("ns-after-garbage", vim)
        gate = await osm.gate_doc(ns.nslcmop_id)
    assert gate["decision"] == "not_required"
    skipped = [r for r in caplog.records if "ns" in r.getMessage() and ("skipping" in r.getMessage()
               or "undecodable" in r.getMessage() or "cannot decode" in r.getMessage())]  # fmt: skip
    assert len(skipped) >= 5, [r.getMessage() for r in caplog.records]


async def test_consumer_restart_under_load_loses_no_decision(osm: OsmWorld) -> None:
    vim = await osm.sim.add_vim_account("vim-a")
    await osm.host(vim)
    first = await osm.trustmgr("audit")
    instances = [await osm.sim.create_ns(f"ns-load-{i}", vim, additional_params_for_ns=LOA4) for i in range(6)]
    await osm.gate_doc(instances[0].nslcmop_id)
    await first.stop()  # under load: some instantiations handled, the rest still on the topic
    instances += [await osm.sim.create_ns(f"ns-load-{i}", vim, additional_params_for_ns=LOA4) for i in range(6, 10)]
    await osm.trustmgr("audit")
    for ns in instances:
        gate = await osm.gate_doc(ns.nslcmop_id, timeout=60)
        assert gate["decision"] == "accept"
    messages = [m for ns in instances for m in await osm.trust_gate_messages(ns.nslcmop_id, wait=0.5)]
    assert sorted(m["nslcmop_id"] for m in messages) == sorted(ns.nslcmop_id for ns in instances)


async def test_broker_restart_consumer_recovers(osm: OsmWorld) -> None:
    """Tansu keeps topics in memory: after its restart the running gate consumer must reconnect and handle
    new instantiations (published here by a fresh client, as NBI would after reconnecting)."""
    vim = await osm.sim.add_vim_account("vim-a")
    await osm.trustmgr("audit")
    before = await osm.sim.create_ns("ns-before", vim)
    await osm.gate_doc(before.nslcmop_id)
    osm.broker.restart()
    nslcmop = await osm.sim.db.get_one("nslcmops", {"_id": before.nslcmop_id})
    assert nslcmop is not None
    fresh = {**nslcmop, "_id": "restart-" + before.nslcmop_id}
    await osm.sim.db.create("nslcmops", fresh)
    producer = AIOKafkaProducer(bootstrap_servers=osm.broker.bootstrap)
    await producer.start()
    try:
        from osm_trustmgr.bus.codec import encode_value

        await producer.send_and_wait("ns", encode_value(fresh), key=b"instantiate")
    finally:
        await producer.stop()
    gate = await osm.gate_doc(fresh["_id"], timeout=60)
    assert gate["decision"] == "not_required"


async def test_unfinished_gate_waits_for_lcm_before_terminating(osm: OsmWorld) -> None:
    """A rejected NS is terminated only once LCM has reported the operation finished."""
    vim = await osm.sim.add_vim_account("vim-a")
    await osm.host(vim, tampered=True)
    tm = await osm.trustmgr("enforce")
    ns = await osm.sim.create_ns("ns-order", vim, additional_params_for_ns=LOA4)
    decided = await osm.gate_doc(ns.nslcmop_id, status="decided")
    assert decided["actions"]["terminate"] == "todo"
    gate = await poll(lambda: tm.gate.gates.get(ns.nslcmop_id), lambda d: d.get("status") == "done", 30)
    cancel = osm.nbi_calls("cancel", ns.nslcmop_id)[0]
    terminate = osm.nbi_calls("terminate", ns.nsr_id)[0]
    assert cancel.time < terminate.time and gate["lcm_state"]
