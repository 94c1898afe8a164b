"""Trust queries under ``/osm/trust/v1`` (DESIGN.md §5): VNF trust and its reports, scoped by the caller's project.

A tenant sees the VNFs of its projects' NSs (``_admin.projects_read`` copied from the NS) and their reports; an
admin token sees everything. Something the caller may not see is answered 404, exactly like something that does
not exist: a tenant learns nothing about other tenants' VNFs.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Header, HTTPException, Query

from osm_trustmgr.api.auth import AuthError, TokenAuth
from osm_trustmgr.osm.nbi import TokenInfo
from osm_trustmgr.store.mongo import TrustStore
from osm_trustmgr.store.records import VnfTrustRecord
from osm_trustmgr.store.vnfs import VnfStore
from osm_trustmgr.vnfs import vnf_entity

_VNF_FIELDS = ("id", "nsr_id", "member_vnf_index", "vnfd_ref", "state", "loa", "required_loa", "monitored",
               "attested_at", "last_report", "reason", "compute_hosts")  # fmt: skip


def _visible(caller: TokenInfo, vnf: VnfTrustRecord) -> bool:
    return caller.admin or caller.project_id in vnf.projects_read


def _summary(vnf: VnfTrustRecord) -> dict[str, Any]:
    return vnf.model_dump(mode="json", include=set(_VNF_FIELDS))


def _report(doc: dict[str, Any]) -> dict[str, Any]:
    doc = {k: v for k, v in doc.items() if k not in ("_admin", "expire_at", "state")}
    doc["id"] = doc.pop("_id")
    return doc


def query_router(store: TrustStore, vnfs: VnfStore, auth: TokenAuth) -> APIRouter:
    router = APIRouter()

    async def caller(authorization: str | None) -> TokenInfo:
        try:
            return await auth.caller(authorization)
        except AuthError as e:
            headers = {"WWW-Authenticate": "Bearer"} if e.status == 401 else None
            raise HTTPException(e.status, e.detail, headers=headers) from None

    async def visible_vnf(who: TokenInfo, vnfr_id: str) -> VnfTrustRecord:
        vnf = await vnfs.get(vnfr_id)
        if vnf is None or not _visible(who, vnf):
            raise HTTPException(404, f"no VNF {vnfr_id} in your projects")
        return vnf

    @router.get("/vnfs")
    async def list_vnfs(
        authorization: str | None = Header(None), nsr_id: str | None = Query(None, max_length=128)
    ) -> list[dict[str, Any]]:
        """VNFs attested through the trust-proxy charm, with their current LoA (optionally of one NS)."""
        who = await caller(authorization)
        return [_summary(v) for v in await vnfs.list_vnfs(nsr_id) if _visible(who, v)]

    @router.get("/vnfs/{vnfr_id}")
    async def show_vnf(vnfr_id: str, authorization: str | None = Header(None)) -> dict[str, Any]:
        return _summary(await visible_vnf(await caller(authorization), vnfr_id))

    @router.get("/vnfs/{vnfr_id}/reports")
    async def vnf_reports(
        vnfr_id: str, authorization: str | None = Header(None), limit: int = Query(20, ge=1, le=1000)
    ) -> list[dict[str, Any]]:
        """The VNF's attestation reports, newest first: LoA, failures with their codes and details, claims."""
        vnf = await visible_vnf(await caller(authorization), vnfr_id)
        return [_report(doc) for doc in await store.reports_for(vnf_entity(vnf.id), limit)]

    return router
