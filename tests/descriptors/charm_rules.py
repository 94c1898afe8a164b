"""OSM's rules for a charmed VNF's primitives and for instantiation parameters, as plain functions: the VNFD's
primitives against the charm's charmcraft.yaml, Juju's action parameter checks, NBI's day-2 action check, and the
``osm ns-create --config_file`` parameters (descriptor rules: osm_rules.py)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tests.descriptors.osm_rules import (
    ACTION_TYPE,
    BUILTIN_PLACEHOLDERS,
    CONFIG_TYPE,
    LOA_KEYS,
    LOA_MAX,
    NS_INSTANTIATE_KEYS,
    PARAM_NAME,
    SSH_KEY_ACTION,
    VNF_PARAMS_KEYS,
    day12_configs,
    iterable,
    members,
    placeholder,
)

# -- the charm ----------------------------------------------------------------------------------------------


def _type_errors(where: str, data_type: str | None, charm_type: str | None, mapping: Mapping[str, str]) -> list[str]:
    expected = mapping.get(data_type or "STRING")
    if charm_type != expected:
        shown = data_type or "STRING (default)"
        return [f"{where}: VNFD data-type {shown} needs charm type {expected!r}, the charm says {charm_type!r}"]
    return []


def _literal_errors(where: str, value: Any, charm_type: str | None) -> list[str]:
    """A literal (non-<placeholder>) day-1 value must convert to the charm's type (LCM converts INTEGER)."""
    if value is None or placeholder(value) or charm_type not in ("int", "integer"):
        return []
    try:
        int(value)
    except (TypeError, ValueError):
        return [f"{where}: value {value!r} is not an integer"]
    return []


def charm_errors(vnfd: Mapping[str, Any], charmcraft: Mapping[str, Any], charm: str = "trust-proxy") -> list[str]:
    """Every primitive the VNFD runs on the charm's execution environment exists in charmcraft.yaml: ``config``
    parameters are config options, other primitives are actions whose params include every VNFD parameter and
    every required param; types agree (INTEGER <-> integer/int, BOOLEAN <-> boolean, STRING <-> string); the
    actions LCM itself runs for config-access.ssh-access.required exist."""
    errors: list[str] = []
    if charmcraft.get("name") != charm:
        errors.append(f"charmcraft.yaml name {charmcraft.get('name')!r} is not {charm!r} (LCM's charms/<name> path)")
    options = (charmcraft.get("config") or {}).get("options") or {}
    actions = charmcraft.get("actions") or {}
    for df_id, config in day12_configs(vnfd):
        ee_ids = {
            ee.get("id")
            for ee in iterable(config.get("execution-environment-list"))
            if (ee.get("juju") or {}).get("charm") == charm
        }
        if not ee_ids:
            continue
        if ((config.get("config-access") or {}).get("ssh-access") or {}).get("required") and (
            SSH_KEY_ACTION not in actions
        ):
            errors.append(
                f"df {df_id!r}: config-access.ssh-access.required makes LCM run action {SSH_KEY_ACTION!r}, "
                "which the charm does not define"
            )
        for kind, value_key in (("initial-config-primitive", "value"), ("config-primitive", "default-value")):
            for primitive in iterable(config.get(kind)):
                if primitive.get("execution-environment-ref", next(iter(ee_ids))) not in ee_ids:
                    continue
                name = primitive.get("name")
                target = primitive.get("execution-environment-primitive") or name
                where = f"{kind} {name!r}"
                params = list(iterable(primitive.get("parameter")))
                if target == "config":
                    for param in params:
                        option = options.get(param.get("name"))
                        pwhere = f"{where} parameter {param.get('name')!r}"
                        if option is None:
                            errors.append(f"{pwhere} is not a charm config option")
                            continue
                        errors += _type_errors(pwhere, param.get("data-type"), option.get("type"), CONFIG_TYPE)
                        errors += _literal_errors(pwhere, param.get(value_key), option.get("type"))
                    continue
                action = actions.get(target)
                if action is None:
                    errors.append(f"{where}: the charm has no action {target!r}")
                    continue
                schema = action.get("params") or {}
                for param in params:
                    pwhere = f"{where} parameter {param.get('name')!r}"
                    spec = schema.get(param.get("name"))
                    if spec is None:
                        errors.append(f"{pwhere} is not a param of charm action {target!r}")
                        continue
                    errors += _type_errors(pwhere, param.get("data-type"), spec.get("type"), ACTION_TYPE)
                    errors += _literal_errors(pwhere, param.get(value_key), spec.get("type"))
                given = {p.get("name") for p in params}
                for required in iterable(action.get("required")):
                    if required not in given:
                        errors.append(f"{where}: charm action {target!r} requires {required!r}, the VNFD omits it")
    return errors


