"""OSM's records read back through OsmRecords on a MongoDB wire server (SecantusDB, or MONGO_URI), read-only."""

from __future__ import annotations

import copy
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from osm_trustmgr.osm.messages import NsOperation, parse_osm_message
from osm_trustmgr.osm.records import (
    NSLCMOPS,
    NSRS,
    VIM_ACCOUNTS,
    VNFRS,
    OsmRecordError,
    OsmRecords,
)
from tests.osm import NSD_ID, NSLCMOP_ID, NSR_ID, PROJECT, VIM, VIM2, VIM3, nslcmop, trusted_request

OTHER_NSR = "136fcc46-c363-4d74-af14-c115fff7d80a"  # nbi-http: NS "ldap2"
VNFR_1, VNFR_2 = "88d90b0c-faff-4b9f-bccd-017f33985984", "1ca3bb1a-b29b-49fe-bed6-5f3076d77434"
ADMIN = {"created": 1566823354.37, "modified": 1566823354.37, "projects_read": [PROJECT], "projects_write": [PROJECT]}


def _vca(index: str, application: str) -> dict[str, Any]:
    # LCM ns.py NsLcm._deploy_n2vc creates the entry; instantiate_N2VC adds ee_id, model, application
    return {
        "target_element": f"vnf/{index}",
        "member-vnf-index": index,
        "vdu_id": None,
        "kdu_name": None,
        "vdu_count_index": None,
        "operational-status": "active",
        "detailed-status": "Ready!",
        "step": "ssh-public-key-obtained",
        "vnfd_id": "hackfest3charmed-vnf",
        "vdu_name": None,
        "type": "lxc_proxy_charm",
        "ee_descriptor_id": "simple-ee",
        "charm_name": "trust-proxy",
        "ee_id": f"{NSR_ID}.{application}.0",
        "model": NSR_ID,
        "application": application,
        "needed_terminate": True,
    }


NSR: dict[str, Any] = {  # NBI instance_topics.py NsrTopic.new, plus LCM's _admin.deployed
    "_id": NSR_ID,
    "id": NSR_ID,
    "name": "trusted",
    "name-ref": "trusted",
    "nsd-name-ref": "hackfest3charmed-ns",
    "nsd-ref": "hackfest3charmed-ns",
    "nsd-id": NSD_ID,
    "datacenter": VIM,
    "additionalParamsForNs": {"trust_loa": 4, "extra": "!!yaml {a: 1}\n"},
    "instantiate_params": {"nsdId": NSD_ID, "nsName": "trusted", "vimAccountId": VIM},
    "constituent-vnfr-ref": [VNFR_1, VNFR_2],
    "nsState": "INSTANTIATED",
    "operational-status": "running",
    "_admin": {**ADMIN, "nsState": "INSTANTIATED", "deployed": {"RO": {}, "K8s": [], "VCA": [_vca("1", "t-a")]}},
}


def _vnfr(vnfr_id: str, index: str, vim: str | None, nsr_id: str = NSR_ID) -> dict[str, Any]:
    # NBI NsrTopic._create_vnfr_descriptor_from_vnfd; vim-account-id from NsLcmOpTopic._update_vnfrs
    return {
        "_id": vnfr_id,
        "id": vnfr_id,
        "nsr-id-ref": nsr_id,
        "member-vnf-index-ref": index,
        "additionalParamsForVnf": {"touch_filename": f"/home/ubuntu/touch-{index}"},
        "created-time": 1566823354.36,
        "vnfd-ref": "hackfest3charmed-vnf",
        "vnfd-id": "7637bcf8-cf14-42dc-ad70-c66fcf1e6e77",
        "vim-account-id": vim,
        "vca-id": None,
        "ip-address": f"10.205.1.4{index}",
        "connection-point": [{"name": "vnf-mgmt", "id": "vnf-mgmt"}],
        "vdur": [
            {
                "_id": f"vdur-{index}",
                "vdu-id-ref": "mgmtVM",
                "count-index": 0,
                "name": f"trusted-{index}-mgmtVM-0",
                "ip-address": f"10.205.1.4{index}",
                "vim-id": "c2538499-4c30-41c0-acd5-80cb92f48061",
                "status": "ACTIVE",
                "vim_info": {f"vim:{vim}": {"vim_status": "ACTIVE", "vim_id": "c2538499"}},
                "interfaces": [{"name": "eth0", "mgmt-vnf": True, "ip-address": f"10.205.1.4{index}"}],
            }
        ],
        "_admin": {**ADMIN, "nsState": "NOT_INSTANTIATED"},
    }


