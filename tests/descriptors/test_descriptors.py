"""The example packages in descriptors/ are ones OSM onboards and instantiates, and they fit the trust-proxy charm.

1. OSM NBI's own validation: the descriptors load into pyangbind bindings built from OSM's models (SOL006 v2.6.1,
   OSM-patched, + osm/IM augments) with unknown keys rejected; OSM's hackfest package is the positive control.
2. The cross-references NBI checks on onboarding and what LCM needs of a charmed VNF (osm_rules.py).
3. The charm contract: every primitive is an action (or, for ``config``, config options) of charmcraft.yaml.
(Run time and the instantiation parameter files: test_descriptor_runtime.py.)
"""

from __future__ import annotations

import copy

import pytest

from tests.descriptors import charm_rules
from tests.descriptors import osm_rules as rules
from tests.descriptors.support import (
    NS_PACKAGE,
    SOL006_DIR,
    VNF_PACKAGE,
    Doc,
    Mutation,
    OsmBindings,
    day12,
    mutated,
    param,
    primitive,
    pyang_module_set,
)

# -- 1. OSM NBI's pyangbind validation ------------------------------------------------------------------------


# osm/IM models/augments/ at ef549b00 (the last upstream commit, ../shared/sol006/SOURCES.md)
OSM_IM_AUGMENTS = [
    "additional-info",
    "alarm",
    "alternative-images",
    "cloud-init",
    "common-augments",
    "day1-2",
    "epa",
    "exporters",
    "healing",
    "interface",
    "ip-profiles",
    "kdu",
    "mgmt-interface",
    "ns-configuration",
    "ns-various",
    "ns-vld",
    "persistent-storage",
    "scaling",
    "various",
    "vip",
]


def test_bindings_are_built_from_osm_ims_module_set(osm_bindings: OsmBindings) -> None:
    for kind in ("vnfd", "nsd"):
        modules = pyang_module_set(kind)
        assert [p.stem for p in modules] == [*OSM_IM_AUGMENTS, f"etsi-nfv-{kind}"]
        assert modules[-1].parent == SOL006_DIR
    # the SOL006 copy is OSM's patched one (deref() musts commented out), not the ETSI original
    patched = (SOL006_DIR / "etsi-nfv-ns.yang").read_text(encoding="utf-8")
    assert patched != (SOL006_DIR.parent / "sol006-v2.6.1" / "etsi-nfv-ns.yang").read_text(encoding="utf-8")
    assert all("-Werror" in cmd and str(SOL006_DIR) in cmd for cmd in osm_bindings.commands)
    assert hasattr(osm_bindings.vnfd, "etsi_nfv_vnfd") and hasattr(osm_bindings.nsd, "etsi_nfv_nsd")


def test_hackfest_vnfd_passes_osm_validation(osm_bindings: OsmBindings, hackfest: Doc) -> None:
    out = rules.strip_prefixes(rules.pyangbind_validate(osm_bindings.vnfd, "vnfd", hackfest["vnfd"]))
    config = out["vnfd"]["df"][0]["lcm-operations-configuration"]["operate-vnf-op-config"]["day1-2"][0]
    assert config["execution-environment-list"][0]["juju"]["charm"] == "simple"


def test_hackfest_nsd_passes_osm_validation(osm_bindings: OsmBindings, hackfest: Doc) -> None:
    out = rules.strip_prefixes(rules.pyangbind_validate(osm_bindings.nsd, "nsd", hackfest["nsd"]))
    assert [p["id"] for p in out["nsd"]["nsd"][0]["df"][0]["vnf-profile"]] == ["1", "2"]


def test_vnfd_passes_osm_validation_and_keeps_its_day1_2(osm_bindings: OsmBindings, vnfd_doc: Doc) -> None:
    out = rules.strip_prefixes(rules.pyangbind_validate(osm_bindings.vnfd, "vnfd", vnfd_doc))
    config = out["vnfd"]["df"][0]["lcm-operations-configuration"]["operate-vnf-op-config"]["day1-2"][0]
    # what NBI stores is this serialisation: the charm and the primitives must survive it, not be dropped
    assert config["execution-environment-list"][0]["juju"] == {"charm": "trust-proxy", "proxy": True}
    assert [p["name"] for p in config["initial-config-primitive"]] == ["config", "attest"]
    assert {p["name"] for p in config["config-primitive"]} == {"attest", "identity", "activate"}
    assert out["vnfd"]["vdu"][0]["cloud-init-file"] == "cloud-config.txt"


