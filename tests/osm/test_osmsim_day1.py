"""The OSM simulator's VCA: day-1 initial-config-primitives after deployment and parameter mapping for day-2
actions, as OSM's LCM does them (osm_trustmgr/sandbox/osmsim_vca.py cites the OSM code), with a recording VCA
and with a real charm (tests/evidence/charms/fake-trust-proxy) run by charm_action_handler."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from osm_trustmgr.evidence.charm_local import CharmRunner
from osm_trustmgr.sandbox.osmsim import ActionRequest, ActionResult, VnfSpec, charm_action_handler
from osm_trustmgr.sandbox.osmsim_vca import LcmException, map_primitive_params
from tests.evidence.conftest import FAKE_CHARM

from .test_osmsim import http, login, start_sim

STRICT = {
    "config": {"ssh-hostname": "<rw_mgmt_ip>", "ssh-username": "ubuntu", "ssh-port": 2222},
    "attest": {"trustmgr-url": "<trustmgr_url>", "osm-params": "<OSM>"},
}
TM_URL = "http://127.0.0.1:9/osm/trust/v1"


class Recorder:
    def __init__(self, fail: str | None = None) -> None:
        self.requests: list[ActionRequest] = []
        self.fail = fail

    async def __call__(self, request: ActionRequest) -> ActionResult:
        self.requests.append(request)
        if request.primitive == self.fail:
            return "FAILED", f"Error executing primitive {request.primitive} in ee={request.ee_id}: failed: nope"
        return "COMPLETED", "CONFIG OK" if request.primitive == "config" else {"done": request.primitive}


async def test_day1_primitives_run_in_order_with_osm_parameters(mongo_uri: str, mongo_db: str, local_bus):
    bus, tap = local_bus
    vca = Recorder()
    async with start_sim(mongo_uri, mongo_db, bus, action_handler=vca) as sim, http(sim) as client:
        vim = await sim.add_vim_account("vim-a")
        spec = VnfSpec("1", vnfd_id="strict-vnf", day1=STRICT)
        params = {"1": {"trustmgr_url": TM_URL, "extra": {"a": 1}}}
        ns = await sim.create_ns("ns1", vim, vnfs=(spec, VnfSpec("2")), additional_params_for_vnf=params)
        done = await tap.wait("ns", "instantiated", nslcmop_id=ns.nslcmop_id)
        assert done["operationState"] == "COMPLETED"
        vnfr = await sim.db.get_one("vnfrs", {"_id": ns.vnfr_ids["1"]})
        nsr = await sim.db.get_one("nsrs", {"_id": ns.nsr_id})
        assert vnfr is not None and nsr is not None
        ee_id = next(v["ee_id"] for v in nsr["_admin"]["deployed"]["VCA"] if v["member-vnf-index"] == "1")
        config, attest = [r for r in vca.requests if r.member_vnf_index == "1"]
        (config2,) = [r for r in vca.requests if r.member_vnf_index == "2"]  # the default VNFD: day-1 config
        assert config2.params == {"ssh-hostname": "10.0.2.10", "ssh-username": "ubuntu", "ssh-password": "osm4u"}
        assert [config.primitive, attest.primitive] == ["config", "attest"] and config.day1 and attest.day1
        assert (config.ee_id, config.vnfr_id, config.member_vnf_index) == (ee_id, vnfr["_id"], "1")
        # <rw_mgmt_ip> is the VNF's management address; INTEGER parameters become ints
        assert config.params == {"ssh-hostname": vnfr["ip-address"], "ssh-username": "ubuntu", "ssh-port": 2222}
        assert vnfr["ip-address"] == "10.0.1.10"
        # <trustmgr_url> from additionalParamsForVnf; <OSM> is get_osm_params(vnfr) as flow-style YAML
        assert attest.params["trustmgr-url"] == TM_URL
        osm = yaml.safe_load(attest.params["osm-params"])
        assert attest.params["osm-params"].startswith("{") and osm["vnf_id"] == vnfr["_id"]
        assert (osm["ns_id"], osm["member_vnf_index"], osm["vnfd_ref"]) == (ns.nsr_id, "1", "strict-vnf")
        assert osm["vim_account_id"] == vim and osm["vdu"]["mgmtVM-0"]["vdu_id"] == "mgmtVM"
        # day-2: the descriptor's defaults and types are applied before the VCA sees the parameters
        answer = await client.post(f"/nslcm/v1/ns_instances/{ns.nsr_id}/action", headers=await login(client),
                                   json={"member_vnf_index": "1", "primitive": "attest",
                                         "primitive_params": {"nonce": "00ff"}})  # fmt: skip
        op = await sim.wait_operation(answer.json()["id"])
        assert op["operationState"] == "COMPLETED" and op["detailed-status"] == {"done": "attest"}
        day2 = vca.requests[-1]
        assert not day2.day1 and day2.ee_id == ee_id and day2.vnfr_id == vnfr["_id"]
        assert day2.params == {"nonce": "00ff", "pcrs": "sha256:0-10", "ima-offset": 0}


async def test_a_failing_day1_primitive_fails_the_instantiation(mongo_uri: str, mongo_db: str, local_bus):
    bus, tap = local_bus
    vca = Recorder(fail="attest")
    async with start_sim(mongo_uri, mongo_db, bus, action_handler=vca) as sim:
        spec = VnfSpec("1", vnfd_id="strict-vnf", day1=STRICT)
        ns = await sim.create_ns("ns1", await sim.add_vim_account("v"), vnfs=(spec,),
                                 additional_params_for_vnf={"1": {"trustmgr_url": TM_URL}})  # fmt: skip
        done = await tap.wait("ns", "instantiated", nslcmop_id=ns.nslcmop_id)
        assert done["operationState"] == "FAILED"
        op = await sim.wait_operation(ns.nslcmop_id)
        attest = vca.requests[-1]
        detail = (
            f"Deploying VCA 1.: execute primitive 'attest' params '{attest.params}'. "
            "<class 'osm_lcm.n2vc.exceptions.N2VCExecutionException'> Error executing primitive attest failed: "
            f"Error executing primitive attest in ee={attest.ee_id}: failed: nope"
        )
        assert op["detailed-status"] == detail
        assert op["errorMessage"] == f"Stage 4/5: running Day-1 primitives for VNF. Detail: {detail}"
        nsr = await sim.db.get_one("nsrs", {"_id": ns.nsr_id})
        assert nsr is not None and nsr["nsState"] == "BROKEN" and nsr["config-status"] == "failed"
        assert nsr["errorDescription"] == f"Operation: INSTANTIATING.{ns.nslcmop_id}, Stage 4/5: running Day-1 " \
            "primitives for VNF."  # fmt: skip


async def test_a_missing_instantiation_parameter_fails_before_the_primitive_runs(
    mongo_uri: str, mongo_db: str, local_bus
):
    bus, _ = local_bus
    vca = Recorder()
    async with start_sim(mongo_uri, mongo_db, bus, action_handler=vca) as sim:
        spec = VnfSpec("1", vnfd_id="strict-vnf", day1=STRICT)
        ns = await sim.create_ns("ns1", await sim.add_vim_account("v"), vnfs=(spec,))  # no trustmgr_url given
        op = await sim.wait_operation(ns.nslcmop_id)
        assert op["operationState"] == "FAILED"
        assert op["detailed-status"] == (
            "Deploying VCA 1.: execute initial config primitive. "
            "Parameter <trustmgr_url> needed to execute primitive attest not provided"
        )
        assert [r.primitive for r in vca.requests] == ["config"]  # the primitives before it did run


def test_map_primitive_params_types_and_defaults():
    prim = {"name": "p", "parameter": [
        {"name": "n", "data-type": "INTEGER", "value": "<count>"},
        {"name": "b", "data-type": "BOOLEAN", "default-value": "FALSE"},
        {"name": "t", "data-type": "BOOLEAN", "value": "yes"},
        {"name": "y", "data-type": "STRING", "value": "<doc>"},
        {"name": "s", "data-type": "STRING", "value": "!!yaml x: 1"},
        {"name": "given", "data-type": "STRING"},
    ]}  # fmt: skip
    out = map_primitive_params(prim, {"given": "g"}, {"count": "7", "doc": {"k": [1, 2]}})
    assert out == {"n": 7, "b": False, "t": True, "y": "{k: [1, 2]}\n", "s": "x: 1", "given": "g"}
    with pytest.raises(LcmException, match="Parameter n of primitive p must be integer"):
        map_primitive_params(prim, {"given": "g"}, {"count": "seven", "doc": ""})
    with pytest.raises(LcmException, match="Parameter given needed to execute primitive p not provided"):
        map_primitive_params(prim, {}, {"count": "1", "doc": ""})


async def test_strict_attest_with_a_real_charm(mongo_uri: str, mongo_db: str, local_bus):
    """The fake trust-proxy charm through charm_action_handler: config (with the loopback override), then a
    strict attest that the charm fails — the Trust Manager's rejection ends up in LCM's error text."""
    bus, tap = local_bus
    runner = CharmRunner(FAKE_CHARM)
    seen: list[ActionRequest] = []

    def loopback(request: ActionRequest) -> dict[str, Any]:
        seen.append(request)
        return {"ssh-hostname": "127.0.0.1"}

    handler = charm_action_handler(runner, config_overrides=loopback)
    try:
        async with start_sim(mongo_uri, mongo_db, bus, action_handler=handler) as sim:
            vim = await sim.add_vim_account("v")
            accepted = await sim.create_ns("ok", vim, vnfs=(VnfSpec("1", vnfd_id="strict-vnf", day1=STRICT),),
                                           additional_params_for_vnf={"1": {"trustmgr_url": TM_URL}})  # fmt: skip
            assert (await sim.wait_operation(accepted.nslcmop_id))["operationState"] == "COMPLETED"
            ee_id = seen[0].ee_id
            assert ee_id is not None
            assert runner.config(ee_id) == {"ssh-hostname": "127.0.0.1", "ssh-username": "ubuntu", "ssh-port": 2222}
            reject = {"1": {"trustmgr_url": TM_URL + "/reject"}}
            rejected = await sim.create_ns("bad", vim, vnfs=(VnfSpec("1", vnfd_id="strict-vnf", day1=STRICT),),
                                           additional_params_for_vnf=reject)  # fmt: skip
            op = await sim.wait_operation(rejected.nslcmop_id)
            assert op["operationState"] == "FAILED"
            vnf_id = rejected.vnfr_ids["1"]
            assert op["detailed-status"].startswith("Deploying VCA 1.: execute primitive 'attest' params '")
            assert op["detailed-status"].endswith(f": failed: Trust Manager rejected VNF {vnf_id}: loa 0 < 4")
            done = await tap.wait("ns", "instantiated", nslcmop_id=rejected.nslcmop_id)
            assert done["operationState"] == "FAILED"
    finally:
        runner.close()


@pytest.mark.parametrize("strict_verify", [False, True])
async def test_config_with_bad_credentials(mongo_uri: str, mongo_db: str, local_bus, strict_verify: bool):
    """N2VC answers CONFIG OK even when verify-ssh-credentials keeps failing (the next primitive fails);
    ``strict_verify`` fails the config primitive itself."""
    bus, _ = local_bus
    runner = CharmRunner(FAKE_CHARM)
    handler = charm_action_handler(runner, config_overrides=lambda r: {"ssh-hostname": "unreachable"},
                                   strict_verify=strict_verify)  # fmt: skip
    try:
        async with start_sim(mongo_uri, mongo_db, bus, action_handler=handler) as sim:
            ns = await sim.create_ns("ns1", await sim.add_vim_account("v"),
                                     vnfs=(VnfSpec("1", vnfd_id="strict-vnf", day1=STRICT),),
                                     additional_params_for_vnf={"1": {"trustmgr_url": TM_URL}})  # fmt: skip
            op = await sim.wait_operation(ns.nslcmop_id)
            nsr = await sim.db.get_one("nsrs", {"_id": ns.nsr_id})
            assert nsr is not None and op["operationState"] == "FAILED"
            ee_id = nsr["_admin"]["deployed"]["VCA"][0]["ee_id"]
            if strict_verify:
                assert "execute primitive 'config' params" in op["detailed-status"]
                assert op["detailed-status"].endswith(
                    f"Error configuring application into ee={ee_id} : "
                    "verify-ssh-credentials failed: ssh ubuntu@unreachable: connection refused"
                )
            else:  # config passed; attest, the next primitive, is the one that fails
                assert "execute primitive 'attest' params" in op["detailed-status"]
                assert op["detailed-status"].endswith(
                    f"in ee={ee_id}: failed: No further information received from action"
                )
    finally:
        runner.close()


def test_vnfd_of_a_strict_spec():
    from osm_trustmgr.sandbox.osmsim_docs import descriptors_for

    _, (vnfd,) = descriptors_for("nsd", [VnfSpec("1", day1=STRICT)])
    (config,) = vnfd["df"][0]["lcm-operations-configuration"]["operate-vnf-op-config"]["day1-2"]
    first, second = config["initial-config-primitive"]
    assert (first["seq"], first["name"], second["seq"], second["name"]) == ("1", "config", "2", "attest")
    assert {"name": "ssh-port", "data-type": "INTEGER", "value": "2222"} in first["parameter"]
    attest = next(p for p in config["config-primitive"] if p["name"] == "attest")
    assert attest["parameter"] == [
        {"name": "nonce", "data-type": "STRING", "mandatory": True},
        {"name": "pcrs", "data-type": "STRING", "default-value": "sha256:0-10"},
        {"name": "ima-offset", "data-type": "INTEGER", "default-value": "0"},
    ]
    assert json.dumps(vnfd)  # plain data, as stored
    # the default spec configures the charm at day 1 like the project's VNFD; day1={} has no day-1 primitive
    _, (default,) = descriptors_for("nsd", [VnfSpec("1")])
    (config,) = default["df"][0]["lcm-operations-configuration"]["operate-vnf-op-config"]["day1-2"]
    assert [p["name"] for p in config["initial-config-primitive"]] == ["config"]
    _, (bare,) = descriptors_for("nsd", [VnfSpec("1", day1={})])
    assert (
        "initial-config-primitive"
        not in bare["df"][0]["lcm-operations-configuration"]["operate-vnf-op-config"]["day1-2"][0]
    )
