"""What OSM does with a descriptor package and its instantiation parameters, as plain functions over dicts.

Every rule names the OSM code it mirrors (osm/NBI ``descriptor_topics.py``, ``instance_topics.py``,
``validation.py``; osm/LCM ``ns.py``, ``data_utils/vnfd.py``; N2VC ``n2vc_juju_conn.py``), so that a descriptor
these functions accept is one OSM onboards and instantiates. Checkers return a list of error strings (empty: OK),
so one mutation in a test shows exactly which rule caught it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

# NBI NsrTopic._format_additional_params: names OSM fills in itself, never required from the user.
BUILTIN_PLACEHOLDERS = frozenset({"rw_mgmt_ip", "VDU_SCALE_INFO", "ns_config_info", "OSM"})
# NBI _format_additional_params: additional parameter names must be Jinja2 identifiers.
PARAM_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
# NBI validation.py ns_instantiate (additionalProperties: false) and additional_params_for_vnf items.
NS_INSTANTIATE_KEYS = frozenset(
    {
        "lcmOperationType", "nsInstanceId", "netsliceInstanceId", "nsName", "nsDescription", "nsdId",
        "vimAccountId", "nsConfigTemplateId", "wimAccountId", "placement-engine", "placement-constraints",
        "additionalParamsForNs", "additionalParamsForVnf", "config-units", "k8s-namespace", "ssh_keys",
        "timeout_ns_deploy", "nsr_id", "vduImage", "vnf", "vld",
    }
)  # fmt: skip
VNF_PARAMS_KEYS = frozenset(
    {
        "member-vnf-index", "additionalParams", "k8s-namespace", "config-units", "additionalParamsForVdu",
        "additionalParamsForKdu", "affinity-or-anti-affinity-group",
    }
)  # fmt: skip
LOA_KEYS = ("trust_loa", "trust_host_loa", "trust_vnf_loa")
LOA_MAX = 5
# N2VC get_ee_ssh_public__key: with config-access.ssh-access.required, LCM runs generate-ssh-key (errors ignored)
# and then get-ssh-public-key (an error fails the instantiation) on the proxy charm.
SSH_KEY_ACTION = "get-ssh-public-key"

# osm/IM common-augments parameter-data-type -> charmcraft.yaml action param type / config option type.
ACTION_TYPE = {"STRING": "string", "INTEGER": "integer", "BOOLEAN": "boolean"}
CONFIG_TYPE = {"STRING": "string", "INTEGER": "int", "BOOLEAN": "boolean"}


def iterable(value: Any) -> Iterable[Any]:
    """NBI base_topic.get_iterable: None is an empty list."""
    return () if value is None else value


# -- envelopes and the NBI pyangbind validation -------------------------------------------------------------


def unwrap_vnfd(doc: Mapping[str, Any]) -> dict[str, Any]:
    """NBI VnfdTopic._remove_envelop: the package file has ``vnfd: {...}``."""
    inner = doc.get("etsi-nfv-vnfd:vnfd") or doc.get("vnfd") or doc
    if not isinstance(inner, dict):
        raise ValueError("'vnfd' must be a dict")
    return inner


def unwrap_nsd(doc: Mapping[str, Any]) -> dict[str, Any]:
    """NBI NsdTopic._remove_envelop: the package file has ``nsd: {nsd: [{...}]}`` with exactly one NSD."""
    inner: Any = doc.get("nsd") or doc.get("etsi-nfv-nsd:nsd") or doc
    if isinstance(inner, dict) and "nsd" in inner:
        if not isinstance(inner["nsd"], list) or len(inner["nsd"]) != 1:
            raise ValueError("'nsd' must be a list of only one element")
        inner = inner["nsd"][0]
    if not isinstance(inner, dict):
        raise ValueError("'nsd' must be a dict")
    return inner


def pyangbind_validate(bindings: ModuleType, kind: str, descriptor: Mapping[str, Any]) -> dict[str, Any]:
    """NBI {Vnfd,Nsd}Topic.pyangbind_validation with force=False: load into the osm_im bindings, unknown keys
    rejected; returns the bindings' IETF JSON serialisation (what NBI merges back into the stored descriptor).
    Raises whatever pyangbind raises (AttributeError for an unknown key, ValueError/KeyError for a bad value)."""
    import pyangbind.lib.pybindJSON as pybind_json
    from pyangbind.lib.serialise import pybindJSONDecoder

    if kind == "vnfd":
        obj = bindings.etsi_nfv_vnfd()
        envelope: dict[str, Any] = {"etsi-nfv-vnfd:vnfd": unwrap_vnfd(descriptor)}
    elif kind == "nsd":
        obj = bindings.etsi_nfv_nsd()
        envelope = {"nsd": {"nsd": [unwrap_nsd(descriptor)]}}
    else:
        raise ValueError(f"unknown descriptor kind {kind!r}")
    pybindJSONDecoder.load_ietf_json(envelope, None, None, obj=obj, path_helper=True, skip_unknown=False)
    dumped: dict[str, Any] = yaml.safe_load(pybind_json.dumps(obj, mode="ietf"))
    return dumped


def strip_prefixes(value: Any) -> Any:
    """NBI _remove_yang_prefixes_from_descriptor: ``day1-2:day1-2`` -> ``day1-2`` at every level."""
    if isinstance(value, dict):
        return {k.split(":")[-1]: strip_prefixes(v) for k, v in value.items()}
    if isinstance(value, list):
        return [strip_prefixes(v) for v in value]
    return value


# -- VNFD ---------------------------------------------------------------------------------------------------


def day12_configs(vnfd: Mapping[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(df id, day1-2 entry) for every deployment flavour."""
    for df in iterable(vnfd.get("df")):
        lcm = (df.get("lcm-operations-configuration") or {}).get("operate-vnf-op-config") or {}
        for config in iterable(lcm.get("day1-2")):
            yield df.get("id", "?"), config