def juju_action_param_errors(action: Mapping[str, Any], params: Mapping[str, Any]) -> list[str]:
    """The subset of JSON Schema Juju applies to action parameters that charmcraft.yaml uses: type, minimum,
    required, additionalProperties."""
    schema = action.get("params") or {}
    errors: list[str] = []
    for name, value in params.items():
        spec = schema.get(name)
        if spec is None:
            if action.get("additionalProperties") is False:
                errors.append(f"{name!r} is not a param of the action")
            continue
        kind = spec.get("type")
        ok = {
            "string": isinstance(value, str),
            "integer": isinstance(value, int) and not isinstance(value, bool),
            "boolean": isinstance(value, bool),
            "number": isinstance(value, (int, float)) and not isinstance(value, bool),
        }.get(kind, True)
        if not ok:
            errors.append(f"{name!r}: {value!r} is not of type {kind}")
        elif "minimum" in spec and value < spec["minimum"]:
            errors.append(f"{name!r}: {value!r} is below the minimum {spec['minimum']}")
    for name in iterable(action.get("required")):
        if name not in params:
            errors.append(f"required param {name!r} missing")
    return errors


def juju_with_defaults(action: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    """The params a charm's action handler sees: Juju adds the schema default of every param not given."""
    schema = action.get("params") or {}
    return {**{k: v["default"] for k, v in schema.items() if "default" in v}, **params}


# -- what LCM and NBI do at run time ------------------------------------------------------------------------


def nbi_check_action(config: Mapping[str, Any], primitive: str, primitive_params: Mapping[str, Any]) -> None:
    """osm/NBI instance_topics.py NsLcmOpTopic._check_action_ns_operation for a VNF-level day-2 action: the
    primitive exists; every descriptor parameter without a (truthy) default-value is given; nothing else is."""
    for desc in iterable(config.get("config-primitive")):
        if desc.get("name") != primitive:
            continue
        remaining = dict(primitive_params)
        for param in iterable(desc.get("parameter")):
            if param["name"] in remaining:
                del remaining[param["name"]]
            elif not param.get("default-value"):
                raise ValueError(f"Needed parameter {param['name']} not provided for primitive '{primitive}'")
        if remaining:
            raise ValueError(f"parameter/s '{list(remaining)}' not present at vnfd /nsd for primitive '{primitive}'")
        return
    raise ValueError(f"Invalid primitive '{primitive}' is not present at vnfd/nsd")


# -- instantiation parameters (osm ns-create --config_file) -------------------------------------------------


def _name_errors(where: str, params: Any) -> list[str]:
    if not isinstance(params, dict):
        return [f"{where} must be a mapping"]
    return [f"{where}: invalid param name {k!r}" for k in params if not (isinstance(k, str) and PARAM_NAME.match(k))]


def _loa_errors(where: str, params: Mapping[str, Any]) -> list[str]:
    errors = []
    for key in LOA_KEYS:
        if key in params:
            value = params[key]
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= LOA_MAX:
                errors.append(f"{where}.{key}: {value!r} is not an integer 0..{LOA_MAX}")
    return errors


def params_errors(
    params: Mapping[str, Any], nsd: Mapping[str, Any], vnfds: Mapping[str, Mapping[str, Any]]
) -> list[str]:
    """An ``osm ns-create --config_file`` document: what osmclient and NBI (ns_instantiate schema,
    _format_additional_params) accept, LoA values the Trust Manager accepts, and every ``<name>`` a member's
    day-1 primitives use supplied for that member (NBI fails the instantiation otherwise)."""
    errors = [
        f"top-level key {k!r} is not an NBI instantiate parameter" for k in params if k not in NS_INSTANTIATE_KEYS
    ]
    ns_params = params.get("additionalParamsForNs") or {}
    errors += _name_errors("additionalParamsForNs", ns_params)
    if isinstance(ns_params, dict):
        errors += _loa_errors("additionalParamsForNs", ns_params)
    nsd_members = members(nsd)
    supplied: dict[str, Mapping[str, Any]] = {}
    vnf_items = params.get("additionalParamsForVnf") or []
    if not isinstance(vnf_items, list):
        return [*errors, "additionalParamsForVnf must be a list"]
    for index, item in enumerate(vnf_items):
        where = f"additionalParamsForVnf[{index}]"
        if not isinstance(item, dict):
            errors.append(f"{where} must be a mapping")
            continue
        errors += [f"{where}: unknown key {k!r}" for k in item if k not in VNF_PARAMS_KEYS]
        member = item.get("member-vnf-index")
        if not isinstance(member, str):
            errors.append(f"{where}: member-vnf-index {member!r} must be a string (quote it in YAML)")
        elif member not in nsd_members:
            errors.append(f"{where}: member-vnf-index {member!r} is not a vnf-profile of the NSD")
        elif member in supplied:
            errors.append(f"{where}: member-vnf-index {member!r} given twice")
        additional = item.get("additionalParams")
        if not additional:
            errors.append(f"{where}: additionalParams missing (osmclient requires it)")
            continue
        errors += _name_errors(f"{where}.additionalParams", additional)
        if isinstance(additional, dict):
            errors += _loa_errors(f"{where}.additionalParams", additional)
            if isinstance(member, str):
                supplied[member] = additional
    for member, vnfd_id in nsd_members.items():
        vnfd = vnfds.get(vnfd_id) or {}
        for _, config in day12_configs(vnfd):
            if config.get("id") != vnfd.get("id"):
                continue
            for primitive in iterable(config.get("initial-config-primitive")):
                for param in iterable(primitive.get("parameter")):
                    key = placeholder(param.get("value"))
                    if key and key not in BUILTIN_PLACEHOLDERS and key not in supplied.get(member, {}):
                        errors.append(
                            f"member {member!r}: <{key}> of day-1 primitive {primitive.get('name')!r} not supplied"
                        )
    return errors
