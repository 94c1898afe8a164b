"""What OSM's LCM and N2VC do with a VNF's charm primitives, for the OSM simulator.

Reproduced from osm/LCM v19 (github.com/seltonlucas/osm-capk, ``LCM/osm_lcm/``):

* ``ns.py`` ``NsLcm._map_primitive_params``: given value, else ``value``/``default-value``; ``<name>`` is looked
  up in the instantiation params (missing → LcmException "Parameter <name> needed to execute primitive <p> not
  provided"); dicts and lists become flow-style YAML, ``!!yaml `` prefixes are dropped; INTEGER → int (else
  "Parameter <p> of primitive <q> must be integer"), BOOLEAN → anything but "false".
* ``data_utils/vnfr.py`` ``get_osm_params`` (the ``<OSM>`` parameter), ``data_utils/dict_utils.py``
  ``parse_yaml_strings``, ``data_utils/vnfd.py`` ``get_ee_sorted_initial_config_primitive_list`` (day-1
  primitives of one execution environment, by ``seq``).
* ``n2vc/n2vc_juju_conn.py`` ``N2VCJujuConnector.exec_primitive``: ``config`` is ``juju config`` then
  ``verify-ssh-credentials`` and answers ``"CONFIG OK"``; another action answers its results, or raises
  ``N2VCExecutionException("Error executing primitive <p> in ee=<ee_id>: <status>: <results['output']>")``
  ("No further information received from action" when the results carry no ``output``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from osm_trustmgr.evidence.charm_local import CharmActionFailed, CharmRunner, run_config_primitive
from osm_trustmgr.evidence.vca import VcaError, VcaUnavailable

from .osmsim_docs import OsmDb

__all__ = [
    "DAY1_STAGE",
    "ActionHandler",
    "ActionRequest",
    "ActionResult",
    "Day1Failed",
    "LcmException",
    "charm_action_handler",
    "day12",
    "get_osm_params",
    "initial_config_primitives",
    "map_primitive_params",
    "n2vc_execution_error",
    "parse_yaml_strings",
    "run_day1",
    "vnf_config",
]

log = logging.getLogger("osm_trustmgr.sandbox.osmsim.vca")

NO_OUTPUT = "No further information received from action"
DAY1_STAGE = "Stage 4/5: running Day-1 primitives for VNF."


@dataclass(frozen=True)
class ActionRequest:
    """A primitive LCM hands to N2VC: a day-2 NS action, or (``day1``) an instantiation's initial-config
    primitive. ``params`` are already mapped (defaults, ``<name>`` substitution, data types); ``ee_id`` is the
    member's ``_admin.deployed.VCA[].ee_id`` (None when none is deployed)."""

    nsr_id: str
    nslcmop_id: str
    member_vnf_index: str | None
    vdu_id: str | None
    primitive: str
    params: dict[str, Any]
    vnfr_id: str | None = None
    ee_id: str | None = None
    day1: bool = False


ActionResult = tuple[str, Any]  # (operationState COMPLETED|FAILED, output stored as detailed-status)
ActionHandler = Callable[[ActionRequest], Awaitable[ActionResult]]


class LcmException(Exception):
    """``osm_lcm.lcm_utils.LcmException``: its text is what LCM writes into the operation."""


class Day1Failed(Exception):
    """One or more VNFs' day-1 primitives failed; the text is LCM's error detail."""


def day12(vnfd: Mapping[str, Any]) -> list[dict[str, Any]]:
    df = (vnfd.get("df") or [{}])[0]
    config = (df.get("lcm-operations-configuration") or {}).get("operate-vnf-op-config") or {}
    return list(config.get("day1-2") or ())


def vnf_config(vnfd: Mapping[str, Any]) -> dict[str, Any]:
    """The VNF-level ``day1-2`` entry (``get_configuration(vnfd, vnfd["id"])``)."""
    return next((c for c in day12(vnfd) if c.get("id") == vnfd.get("id")), {})


def parse_yaml_strings(params: Mapping[str, Any] | None) -> dict[str, Any]:
    out = dict(params or {})
    for key, value in out.items():
        if str(value).startswith("!!yaml "):
            out[key] = yaml.safe_load(str(value)[7:])
    return out