def vnf_configuration(vnfd: Mapping[str, Any]) -> dict[str, Any] | None:
    """LCM data_utils.vnfd.get_configuration(vnfd, vnfd["id"]): the VNF-level day1-2 entry of df[0]."""
    dfs = list(iterable(vnfd.get("df")))
    if not dfs:
        return None
    lcm = (dfs[0].get("lcm-operations-configuration") or {}).get("operate-vnf-op-config") or {}
    return next((c for c in iterable(lcm.get("day1-2")) if c.get("id") == vnfd.get("id")), None)


def sorted_initial_primitives(config: Mapping[str, Any], ee_id: str | None) -> list[dict[str, Any]]:
    """LCM data_utils.vnfd.get_ee_sorted_initial_config_primitive_list (without the inserted
    verify-ssh-credentials): the primitives of one execution environment, sorted by int(seq)."""
    primitives = [
        p
        for p in iterable(config.get("initial-config-primitive"))
        if p.get("execution-environment-ref", ee_id) == ee_id
    ]
    return sorted(primitives, key=lambda p: int(p["seq"]))


def placeholder(value: Any) -> str | None:
    """``<name>`` -> ``name`` (LCM _map_primitive_params / NBI _format_additional_params), else None."""
    if isinstance(value, str) and len(value) > 2 and value.startswith("<") and value.endswith(">"):
        return value[1:-1]
    return None


def unique_id_errors(descriptor: Mapping[str, Any], position: str = "") -> list[str]:
    """NBI DescriptorTopic.check_conflict_on_edit._check_unique_id_name: in every list of dicts, the ``id`` (or,
    if the first item has none, the ``name``) of the items is unique."""
    errors: list[str] = []
    for key, items in descriptor.items():
        if not isinstance(items, list) or not items:
            continue
        used: list[Any] = []
        id_key = None
        for index, item in enumerate(items):
            if not isinstance(item, dict):
                continue
            errors += unique_id_errors(item, f"{position}.{key}[{index}]")
            if index == 0 and (item.get("id") or item.get("name")):
                id_key = "id" if item.get("id") else "name"
            if id_key and item.get(id_key):
                if item[id_key] in used:
                    errors.append(f"{id_key} {item[id_key]!r} is not unique at {position}.{key}[{index}]")
                used.append(item[id_key])
    return errors


