"""The example packages in descriptors/ at run time, replayed with OSM's own rules: LCM's day-1 parameter mapping
for each params file (the OSM simulator's ``map_primitive_params``), NBI's day-2 action check, the resulting action
parameters against the charm's schema, and the instantiation parameter files themselves."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from osm_trustmgr.osm.requirement import parse_loa
from osm_trustmgr.sandbox.osmsim_vca import LcmException, map_primitive_params
from tests.descriptors import charm_rules
from tests.descriptors import osm_rules as rules
from tests.descriptors.support import (
    CHARMCRAFT,
    DESCRIPTORS,
    Doc,
    Mutation,
    load_yaml,
    mutated,
    params_files,
    primitive,
)

# -- 4. run time, with OSM's rules ----------------------------------------------------------------------------


def osm_params(member: str) -> Doc:
    """LCM data_utils.vnfr.get_osm_params of a deployed member (the value of <OSM>)."""
    return {
        "ip_address": "192.0.2.10",
        "vim_account_id": "0f5c7b2e-3b36-4f8b-9a36-1c6f2b9d6d01",
        "vnfd_id": "5f6a4d0c-1d2e-4b5a-8c3d-2e1f0a9b8c7d",
        "vnfd_ref": "trust-proxy-vnf",
        "ns_id": "f48163a6-c807-47bc-9682-f72caef5af85",
        "vnf_id": f"a5b1f9c2-0000-4000-8000-00000000000{member}",
        "member_vnf_index": member,
        "vdu": {"trustVM-0": {"count_index": 0, "vdu_id": "trustVM", "interfaces": {}, "ip_address": "192.0.2.10"}},
    }


@pytest.mark.parametrize("params_file", params_files(), ids=lambda p: p.name)
def test_day1_primitives_reach_the_charm_as_juju_accepts(
    params_file: Path, vnfd_doc: Doc, nsd_doc: Doc, charmcraft: Doc
) -> None:
    params = load_yaml(params_file)
    config = rules.vnf_configuration(rules.unwrap_vnfd(vnfd_doc))
    assert config is not None
    ee_id = config["execution-environment-list"][0]["id"]
    by_member = {item["member-vnf-index"]: item["additionalParams"] for item in params["additionalParamsForVnf"]}
    for member in rules.members(rules.unwrap_nsd(nsd_doc)):
        # LCM instantiate: deploy_params = {"OSM": get_osm_params(vnfr)} + the member's additionalParamsForVnf;
        # _deploy_n2vc adds rw_mgmt_ip before running the sorted day-1 primitives of the execution environment
        instantiation = {"OSM": osm_params(member), **by_member[member], "rw_mgmt_ip": "192.0.2.10"}
        sent = {
            p["name"]: map_primitive_params(p, {}, instantiation)
            for p in rules.sorted_initial_primitives(config, ee_id)
        }
        assert list(sent) == ["config", "attest"]
        options = charmcraft["config"]["options"]
        assert sent["config"]["ssh-hostname"] == "192.0.2.10"
        assert all(options[k]["type"] == "string" and isinstance(v, str) for k, v in sent["config"].items())
        assert charm_rules.juju_action_param_errors(charmcraft["actions"]["attest"], sent["attest"]) == []
        assert sent["attest"]["trustmgr-url"] == by_member[member]["trustmgr_url"]
        named = yaml.safe_load(sent["attest"]["osm-params"])  # LCM dumps the <OSM> dict as flow YAML
        assert (named["vnf_id"], named["member_vnf_index"], named["ns_id"]) == (
            f"a5b1f9c2-0000-4000-8000-00000000000{member}",
            member,
            "f48163a6-c807-47bc-9682-f72caef5af85",
        )


def test_day1_fails_in_lcm_without_trustmgr_url(vnfd_doc: Doc) -> None:
    attest = primitive(vnfd_doc, "initial-config-primitive", "attest")
    with pytest.raises(LcmException, match="<trustmgr_url> needed to execute primitive attest"):
        map_primitive_params(attest, {}, {"OSM": osm_params("1"), "rw_mgmt_ip": "192.0.2.10"})


def charm_params_module() -> Any:
    """The charm's own parameter parser (charms/trust-proxy/src/params.py), imported under a private name."""
    path = CHARMCRAFT.parent / "src" / "params.py"
    if not path.is_file():
        pytest.skip(f"{path} not written yet")
    name = "trust_proxy_charm_params"
    if name not in sys.modules:  # dataclasses look their module up in sys.modules while it executes
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.mark.parametrize("params_file", params_files(), ids=lambda p: p.name)
def test_day1_attest_is_strict_mode_for_the_charms_parser(
    params_file: Path, vnfd_doc: Doc, nsd_doc: Doc, charmcraft: Doc
) -> None:
    charm_params = charm_params_module()
    by_member = {i["member-vnf-index"]: i["additionalParams"] for i in load_yaml(params_file)["additionalParamsForVnf"]}
    attest = primitive(vnfd_doc, "initial-config-primitive", "attest")
    for member in rules.members(rules.unwrap_nsd(nsd_doc)):
        sent = map_primitive_params(attest, {}, {"OSM": osm_params(member), **by_member[member]})
        parsed = charm_params.attest_params(charm_rules.juju_with_defaults(charmcraft["actions"]["attest"], sent))
        assert parsed.nonce is None  # strict mode: the Trust Manager issues the nonce
        assert parsed.trustmgr_url == by_member[member]["trustmgr_url"].rstrip("/")
        assert parsed.vnf_id == osm_params(member)["vnf_id"]