def get_osm_params(vnfr: Mapping[str, Any]) -> dict[str, Any]:
    """The ``<OSM>`` instantiation parameter of a VNF (VNF level: no ``vdu_id``)."""
    params: dict[str, Any] = {
        key.replace("-", "_"): vnfr[key]
        for key in ("ip-address", "vim-account-id", "vnfd-id", "vnfd-ref")
        if vnfr.get(key) is not None
    }
    params.update(ns_id=vnfr["nsr-id-ref"], vnf_id=vnfr["_id"], member_vnf_index=vnfr["member-vnf-index-ref"])
    if vnfr.get("vdur"):
        params["vdu"] = {}
        for vdur in vnfr["vdur"]:
            vdu: dict[str, Any] = {"count_index": vdur["count-index"], "vdu_id": vdur["vdu-id-ref"], "interfaces": {}}
            if vdur.get("ip-address"):
                vdu["ip_address"] = vdur["ip-address"]
            for iface in vdur.get("interfaces") or ():
                vdu["interfaces"][iface["name"]] = {
                    key.replace("-", "_"): iface[key]
                    for key in ("mac-address", "ip-address", "name")
                    if iface.get(key) is not None
                }
            params["vdu"][f"{vdur['vdu-id-ref']}-{vdur['count-index']}"] = vdu
    return params


def map_primitive_params(
    primitive: Mapping[str, Any], params: Mapping[str, Any], instantiation_params: Mapping[str, Any]
) -> dict[str, Any]:
    """The parameters LCM hands to N2VC for ``primitive`` (a descriptor primitive with ``parameter[]``)."""
    out: dict[str, Any] = {}
    for parameter in primitive.get("parameter") or ():
        name = parameter["name"]
        if name in params:
            out[name] = params[name]
        elif "value" in parameter or "default-value" in parameter:
            out[name] = parameter["value"] if "value" in parameter else parameter["default-value"]
            value = out[name]
            if isinstance(value, str) and value.startswith("<") and value.endswith(">"):
                if value[1:-1] not in instantiation_params:
                    raise LcmException(
                        f"Parameter {value} needed to execute primitive {primitive['name']} not provided"
                    )
                out[name] = instantiation_params[value[1:-1]]
        else:
            raise LcmException(f"Parameter {name} needed to execute primitive {primitive['name']} not provided")
        if isinstance(out[name], (dict, list, tuple)):
            out[name] = yaml.safe_dump(out[name], default_flow_style=True, width=256)
        elif isinstance(out[name], str) and out[name].startswith("!!yaml "):
            out[name] = out[name][7:]
        if parameter.get("data-type") == "INTEGER":
            try:
                out[name] = int(out[name])
            except ValueError:
                raise LcmException(f"Parameter {name} of primitive {primitive['name']} must be integer") from None
        elif parameter.get("data-type") == "BOOLEAN":
            out[name] = str(out[name]).lower() != "false"
    if primitive["name"] == "config" and "ns_config_info" in instantiation_params:
        out["ns_config_info"] = instantiation_params["ns_config_info"]
    return out


def initial_config_primitives(
    primitives: Sequence[Mapping[str, Any]] | None, ee_descriptor_id: str | None
) -> list[Mapping[str, Any]]:
    """The day-1 primitives of one execution environment, by ``seq``. (LCM adds ``verify-ssh-credentials``
    after ``config`` only when the VCA got an SSH key injected — ``config-access.ssh-access.required`` — which
    the simulator's VNFDs do not ask for.)"""
    chosen = [p for p in primitives or () if p.get("execution-environment-ref", ee_descriptor_id) == ee_descriptor_id]
    return sorted(chosen, key=lambda p: int(p["seq"]))


def n2vc_execution_error(primitive: str, message: str) -> str:
    """``str(N2VCExecutionException(message, primitive))``, as LCM embeds it in a day-1 failure."""
    return (
        f"<class 'osm_lcm.n2vc.exceptions.N2VCExecutionException'> Error executing primitive {primitive} failed: "
        f"{message}"
    )


async def run_day1(
    db: OsmDb,
    handler: ActionHandler,
    nsr_id: str,
    op_id: str,
    vnfrs: Sequence[Mapping[str, Any]],
    set_stage: Callable[[str, str], Awaitable[None]],
) -> None:
    """``NsLcm.instantiate_N2VC`` step 6 for every charmed VNF (one task per VCA, as ``_deploy_n2vc``).

    ``vnfrs`` are the records as LCM read them before deploying (so ``<OSM>`` has no addresses); ``rw_mgmt_ip``
    is the address RO reported since. Raises ``Day1Failed`` with the failures joined as ``_wait_for_tasks`` does.
    """
    nsr = await db.get_one("nsrs", {"_id": nsr_id}) or {}
    by_member = {v["member-vnf-index-ref"]: v for v in vnfrs}
    jobs = []
    for vca in ((nsr.get("_admin") or {}).get("deployed") or {}).get("VCA") or ():
        vnfr = by_member.get(vca["member-vnf-index"])
        vnfd = (await db.get_one("vnfds", {"_id": vnfr["vnfd-id"]}) if vnfr else None) or {}
        primitives = initial_config_primitives(
            vnf_config(vnfd).get("initial-config-primitive"), vca.get("ee_descriptor_id")
        )
        if vnfr and primitives:
            jobs.append(_vnf_day1(db, handler, nsr_id, op_id, vca, vnfr, primitives))
    if not jobs:
        return
    await set_stage(op_id, DAY1_STAGE)
    outcomes = await asyncio.gather(*jobs, return_exceptions=True)
    errors = [str(o) for o in outcomes if isinstance(o, BaseException)]
    if errors:
        raise Day1Failed(". ".join(errors))