def _vim(vim_id: str, name: str) -> dict[str, Any]:
    return {
        "_id": vim_id,
        "name": name,
        "vim_type": "openstack",
        "vim_url": "http://10.95.87.162:5000/v3",
        "vim_user": "osm",
        "vim_password": "5g0yGX86qIhprX86YTMcpg==",
        "vim_tenant_name": "osm",
        "config": {"admin_password": "do-not-read", "insecure": True},
        "schema_version": "1.11",
        "_admin": {**ADMIN, "operationalState": "ENABLED", "detailed-status": "Done"},
    }


def _nslcmop() -> dict[str, Any]:
    doc = nslcmop(request=trusted_request(trust_loa=4))
    doc["_admin"]["pla"] = {"vnf": [{"vimAccountId": VIM3, "member-vnf-index": "2"}], "nslcmopId": NSLCMOP_ID}
    doc["detailed-status"] = "Deploying"
    return doc


@pytest.fixture
async def db(mongo_uri: str, mongo_db: str) -> AsyncIterator[AsyncDatabase[dict[str, Any]]]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_uri, serverSelectionTimeoutMS=10000)
    database = client[mongo_db]
    await database[NSRS].insert_many([copy.deepcopy(NSR), {"_id": OTHER_NSR, "name": "ldap2", "_admin": ADMIN}])
    await database[VNFRS].insert_many(
        [_vnfr(VNFR_2, "2", VIM), _vnfr(VNFR_1, "1", VIM2), _vnfr("other-vnfr", "1", VIM3, nsr_id=OTHER_NSR)]
    )
    await database[NSLCMOPS].insert_one(_nslcmop())
    await database[VIM_ACCOUNTS].insert_many([_vim(VIM, "mylocation1"), _vim(VIM2, "vim2"), _vim(VIM3, "vim3")])
    yield database
    await client.close()


def _instantiate(request: dict[str, Any]) -> NsOperation:
    event = parse_osm_message("ns", "instantiate", nslcmop(request=request))
    assert isinstance(event, NsOperation)
    return event


async def test_nsr(db: AsyncDatabase[dict[str, Any]]) -> None:
    records = OsmRecords(db)
    nsr = await records.nsr(NSR_ID)
    assert nsr is not None
    assert (nsr.id, nsr.name, nsr.nsd_id, nsr.nsd_ref, nsr.datacenter) == (
        NSR_ID, "trusted", NSD_ID, "hackfest3charmed-ns", VIM
    )  # fmt: skip
    assert nsr.additional_params_ns == {"trust_loa": 4, "extra": "!!yaml {a: 1}\n"}
    assert nsr.constituent_vnfr_ref == [VNFR_1, VNFR_2] and nsr.projects_read == [PROJECT]
    assert (nsr.ns_state, nsr.admin_ns_state) == ("INSTANTIATED", "INSTANTIATED")
    assert nsr.model_extra is not None and nsr.model_extra["operational-status"] == "running"
    assert OsmRecords.nsd_id_of(nsr) == NSD_ID
    assert await records.nsr("no-such-ns") is None


async def test_deployed_vca(db: AsyncDatabase[dict[str, Any]]) -> None:
    records = OsmRecords(db)
    nsr = await records.nsr(NSR_ID)
    assert nsr is not None
    [vca] = OsmRecords.deployed_vca(nsr)
    assert (vca.member_vnf_index, vca.vdu_id, vca.type, vca.charm_name) == ("1", None, "lxc_proxy_charm", "trust-proxy")
    assert (vca.ee_id, vca.application, vca.operational_status) == (f"{NSR_ID}.t-a.0", "t-a", "active")
    assert vca.model_extra == {"target_element": "vnf/1", "vdu_name": None, "needed_terminate": True}
    bare = await records.nsr(OTHER_NSR)  # no _admin.deployed yet
    assert bare is not None and OsmRecords.deployed_vca(bare) == [] and bare.nsd_id is None