def vnfd_structure_errors(vnfd: Mapping[str, Any], package_dir: Path | None = None) -> list[str]:
    """NBI VnfdTopic._validate_input_new cross references, osm_im vdu-profile/instantiation-level checks, and what
    LCM needs of a charmed VNF's day1-2 configuration. ``package_dir``: also check that files the VNFD names are in
    the package (NBI _validate_vdu_cloud_init_in_package)."""
    errors = unique_id_errors(vnfd)
    vdus = {v.get("id"): v for v in iterable(vnfd.get("vdu"))}
    ext_cpds = {c.get("id"): c for c in iterable(vnfd.get("ext-cpd"))}
    compute = {c.get("id") for c in iterable(vnfd.get("virtual-compute-desc"))}
    storage = {s.get("id") for s in iterable(vnfd.get("virtual-storage-desc"))}
    images = {i.get("id") for i in iterable(vnfd.get("sw-image-desc"))}
    ivlds = {v.get("id") for v in iterable(vnfd.get("int-virtual-link-desc"))}

    # validate_mgmt_interface_connection_point
    if vdus and vnfd.get("mgmt-cp") not in ext_cpds:
        errors.append(f"mgmt-cp {vnfd.get('mgmt-cp')!r} is not an ext-cpd")
    # validate_external_connection_points
    int_cpds = {(vdu_id, c.get("id")) for vdu_id, vdu in vdus.items() for c in iterable(vdu.get("int-cpd"))}
    for cpd_id, cpd in ext_cpds.items():
        ref = cpd.get("int-cpd")
        if ref and (ref.get("vdu-id"), ref.get("cpd")) not in int_cpds:
            errors.append(f"ext-cpd {cpd_id!r}: int-cpd {ref} is not an int-cpd of that vdu")
    for vdu_id, vdu in vdus.items():
        if vdu.get("pdu-type"):
            continue
        # validate_storage_compute_descriptor (NBI iterates vdu.virtual-storage-desc: it must be there)
        if vdu.get("virtual-compute-desc") not in compute:
            errors.append(f"vdu {vdu_id!r}: virtual-compute-desc {vdu.get('virtual-compute-desc')!r} not defined")
        if not vdu.get("virtual-storage-desc"):
            errors.append(f"vdu {vdu_id!r}: no virtual-storage-desc")
        for ref in iterable(vdu.get("virtual-storage-desc")):
            if ref not in storage:
                errors.append(f"vdu {vdu_id!r}: virtual-storage-desc {ref!r} not defined")
        if vdu.get("sw-image-desc") not in images:
            errors.append(f"vdu {vdu_id!r}: sw-image-desc {vdu.get('sw-image-desc')!r} not defined")
        # validate_internal_virtual_links
        for cpd in iterable(vdu.get("int-cpd")):
            link = cpd.get("int-virtual-link-desc")
            if link and link not in ivlds:
                errors.append(f"vdu {vdu_id!r}: int-cpd {cpd.get('id')!r} names unknown int-virtual-link-desc {link}")
        init_file = vdu.get("cloud-init-file")
        if init_file and package_dir is not None and not (package_dir / "cloud_init" / init_file).is_file():
            errors.append(f"vdu {vdu_id!r}: cloud-init-file {init_file!r} not in the package's cloud_init/")

    for df in iterable(vnfd.get("df")):
        df_id = df.get("id")
        profiles = [p.get("id") for p in iterable(df.get("vdu-profile"))]
        for vdu_id in vdus:
            if vdu_id not in profiles:
                errors.append(f"df {df_id!r}: vdu {vdu_id!r} has no vdu-profile")
        for profile in profiles:
            if profile not in vdus:
                errors.append(f"df {df_id!r}: vdu-profile {profile!r} is not a vdu")
        for level in iterable(df.get("instantiation-level")):
            for vdu_level in iterable(level.get("vdu-level")):
                if vdu_level.get("vdu-id") not in vdus:
                    errors.append(f"df {df_id!r}: instantiation-level vdu-id {vdu_level.get('vdu-id')!r} unknown")
        # validate_scaling_group_descriptor: scaling-config-action names a day-2 primitive of the VNF
        primitives = {
            p.get("name")
            for _, c in day12_configs({"df": [df]})
            if c.get("id") == vnfd.get("id")
            for p in iterable(c.get("config-primitive"))
        }
        for aspect in iterable(df.get("scaling-aspect")):
            for action in iterable(aspect.get("scaling-config-action")):
                if action.get("vnf-config-primitive-name-ref") not in primitives:
                    errors.append(
                        f"df {df_id!r}: scaling-config-action {action.get('vnf-config-primitive-name-ref')!r} "
                        "is not a config-primitive of the VNF"
                    )

    targets = {vnfd.get("id"), *vdus, *(k.get("name") for k in iterable(vnfd.get("kdu")))}
    for df_id, config in day12_configs(vnfd):
        where = f"df {df_id!r} day1-2 {config.get('id')!r}"
        # LCM get_configuration / NBI _validate_vnf_charms_in_package match day1-2 ids against these
        if config.get("id") not in targets:
            errors.append(f"{where}: id is neither the VNFD id nor a vdu/kdu id")
        ees = [ee.get("id") for ee in iterable(config.get("execution-environment-list"))]
        for ee in iterable(config.get("execution-environment-list")):
            ref = ee.get("external-connection-point-ref")
            if ref is not None and ref not in ext_cpds:
                errors.append(f"{where}: execution environment {ee.get('id')!r} names unknown ext-cpd {ref!r}")
        for kind in ("initial-config-primitive", "config-primitive", "terminate-config-primitive"):
            for primitive in iterable(config.get(kind)):
                ref = primitive.get("execution-environment-ref")
                name = primitive.get("name")
                if ref is None and len(ees) > 1:
                    errors.append(f"{where}: {kind} {name!r} must name one of the execution environments {ees}")
                elif ref is not None and ref not in ees:
                    errors.append(f"{where}: {kind} {name!r} execution-environment-ref {ref!r} does not exist")
        seqs: list[int] = []
        for primitive in iterable(config.get("initial-config-primitive")):
            try:
                seqs.append(int(primitive.get("seq")))
            except (TypeError, ValueError):
                errors.append(f"{where}: initial-config-primitive {primitive.get('name')!r} seq is not an integer")
        if len(set(seqs)) != len(seqs):
            errors.append(f"{where}: initial-config-primitive seq values repeat: {seqs}")
        elif seqs != sorted(seqs):
            errors.append(f"{where}: initial-config-primitive seq values are not ascending: {seqs}")
    return errors