def test_nsd_passes_osm_validation(osm_bindings: OsmBindings, nsd_doc: Doc) -> None:
    out = rules.strip_prefixes(rules.pyangbind_validate(osm_bindings.nsd, "nsd", nsd_doc))
    nsd = out["nsd"]["nsd"][0]
    assert nsd["vnfd-id"] == ["trust-proxy-vnf"]
    assert [p["id"] for p in nsd["df"][0]["vnf-profile"]] == ["1", "2"]


VNFD_REJECTED: dict[str, tuple[Mutation, str]] = {
    "unknown top-level key (an LoA field)": (
        lambda d: d["vnfd"].__setitem__("trust_loa", 4),
        "key that did not exist (trust_loa)",
    ),
    "unknown key inside juju": (
        lambda d: day12(d)["execution-environment-list"][0]["juju"].__setitem__("channel", "1"),
        "key that did not exist (channel)",
    ),
    # day-1 parameters are name/data-type/value (osm/IM primitive-parameter-value): no default-value there
    "default-value in a day-1 parameter": (
        lambda d: param(primitive(d, "initial-config-primitive", "attest"), "trustmgr-url").__setitem__(
            "default-value", "<trustmgr_url>"
        ),
        "key that did not exist (default-value)",
    ),
    "value in a day-2 parameter": (
        lambda d: param(primitive(d, "config-primitive", "attest"), "pcrs").__setitem__("value", "sha256:0-7"),
        "key that did not exist (value)",
    ),
    "wrong enum: data-type INT": (
        lambda d: param(primitive(d, "config-primitive", "attest"), "ima-offset").__setitem__("data-type", "INT"),
        "data_type must be of a type compatible with common:parameter-data-type",
    ),
    "wrong enum: virtual-interface type virtio": (
        lambda d: d["vnfd"]["vdu"][0]["int-cpd"][0]["virtual-network-interface-requirement"][0][
            "virtual-interface"
        ].__setitem__("type", "virtio"),
        "type must be of a type compatible with enumeration",
    ),
    "wrong enum: juju cloud lxc": (
        lambda d: day12(d)["execution-environment-list"][0]["juju"].__setitem__("cloud", "lxc"),
        "cloud must be of a type compatible with enumeration",
    ),
    "wrong type: ssh-access required 'yes'": (
        lambda d: day12(d)["config-access"]["ssh-access"].__setitem__("required", "yes"),
        "required must be of a type compatible with boolean",
    ),
    "wrong type: seq 'first'": (
        lambda d: day12(d)["initial-config-primitive"][0].__setitem__("seq", "first"),
        "seq must be of a type compatible with uint64",
    ),
}


@pytest.mark.parametrize(("mutation", "expected"), VNFD_REJECTED.values(), ids=VNFD_REJECTED.keys())
def test_osm_validation_rejects_broken_vnfd(
    osm_bindings: OsmBindings, vnfd_doc: Doc, mutation: Mutation, expected: str
) -> None:
    with pytest.raises((AttributeError, ValueError, KeyError)) as rejected:
        rules.pyangbind_validate(osm_bindings.vnfd, "vnfd", mutated(vnfd_doc, mutation))
    assert expected in str(rejected.value)


NSD_REJECTED: dict[str, tuple[Mutation, str]] = {
    "unknown key in the NSD (an LoA field)": (
        lambda d: d["nsd"]["nsd"][0].__setitem__("trust_loa", 4),
        "key that did not exist (trust_loa)",
    ),
    "wrong type: mgmt-network 'maybe'": (
        lambda d: d["nsd"]["nsd"][0]["virtual-link-desc"][0].__setitem__("mgmt-network", "maybe"),
        "mgmt_network must be of a type compatible with boolean",
    ),
}


@pytest.mark.parametrize(("mutation", "expected"), NSD_REJECTED.values(), ids=NSD_REJECTED.keys())
def test_osm_validation_rejects_broken_nsd(
    osm_bindings: OsmBindings, nsd_doc: Doc, mutation: Mutation, expected: str
) -> None:
    with pytest.raises((AttributeError, ValueError, KeyError)) as rejected:
        rules.pyangbind_validate(osm_bindings.nsd, "nsd", mutated(nsd_doc, mutation))
    assert expected in str(rejected.value)


