"""MongoDB documents shaped like the ones OSM's NBI writes, and a tiny ``osm_common.dbmongo``-like accessor.

Sources (osm/NBI v19 in github.com/seltonlucas/osm-capk, ``NBI/osm_nbi/``): ``base_topic.py``
``BaseTopic.format_on_new`` (``_admin``), ``instance_topics.py`` ``NsrTopic._create_nsr_descriptor_from_nsd``,
``NsrTopic._create_vnfr_descriptor_from_vnfd``, ``NsrTopic._format_additional_params``,
``NsLcmOpTopic._create_nslcmop``. Shapes checked against OSM LCM's fixtures ``osm_lcm/tests/test_db_descriptors.py``.
Only the fields a reader of OSM's database relies on are produced; descriptors are small but valid SOL006 shapes
(compare osm/IM ``hackfest_charmed_vnfd_sol006.yaml``).
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml
from pymongo.asynchronous.database import AsyncDatabase

__all__ = ["OsmDb", "VnfSpec", "descriptors_for", "format_additional_params", "format_on_new", "new_id"]

_PARAM_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")  # NsrTopic._format_additional_params: Jinja2 identifiers


def new_id() -> str:
    return str(uuid.uuid4())


def format_on_new(content: dict[str, Any], project_ids: Sequence[str] | None) -> dict[str, Any]:
    """``BaseTopic.format_on_new``: ``_admin.created/modified``, and read/write projects when a session has them."""
    now = time.time()
    admin = content.setdefault("_admin", {})
    admin.setdefault("created", now)
    admin["modified"] = now
    content.setdefault("_id", new_id())
    if project_ids is not None:
        admin.setdefault("projects_read", list(project_ids))
        admin.setdefault("projects_write", list(project_ids))
    return content


class ParamError(ValueError):
    """An additional parameter NBI refuses (EngineException, 400)."""


def format_additional_params(params: Mapping[str, Any] | None, where: str) -> dict[str, Any] | None:
    """``NsrTopic._format_additional_params``: names must be identifiers; dict/list values become ``!!yaml`` text."""
    if not params:
        return None if params is None else {}
    out = dict(params)
    for key, value in params.items():
        if not isinstance(key, str) or not _PARAM_NAME.match(key):
            raise ParamError(
                f"Invalid param name at {where}:{key}. Must contain only alphanumeric characters "
                "and underscores, and cannot start with a digit"
            )
        if isinstance(value, (dict, tuple, list)):
            out[key] = "!!yaml " + yaml.safe_dump(value)
    return out


def _trust_proxy_primitives() -> dict[str, Mapping[str, Any]]:
    # the trust-proxy charm's day-2 actions (charms/trust-proxy/charmcraft.yaml); None = mandatory parameter
    return {
        "attest": {"nonce": None, "pcrs": "sha256:0-10", "ima-offset": 0},
        "identity": {},
        "activate": {"credential": None, "secret": None},
    }


def _trust_proxy_day1() -> dict[str, Mapping[str, Any]]:
    # N2VC's config primitive sets the charm's ssh-* options (descriptors/trust_proxy_vnf, OSM's hackfest VNFD)
    return {"config": {"ssh-hostname": "<rw_mgmt_ip>", "ssh-username": "ubuntu", "ssh-password": "osm4u"}}


@dataclass(frozen=True)
class VnfSpec:
    """One VNF of a generated NS: its member index, VDUs, proxy charm and primitives.

    ``primitives`` are the day-2 ``config-primitive``s: name → {parameter: default-value} (None: mandatory, no
    default; an int is an INTEGER, a bool a BOOLEAN parameter) or, the older form, name → parameter names (all
    STRING, default ""). ``day1`` are the ``initial-config-primitive``s in ``seq`` order: name → {parameter:
    value}, where a value ``<name>`` is an instantiation parameter (``<rw_mgmt_ip>``, ``<OSM>``, or a key of
    ``additionalParamsForVnf``). The defaults are the trust-proxy charm's actions and, like the project's VNFD,
    a day-1 ``config`` setting its ssh-* options; add ``"attest": {"trustmgr-url": "<trustmgr_url>",
    "osm-params": "<OSM>"}`` for strict attestation, or pass ``day1={}`` for none. Specs sharing a ``vnfd_id``
    share one VNFD (the first spec's): give a spec with other primitives an id of its own.

    ``hosts`` (VDU id → compute host) is what RO's OpenStack connector reports as ``OS-EXT-SRV-ATTR:host``
    inside ``vim_info.<vim>.vim_details``; ``vim_account_id`` is the per-VNF instantiation parameter
    ``vnf[].vimAccountId``.
    """

    member_index: str
    vnfd_id: str = "trust-vnf"
    vdus: tuple[str, ...] = ("mgmtVM",)
    charm: str | None = "trust-proxy"
    primitives: Mapping[str, Sequence[str] | Mapping[str, Any]] = field(default_factory=_trust_proxy_primitives)
    day1: Mapping[str, Mapping[str, Any]] = field(default_factory=_trust_proxy_day1)
    vim_account_id: str | None = None
    hosts: Mapping[str, str] = field(default_factory=dict)


def _data_type(value: Any) -> str:
    return "BOOLEAN" if isinstance(value, bool) else "INTEGER" if isinstance(value, int) else "STRING"


def _text(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _parameter(name: str, default: Any) -> dict[str, Any]:
    """A ``config-primitive`` parameter (``primitive-parameter``: default-value, mandatory)."""
    if default is None:
        return {"name": name, "data-type": "STRING", "mandatory": True}
    return {"name": name, "data-type": _data_type(default), "default-value": _text(default)}


def _vnfd(spec: VnfSpec) -> dict[str, Any]:
    day12: dict[str, Any] = {"id": spec.vnfd_id}
    if spec.charm:
        day12["execution-environment-list"] = [
            {"id": "trust-ee", "juju": {"charm": spec.charm, "proxy": True}, "external-connection-point-ref": "mgmt"}
        ]
        if spec.day1:
            day12["initial-config-primitive"] = [
                {
                    "seq": str(seq),
                    "name": name,
                    "execution-environment-ref": "trust-ee",
                    # initial-config-primitive parameters carry a value (primitive-parameter-value)
                    "parameter": [
                        {"name": p, "data-type": _data_type(v), "value": _text(v)} for p, v in params.items()
                    ],
                }
                for seq, (name, params) in enumerate(spec.day1.items(), start=1)
            ]
        day12["config-primitive"] = [
            {
                "name": name,
                "execution-environment-ref": "trust-ee",
                "parameter": [
                    _parameter(p, d)
                    for p, d in (params.items() if isinstance(params, Mapping) else ((p, "") for p in params))
                ],
            }
            for name, params in spec.primitives.items()
        ]
    return {
        "id": spec.vnfd_id,
        "product-name": spec.vnfd_id,
        "version": "1.0",
        "mgmt-cp": "mgmt",
        "vdu": [{"id": vdu, "name": vdu, "int-cpd": [{"id": f"{vdu}-eth0-int"}]} for vdu in spec.vdus],
        "ext-cpd": [{"id": "mgmt", "int-cpd": {"vdu-id": spec.vdus[0], "cpd": f"{spec.vdus[0]}-eth0-int"}}],
        "df": [
            {
                "id": "default-df",
                "vdu-profile": [{"id": vdu, "min-number-of-instances": 1} for vdu in spec.vdus],
                "lcm-operations-configuration": {"operate-vnf-op-config": {"day1-2": [day12]}},
            }
        ],
    }


def descriptors_for(nsd_ref: str, vnfs: Sequence[VnfSpec]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """An NSD (``df[0].vnf-profile`` per member) and the distinct VNFDs it uses, as onboarded content."""
    vnfds: dict[str, dict[str, Any]] = {}
    for spec in vnfds_unique(vnfs):
        vnfds[spec.vnfd_id] = _vnfd(spec)
    nsd = {
        "id": nsd_ref,
        "name": nsd_ref,
        "designer": "osm-trustmgr sandbox",
        "version": "1.0",
        "vnfd-id": list(vnfds),
        "virtual-link-desc": [{"id": "mgmtnet", "mgmt-network": True}],
        "df": [
            {
                "id": "default-df",
                "vnf-profile": [
                    {
                        "id": spec.member_index,
                        "vnfd-id": spec.vnfd_id,
                        "virtual-link-connectivity": [
                            {
                                "virtual-link-profile-id": "mgmtnet",
                                "constituent-cpd-id": [
                                    {"constituent-base-element-id": spec.member_index, "constituent-cpd-id": "mgmt"}
                                ],
                            }
                        ],
                    }
                    for spec in vnfs
                ],
            }
        ],
    }
    return nsd, list(vnfds.values())


def vnfds_unique(vnfs: Sequence[VnfSpec]) -> list[VnfSpec]:
    seen: dict[str, VnfSpec] = {}
    for spec in vnfs:
        seen.setdefault(spec.vnfd_id, spec)
    return list(seen.values())


def nsr_document(nsr_id: str, nsd: Mapping[str, Any], request: Mapping[str, Any]) -> dict[str, Any]:
    """``NsrTopic._create_nsr_descriptor_from_nsd`` (the fields readers use; vld/flavor/image lists kept empty)."""
    now = time.time()
    return {
        "_id": nsr_id,
        "id": nsr_id,
        "name": request["nsName"],
        "name-ref": request["nsName"],
        "short-name": request["nsName"],
        "admin-status": "ENABLED",
        "nsState": "NOT_INSTANTIATED",
        "currentOperation": "IDLE",
        "currentOperationID": None,
        "errorDescription": None,
        "errorDetail": None,
        "deploymentStatus": None,
        "configurationStatus": None,
        "vcaStatus": None,
        "nsd": {k: v for k, v in nsd.items() if k != "_admin"},
        "datacenter": request["vimAccountId"],
        "resource-orchestrator": "osmopenmano",
        "description": request.get("nsDescription", ""),
        "constituent-vnfr-ref": [],
        "operational-status": "init",
        "config-status": "init",
        "detailed-status": "scheduled",
        "orchestration-progress": {},
        "create-time": now,
        "nsd-name-ref": nsd["name"],
        "operational-events": [],
        "nsd-ref": nsd["id"],
        "nsd-id": nsd["_id"],
        "vnfd-id": [],
        # NsrTopic._format_ns_request: the request without its additional params
        "instantiate_params": {
            k: v for k, v in request.items() if k not in ("additionalParamsForNs", "additionalParamsForVnf")
        },
        "additionalParamsForNs": format_additional_params(
            request.get("additionalParamsForNs"), "additionalParamsForNs"
        ),
        "ns-instance-config-ref": nsr_id,
        "ssh-authorized-key": request.get("ssh_keys"),
        "flavor": [],
        "image": [],
        "vld": [],
    }


def vnfr_document(
    nsr_id: str, member_index: str, vnfd: Mapping[str, Any], request: Mapping[str, Any]
) -> dict[str, Any]:
    """``NsrTopic._create_vnfr_descriptor_from_vnfd``; ``vim-account-id`` stays None until instantiate."""
    vnfr_id = new_id()
    where = f"additionalParamsForVnf[member-vnf-index={member_index}]"
    item: Mapping[str, Any] = next(
        (x for x in request.get("additionalParamsForVnf") or () if x.get("member-vnf-index") == member_index), {}
    )
    return {
        "_id": vnfr_id,
        "id": vnfr_id,
        "nsr-id-ref": nsr_id,
        "member-vnf-index-ref": member_index,
        "additionalParamsForVnf": format_additional_params(item.get("additionalParams"), where) if item else None,
        "created-time": time.time(),
        "vnfd-ref": vnfd["id"],
        "vnfd-id": vnfd["_id"],
        "vim-account-id": None,
        "vca-id": None,
        "vdur": [
            {
                "_id": new_id(),
                "vdu-id-ref": vdu["id"],
                "vdu-name": vdu.get("name", vdu["id"]),
                "count-index": 0,
                "ip-address": None,
                "internal-connection-point": [],
                "interfaces": [],
            }
            for vdu in vnfd.get("vdu", ())
        ],
        "connection-point": [
            {"name": cp["id"], "id": cp["id"], "connection-point-id": cp.get("int-cpd", {}).get("cpd")}
            for cp in vnfd.get("ext-cpd", ())
        ],
        "ip-address": None,
    }


def nslcmop_document(nsr_id: str, operation: str, params: Mapping[str, Any] | None) -> dict[str, Any]:
    """``NsLcmOpTopic._create_nslcmop``: a new operation in PROCESSING, with SOL005 links."""
    now = time.time()
    op_id = new_id()
    return {
        "id": op_id,
        "_id": op_id,
        "operationState": "PROCESSING",
        "queuePosition": None,
        "stage": None,
        "errorMessage": None,
        "detailedStatus": None,
        "statusEnteredTime": now,
        "nsInstanceId": nsr_id,
        "lcmOperationType": operation,
        "startTime": now,
        "isAutomaticInvocation": False,
        "operationParams": dict(params) if params is not None else None,
        "isCancelPending": False,
        "links": {
            "self": "/osm/nslcm/v1/ns_lcm_op_occs/" + op_id,
            "nsInstance": "/osm/nslcm/v1/ns_instances/" + nsr_id,
        },
    }


class OsmDb:
    """The handful of ``osm_common.dbmongo.DbMongo`` operations OSM uses, over pymongo's async API.

    ``set_one`` takes dotted keys like OSM's ``update_dict`` (``{"_admin.nsState": "INSTANTIATED"}``).
    """

    def __init__(self, db: AsyncDatabase[dict[str, Any]]) -> None:
        self.db = db

    async def get_one(self, table: str, q_filter: Mapping[str, Any]) -> dict[str, Any] | None:
        return await self.db[table].find_one(dict(q_filter))

    async def get_list(self, table: str, q_filter: Mapping[str, Any]) -> list[dict[str, Any]]:
        return [doc async for doc in self.db[table].find(dict(q_filter))]

    async def create(self, table: str, doc: Mapping[str, Any]) -> None:
        await self.db[table].insert_one(dict(doc))

    async def set_one(self, table: str, _id: str, update: Mapping[str, Any], *, unset: Sequence[str] = ()) -> bool:
        ops: dict[str, Any] = {}
        if update:
            ops["$set"] = dict(update)
        if unset:
            ops["$unset"] = dict.fromkeys(unset, "")
        if not ops:
            return True
        result = await self.db[table].update_one({"_id": _id}, ops)
        return result.matched_count > 0

    async def set_list(self, table: str, q_filter: Mapping[str, Any], update: Mapping[str, Any]) -> None:
        await self.db[table].update_many(dict(q_filter), {"$set": dict(update)})

    async def del_list(self, table: str, q_filter: Mapping[str, Any]) -> None:
        await self.db[table].delete_many(dict(q_filter))

    async def del_one(self, table: str, _id: str) -> None:
        await self.db[table].delete_one({"_id": _id})