def trust_vnfd_errors(vnfd: Mapping[str, Any], charm: str = "trust-proxy") -> list[str]:
    """What the Trust Manager needs of a VNF it attests through the trust-proxy charm (DESIGN.md §3, §5)."""
    config = vnf_configuration(vnfd)
    if config is None:
        return [f"no VNF-level day1-2 configuration (day1-2 id {vnfd.get('id')!r}) in df[0]"]
    errors: list[str] = []
    ees = [
        ee for ee in iterable(config.get("execution-environment-list")) if (ee.get("juju") or {}).get("charm") == charm
    ]
    if len(ees) != 1:
        return [f"expected one execution environment with juju charm {charm!r}, found {len(ees)}"]
    ee = ees[0]
    if ee["juju"].get("proxy") is not True:
        errors.append(f"execution environment {ee.get('id')!r}: juju.proxy must be true (a proxy charm)")
    day1 = sorted_initial_primitives(config, ee.get("id"))
    names = [p.get("name") for p in day1]
    if not names or names[0] != "config":
        errors.append(f"day-1 must start with 'config' (sets the charm's SSH credentials), got {names}")
    if not names or names[-1] != "attest":
        errors.append(f"day-1 must end with 'attest' (strict mode), got {names}")
    if names.count("attest") > 1:
        errors.append("day-1 runs 'attest' more than once")
    for primitive in day1:
        values = {p.get("name"): p.get("value") for p in iterable(primitive.get("parameter"))}
        if primitive.get("name") == "config":
            if values.get("ssh-hostname") != "<rw_mgmt_ip>":
                errors.append(f"config: ssh-hostname must be <rw_mgmt_ip>, got {values.get('ssh-hostname')!r}")
            if not values.get("ssh-username"):
                errors.append("config: ssh-username missing")
            if not (values.get("ssh-password") or values.get("ssh-private-key")):
                errors.append("config: neither ssh-password nor ssh-private-key")
            user = ((config.get("config-access") or {}).get("ssh-access") or {}).get("default-user")
            if user is not None and user != values.get("ssh-username"):
                errors.append(f"config-access default-user {user!r} is not config's ssh-username")
        if primitive.get("name") == "attest":
            if not placeholder(values.get("trustmgr-url")):
                errors.append("day-1 attest: trustmgr-url must be an instantiation parameter <name> (strict mode)")
            if values.get("osm-params") != "<OSM>":
                errors.append("day-1 attest: osm-params must be <OSM> (names the VNF to the Trust Manager)")
    day2 = {p.get("name"): p for p in iterable(config.get("config-primitive"))}
    expected = {"attest": ["nonce", "pcrs", "ima-offset"], "identity": [], "activate": ["credential", "secret"]}
    for name, params in expected.items():
        if name not in day2:
            errors.append(f"day-2 config-primitive {name!r} missing")
            continue
        got = [p.get("name") for p in iterable(day2[name].get("parameter"))]
        if sorted(got) != sorted(params):
            errors.append(f"day-2 {name}: parameters {got}, expected {params}")
    return errors