# -- 2. cross-references and what a charmed VNF needs -------------------------------------------------------


def test_package_layout_is_what_nbi_unpacks() -> None:
    # NBI upload_content: exactly one descriptor (.yaml/.yml/.json) at the top of the package directory
    for package, descriptor in ((VNF_PACKAGE, "trust_proxy_vnfd.yaml"), (NS_PACKAGE, "trust_proxy_nsd.yaml")):
        tops = [p.name for p in package.iterdir() if p.is_file() and p.suffix in (".yaml", ".yml", ".json")]
        assert tops == [descriptor], package


def test_vnfd_structure(vnfd_doc: Doc) -> None:
    vnfd = rules.unwrap_vnfd(vnfd_doc)
    assert rules.vnfd_structure_errors(vnfd, VNF_PACKAGE) == []
    assert rules.trust_vnfd_errors(vnfd) == []


def test_hackfest_passes_the_generic_checks_but_is_no_trust_vnf(hackfest: Doc) -> None:
    vnfd = rules.unwrap_vnfd(hackfest["vnfd"])
    assert rules.vnfd_structure_errors(vnfd) == []
    assert rules.nsd_structure_errors(rules.unwrap_nsd(hackfest["nsd"]), {vnfd["id"]: vnfd}) == []
    assert rules.trust_vnfd_errors(vnfd) == [
        "expected one execution environment with juju charm 'trust-proxy', found 0"
    ]


def _swap_day1(d: Doc) -> None:
    day1 = day12(d)["initial-config-primitive"]
    day1[0]["seq"], day1[1]["seq"] = "2", "1"
    day1.reverse()


VNFD_STRUCTURE: dict[str, tuple[Mutation, str]] = {
    "duplicate vdu id": (lambda d: d["vnfd"]["vdu"].append(copy.deepcopy(d["vnfd"]["vdu"][0])), "is not unique"),
    "vdu without vdu-profile": (lambda d: d["vnfd"]["df"][0].__setitem__("vdu-profile", []), "has no vdu-profile"),
    "unknown execution-environment-ref": (
        lambda d: primitive(d, "config-primitive", "identity").__setitem__("execution-environment-ref", "other-ee"),
        "execution-environment-ref 'other-ee' does not exist",
    ),
    "repeated seq": (lambda d: day12(d)["initial-config-primitive"][1].__setitem__("seq", "1"), "seq values repeat"),
    "descending seq": (
        lambda d: day12(d)["initial-config-primitive"].reverse(),
        "seq values are not ascending",
    ),
    "config not first": (_swap_day1, "day-1 must start with 'config'"),
    "attest not last": (
        lambda d: day12(d)["initial-config-primitive"].append(
            {"seq": "3", "name": "identity", "execution-environment-ref": "trust-ee"}
        ),
        "day-1 must end with 'attest'",
    ),
    "mgmt-cp not an ext-cpd": (lambda d: d["vnfd"].__setitem__("mgmt-cp", "trustVM-eth0-int"), "is not an ext-cpd"),
    "ext-cpd to a missing int-cpd": (
        lambda d: d["vnfd"]["ext-cpd"][0]["int-cpd"].__setitem__("cpd", "trustVM-eth9-int"),
        "is not an int-cpd of that vdu",
    ),
    "day1-2 id not the VNFD id": (lambda d: day12(d).__setitem__("id", "trust-vnf"), "neither the VNFD id"),
    "cloud-init file not in the package": (
        lambda d: d["vnfd"]["vdu"][0].__setitem__("cloud-init-file", "missing.txt"),
        "not in the package's cloud_init/",
    ),
    "no virtual-storage-desc": (lambda d: d["vnfd"]["vdu"][0].pop("virtual-storage-desc"), "no virtual-storage-desc"),
    "instantiation level of an unknown vdu": (
        lambda d: d["vnfd"]["df"][0]["instantiation-level"][0]["vdu-level"][0].__setitem__("vdu-id", "ghost"),
        "instantiation-level vdu-id 'ghost' unknown",
    ),
    "execution environment on an unknown ext-cpd": (
        lambda d: day12(d)["execution-environment-list"][0].__setitem__("external-connection-point-ref", "x"),
        "names unknown ext-cpd 'x'",
    ),
    "osm-params not <OSM>": (
        lambda d: param(primitive(d, "initial-config-primitive", "attest"), "osm-params").__setitem__("value", "{}"),
        "osm-params must be <OSM>",
    ),
    "trustmgr-url a literal": (
        lambda d: param(primitive(d, "initial-config-primitive", "attest"), "trustmgr-url").__setitem__(
            "value", "https://trustmgr:9998/osm/trust/v1"
        ),
        "trustmgr-url must be an instantiation parameter",
    ),
    "not a proxy charm": (
        lambda d: day12(d)["execution-environment-list"][0]["juju"].__setitem__("proxy", False),
        "juju.proxy must be true",
    ),
    "ssh-hostname a literal": (
        lambda d: param(primitive(d, "initial-config-primitive", "config"), "ssh-hostname").__setitem__(
            "value", "10.0.0.1"
        ),
        "ssh-hostname must be <rw_mgmt_ip>",
    ),
    "no SSH secret": (
        lambda d: primitive(d, "initial-config-primitive", "config")["parameter"].pop(2),
        "neither ssh-password nor ssh-private-key",
    ),
    "default-user differs from ssh-username": (
        lambda d: day12(d)["config-access"]["ssh-access"].__setitem__("default-user", "root"),
        "default-user 'root'",
    ),
    "day-2 activate missing": (
        lambda d: day12(d)["config-primitive"].remove(primitive(d, "config-primitive", "activate")),
        "'activate' missing",
    ),
}


