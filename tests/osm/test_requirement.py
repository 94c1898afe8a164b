"""The LoA an NS operation requires: the stricter source wins per scope, hosts at min(N, 4), bad values refused."""

from __future__ import annotations

from typing import Any

import pytest

from osm_trustmgr.osm.messages import NsOperation, parse_osm_message
from osm_trustmgr.osm.requirement import Requirement, RequirementError, parse_loa, required_loa
from tests.osm import NS_CREATE_REQUEST, nslcmop


def _op(ns: dict[str, Any] | None = None, per_vnf: list[dict[str, Any]] | None = None, **request: Any) -> NsOperation:
    body: dict[str, Any] = {**NS_CREATE_REQUEST, **request}
    if ns is not None:
        body["additionalParamsForNs"] = ns
    if per_vnf is not None:
        body["additionalParamsForVnf"] = per_vnf
    event = parse_osm_message("ns", "instantiate", nslcmop(request=body))  # as NBI sends it (JSON text)
    assert isinstance(event, NsOperation)
    return event


def _vnf(index: str, **params: Any) -> dict[str, Any]:
    return {"member-vnf-index": index, "additionalParams": params}


def test_nothing_asked_is_all_zeros() -> None:
    req = required_loa(_op(), None)
    assert req == Requirement(ns=0, host=0, vnf={}, vnf_default=0, sources=[])
    assert not req.required


def test_other_parameters_do_not_count() -> None:
    req = required_loa(_op(ns={"touch_filename": "/x", "loa": 5}, per_vnf=[_vnf("1", level=4)]), None)
    assert not req.required and req.vnf == {"1": 0}


def test_ns_trust_loa() -> None:
    req = required_loa(_op(ns={"trust_loa": 3}), None)
    assert (req.ns, req.host, req.vnf_default) == (3, 3, 3)
    assert req.sources == ["additionalParamsForNs.trust_loa=3"] and req.required


@pytest.mark.parametrize(("n", "host"), [(0, 0), (1, 1), (2, 2), (3, 3), (4, 4), (5, 4)])
def test_hosts_are_asked_for_min_n_4(n: int, host: int) -> None:
    req = required_loa(_op(ns={"trust_loa": n}), None)
    assert (req.ns, req.host, req.vnf_default) == (n, host, n)


def test_host_and_vnf_scopes() -> None:
    req = required_loa(_op(ns={"trust_loa": 1, "trust_host_loa": 3, "trust_vnf_loa": 2}), None)
    assert (req.ns, req.host, req.vnf_default) == (1, 3, 2)
    assert req.sources == [
        "additionalParamsForNs.trust_loa=1",
        "additionalParamsForNs.trust_host_loa=3",
        "additionalParamsForNs.trust_vnf_loa=2",
    ]


def test_scopes_never_go_below_trust_loa() -> None:
    req = required_loa(_op(ns={"trust_loa": 4, "trust_host_loa": 1, "trust_vnf_loa": 2}), None)
    assert (req.ns, req.host, req.vnf_default) == (4, 4, 4)


def test_host_loa_5_is_capped_at_4() -> None:
    req = required_loa(_op(ns={"trust_host_loa": 5}), None)
    assert (req.ns, req.host, req.vnf_default) == (0, 4, 0)


def test_vnf_only_requirement_is_required() -> None:
    req = required_loa(_op(ns={"trust_vnf_loa": 3}), None)
    assert (req.ns, req.host, req.vnf) == (0, 0, {}) and req.vnf_default == 3 and req.required


@pytest.mark.parametrize(
    ("policy", "params", "ns", "host"), [(4, 2, 4, 4), (2, 4, 4, 4), (5, None, 5, 4), (0, 3, 3, 3)]
)
def test_nsd_policy_stricter_wins(policy: int, params: int | None, ns: int, host: int) -> None:
    op = _op(ns={} if params is None else {"trust_loa": params})
    req = required_loa(op, policy)
    assert (req.ns, req.host, req.vnf_default) == (ns, host, ns)
    assert req.sources[0] == f"nsd_policy={policy}"


def test_policy_alone() -> None:
    req = required_loa(_op(), 3)
    assert (req.ns, req.host, req.vnf_default, req.sources) == (3, 3, 3, ["nsd_policy=3"])


def test_per_vnf_requirements() -> None:
    op = _op(
        ns={"trust_loa": 2},
        per_vnf=[_vnf("1", trust_loa=4), _vnf("2", trust_vnf_loa=5), _vnf("3", trust_loa=1), _vnf("4", other="x")],
    )
    req = required_loa(op, None)
    assert req.vnf == {"1": 4, "2": 5, "3": 2, "4": 2}  # max(ns, per-vnf): a VNF cannot ask for less
    assert (req.ns, req.host, req.vnf_default) == (2, 2, 2)
    assert "additionalParamsForVnf[2].trust_vnf_loa=5" in req.sources
    assert req.for_vnf("2") == 5 and req.for_vnf("unlisted") == 2