# -- NSD ----------------------------------------------------------------------------------------------------


def nsd_structure_errors(nsd: Mapping[str, Any], vnfds: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """NBI NsdTopic checks (validate_vnf_profiles_vnfd_id, _get_descriptor_constituent_vnfds_index,
    validate_df_vnf_profiles_constituent_connection_points) plus: every member's mgmt-cp is on a mgmt-network VL
    (the proxy charm reaches the VNF at <rw_mgmt_ip>). ``vnfds``: the onboarded VNFDs by id."""
    errors = unique_id_errors(nsd)
    listed = list(iterable(nsd.get("vnfd-id")))
    for vnfd_id in listed:
        if vnfd_id not in vnfds:
            errors.append(f"vnfd-id {vnfd_id!r} references a non existing vnfd")
    vlds = {v.get("id"): v for v in iterable(nsd.get("virtual-link-desc"))}
    mgmt_vls = {vl_id for vl_id, vl in vlds.items() if vl.get("mgmt-network")}
    if not mgmt_vls:
        errors.append("no virtual-link-desc with mgmt-network: true")
    for df in iterable(nsd.get("df")):
        df_id = df.get("id")
        vl_profiles = {p.get("id"): p.get("virtual-link-desc-id") for p in iterable(df.get("virtual-link-profile"))}
        for profile in iterable(df.get("vnf-profile")):
            where = f"df {df_id!r} vnf-profile {profile.get('id')!r}"
            vnfd_id = profile.get("vnfd-id")
            if vnfd_id not in listed:
                errors.append(f"{where}: vnfd-id {vnfd_id!r} is not in the NSD's vnfd-id list")
            vnfd = vnfds.get(vnfd_id)
            if vnfd is None:
                errors.append(f"{where}: vnfd {vnfd_id!r} unknown")
                continue
            ext_cpds = {c.get("id") for c in iterable(vnfd.get("ext-cpd"))}
            mgmt_connected = False
            for link in iterable(profile.get("virtual-link-connectivity")):
                vl = link.get("virtual-link-profile-id")
                vld = vl if vl in vlds else vl_profiles.get(vl)  # OSM names the VLD directly; SOL006 a profile
                if vld not in vlds:
                    errors.append(f"{where}: virtual-link-profile-id {vl!r} is not a virtual-link-desc or profile")
                for cpd in iterable(link.get("constituent-cpd-id")):
                    if cpd.get("constituent-base-element-id") != profile.get("id"):
                        errors.append(
                            f"{where}: constituent-base-element-id {cpd.get('constituent-base-element-id')!r} "
                            "is not this vnf-profile"
                        )
                    if cpd.get("constituent-cpd-id") not in ext_cpds:
                        errors.append(
                            f"{where}: constituent-cpd-id {cpd.get('constituent-cpd-id')!r} is not an ext-cpd "
                            f"of vnfd {vnfd_id!r}"
                        )
                    if vld in mgmt_vls and cpd.get("constituent-cpd-id") == vnfd.get("mgmt-cp"):
                        mgmt_connected = True
            if mgmt_vls and not mgmt_connected:
                errors.append(f"{where}: the VNF's mgmt-cp {vnfd.get('mgmt-cp')!r} is not on a mgmt-network VL")
    return errors


def members(nsd: Mapping[str, Any]) -> dict[str, str]:
    """member-vnf-index (vnf-profile id of the first df, as NBI uses it) -> vnfd-id."""
    dfs = list(iterable(nsd.get("df")))
    return {p["id"]: p["vnfd-id"] for p in iterable(dfs[0].get("vnf-profile") if dfs else None)}
