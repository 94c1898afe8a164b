"""trust_vnfs: the VNFs attested through their trust-proxy charm (DESIGN.md §6).

A VNF is tracked when its NS's gate first needs it (the VNF gate, or a strict-mode challenge); its trust fields
change only through the same compare-and-set pattern as hosts, so a concurrent monitor round and gate round
never move a state backwards unnoticed.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pymongo import ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase

from osm_trustmgr.store.mongo import VNFS
from osm_trustmgr.store.records import VnfTrustRecord

# what describes the VNF (refreshed whenever it is tracked again); the rest is its trust, kept
_TRACKING = ("nsr_id", "member_vnf_index", "vnfd_ref", "projects_read", "required_loa", "nslcmop_id", "ee_id",
             "vca_type", "vca_id", "compute_hosts", "policy_id")  # fmt: skip


class VnfStore:
    def __init__(self, db: AsyncDatabase[dict[str, Any]]) -> None:
        self.db = db

    async def track(self, record: VnfTrustRecord) -> VnfTrustRecord:
        """Insert the VNF, or refresh what describes it (its trust state is left as it is)."""
        doc = record.to_document()
        tracking = {k: doc[k] for k in _TRACKING}
        rest = {k: v for k, v in doc.items() if k not in tracking and k != "_id"}
        stored = await self.db[VNFS].find_one_and_update(
            {"_id": record.id},
            {"$set": tracking, "$setOnInsert": rest},
            upsert=True,
            return_document=ReturnDocument.AFTER,
        )
        assert stored is not None
        return VnfTrustRecord.from_document(stored)

    async def get(self, vnf_id: str) -> VnfTrustRecord | None:
        doc = await self.db[VNFS].find_one({"_id": vnf_id})
        return VnfTrustRecord.from_document(doc) if doc else None

    async def list_vnfs(self, nsr_id: str | None = None) -> list[VnfTrustRecord]:
        query = {"nsr_id": nsr_id} if nsr_id else {}
        cursor = self.db[VNFS].find(query).sort([("nsr_id", 1), ("member_vnf_index", 1)])
        return [VnfTrustRecord.from_document(d) async for d in cursor]

    async def due(self, now: datetime) -> list[VnfTrustRecord]:
        """Monitored VNFs whose next attestation is due; rejected and retired ones excepted."""
        query = {
            "monitored": True,
            "state": {"$nin": ["rejected", "retired"]},
            "$or": [{"next_attempt_at": None}, {"next_attempt_at": {"$lte": now}}],
        }
        return [VnfTrustRecord.from_document(d) async for d in self.db[VNFS].find(query).sort("next_attempt_at")]

    async def update_if(self, vnf_id: str, expected: Mapping[str, Any], changes: Mapping[str, Any]) -> bool:
        done = await self.db[VNFS].update_one({"_id": vnf_id, **expected}, {"$set": dict(changes)})
        return done.matched_count == 1

    async def set(self, vnf_id: str, changes: Mapping[str, Any]) -> VnfTrustRecord | None:
        """Apply ``changes``; returns the record as it was before (for transition detection)."""
        doc = await self.db[VNFS].find_one_and_update(
            {"_id": vnf_id}, {"$set": dict(changes)}, return_document=ReturnDocument.BEFORE
        )
        return VnfTrustRecord.from_document(doc) if doc else None

    async def healing(self, nslcmop_id: str) -> VnfTrustRecord | None:
        doc = await self.db[VNFS].find_one({"healing_op": nslcmop_id})
        return VnfTrustRecord.from_document(doc) if doc else None

    async def retire(self, nsr_id: str, now: datetime) -> int:
        """The NS is gone: its VNFs are no longer monitored (reports and identities stay for audit)."""
        done = await self.db[VNFS].update_many(
            {"nsr_id": nsr_id, "state": {"$ne": "retired"}},
            {"$set": {"state": "retired", "monitored": False, "next_attempt_at": None, "retired_at": now}},
        )
        return done.modified_count