async def test_vnfrs(db: AsyncDatabase[dict[str, Any]]) -> None:
    vnfrs = await OsmRecords(db).vnfrs(NSR_ID)
    assert [(v.id, v.member_vnf_index, v.vim_account_id) for v in vnfrs] == [(VNFR_1, "1", VIM2), (VNFR_2, "2", VIM)]
    first = vnfrs[0]
    assert (first.nsr_id, first.vnfd_ref, first.ip_address) == (NSR_ID, "hackfest3charmed-vnf", "10.205.1.41")
    assert first.additional_params == {"touch_filename": "/home/ubuntu/touch-1"}
    [vdur] = first.vdur
    assert (vdur.vdu_id_ref, vdur.count_index, vdur.ip_address, vdur.vim_id, vdur.status) == (
        "mgmtVM", 0, "10.205.1.41", "c2538499-4c30-41c0-acd5-80cb92f48061", "ACTIVE"
    )  # fmt: skip
    assert vdur.vim_info == {f"vim:{VIM2}": {"vim_status": "ACTIVE", "vim_id": "c2538499"}}
    assert await OsmRecords(db).vnfrs("no-such-ns") == []


async def test_nslcmop(db: AsyncDatabase[dict[str, Any]]) -> None:
    op = await OsmRecords(db).nslcmop(NSLCMOP_ID)
    assert op is not None
    assert (op.id, op.nsr_id, op.operation, op.operation_state) == (NSLCMOP_ID, NSR_ID, "instantiate", "PROCESSING")
    assert op.params is not None and isinstance(op.params["additionalParamsForVnf"], str)  # NBI's JSON text
    assert op.additional_params_vnf()["2"] == {"trust_loa": 5}
    assert op.pla == {"vnf": [{"vimAccountId": VIM3, "member-vnf-index": "2"}], "nslcmopId": NSLCMOP_ID}
    assert (op.detailed_status, op.is_cancel_pending, op.projects_read) == ("Deploying", False, [PROJECT])
    assert await OsmRecords(db).nslcmop("nope") is None


async def test_nslcmop_with_bad_vnf_params(db: AsyncDatabase[dict[str, Any]]) -> None:
    doc = _nslcmop()
    doc["_id"] = "broken-op"
    doc["operationParams"]["additionalParamsForVnf"] = "{not json"
    await db[NSLCMOPS].insert_one(doc)
    op = await OsmRecords(db).nslcmop("broken-op")
    assert op is not None
    with pytest.raises(OsmRecordError, match="nslcmops broken-op: additionalParamsForVnf: not valid JSON"):
        op.additional_params_vnf()


async def test_vim_account_never_reads_secrets(db: AsyncDatabase[dict[str, Any]]) -> None:
    vim = await OsmRecords(db).vim_account(VIM)
    assert vim is not None
    assert (vim.id, vim.name, vim.vim_type, vim.vim_tenant_name) == (VIM, "mylocation1", "openstack", "osm")
    assert (vim.operational_state, vim.projects_read) == ("ENABLED", [PROJECT])
    dumped = json.dumps(vim.model_dump(), default=str)
    assert "5g0yGX86" not in dumped and "do-not-read" not in dumped and not vim.model_extra
    assert await OsmRecords(db).vim_account("nope") is None


async def test_vim_accounts_of_combines_params_vnf_params_and_vnfrs(db: AsyncDatabase[dict[str, Any]]) -> None:
    records = OsmRecords(db)
    # vimAccountId VIM; vnf[] member 1 → VIM2; vnfrs: VIM2 and VIM (the other NS's VIM3 is not ours)
    assert await records.vim_accounts_of(NSR_ID, _instantiate(trusted_request())) == sorted([VIM, VIM2])
    # a VIM only in the records (e.g. moved by a placement) is a target too
    await db[VNFRS].update_one({"_id": VNFR_2}, {"$set": {"vim-account-id": VIM3}})
    assert await records.vim_accounts_of(NSR_ID, _instantiate(trusted_request())) == sorted([VIM, VIM2, VIM3])


async def test_vim_accounts_of_sources_one_by_one(db: AsyncDatabase[dict[str, Any]]) -> None:
    records = OsmRecords(db)
    await db[VNFRS].update_many({"nsr-id-ref": NSR_ID}, {"$set": {"vim-account-id": None}})
    plain = {"nsdId": NSD_ID, "nsName": "n", "vimAccountId": VIM}
    assert await records.vim_accounts_of(NSR_ID, _instantiate(plain)) == [VIM]
    per_vnf = {**plain, "vnf": [{"member-vnf-index": "1", "vimAccountId": VIM3}]}
    assert await records.vim_accounts_of(NSR_ID, _instantiate(per_vnf)) == sorted([VIM, VIM3])
    await db[VNFRS].update_one({"_id": VNFR_1}, {"$set": {"vim-account-id": VIM2}})
    assert await records.vim_accounts_of(NSR_ID, _instantiate(plain)) == sorted([VIM, VIM2])


