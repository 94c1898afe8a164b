"""trust_gates and trust_nsd_policies: one gate document per nslcmop, NSD-bound LoA requirements.

A gate is claimed by inserting its document keyed by the nslcmop ``_id``: a redelivered or replayed
``ns``/``instantiate`` finds the existing document and never decides twice; a restart finds the unfinished
ones (``status`` not ``done``) and resumes them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from pymongo import ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from osm_trustmgr.store.mongo import GATES, NSD_POLICIES


class GateStore:
    def __init__(self, db: AsyncDatabase[dict[str, Any]]) -> None:
        self.db = db

    async def claim(self, document: Mapping[str, Any]) -> tuple[dict[str, Any], bool]:
        """Insert the gate document; returns (the stored document, True if this call created it).

        A document may already exist as a stub (LCM's ``get_placement`` consumed before the instantiate):
        the fields it lacks are filled in, and it counts as created when it had no decision yet.
        """
        try:
            await self.db[GATES].insert_one(dict(document))
            return dict(document), True
        except DuplicateKeyError:
            existing = await self.db[GATES].find_one({"_id": document["_id"]})
            assert existing is not None
        missing = {k: v for k, v in document.items() if k not in existing}
        if missing:
            existing = await self.update(document["_id"], missing) or existing
        return existing, "decision" not in existing and "status" in missing

    async def mark(self, gate_id: str, changes: Mapping[str, Any]) -> dict[str, Any]:
        """Set ``changes``, creating a stub gate document if the gate is not claimed yet."""
        doc = await self.db[GATES].find_one_and_update(
            {"_id": gate_id}, {"$set": dict(changes)}, upsert=True, return_document=ReturnDocument.AFTER
        )
        assert doc is not None
        return doc

    async def update(self, gate_id: str, changes: Mapping[str, Any]) -> dict[str, Any] | None:
        return await self.db[GATES].find_one_and_update(
            {"_id": gate_id}, {"$set": dict(changes)}, return_document=ReturnDocument.AFTER
        )

    async def set(self, gate_id: str, changes: Mapping[str, Any]) -> bool:
        """``update`` without reading the document back (one indexed write); True when the gate exists."""
        done = await self.db[GATES].update_one({"_id": gate_id}, {"$set": dict(changes)})
        return done.matched_count == 1

    async def get(self, gate_id: str) -> dict[str, Any] | None:
        return await self.db[GATES].find_one({"_id": gate_id})

    async def latest_for_ns(self, nsr_id: str) -> dict[str, Any] | None:
        """The NS's most recent gate (its instantiation's), e.g. for the LoA a strict-mode VNF must reach."""
        docs = self.db[GATES].find({"nsr_id": nsr_id, "message": {"$exists": True}}).sort("created_at", -1).limit(1)
        return next(iter([d async for d in docs]), None)

    async def unfinished(self) -> list[dict[str, Any]]:
        return [d async for d in self.db[GATES].find({"status": {"$ne": "done"}}).sort("created_at")]

    async def set_nsd_policy(self, nsd_id: str, loa: int, now: datetime, exempt_vnfds: Sequence[str] = ()) -> None:
        """``exempt_vnfds``: VNFD ids whose VNFs need no trust-proxy charm in this NSD (DESIGN.md §4: a VNF
        without the charm fails any VNF requirement unless the policy exempts it)."""
        doc = {"_id": nsd_id, "loa": loa, "exempt_vnfds": sorted(set(exempt_vnfds)), "updated_at": now}
        await self.db[NSD_POLICIES].replace_one({"_id": nsd_id}, doc, upsert=True)

    async def nsd_policy_exemptions(self, nsd_id: str | None) -> list[str]:
        doc = await self.db[NSD_POLICIES].find_one({"_id": nsd_id}) if nsd_id else None
        return list((doc or {}).get("exempt_vnfds") or [])

    async def nsd_policy_loa(self, nsd_id: str | None) -> int | None:
        if not nsd_id:
            return None
        doc = await self.db[NSD_POLICIES].find_one({"_id": nsd_id})
        return int(doc["loa"]) if doc else None