@pytest.mark.parametrize(("mutation", "expected"), VNFD_STRUCTURE.values(), ids=VNFD_STRUCTURE.keys())
def test_vnfd_structure_checks_catch(vnfd_doc: Doc, mutation: Mutation, expected: str) -> None:
    vnfd = rules.unwrap_vnfd(mutated(vnfd_doc, mutation))
    errors = rules.vnfd_structure_errors(vnfd, VNF_PACKAGE) + rules.trust_vnfd_errors(vnfd)
    assert any(expected in e for e in errors), errors


def test_nsd_structure(nsd_doc: Doc, vnfds: dict[str, Doc]) -> None:
    nsd = rules.unwrap_nsd(nsd_doc)
    assert rules.nsd_structure_errors(nsd, vnfds) == []
    assert rules.members(nsd) == {"1": "trust-proxy-vnf", "2": "trust-proxy-vnf"}


def _vlc(d: Doc, member: int = 0) -> Doc:
    link: Doc = d["nsd"]["nsd"][0]["df"][0]["vnf-profile"][member]["virtual-link-connectivity"][0]
    return link


NSD_STRUCTURE: dict[str, tuple[Mutation, str]] = {
    "vnfd-id lists another VNFD": (
        lambda d: d["nsd"]["nsd"][0].__setitem__("vnfd-id", ["other-vnf"]),
        "is not in the NSD's vnfd-id list",
    ),
    "vnf-profile of an unknown VNFD": (
        lambda d: d["nsd"]["nsd"][0]["df"][0]["vnf-profile"][1].__setitem__("vnfd-id", "ghost-vnf"),
        "vnfd 'ghost-vnf' unknown",
    ),
    "unknown virtual link": (
        lambda d: _vlc(d).__setitem__("virtual-link-profile-id", "datanet"),
        "'datanet' is not a virtual-link-desc or profile",
    ),
    "unknown connection point": (
        lambda d: _vlc(d)["constituent-cpd-id"][0].__setitem__("constituent-cpd-id", "vnf-data-ext"),
        "'vnf-data-ext' is not an ext-cpd",
    ),
    "connection point of another member": (
        lambda d: _vlc(d, 1)["constituent-cpd-id"][0].__setitem__("constituent-base-element-id", "1"),
        "is not this vnf-profile",
    ),
    "no management network": (
        lambda d: d["nsd"]["nsd"][0]["virtual-link-desc"][0].__setitem__("mgmt-network", False),
        "no virtual-link-desc with mgmt-network",
    ),
    "duplicate member index": (
        lambda d: d["nsd"]["nsd"][0]["df"][0]["vnf-profile"][1].__setitem__("id", "1"),
        "is not unique",
    ),
}