NONCE = "5e" * 16
DAY2: list[tuple[str, Doc, Doc | str]] = [
    ("attest", {"nonce": NONCE}, {"nonce": NONCE, "pcrs": "sha256:0-10", "ima-offset": 0}),
    (
        "attest",
        {"nonce": NONCE, "pcrs": "sha256:0-7+sha1:10", "ima-offset": 1234},
        {"nonce": NONCE, "pcrs": "sha256:0-7+sha1:10", "ima-offset": 1234},
    ),
    ("attest", {"nonce": NONCE, "ima-offset": "12"}, {"nonce": NONCE, "pcrs": "sha256:0-10", "ima-offset": 12}),
    ("identity", {}, {}),
    ("activate", {"credential": "AAE=", "secret": "AAI="}, {"credential": "AAE=", "secret": "AAI="}),
    ("attest", {}, "Needed parameter nonce not provided"),
    ("attest", {"nonce": NONCE, "trustmgr-url": "https://x"}, "not present at vnfd"),
    ("activate", {"credential": "AAE="}, "Needed parameter secret not provided"),
    ("quote", {}, "Invalid primitive 'quote'"),
]


@pytest.mark.parametrize(("name", "given", "outcome"), DAY2, ids=[f"{n}-{i}" for i, (n, _, _) in enumerate(DAY2)])
def test_day2_action_through_nbi_and_lcm(
    vnfd_doc: Doc, charmcraft: Doc, name: str, given: Doc, outcome: Doc | str
) -> None:
    config = rules.vnf_configuration(rules.unwrap_vnfd(vnfd_doc))
    assert config is not None
    if isinstance(outcome, str):
        with pytest.raises(ValueError, match=outcome):
            charm_rules.nbi_check_action(config, name, given)
        return
    charm_rules.nbi_check_action(config, name, given)
    desc = next(p for p in config["config-primitive"] if p["name"] == name)
    sent = map_primitive_params(desc, given, {})
    assert sent == outcome
    assert charm_rules.juju_action_param_errors(charmcraft["actions"][name], sent) == []
    if name == "attest":  # plain mode for the charm's own parser, with the schema defaults Juju adds
        parsed = charm_params_module().attest_params(charm_rules.juju_with_defaults(charmcraft["actions"][name], sent))
        assert (parsed.nonce, parsed.trustmgr_url) == (bytes.fromhex(NONCE), None)


