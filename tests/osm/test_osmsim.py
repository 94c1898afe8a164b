"""The OSM simulator's own contract: OSM-shaped documents and messages, LCM's timing, cancel and placement.

Runs on the in-process bus (LocalBus) and SecantusDB (or MONGO_URI); the Kafka path is covered by test_nbi.py.
Each expectation comes from OSM's code as cited in osm_trustmgr/sandbox/osmsim*.py.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import yaml

from osm_trustmgr.bus.local import LocalBus
from osm_trustmgr.sandbox.osmsim import ActionRequest, ActionResult, OsmSimulator, SimUser, VnfSpec


async def wait_for(predicate: Callable[[], Any], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


def start_sim(mongo_uri: str, mongo_db: str, bus: LocalBus, **options: Any) -> Any:
    defaults: dict[str, Any] = {"token_delay": 0.0, "lcm_delay": 0.05, "pla_poll_interval": 0.05, "pla_timeout": 2.0}
    return OsmSimulator.start(mongo_uri, mongo_db, bus, **{**defaults, **options})


def http(sim: OsmSimulator) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=sim.nbi_url, headers={"Accept": "application/json"})


async def login(client: httpx.AsyncClient, user: str = "admin", password: str = "admin") -> dict[str, str]:
    answer = await client.post("/admin/v1/tokens", json={"username": user, "password": password})
    assert answer.status_code == 200, answer.text
    return {"Authorization": f"Bearer {answer.json()['id']}"}


async def test_create_ns_writes_osm_documents_and_announces_instantiate(mongo_uri: str, mongo_db: str, local_bus):
    bus, tap = local_bus
    async with start_sim(mongo_uri, mongo_db, bus, lcm_delay=0.3) as sim:
        vim_a, vim_b = await sim.add_vim_account("vim-a"), await sim.add_vim_account("vim-b")
        vnfs = (VnfSpec("1", hosts={"mgmtVM": "compute-1"}), VnfSpec("2", vim_account_id=vim_b))
        ns = await sim.create_ns(
            "ns1",
            vim_a,
            vnfs=vnfs,
            additional_params_for_ns={"trust_loa": 3, "trust_opts": {"a": 1}},
            additional_params_for_vnf={"2": {"trust_loa": 4}},
        )
        message = await tap.wait("ns", "instantiate", _id=ns.nslcmop_id)
        # NBI announces the nslcmop as created: PROCESSING, the request, SOL005 links, project scope
        assert message["operationState"] == "PROCESSING" and message["lcmOperationType"] == "instantiate"
        assert message["nsInstanceId"] == ns.nsr_id and message["isCancelPending"] is False
        params = message["operationParams"]
        assert params["nsName"] == "ns1" and params["vimAccountId"] == vim_a and params["nsdId"] == ns.nsd_id
        assert params["vnf"] == [{"member-vnf-index": "2", "vimAccountId": vim_b}]
        assert params["additionalParamsForNs"] == {"trust_loa": 3, "trust_opts": {"a": 1}}
        assert json.loads(params["additionalParamsForVnf"]) == [
            {"member-vnf-index": "2", "additionalParams": {"trust_loa": 4}}
        ]  # NsLcmOpTopic.new stores it as JSON text
        admin_project = sim.auth.project_id("admin")
        assert message["_admin"]["projects_read"] == [admin_project] == message["_admin"]["projects_write"]
        assert message["links"]["self"] == f"/osm/nslcm/v1/ns_lcm_op_occs/{ns.nslcmop_id}"
        # the VIM of every VNF is in MongoDB before LCM starts (NsLcmOpTopic._update_vnfrs)
        vnfrs = {v["member-vnf-index-ref"]: v for v in await sim.db.get_list("vnfrs", {"nsr-id-ref": ns.nsr_id})}
        assert vnfrs["1"]["vim-account-id"] == vim_a and vnfrs["2"]["vim-account-id"] == vim_b
        assert vnfrs["1"]["vnfd-ref"] == "trust-vnf" and vnfrs["1"]["_admin"]["projects_read"] == [admin_project]
        assert vnfrs["2"]["additionalParamsForVnf"] == {"trust_loa": 4}
        nsr = await sim.db.get_one("nsrs", {"_id": ns.nsr_id})
        assert nsr is not None and nsr["nsd-id"] == ns.nsd_id and nsr["datacenter"] == vim_a
        assert nsr["additionalParamsForNs"] == {"trust_loa": 3, "trust_opts": "!!yaml a: 1\n"}
        assert sorted(nsr["constituent-vnfr-ref"]) == sorted(ns.vnfr_ids.values())
        assert nsr["nsd"]["id"] == nsr["nsd-ref"] and nsr["_admin"]["projects_write"] == [admin_project]
        assert await sim.db.get_one("nsds", {"_id": ns.nsd_id}) is not None


async def test_lcm_deploys_after_the_delay_then_announces_instantiated(mongo_uri: str, mongo_db: str, local_bus):
    bus, tap = local_bus
    async with start_sim(mongo_uri, mongo_db, bus, lcm_delay=0.4) as sim:
        vim = await sim.add_vim_account("vim-a")
        started = time.monotonic()
        ns = await sim.create_ns("ns1", vim, vnfs=(VnfSpec("1", hosts={"mgmtVM": "compute-7"}),))
        await wait_for(lambda: _state(sim, "nsrs", ns.nsr_id, "nsState", "BUILDING"))
        done = await tap.wait("ns", "instantiated", nslcmop_id=ns.nslcmop_id)
        assert time.monotonic() - started >= 0.4
        assert done["nsr_id"] == ns.nsr_id and done["operationState"] == "COMPLETED"
        assert done["operationParams"] == {"nsInstanceId": ns.nsr_id, "nsdId": ns.nsd_id}
        op = await sim.wait_operation(ns.nslcmop_id)
        assert op["operationState"] == "COMPLETED" and op["detailed-status"] == "Done"
        nsr = await sim.db.get_one("nsrs", {"_id": ns.nsr_id})
        assert nsr is not None and nsr["nsState"] == "READY" and nsr["_admin"]["nsState"] == "INSTANTIATED"
        (vca,) = nsr["_admin"]["deployed"]["VCA"]
        assert vca["member-vnf-index"] == "1" and vca["type"] == "lxc_proxy_charm" and vca["ee_id"]
        vnfr = await sim.db.get_one("vnfrs", {"_id": ns.vnfr_ids["1"]})
        assert vnfr is not None and vnfr["ip-address"] and vnfr["_admin"]["nsState"] == "INSTANTIATED"
        info = vnfr["vdur"][0]["vim_info"][f"vim:{vim}"]
        assert yaml.safe_load(info["vim_details"])["OS-EXT-SRV-ATTR:host"] == "compute-7"


async def _state(sim: OsmSimulator, table: str, _id: str, key: str, value: str) -> bool:
    doc = await sim.db.get_one(table, {"_id": _id})
    return doc is not None and doc.get(key) == value


async def test_deploy_error_fails_the_instantiation(mongo_uri: str, mongo_db: str, local_bus):
    bus, tap = local_bus
    async with start_sim(mongo_uri, mongo_db, bus) as sim:
        ns = await sim.create_ns("ns1", await sim.add_vim_account("v"), deploy_error="day-1 primitive attest failed")
        done = await tap.wait("ns", "instantiated", nslcmop_id=ns.nslcmop_id)
        assert done["operationState"] == "FAILED"
        op = await sim.wait_operation(ns.nslcmop_id)
        assert op["detailed-status"] == "day-1 primitive attest failed" and "Detail:" in op["errorMessage"]
        assert await _state(sim, "nsrs", ns.nsr_id, "nsState", "BROKEN")


async def test_cancel_ends_failed_temp(mongo_uri: str, mongo_db: str, local_bus):
    bus, tap = local_bus
    async with start_sim(mongo_uri, mongo_db, bus, lcm_delay=5.0) as sim, http(sim) as client:
        ns = await sim.create_ns("ns1", await sim.add_vim_account("v"))
        auth = await login(client)
        await wait_for(lambda: _state(sim, "nsrs", ns.nsr_id, "nsState", "BUILDING"))
        path = f"/nslcm/v1/ns_lcm_op_occs/{ns.nslcmop_id}/cancel"
        answer = await client.post(path, json={"cancelMode": "GRACEFUL"}, headers=auth)
        assert answer.status_code == 202 and answer.content == b""
        cancel = await tap.wait("nslcmops", "cancel", _id=ns.nslcmop_id)
        assert cancel == {"_id": ns.nslcmop_id, "nsInstanceId": ns.nsr_id, "cancelMode": "GRACEFUL"}
        # the cancelled task announces FAILED; LCM's cancel handler then marks the record FAILED_TEMP
        assert (await tap.wait("ns", "instantiated", nslcmop_id=ns.nslcmop_id))["operationState"] == "FAILED"
        op = await sim.wait_operation(ns.nslcmop_id, states=("FAILED_TEMP",))
        assert op["isCancelPending"] is False and "cancelMode" not in op
        assert await _state(sim, "nsrs", ns.nsr_id, "nsState", "BROKEN")
        again = await client.post(path, json={"cancelMode": "FORCEFUL"}, headers=auth)
        assert again.status_code == 409
        assert again.json() == {
            "code": "CONFLICT",
            "status": 409,
            "detail": "Operation is not in STARTING, PROCESSING or ROLLING_BACK state",
        }
        bad = await client.post(path, json={"cancelMode": "NOW"}, headers=auth)
        assert bad.status_code == 422 and bad.json()["code"] == "UNPROCESSABLE_ENTITY"


async def test_placement_answer_sets_the_vims(mongo_uri: str, mongo_db: str, local_bus):
    bus, tap = local_bus
    async with start_sim(mongo_uri, mongo_db, bus) as sim:
        vim_a, vim_b = await sim.add_vim_account("vim-a"), await sim.add_vim_account("vim-b")
        ns = await sim.create_ns("ns1", vim_a, vnfs=(VnfSpec("1"), VnfSpec("2")), placement_engine="PLA")
        instantiate = await tap.wait("ns", "instantiate", _id=ns.nslcmop_id)
        assert sorted(instantiate["operationParams"]["validVimAccounts"]) == sorted([vim_a, vim_b])
        assert await tap.wait("pla", "get_placement", nslcmopId=ns.nslcmop_id) == {"nslcmopId": ns.nslcmop_id}
        placement = {"vnf": [{"member-vnf-index": "2", "vimAccountId": vim_b}], "nslcmopId": ns.nslcmop_id}
        await bus.publish("pla", "placement", {"placement": placement})
        op = await sim.wait_operation(ns.nslcmop_id)
        assert op["operationState"] == "COMPLETED" and op["_admin"]["pla"] == placement
        vnfrs = {v["member-vnf-index-ref"]: v for v in await sim.db.get_list("vnfrs", {"nsr-id-ref": ns.nsr_id})}
        assert vnfrs["1"]["vim-account-id"] == vim_a and vnfrs["2"]["vim-account-id"] == vim_b
        assert f"vim:{vim_b}" in vnfrs["2"]["vdur"][0]["vim_info"]


async def test_no_placement_answer_fails_after_the_timeout(mongo_uri: str, mongo_db: str, local_bus):
    bus, tap = local_bus
    async with start_sim(mongo_uri, mongo_db, bus, pla_timeout=0.3, pla_poll_interval=0.1) as sim:
        ns = await sim.create_ns("ns1", await sim.add_vim_account("v"), placement_engine="PLA")
        started = time.monotonic()
        done = await tap.wait("ns", "instantiated", nslcmop_id=ns.nslcmop_id)
        assert done["operationState"] == "FAILED" and time.monotonic() - started >= 0.3
        op = await sim.wait_operation(ns.nslcmop_id)
        assert op["detailed-status"] == f"Placement timeout for nslcmopId={ns.nslcmop_id}"


async def test_terminate_and_autoremove(mongo_uri: str, mongo_db: str, local_bus):
    bus, tap = local_bus
    async with start_sim(mongo_uri, mongo_db, bus) as sim, http(sim) as client:
        vim = await sim.add_vim_account("v")
        ns1, ns2 = await sim.create_ns("ns1", vim), await sim.create_ns("ns2", vim)
        await sim.wait_operation(ns1.nslcmop_id)
        await sim.wait_operation(ns2.nslcmop_id)
        auth = await login(client)
        answer = await client.post(f"/nslcm/v1/ns_instances/{ns1.nsr_id}/terminate", json={}, headers=auth)
        assert answer.status_code == 202 and answer.json()["nsName"] == "ns1"
        op_id = answer.json()["id"]
        assert answer.headers["location"] == f"/osm/nslcm/v1/ns_lcm_op_occs/{op_id}"
        done = await tap.wait("ns", "terminated", nslcmop_id=op_id)
        assert done == {"nsr_id": ns1.nsr_id, "nslcmop_id": op_id, "operationState": "COMPLETED", "autoremove": False}
        nsr = await sim.db.get_one("nsrs", {"_id": ns1.nsr_id})
        assert nsr is not None and nsr["nsState"] == "NOT_INSTANTIATED"
        assert nsr["_admin"]["nsState"] == "NOT_INSTANTIATED"
        again = await client.post(f"/nslcm/v1/ns_instances/{ns1.nsr_id}/terminate", json={}, headers=auth)
        assert again.status_code == 409 and "not instantiated" in again.json()["detail"]
        answer = await client.post(
            f"/nslcm/v1/ns_instances/{ns2.nsr_id}/terminate", json={"autoremove": True}, headers=auth
        )
        await tap.wait("ns", "deleted", _id=ns2.nsr_id)  # NBI's subscription thread removes it
        assert await sim.db.get_one("nsrs", {"_id": ns2.nsr_id}) is None
        assert await sim.db.get_list("vnfrs", {"nsr-id-ref": ns2.nsr_id}) == []


async def test_action_result_and_nbi_checks(mongo_uri: str, mongo_db: str, local_bus):
    bus, tap = local_bus

    async def charm(request: ActionRequest) -> ActionResult:
        if request.day1:  # the VNFD's day-1 config primitive, during the instantiation
            return "COMPLETED", "CONFIG OK"
        if request.params.get("nonce") == "bad":
            return "FAILED", "charm error: quote failed"
        return "COMPLETED", {"quote": f"signed({request.params['nonce']})", "member": request.member_vnf_index}

    async with start_sim(mongo_uri, mongo_db, bus, action_handler=charm) as sim, http(sim) as client:
        vim = await sim.add_vim_account("v")
        ns = await sim.create_ns("ns1", vim)
        auth = await login(client)
        path = f"/nslcm/v1/ns_instances/{ns.nsr_id}/action"
        body = {"member_vnf_index": "1", "primitive": "attest", "primitive_params": {"nonce": "n1"}}
        early = await client.post(path, json=body, headers=auth)
        assert early.status_code == 409  # NsLcmOpTopic.new: not instantiated yet
        await sim.wait_operation(ns.nslcmop_id)
        answer = await client.post(path, json=body, headers=auth)
        assert answer.status_code == 202
        op_id = answer.json()["id"]
        sent = await tap.wait("ns", "action", _id=op_id)
        assert json.loads(sent["operationParams"]["primitive_params"]) == {"nonce": "n1"}
        assert await tap.wait("ns", "actioned", nslcmop_id=op_id) == {
            "nsr_id": ns.nsr_id,
            "nslcmop_id": op_id,
            "operationState": "COMPLETED",
        }
        op = await sim.wait_operation(op_id)
        assert op["detailed-status"] == {"quote": "signed(n1)", "member": "1"}
        failed = await client.post(path, json={**body, "primitive_params": {"nonce": "bad"}}, headers=auth)
        op = await sim.wait_operation(failed.json()["id"])
        assert op["operationState"] == "FAILED" and op["detailed-status"] == "charm error: quote failed"
        for wrong, text in (
            ({**body, "primitive": "reboot"}, "Invalid primitive 'reboot'"),
            ({**body, "member_vnf_index": "9"}, "member_vnf_index='9'"),
            ({**body, "primitive_params": {"nonce": "n1", "colour": "red"}}, "parameter/s '['colour']'"),
            ({**body, "primitive_params": {}}, "Needed parameter nonce not provided for primitive 'attest'"),
            ({**body, "vdu_id": "nope"}, "vdu_id='nope'"),
        ):
            refused = await client.post(path, json=wrong, headers=auth)
            assert refused.status_code == 400 and text in refused.json()["detail"], refused.text
        missing = await client.post(path, json={"member_vnf_index": "1", "primitive": "attest"}, headers=auth)
        assert missing.status_code == 422


async def test_rest_auth_scope_and_formats(mongo_uri: str, mongo_db: str, local_bus):
    bus, _ = local_bus
    users = (SimUser("admin", "admin"), SimUser("alice", "pw", projects=("tenant",), roles=("project_admin",)))
    async with start_sim(mongo_uri, mongo_db, bus, users=users) as sim, http(sim) as client:
        ns = await sim.create_ns("ns1", await sim.add_vim_account("v"))
        cancel = f"/nslcm/v1/ns_lcm_op_occs/{ns.nslcmop_id}/cancel"
        anonymous = await client.post(cancel, json={"cancelMode": "FORCEFUL"})
        assert anonymous.status_code == 401 and anonymous.json()["code"] == "UNAUTHORIZED"
        assert anonymous.headers["www-authenticate"].startswith("Bearer realm=")
        wrong = await client.post("/admin/v1/tokens", json={"username": "alice", "password": "nope"})
        assert wrong.json() == {"code": "UNAUTHORIZED", "status": 401, "detail": "Invalid username/password"}
        alice = await login(client, "alice", "pw")
        hidden = await client.get(f"/nslcm/v1/ns_lcm_op_occs/{ns.nslcmop_id}", headers=alice)
        assert hidden.status_code == 404 and hidden.json()["detail"].startswith("database exception Not found")
        not_admin = await client.get(f"/nslcm/v1/ns_lcm_op_occs/{ns.nslcmop_id}?ADMIN=true", headers=alice)
        assert not_admin.status_code == 401
        unknown = await client.get("/nslcm/v1/whatever", headers=alice)
        assert unknown.status_code == 405  # Server._check_valid_url_method
        yaml_answer = await client.get("/admin/v1/tokens", headers={**alice, "Accept": "*/*"})
        assert yaml_answer.headers["content-type"].startswith("application/yaml")
        assert yaml_answer.text.startswith("---") and yaml.safe_load(yaml_answer.text)[0]["username"] == "alice"
        yaml_body = await client.post(
            "/admin/v1/tokens",
            content=b"username: alice\npassword: pw\n",
            headers={"Content-Type": "application/yaml"},
        )
        assert yaml_body.status_code == 200 and yaml_body.json()["project_name"] == "tenant"
        assert yaml_body.json()["admin"] is False
    assert [c.status for c in sim.calls][:2] == [401, 401]


async def test_stop_ends_everything(mongo_uri: str, mongo_db: str, local_bus):
    bus, tap = local_bus
    before = {t for t in asyncio.all_tasks() if not t.done()}
    sim = await start_sim(mongo_uri, mongo_db, bus, lcm_delay=30.0)
    ns = await sim.create_ns(f"ns-{uuid.uuid4().hex[:6]}", await sim.add_vim_account("v"))
    await tap.wait("ns", "instantiate", _id=ns.nslcmop_id)
    await asyncio.sleep(0.1)
    url = sim.nbi_url
    await sim.stop()
    await sim.stop()  # idempotent
    leftover = {t for t in asyncio.all_tasks() if not t.done()} - before - {asyncio.current_task()}
    assert not leftover, leftover
    assert not tap.find("ns", "instantiated", nslcmop_id=ns.nslcmop_id)  # LCM going down announces nothing
    with pytest.raises(httpx.ConnectError):
        async with httpx.AsyncClient() as client:
            await client.get(url + "/admin/v1/tokens")