@pytest.mark.parametrize(("mutation", "expected"), NSD_STRUCTURE.values(), ids=NSD_STRUCTURE.keys())
def test_nsd_structure_checks_catch(nsd_doc: Doc, vnfds: dict[str, Doc], mutation: Mutation, expected: str) -> None:
    errors = rules.nsd_structure_errors(rules.unwrap_nsd(mutated(nsd_doc, mutation)), vnfds)
    assert any(expected in e for e in errors), errors


# -- 3. the charm contract ------------------------------------------------------------------------------------


def test_every_primitive_is_in_the_charm(vnfd_doc: Doc, charmcraft: Doc) -> None:
    vnfd = rules.unwrap_vnfd(vnfd_doc)
    assert charm_rules.charm_errors(vnfd, charmcraft) == []
    config = rules.vnf_configuration(vnfd)
    assert config is not None
    named = {p["name"] for kind in ("initial-config-primitive", "config-primitive") for p in config[kind]}
    assert named - {"config"} == {"attest", "identity", "activate"}
    assert named - {"config"} <= set(charmcraft["actions"])
    config_params = {p["name"] for p in primitive(vnfd_doc, "initial-config-primitive", "config")["parameter"]}
    assert config_params <= set(charmcraft["config"]["options"])


def _add_param(kind: str, name: str, new: Doc) -> Mutation:
    return lambda d: primitive(d, kind, name)["parameter"].append(new)


CHARM_MISMATCH: dict[str, tuple[Mutation, str]] = {
    "day-2 param not in the action": (
        _add_param("config-primitive", "attest", {"name": "quote-format", "data-type": "STRING"}),
        "'quote-format' is not a param of charm action 'attest'",
    ),
    "day-1 param not in the action": (
        _add_param("initial-config-primitive", "attest", {"name": "trustmgr-token", "value": "<token>"}),
        "'trustmgr-token' is not a param of charm action 'attest'",
    ),
    "INTEGER param the charm types string": (
        lambda d: param(primitive(d, "config-primitive", "attest"), "nonce").__setitem__("data-type", "INTEGER"),
        "the charm says 'string'",
    ),
    "integer param the VNFD types STRING": (
        lambda d: param(primitive(d, "config-primitive", "attest"), "ima-offset").__setitem__("data-type", "STRING"),
        "the charm says 'integer'",
    ),
    "config param that is no config option": (
        _add_param("initial-config-primitive", "config", {"name": "ssh-key-file", "value": "/root/key"}),
        "'ssh-key-file' is not a charm config option",
    ),
    "int config option sent as STRING": (
        _add_param("initial-config-primitive", "config", {"name": "ssh-port", "value": "22"}),
        "needs charm type 'string', the charm says 'int'",
    ),
    "int config option with a non-integer value": (
        _add_param("initial-config-primitive", "config", {"name": "ssh-port", "data-type": "INTEGER", "value": "ssh"}),
        "value 'ssh' is not an integer",
    ),
    "primitive that is no action": (
        lambda d: day12(d)["config-primitive"].append({"name": "reboot", "execution-environment-ref": "trust-ee"}),
        "the charm has no action 'reboot'",
    ),
    "required action param missing": (
        lambda d: primitive(d, "config-primitive", "activate")["parameter"].pop(),
        "requires 'secret'",
    ),
    "ssh-access required without get-ssh-public-key": (
        lambda d: day12(d)["config-access"]["ssh-access"].__setitem__("required", True),
        "'get-ssh-public-key'",
    ),
}


@pytest.mark.parametrize(("mutation", "expected"), CHARM_MISMATCH.values(), ids=CHARM_MISMATCH.keys())
def test_charm_cross_check_catches(vnfd_doc: Doc, charmcraft: Doc, mutation: Mutation, expected: str) -> None:
    errors = charm_rules.charm_errors(rules.unwrap_vnfd(mutated(vnfd_doc, mutation)), charmcraft)
    assert any(expected in e for e in errors), errors


def test_charm_cross_check_catches_a_renamed_charm(vnfd_doc: Doc, charmcraft: Doc) -> None:
    renamed = {**charmcraft, "name": "trust-proxy-k8s"}
    assert charm_rules.charm_errors(rules.unwrap_vnfd(vnfd_doc), renamed) == [
        "charmcraft.yaml name 'trust-proxy-k8s' is not 'trust-proxy' (LCM's charms/<name> path)"
    ]
