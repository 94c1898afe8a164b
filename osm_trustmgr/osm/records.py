"""Read-only access to OSM's own collections (DESIGN.md §3 "MongoDB"): nsrs, vnfrs, nslcmops, vim_accounts.

The Trust Manager never writes these; this class only issues ``find``/``find_one``. Document shapes were
checked against OSM v19 (github.com/seltonlucas/osm-capk @35936ae0):

* ``nsrs``: NBI ``osm_nbi/instance_topics.py`` ``NsrTopic.new`` (``name``, ``nsd-id`` = the NSD's ``_id``,
  ``nsd-ref`` = the NSD's own ``id``, ``datacenter`` = the instantiation ``vimAccountId``,
  ``constituent-vnfr-ref``, ``additionalParamsForNs`` where dict/list values become ``"!!yaml …"`` strings,
  ``instantiate_params``, ``nsState``, ``_admin.nsState``); ``_admin.deployed.VCA[]`` is created by LCM
  ``osm_lcm/ns.py`` ``NsLcm._deploy_n2vc`` and completed (``ee_id``, ``model``, ``application``) by
  ``NsLcm.instantiate_N2VC``;
* ``vnfrs``: NBI ``NsrTopic._create_vnfr_descriptor_from_vnfd`` (``vim-account-id: None``), then
  ``NsLcmOpTopic._update_vnfrs`` sets ``vim-account-id`` (``vnf[].vimAccountId`` else ``vimAccountId``)
  *before* NBI writes ``ns``/``instantiate``; LCM ``NsLcm._do_placement`` may move it after a PLA answer;
* ``nslcmops``: NBI ``NsLcmOpTopic._create_nslcmop``; ``_admin.pla`` is LCM ``update_nsrs_with_pla_result``;
* ``vim_accounts``: read with a projection, so VIM passwords and ``config`` never reach this process.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

import yaml
from pydantic import AliasPath, BaseModel, ConfigDict, Field, ValidationError
from pymongo.asynchronous.database import AsyncDatabase

from osm_trustmgr.osm.messages import NsOperation, normalise_vnf_params

__all__ = [
    "NSLCMOPS",
    "NSRS",
    "VIM_ACCOUNTS",
    "VNFRS",
    "NsLcmOpRecord",
    "NsRecord",
    "OsmRecordError",
    "OsmRecords",
    "VcaDeployment",
    "VdurRecord",
    "VimAccountRecord",
    "VnfRecord",
]

NSRS, VNFRS, NSLCMOPS, VIM_ACCOUNTS = "nsrs", "vnfrs", "nslcmops", "vim_accounts"


class OsmRecordError(ValueError):
    """An OSM document that does not have the shape OSM writes."""


class _Record(BaseModel):
    # extra allowed: OSM adds fields in every release, and callers may want them (model_extra)
    model_config = ConfigDict(extra="allow", frozen=True)


class VcaDeployment(_Record):
    """One ``nsrs._admin.deployed.VCA[]`` entry: an execution environment (e.g. a proxy charm) of a VNF/VDU."""

    member_vnf_index: str | None = Field(None, alias="member-vnf-index")
    vdu_id: str | None = None
    vdu_count_index: int | None = None
    kdu_name: str | None = None
    vnfd_id: str | None = None
    ee_id: str | None = None  # "<model>.<application>.<machine>" once deployed; None before
    ee_descriptor_id: str | None = None
    type: str | None = None  # lxc_proxy_charm, native_charm, k8s_proxy_charm, helm-v3
    charm_name: str | None = None
    model: str | None = None
    application: str | None = None
    operational_status: str | None = Field(None, alias="operational-status")
    detailed_status: str | None = Field(None, alias="detailed-status")
    step: str | None = None


class NsRecord(_Record):
    id: str = Field(alias="_id")
    name: str | None = None
    nsd_id: str | None = Field(None, alias="nsd-id")
    nsd_ref: str | None = Field(None, alias="nsd-ref")
    datacenter: str | None = None
    additional_params_ns: dict[str, Any] | None = Field(None, alias="additionalParamsForNs")
    instantiate_params: dict[str, Any] | None = None
    constituent_vnfr_ref: list[str] = Field(default_factory=list, alias="constituent-vnfr-ref")
    ns_state: str | None = Field(None, alias="nsState")
    admin_ns_state: str | None = Field(None, validation_alias=AliasPath("_admin", "nsState"))
    projects_read: list[str] = Field(default_factory=list, validation_alias=AliasPath("_admin", "projects_read"))
    vca: list[VcaDeployment] = Field(default_factory=list, validation_alias=AliasPath("_admin", "deployed", "VCA"))


class VdurRecord(_Record):
    vdu_id_ref: str | None = Field(None, alias="vdu-id-ref")
    count_index: int | None = Field(None, alias="count-index")
    name: str | None = None
    ip_address: str | None = Field(None, alias="ip-address")
    vim_id: str | None = Field(None, alias="vim-id")
    status: str | None = None
    vim_info: dict[str, Any] | None = None  # "vim:<vim-account-id>" → what RO reported

    def compute_host(self) -> str | None:
        """The compute host the VDU runs on, as RO's OpenStack connector reports it: ``OS-EXT-SRV-ATTR:host``
        inside ``vim_info.<vim>.vim_details`` (a YAML string; RO-VIM-openstack ``refresh_vms_status``)."""
        for info in (self.vim_info or {}).values():
            details = info.get("vim_details") if isinstance(info, dict) else None
            try:
                parsed = yaml.safe_load(details) if isinstance(details, str) else details
            except yaml.YAMLError:
                continue
            host = parsed.get("OS-EXT-SRV-ATTR:host") if isinstance(parsed, dict) else None
            if isinstance(host, str) and host:
                return host
        return None


class VnfRecord(_Record):
    id: str = Field(alias="_id")
    nsr_id: str = Field(alias="nsr-id-ref")
    member_vnf_index: str = Field(alias="member-vnf-index-ref")
    vnfd_ref: str | None = Field(None, alias="vnfd-ref")
    vnfd_id: str | None = Field(None, alias="vnfd-id")
    vim_account_id: str | None = Field(None, alias="vim-account-id")
    ip_address: str | None = Field(None, alias="ip-address")
    vca_id: str | None = Field(None, alias="vca-id")  # NBI copies the VIM account's VCA (ns.py _update_vnfrs)
    additional_params: dict[str, Any] | None = Field(None, alias="additionalParamsForVnf")
    vdur: list[VdurRecord] = Field(default_factory=list)
    projects_read: list[str] = Field(default_factory=list, validation_alias=AliasPath("_admin", "projects_read"))


class NsLcmOpRecord(_Record):
    id: str = Field(alias="_id")
    nsr_id: str = Field(alias="nsInstanceId")
    operation: str = Field(alias="lcmOperationType")
    operation_state: str | None = Field(None, alias="operationState")
    detailed_status: Any = Field(None, alias="detailed-status")  # LCM puts a primitive's output here
    params: dict[str, Any] | None = Field(None, alias="operationParams")
    is_cancel_pending: bool | None = Field(None, alias="isCancelPending")
    pla: dict[str, Any] | None = Field(None, validation_alias=AliasPath("_admin", "pla"))
    projects_read: list[str] = Field(default_factory=list, validation_alias=AliasPath("_admin", "projects_read"))

    def additional_params_vnf(self) -> dict[str, dict[str, Any]]:
        """``operationParams.additionalParamsForVnf`` by member (stored as NBI's JSON string, or a list)."""
        try:
            return normalise_vnf_params((self.params or {}).get("additionalParamsForVnf"))
        except ValueError as exc:
            raise OsmRecordError(f"nslcmops {self.id}: additionalParamsForVnf: {exc}") from None


class VimAccountRecord(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    id: str = Field(alias="_id")
    name: str | None = None
    vim_type: str | None = None
    vim_url: str | None = None
    vim_tenant_name: str | None = None
    operational_state: str | None = Field(None, validation_alias=AliasPath("_admin", "operationalState"))
    projects_read: list[str] = Field(default_factory=list, validation_alias=AliasPath("_admin", "projects_read"))


# only what VimAccountRecord reads: vim_password (encrypted with OSM's common key) and config stay in MongoDB
_VIM_PROJECTION = {
    "name": 1, "vim_type": 1, "vim_url": 1, "vim_tenant_name": 1,
    "_admin.operationalState": 1, "_admin.projects_read": 1,
}  # fmt: skip

_R = TypeVar("_R", bound=BaseModel)


def _model(model: type[_R], collection: str, doc: dict[str, Any]) -> _R:
    try:
        return model.model_validate(doc)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        loc = ".".join(str(p) for p in first["loc"])
        raise OsmRecordError(f"{collection} {doc.get('_id')!r}: {loc}: {first['msg']}") from None


class OsmRecords:
    """Typed, read-only views of OSM's records in ``db`` (OSM's database, usually ``osm``)."""

    def __init__(self, db: AsyncDatabase[dict[str, Any]]) -> None:
        self._db = db

    async def nsr(self, nsr_id: str) -> NsRecord | None:
        doc = await self._db[NSRS].find_one({"_id": _key(nsr_id)})
        return _model(NsRecord, NSRS, doc) if doc else None

    async def vnfrs(self, nsr_id: str) -> list[VnfRecord]:
        """The VNF records of an NS, by member-vnf-index."""
        cursor = self._db[VNFRS].find({"nsr-id-ref": _key(nsr_id)}).sort([("member-vnf-index-ref", 1), ("_id", 1)])
        return [_model(VnfRecord, VNFRS, doc) async for doc in cursor]

    async def vnfr(self, vnfr_id: str) -> VnfRecord | None:
        doc = await self._db[VNFRS].find_one({"_id": _key(vnfr_id)})
        return _model(VnfRecord, VNFRS, doc) if doc else None

    async def constituent_vnfrs(self, nsr_id: str) -> list[VnfRecord]:
        """The VNF records ``nsrs.constituent-vnfr-ref`` lists, by member-vnf-index: what an NS is created with
        (NBI writes the list with the records, ``NsrTopic.new``). Read by ``_id``, the only index OSM's ``vnfrs``
        has, where ``vnfrs()`` scans the whole collection; ``vnfrs()`` when the NS record has no such list."""
        nsr = await self._db[NSRS].find_one({"_id": _key(nsr_id)}, {"constituent-vnfr-ref": 1})
        refs = (nsr or {}).get("constituent-vnfr-ref")
        if not (isinstance(refs, list) and refs and all(isinstance(r, str) and r for r in refs)):
            return await self.vnfrs(nsr_id)
        query = {"_id": {"$in": refs}, "nsr-id-ref": nsr_id}
        cursor = self._db[VNFRS].find(query).sort([("member-vnf-index-ref", 1), ("_id", 1)])
        return [_model(VnfRecord, VNFRS, doc) async for doc in cursor]

    async def nslcmop(self, nslcmop_id: str) -> NsLcmOpRecord | None:
        doc = await self._db[NSLCMOPS].find_one({"_id": _key(nslcmop_id)})
        return _model(NsLcmOpRecord, NSLCMOPS, doc) if doc else None

    async def vim_account(self, vim_account_id: str) -> VimAccountRecord | None:
        doc = await self._db[VIM_ACCOUNTS].find_one({"_id": _key(vim_account_id)}, _VIM_PROJECTION)
        return _model(VimAccountRecord, VIM_ACCOUNTS, doc) if doc else None

    @staticmethod
    def nsd_id_of(nsr: NsRecord) -> str | None:
        """The NSD ``_id`` the NS was created from (what ``operationParams.nsdId`` holds, and what NSD
        policies are bound to); ``nsd-ref`` is the descriptor's own ``id`` and not unique across projects."""
        return nsr.nsd_id

    async def vim_accounts_of(
        self, nsr_id: str, op: NsOperation, vnfrs: Sequence[VnfRecord] | None = None
    ) -> list[str]:
        """Every VIM account the operation targets, sorted: ``operationParams.vimAccountId``, each
        ``vnf[].vimAccountId`` and each ``vnfrs.vim-account-id`` (NBI set those before publishing).

        With ``placement-engine`` the final accounts are only known after the placement answer; the
        candidates are then ``op.params.valid_vim_accounts``.
        """
        if op.nsr_id != nsr_id:
            raise ValueError(f"operation {op.nslcmop_id} belongs to NS {op.nsr_id}, not {nsr_id}")
        vims = {op.params.vim_account_id} | {v.vim_account_id for v in op.params.vnfs}
        # callers that already read the vnfrs pass them: OSM's collections have no index on nsr-id-ref
        vims |= {v.vim_account_id for v in (vnfrs if vnfrs is not None else await self.vnfrs(nsr_id))}
        return sorted(v for v in vims if v)

    @staticmethod
    def deployed_vca(nsr: NsRecord) -> list[VcaDeployment]:
        """``_admin.deployed.VCA[]``: empty until LCM starts deploying execution environments."""
        return list(nsr.vca)


def _key(value: str) -> str:
    # ids come from Kafka messages and REST paths: a dict here would be a MongoDB operator ({"$ne": …})
    if not isinstance(value, str) or not value:
        raise ValueError(f"an OSM id must be a non-empty string, not {type(value).__name__}")
    return value