# -- 5. instantiation parameters ------------------------------------------------------------------------------


def test_params_files_cover_the_loa_variants() -> None:
    ns_params = {p.name: load_yaml(p)["additionalParamsForNs"] for p in params_files()}
    assert ns_params == {
        "trust_loa4.yaml": {"trust_loa": 4},
        "trust_loa5.yaml": {"trust_loa": 5},
        "trust_split_loa.yaml": {"trust_host_loa": 3, "trust_vnf_loa": 2},
    }


@pytest.mark.parametrize("params_file", params_files(), ids=lambda p: p.name)
def test_params_file(params_file: Path, nsd_doc: Doc, vnfds: dict[str, Doc]) -> None:
    params = load_yaml(params_file)
    assert charm_rules.params_errors(params, rules.unwrap_nsd(nsd_doc), vnfds) == []
    # the values are ones the Trust Manager itself accepts
    scopes = [params["additionalParamsForNs"], *(i["additionalParams"] for i in params["additionalParamsForVnf"])]
    loas = {(n, k): v for n, scope in enumerate(scopes) for k, v in scope.items() if k in rules.LOA_KEYS}
    assert loas, "no LoA parameter"
    assert all(parse_loa(v, k) == v for (_, k), v in loas.items())


def _vnf_params(d: Doc, member: int) -> Doc:
    additional: Doc = d["additionalParamsForVnf"][member]["additionalParams"]
    return additional


PARAMS_BROKEN: dict[str, tuple[Mutation, str]] = {
    "dash in a param name": (
        lambda d: d["additionalParamsForNs"].__setitem__("trust-loa", 4),
        "invalid param name 'trust-loa'",
    ),
    "LoA above 5": (lambda d: d["additionalParamsForNs"].__setitem__("trust_loa", 6), "not an integer 0..5"),
    "LoA true": (lambda d: d["additionalParamsForNs"].__setitem__("trust_loa", True), "not an integer 0..5"),
    "LoA as text": (lambda d: _vnf_params(d, 1).__setitem__("trust_vnf_loa", "4"), "not an integer 0..5"),
    "unknown member": (
        lambda d: d["additionalParamsForVnf"][1].__setitem__("member-vnf-index", "3"),
        "'3' is not a vnf-profile of the NSD",
    ),
    "unquoted member index": (
        lambda d: d["additionalParamsForVnf"][0].__setitem__("member-vnf-index", 1),
        "must be a string",
    ),
    "trustmgr_url missing for a member": (
        lambda d: _vnf_params(d, 1).pop("trustmgr_url"),
        "member '2': <trustmgr_url> of day-1 primitive 'attest' not supplied",
    ),
    "member left out": (
        lambda d: d["additionalParamsForVnf"].pop(),
        "member '2': <trustmgr_url>",
    ),
    "LoA at the top level": (lambda d: d.__setitem__("trust_loa", 4), "'trust_loa' is not an NBI instantiate"),
    "unknown key in a VNF item": (
        lambda d: d["additionalParamsForVnf"][0].__setitem__("additionalParam", {}),
        "unknown key 'additionalParam'",
    ),
}


@pytest.mark.parametrize(("mutation", "expected"), PARAMS_BROKEN.values(), ids=PARAMS_BROKEN.keys())
def test_params_checks_catch(nsd_doc: Doc, vnfds: dict[str, Doc], mutation: Mutation, expected: str) -> None:
    params = mutated(load_yaml(params_files()[0]), mutation)
    errors = charm_rules.params_errors(params, rules.unwrap_nsd(nsd_doc), vnfds)
    assert any(expected in e for e in errors), errors


def test_readme_documents_onboarding() -> None:
    text = (DESCRIPTORS / "README.md").read_text(encoding="utf-8").lower()
    for needed in (
        "osm vnfpkg-create",
        "osm nspkg-create",
        "osm ns-create",
        "--config_file",
        "charms/trust-proxy",
        "strict mode",
        *(p.name for p in params_files()),
    ):
        assert needed.lower() in text, needed