def test_per_vnf_both_keys_stricter_wins() -> None:
    req = required_loa(_op(per_vnf=[_vnf("1", trust_loa=3, trust_vnf_loa=4)]), None)
    assert req.vnf == {"1": 4}


def test_per_vnf_against_ns_vnf_scope_and_policy() -> None:
    op = _op(ns={"trust_vnf_loa": 3}, per_vnf=[_vnf("1", trust_loa=2), _vnf("2", trust_loa=5)])
    assert required_loa(op, None).vnf == {"1": 3, "2": 5}
    assert required_loa(op, 4).vnf == {"1": 4, "2": 5}


def test_per_vnf_host_loa_raises_the_host_requirement() -> None:
    req = required_loa(
        _op(ns={"trust_loa": 1}, per_vnf=[_vnf("1", trust_host_loa=3), _vnf("2", trust_host_loa=5)]), None
    )
    assert (req.ns, req.host) == (1, 4) and req.vnf == {"1": 1, "2": 1}


def test_members_listed_from_vnf_params_and_caller() -> None:
    op = _op(ns={"trust_loa": 3}, per_vnf=[_vnf("2", trust_loa=5)], vnf=[{"member-vnf-index": "1"}])
    req = required_loa(op, None, members=["1", "2", "3"])
    assert req.vnf == {"1": 3, "2": 5, "3": 3}


@pytest.mark.parametrize(("value", "loa"), [(0, 0), (4, 4), (5, 5), ("4", 4), ("0", 0), ("+3", 3), ("05", 5)])
def test_integer_and_integer_strings(value: object, loa: int) -> None:
    assert parse_loa(value, "k") == loa
    assert required_loa(_op(ns={"trust_loa": value}), None).ns == loa


INVALID = [
    (True, "must be an integer 0..5, not True"),
    (False, "must be an integer 0..5, not False"),
    (4.0, "must be an integer 0..5, not 4.0"),
    (4.5, "must be an integer 0..5, not 4.5"),
    ("4.5", "must be an integer 0..5, not '4.5'"),
    ("high", "must be an integer 0..5, not 'high'"),
    ("", "must be an integer 0..5, not ''"),
    (" 4", "must be an integer 0..5, not ' 4'"),
    (None, "must be an integer 0..5, not None"),
    ([4], "must be an integer 0..5, not [4]"),
    ({"loa": 4}, "must be an integer 0..5, not {'loa': 4}"),
    ("!!yaml 4\n", "must be an integer 0..5"),
    ("9" * 50, "must be an integer 0..5, not '9999999999"),  # shortened in the reason
    (-1, "is -1, outside 0..5"),
    ("-1", "is -1, outside 0..5"),
    (6, "is 6, outside 0..5"),
    ("6", "is 6, outside 0..5"),
    (10**30, "outside 0..5"),
]


@pytest.mark.parametrize(("value", "reason"), INVALID)
@pytest.mark.parametrize("key", ["trust_loa", "trust_host_loa", "trust_vnf_loa"])
def test_invalid_ns_values(key: str, value: object, reason: str) -> None:
    with pytest.raises(RequirementError) as caught:
        required_loa(_op(ns={key: value}), None)
    assert caught.value.key == f"additionalParamsForNs.{key}"
    assert caught.value.reason.startswith(f"additionalParamsForNs.{key} ") and reason in caught.value.reason
    assert len(caught.value.reason) < 120  # a huge value is not echoed whole into logs and gate records


@pytest.mark.parametrize(("value", "reason"), INVALID[:6] + INVALID[-5:])
@pytest.mark.parametrize("key", ["trust_loa", "trust_vnf_loa", "trust_host_loa"])
def test_invalid_vnf_values(key: str, value: object, reason: str) -> None:
    with pytest.raises(RequirementError) as caught:
        required_loa(_op(per_vnf=[_vnf("1"), _vnf("vnf-b", **{key: value})]), None)
    assert caught.value.key == f"additionalParamsForVnf[vnf-b].{key}" and reason in caught.value.reason


@pytest.mark.parametrize("policy", [-1, 6, True])
def test_invalid_policy(policy: int) -> None:
    with pytest.raises(RequirementError) as caught:
        required_loa(_op(), policy)
    assert caught.value.key == "nsd_policy"


def test_error_is_a_value_error_with_a_message() -> None:
    with pytest.raises(ValueError, match=r"additionalParamsForNs.trust_loa must be an integer 0..5, not 'high'"):
        required_loa(_op(ns={"trust_loa": "high"}), 3)


def test_requirement_is_storable() -> None:
    req = required_loa(_op(ns={"trust_loa": 4}, per_vnf=[_vnf("1", trust_loa=5)]), 2)
    assert Requirement.model_validate(req.model_dump()) == req