async def _vnf_day1(
    db: OsmDb,
    handler: ActionHandler,
    nsr_id: str,
    op_id: str,
    vca: Mapping[str, Any],
    vnfr: Mapping[str, Any],
    primitives: Sequence[Mapping[str, Any]],
) -> None:
    member = vca["member-vnf-index"]
    task = f"Deploying VCA {member}."  # ns.py: task_name_deploy_vca + " {member_vnf_index}.{vdu_id or ''}"
    deploy_params = {"OSM": get_osm_params(vnfr), **parse_yaml_strings(vnfr.get("additionalParamsForVnf"))}
    deploy_params["rw_mgmt_ip"] = ((await db.get_one("vnfrs", {"_id": vnfr["_id"]})) or {}).get("ip-address")
    for primitive in primitives:
        try:
            params = map_primitive_params(primitive, {}, deploy_params)
        except LcmException as exc:
            raise Day1Failed(f"{task}: execute initial config primitive. {exc}") from None
        step = f"execute primitive '{primitive['name']}' params '{params}'"
        request = ActionRequest(nsr_id, op_id, member, None, primitive["name"], params,
                                vnfr_id=vnfr["_id"], ee_id=vca.get("ee_id"), day1=True)  # fmt: skip
        try:
            state, output = await handler(request)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            state, output = "FAILED", str(exc)
        if state != "COMPLETED":
            raise Day1Failed(f"{task}: {step}. {n2vc_execution_error(primitive['name'], str(output))}")


def charm_action_handler(
    runner: CharmRunner,
    *,
    config_overrides: Callable[[ActionRequest], Mapping[str, Any]] | None = None,
    verify_attempts: int = 1,
    strict_verify: bool = False,
) -> ActionHandler:
    """The simulator's VCA: primitives run on a real charm by ``runner``, one application per ``ee_id``.

    ``config`` is N2VC's: ``juju config`` with the primitive's parameters — updated with
    ``config_overrides(request)`` — then ``verify-ssh-credentials`` (see
    :func:`~osm_trustmgr.evidence.charm_local.run_config_primitive` for ``verify_attempts`` and
    ``strict_verify``); it answers ``"CONFIG OK"``. Other primitives answer the charm's results, or FAILED with
    N2VC's message. The overrides exist because the simulator's VDU addresses (``10.0.x.y``, what OSM passes as
    ``<rw_mgmt_ip>``) are not routable here: tests point the charm at an sshd on 127.0.0.1 instead.
    """

    async def handle(request: ActionRequest) -> tuple[str, Any]:
        ee_id = request.ee_id
        if not ee_id:
            return "FAILED", f"charm for member_vnf_index={request.member_vnf_index} has not execution environment"
        if request.primitive == "config":
            params = {**request.params, **(config_overrides(request) if config_overrides else {})}
            try:
                await asyncio.to_thread(
                    run_config_primitive, runner, ee_id, params, verify_attempts=verify_attempts, strict=strict_verify
                )
            except (VcaError, VcaUnavailable) as exc:
                return "FAILED", f"Error configuring application into ee={ee_id} : {exc}"
            return "COMPLETED", "CONFIG OK"
        try:
            results = await asyncio.to_thread(runner.run, ee_id, request.primitive, request.params)
        except CharmActionFailed as exc:
            output = exc.results.get("output") or NO_OUTPUT
            log.info("charm action %s on %s failed: %s", request.primitive, ee_id, exc.detail)
            return "FAILED", f"Error executing primitive {request.primitive} in ee={ee_id}: failed: {output}"
        except (VcaError, VcaUnavailable) as exc:
            return "FAILED", f"Error executing primitive {request.primitive} in ee={ee_id}: {exc}"
        return "COMPLETED", results

    return handle
