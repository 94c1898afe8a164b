"""OSM Kafka messages: real shapes parse, unknown extras are tolerated, anything malformed is refused."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pytest

from osm_trustmgr.bus.codec import decode, encode_key, encode_value
from osm_trustmgr.osm.messages import (
    FINAL_STATES,
    OPERATIONS,
    RESULT_KEYS,
    Ignored,
    NsOperation,
    NsOperationResult,
    OperationCancel,
    OsmMessageError,
    PlacementAnswer,
    PlacementRequest,
    parse_osm_message,
    placement_answer,
)
from tests.osm import (
    NS_CREATE2_REQUEST,
    NSD_ID,
    NSLCMOP_ID,
    NSR_ID,
    PROJECT,
    VIM,
    VIM2,
    VIM3,
    nslcmop,
    trusted_request,
)


def _op(value: dict[str, Any], key: str = "instantiate") -> NsOperation:
    event = parse_osm_message("ns", key, value)
    assert isinstance(event, NsOperation)
    return event


# -- ns/<operation> from NBI ---------------------------------------------------------------------------


def test_instantiate_as_nbi_publishes_it() -> None:
    value = nslcmop()
    op = _op(value)
    assert (op.nslcmop_id, op.nsr_id, op.operation, op.operation_state) == (
        NSLCMOP_ID, NSR_ID, "instantiate", "PROCESSING"
    )  # fmt: skip
    assert (op.params.ns_name, op.params.nsd_id, op.params.vim_account_id) == ("ldap", NSD_ID, VIM)
    assert op.params.vnfs == [] and op.params.additional_params_ns == {} and op.params.additional_params_vnf == {}
    assert op.params.placement_engine is None and op.params.valid_vim_accounts is None
    assert op.projects_read == [PROJECT] and op.automatic is False
    assert op.raw == value and op.raw is not value
    value["operationParams"]["nsName"] = "changed"
    assert op.raw["operationParams"]["nsName"] == "ldap"  # a private copy


def test_additional_params_for_vnf_json_text_is_normalised() -> None:
    value = nslcmop(request=NS_CREATE2_REQUEST)
    assert isinstance(value["operationParams"]["additionalParamsForVnf"], str)  # what NBI stores and sends
    op = _op(value)
    assert op.params.additional_params_vnf == {"openldap": {}}  # only additionalParamsForKdu was given


def test_additional_params_for_vnf_list_form_is_normalised() -> None:
    value = nslcmop(request=trusted_request())
    value["operationParams"]["additionalParamsForVnf"] = trusted_request()["additionalParamsForVnf"]
    assert _op(value).params.additional_params_vnf == {
        "1": {"touch_filename": "/home/ubuntu/touch-1"},
        "2": {"trust_loa": 5},
    }


@pytest.mark.parametrize("empty", [None, "", "[]", []])
def test_additional_params_for_vnf_absent_forms(empty: object) -> None:
    value = nslcmop()
    value["operationParams"]["additionalParamsForVnf"] = empty
    assert _op(value).params.additional_params_vnf == {}


def test_trust_parameters_vnfs_and_placement() -> None:
    op = _op(nslcmop(request={**trusted_request(trust_loa=4), "placement-engine": "PLA"}, placement=True))
    assert op.params.additional_params_ns == {"trust_loa": 4}
    assert [(v.member_vnf_index, v.vim_account_id) for v in op.params.vnfs] == [("1", VIM2), ("2", None)]
    assert op.params.additional_params_vnf["2"] == {"trust_loa": 5}
    assert op.params.placement_engine == "PLA" and op.params.valid_vim_accounts == [VIM, VIM2, VIM3]


def test_round_trip_through_osm_kafka_encoding() -> None:
    value = nslcmop(request=trusted_request(trust_loa="4"))
    key, decoded = decode(encode_key("instantiate"), encode_value(value))
    op = _op(decoded, key)
    assert op == _op(value) and op.params.additional_params_ns == {"trust_loa": "4"}


def test_unknown_extra_fields_are_tolerated() -> None:
    value = nslcmop(request=NS_CREATE2_REQUEST)
    value["newTopLevelField"] = {"x": 1}
    value["_admin"]["worker"] = "a5adf5972b63"
    params = value["operationParams"]
    params["timeout_ns_deploy"] = 3600
    params["vnf"] = [{"member-vnf-index": "openldap", "vimAccountId": VIM, "vdu": [{"id": "v"}]}]
    params["additionalParamsForVnf"] = json.dumps(
        [{"member-vnf-index": "openldap", "additionalParams": {"a": 1}, "k8s-namespace": "ns", "config-units": 2}]
    )
    op = _op(value)
    assert op.params.model_extra == {
        "nsDescription": "default description",
        "lcmOperationType": "instantiate",
        "nsInstanceId": NSR_ID,
        "timeout_ns_deploy": 3600,
    }
    assert op.params.additional_params_vnf == {"openldap": {"a": 1}}


@pytest.mark.parametrize("operation", sorted(OPERATIONS - {"instantiate"}))
def test_other_operations(operation: str) -> None:
    value = nslcmop(operation, {"member_vnf_index": "1", "primitive": "touch", "primitive_params": {"f": "/x"}})
    op = _op(value, operation)
    assert op.operation == operation and op.params.nsd_id is None
    assert op.params.model_extra is not None and op.params.model_extra["primitive_params"] == '{"f": "/x"}'


@pytest.mark.parametrize("params", [{}, None])
def test_terminate_with_empty_params(params: dict[str, Any] | None) -> None:
    value = nslcmop("terminate", {})
    value["operationParams"] = params
    assert _op(value, "terminate").params.vnfs == []


def test_autoscaling_by_pol_has_no_admin() -> None:
    # POL osm_policy_module/common/lcm_client.py LcmClient._generate_nslcmop: no _admin, automatic invocation
    value = nslcmop("scale", {"scaleType": "SCALE_VNF", "scaleVnfData": {"scaleVnfType": "SCALE_OUT"}})
    del value["_admin"]
    value["isAutomaticInvocation"] = True
    op = _op(value, "scale")
    assert op.projects_read == [] and op.automatic is True


# -- ns/<result> from LCM --------------------------------------------------------------------------------


def test_instantiated_as_lcm_writes_it() -> None:
    value = {  # ns.py NsLcm.instantiate
        "nsr_id": NSR_ID,
        "nslcmop_id": NSLCMOP_ID,
        "operationState": "COMPLETED",
        "startTime": 1631277626.5666356,
        "links": {"self": "/osm/nslcm/v1/ns_lcm_op_occs/" + NSLCMOP_ID},
        "operationParams": {"nsInstanceId": NSR_ID, "nsdId": NSD_ID},
    }
    event = parse_osm_message("ns", "instantiated", value)
    assert isinstance(event, NsOperationResult)
    assert (event.nsr_id, event.nslcmop_id, event.operation_state) == (NSR_ID, NSLCMOP_ID, "COMPLETED")
    assert event.event == "instantiated" and event.operation == "instantiate" and event.final


@pytest.mark.parametrize("key", sorted(RESULT_KEYS))
@pytest.mark.parametrize(
    "state", ["PROCESSING", "COMPLETED", "PARTIALLY_COMPLETED", "FAILED", "FAILED_TEMP", "ROLLING_BACK", "ROLLED_BACK"]
)
def test_results_and_final_states(key: str, state: str) -> None:
    value = {"nsr_id": NSR_ID, "nslcmop_id": NSLCMOP_ID, "operationState": state, "autoremove": False}
    event = parse_osm_message("ns", key, value)
    assert isinstance(event, NsOperationResult)
    assert event.final is (state in FINAL_STATES) and event.operation == RESULT_KEYS[key]


def test_vnf_terminated_names_the_member() -> None:
    value = {"nsr_id": NSR_ID, "nslcmop_id": NSLCMOP_ID, "operationState": "COMPLETED", "vnf_member_index": "2"}
    event = parse_osm_message("ns", "vnf_terminated", value)
    assert isinstance(event, NsOperationResult) and event.vnf_member_index == "2" and event.operation == "update"


# -- nslcmops/cancel, pla ----------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["GRACEFUL", "FORCEFUL"])
def test_cancel(mode: str) -> None:
    event = parse_osm_message("nslcmops", "cancel", {"_id": NSLCMOP_ID, "nsInstanceId": NSR_ID, "cancelMode": mode})
    assert event == OperationCancel.model_validate({"_id": NSLCMOP_ID, "nsInstanceId": NSR_ID, "cancelMode": mode})
    assert isinstance(event, OperationCancel) and (event.nslcmop_id, event.nsr_id, event.cancel_mode) == (
        NSLCMOP_ID, NSR_ID, mode
    )  # fmt: skip


def test_get_placement() -> None:
    event = parse_osm_message("pla", "get_placement", {"nslcmopId": NSLCMOP_ID})
    assert isinstance(event, PlacementRequest) and event.nslcmop_id == NSLCMOP_ID


def test_placement_as_pla_sends_it() -> None:
    # PLA MznPlacementConductor._run_placement_model: computed entries, then pinned ones
    value = {
        "placement": {
            "vnf": [{"vimAccountId": VIM2, "member-vnf-index": "1"}, {"vimAccountId": VIM3, "member-vnf-index": "2"}],
            "nslcmopId": NSLCMOP_ID,
        }
    }
    event = parse_osm_message("pla", "placement", value)
    assert isinstance(event, PlacementAnswer) and event.nslcmop_id == NSLCMOP_ID
    assert event.vnf_vims == {"1": VIM2, "2": VIM3}


@pytest.mark.parametrize("vnf", [[], [{}]])  # PLA: [] after an exception, [{}] when unsatisfiable
def test_placement_without_assignment(vnf: list[dict[str, str]]) -> None:
    event = parse_osm_message("pla", "placement", {"placement": {"vnf": vnf, "nslcmopId": NSLCMOP_ID}})
    assert isinstance(event, PlacementAnswer) and event.vnf_vims == {}


def test_placement_answer_is_what_pla_sends() -> None:
    answer = placement_answer(NSLCMOP_ID, {"1": VIM2, "2": VIM3})
    assert answer == {
        "placement": {
            "vnf": [{"vimAccountId": VIM2, "member-vnf-index": "1"}, {"vimAccountId": VIM3, "member-vnf-index": "2"}],
            "nslcmopId": NSLCMOP_ID,
        }
    }
    _, decoded = decode(b"placement", encode_value(answer))
    event = parse_osm_message("pla", "placement", decoded)
    assert isinstance(event, PlacementAnswer) and event.vnf_vims == {"1": VIM2, "2": VIM3}


@pytest.mark.parametrize(
    ("nslcmop_id", "vims"), [(NSLCMOP_ID, {}), ("", {"1": VIM}), (NSLCMOP_ID, {"1": ""}), (NSLCMOP_ID, {"": VIM})]
)
def test_placement_answer_refuses_empty_or_bad(nslcmop_id: str, vims: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        placement_answer(nslcmop_id, vims)


# -- ignored ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("topic", "key", "value"),
    [
        ("ns", "deleted", {"_id": NSR_ID}),  # BaseTopic.delete
        ("ns", "vca_status_refresh", {**nslcmop("vca_status_refresh"), "operationParams": None}),
        ("ns", "created", {"_id": NSR_ID}),
        ("ns", "brand_new_key", {"anything": 1}),
        ("ns", "echo", {"x": 1}),
        ("nslcmops", "whatever", {}),
        ("pla", "something", {}),
        ("vim_account", "created", {"_id": VIM}),
    ],
)
def test_ignored(topic: str, key: str, value: dict[str, Any]) -> None:
    event = parse_osm_message(topic, key, value)
    assert isinstance(event, Ignored) and (event.topic, event.key) == (topic, key) and event.reason


# -- malformed -----------------------------------------------------------------------------------------------

Edit = Callable[[dict[str, Any]], object]


def _set(path: str, new: object) -> Edit:
    def edit(doc: dict[str, Any]) -> None:
        *parents, last = path.split("/")
        for part in parents:
            doc = doc[part]
        doc[last] = new

    return edit


def _delete(path: str) -> Edit:
    def edit(doc: dict[str, Any]) -> None:
        *parents, last = path.split("/")
        for part in parents:
            doc = doc[part]
        del doc[last]

    return edit


P = "operationParams"
MALFORMED_INSTANTIATE: list[tuple[str, Edit, str]] = [
    ("no _id", _delete("_id"), "_id: Field required"),
    ("_id not a string", _set("_id", 12345), "_id: Input should be a valid string"),
    ("_id empty", _set("_id", ""), "_id: must not be empty"),
    ("_id over 1 KiB", _set("_id", "a" * 1025), "_id: longer than 1024 bytes"),
    ("_id over 1 KiB in UTF-8", _set("_id", "é" * 513), "_id: longer than 1024 bytes"),
    ("no nsInstanceId", _delete("nsInstanceId"), "nsInstanceId: Field required"),
    ("nsInstanceId a mapping", _set("nsInstanceId", {"$ne": None}), "nsInstanceId: Input should be a valid string"),
    ("operation mismatch", _set("lcmOperationType", "terminate"), "lcmOperationType is 'terminate'"),
    ("operation unknown", _set("lcmOperationType", "explode"), "lcmOperationType: Input should be"),
    ("no operationParams", _delete(P), "operationParams: Field required"),
    ("operationParams a list", _set(P, []), "operationParams: Input should be a valid dictionary"),
    ("no nsdId", _delete(f"{P}/nsdId"), "instantiate without operationParams.nsdId and vimAccountId"),
    ("no vimAccountId", _delete(f"{P}/vimAccountId"), "instantiate without operationParams.nsdId"),
    ("vimAccountId a number", _set(f"{P}/vimAccountId", 7), "operationParams.vimAccountId: Input should be"),
    ("vnf a mapping", _set(f"{P}/vnf", {"member-vnf-index": "1"}), "operationParams.vnf: Input should be"),
    ("vnf without index", _set(f"{P}/vnf", [{"vimAccountId": VIM}]), "vnf.0.member-vnf-index: Field required"),
    ("vnf index a number", _set(f"{P}/vnf", [{"member-vnf-index": 1}]), "vnf.0.member-vnf-index: Input should"),
    ("vnf vim a list", _set(f"{P}/vnf", [{"member-vnf-index": "1", "vimAccountId": [VIM]}]), "vnf.0.vimAccountId"),
    ("ns params a list", _set(f"{P}/additionalParamsForNs", ["trust_loa"]), "additionalParamsForNs: Input should"),
    ("ns params int key", _set(f"{P}/additionalParamsForNs", {1: 4}), "additionalParamsForNs.1.[key]"),
    ("vnf params bad JSON", _set(f"{P}/additionalParamsForVnf", "[{"), "additionalParamsForVnf: not valid JSON"),
    ("vnf params JSON object", _set(f"{P}/additionalParamsForVnf", '{"1": {}}'), "must be a list"),
    ("vnf params a mapping", _set(f"{P}/additionalParamsForVnf", {"1": {}}), "must be a list (or its JSON text)"),
    ("vnf params a number", _set(f"{P}/additionalParamsForVnf", 5), "must be a list (or its JSON text), not int"),
    ("vnf params item", _set(f"{P}/additionalParamsForVnf", '["x"]'), "item 0 is not a mapping"),
    ("vnf params no index", _set(f"{P}/additionalParamsForVnf", '[{"additionalParams": {}}]'), "item 0: member"),
    ("vnf params int index", _set(f"{P}/additionalParamsForVnf", '[{"member-vnf-index": 1}]'), "must be a string"),
    (
        "vnf params twice",
        _set(f"{P}/additionalParamsForVnf", '[{"member-vnf-index": "1"}, {"member-vnf-index": "1"}]'),
        "member-vnf-index '1' listed twice",
    ),
    (
        "vnf additionalParams a list",
        _set(f"{P}/additionalParamsForVnf", '[{"member-vnf-index": "1", "additionalParams": [1]}]'),
        "item 0: additionalParams must be a mapping",
    ),
    ("placement-engine a bool", _set(f"{P}/placement-engine", True), "placement-engine: Input should be"),
    ("validVimAccounts a string", _set(f"{P}/validVimAccounts", VIM), "validVimAccounts: Input should be"),
    ("validVimAccounts empty id", _set(f"{P}/validVimAccounts", [""]), "validVimAccounts.0: must not be empty"),
    ("projects_read a string", _set("_admin/projects_read", PROJECT), "_admin.projects_read: Input should be"),
    ("projects_read item", _set("_admin/projects_read", [None]), "_admin.projects_read.0: Input should be"),
    ("automatic a string", _set("isAutomaticInvocation", "yes"), "isAutomaticInvocation: Input should be"),
]


@pytest.mark.parametrize(
    ("edit", "reason"), [c[1:] for c in MALFORMED_INSTANTIATE], ids=[c[0] for c in MALFORMED_INSTANTIATE]
)
def test_malformed_instantiate(edit: Edit, reason: str) -> None:
    value = nslcmop(request=trusted_request(trust_loa=4), placement=True)
    value[P]["placement-engine"] = "PLA"
    _op(copy.deepcopy(value))  # the unedited message is fine
    edit(value)
    with pytest.raises(OsmMessageError) as caught:
        parse_osm_message("ns", "instantiate", value)
    assert caught.value.reason.startswith("ns/instantiate: ") and reason in caught.value.reason
    # the ids, when well-formed, let a caller fail closed (cancel) instead of letting the NS through ungated
    assert caught.value.nslcmop_id == (NSLCMOP_ID if value.get("_id") == NSLCMOP_ID else None)


def test_error_counts_further_problems() -> None:
    value = nslcmop()
    value["_id"], value["nsInstanceId"] = 1, 2
    with pytest.raises(OsmMessageError, match=r"_id: Input should be a valid string \(\+1 more\)"):
        parse_osm_message("ns", "instantiate", value)


MALFORMED_OTHERS: list[tuple[str, str, dict[str, Any], str]] = [
    ("ns", "instantiated", {"nsr_id": NSR_ID, "nslcmop_id": NSLCMOP_ID, "operationState": "Error"}, "operationState"),
    ("ns", "terminated", {"nslcmop_id": NSLCMOP_ID, "operationState": "COMPLETED"}, "nsr_id: Field required"),
    ("ns", "scaled", {"nsr_id": NSR_ID, "nslcmop_id": 3, "operationState": "COMPLETED"}, "nslcmop_id: Input"),
    ("ns", "actioned", {"nsr_id": NSR_ID, "nslcmop_id": NSLCMOP_ID}, "operationState: Field required"),
    ("nslcmops", "cancel", {"_id": NSLCMOP_ID, "nsInstanceId": NSR_ID}, "cancelMode: Field required"),
    ("nslcmops", "cancel", {"_id": NSLCMOP_ID, "nsInstanceId": NSR_ID, "cancelMode": "SOFT"}, "cancelMode: Input"),
    ("nslcmops", "cancel", {"nsInstanceId": NSR_ID, "cancelMode": "FORCEFUL"}, "_id: Field required"),
    ("pla", "get_placement", {"nslcmopId": 5}, "nslcmopId: Input should be a valid string"),
    ("pla", "get_placement", {"nslcmop_id": NSLCMOP_ID}, "nslcmopId: Field required"),
    ("pla", "placement", {"vnf": [], "nslcmopId": NSLCMOP_ID}, "placement.nslcmopId: Field required"),
    ("pla", "placement", {"placement": {"nslcmopId": NSLCMOP_ID}}, "placement.vnf: Field required"),
    ("pla", "placement", {"placement": {"nslcmopId": NSLCMOP_ID, "vnf": {}}}, "placement.vnf: Input should be"),
    ("pla", "placement", {"placement": {"nslcmopId": NSLCMOP_ID, "vnf": ["x"]}}, "placement.vnf.0: Input"),
    ("pla", "placement", {"placement": {"nslcmopId": NSLCMOP_ID, "vnf": [{"vimAccountId": 1}]}}, "vimAccountId"),
]


@pytest.mark.parametrize(("topic", "key", "value", "reason"), MALFORMED_OTHERS)
def test_malformed_others(topic: str, key: str, value: dict[str, Any], reason: str) -> None:
    with pytest.raises(OsmMessageError) as caught:
        parse_osm_message(topic, key, value)
    assert caught.value.reason.startswith(f"{topic}/{key}: ") and reason in caught.value.reason


def test_value_must_be_a_mapping() -> None:
    with pytest.raises(OsmMessageError, match="value is not a mapping but list"):
        parse_osm_message("ns", "instantiate", [1])  # type: ignore[arg-type]


def test_result_errors_keep_the_ids() -> None:
    with pytest.raises(OsmMessageError) as caught:
        parse_osm_message("ns", "instantiated", {"nsr_id": NSR_ID, "nslcmop_id": NSLCMOP_ID, "operationState": 1})
    assert (caught.value.nslcmop_id, caught.value.nsr_id) == (NSLCMOP_ID, NSR_ID)