async def test_vim_accounts_of_checks_the_ns(db: AsyncDatabase[dict[str, Any]]) -> None:
    with pytest.raises(ValueError, match="belongs to NS"):
        await OsmRecords(db).vim_accounts_of(OTHER_NSR, _instantiate(trusted_request()))


async def test_constituent_vnfrs(db: AsyncDatabase[dict[str, Any]]) -> None:
    records = OsmRecords(db)
    listed = await records.constituent_vnfrs(NSR_ID)
    assert [v.id for v in listed] == [v.id for v in await records.vnfrs(NSR_ID)] == [VNFR_1, VNFR_2]
    await db[VNFRS].insert_one(_vnfr("not-listed", "3", VIM))  # not in constituent-vnfr-ref: not the NS's
    assert [v.id for v in await records.constituent_vnfrs(NSR_ID)] == [VNFR_1, VNFR_2]
    await db[NSRS].update_one({"_id": NSR_ID}, {"$unset": {"constituent-vnfr-ref": ""}})
    assert len(await records.constituent_vnfrs(NSR_ID)) == 3  # no list: every vnfr naming the NS


async def test_malformed_record(db: AsyncDatabase[dict[str, Any]]) -> None:
    await db[VNFRS].insert_one({**_vnfr("bad-vnfr", "3", VIM), "vdur": "not a list"})
    with pytest.raises(OsmRecordError, match="vnfrs 'bad-vnfr': vdur"):
        await OsmRecords(db).vnfrs(NSR_ID)
    await db[NSRS].insert_one({"_id": "bad-nsr", "_admin": {"deployed": {"VCA": [None]}}})
    with pytest.raises(OsmRecordError, match="nsrs 'bad-nsr'"):
        await OsmRecords(db).nsr("bad-nsr")


@pytest.mark.parametrize("bad", [{"$ne": None}, "", 5])
async def test_ids_cannot_be_query_operators(db: AsyncDatabase[dict[str, Any]], bad: Any) -> None:
    with pytest.raises(ValueError, match="non-empty string"):
        await OsmRecords(db).nsr(bad)


# -- read-only ---------------------------------------------------------------------------------------------


class _Spy:
    """Wraps a database/collection and records every method the code under test uses."""

    def __init__(self, target: Any, calls: list[str]) -> None:
        self._target, self._calls = target, calls

    def __getitem__(self, name: str) -> _Spy:
        return _Spy(self._target[name], self._calls)

    def __getattr__(self, name: str) -> Any:
        self._calls.append(name)
        return getattr(self._target, name)


async def _everything(records: OsmRecords) -> None:
    nsr = await records.nsr(NSR_ID)
    assert nsr is not None
    OsmRecords.nsd_id_of(nsr)
    OsmRecords.deployed_vca(nsr)
    vnfrs = await records.vnfrs(NSR_ID)
    assert await records.vnfr(vnfrs[0].id) is not None
    [v.compute_host() for v in vnfrs[0].vdur]
    await records.constituent_vnfrs(NSR_ID)
    op = await records.nslcmop(NSLCMOP_ID)
    assert op is not None
    op.additional_params_vnf()
    await records.vim_account(VIM)
    await records.vim_accounts_of(NSR_ID, _instantiate(trusted_request()))


async def _snapshot(db: AsyncDatabase[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    return {name: await db[name].find().sort("_id").to_list() for name in sorted(await db.list_collection_names())}


async def test_reads_never_write(db: AsyncDatabase[dict[str, Any]]) -> None:
    before = await _snapshot(db)
    calls: list[str] = []
    await _everything(OsmRecords(_Spy(db, calls)))  # type: ignore[arg-type]
    assert set(calls) == {"find", "find_one"}, calls  # the spy saw the reads, and nothing else
    assert await _snapshot(db) == before


def test_no_write_methods() -> None:
    writes = ("insert", "update", "replace", "delete", "remove", "drop", "save", "write", "set", "create", "bulk")
    public = [name for name in dir(OsmRecords) if not name.startswith("_")]
    assert public == [
        "constituent_vnfrs",
        "deployed_vca",
        "nsd_id_of",
        "nslcmop",
        "nsr",
        "vim_account",
        "vim_accounts_of",
        "vnfr",
        "vnfrs",
    ]
    assert not [name for name in public if name.startswith(writes)]
