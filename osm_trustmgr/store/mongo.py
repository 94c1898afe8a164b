"""trust_* collections on pymongo's AsyncMongoClient: indexes, and the operations the service needs.

Every write is idempotent or guarded, so an at-least-once caller (a redelivered message, a restart in the
middle of a monitor cycle) never duplicates a report nor moves a state backwards.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from pymongo import ASCENDING, DESCENDING, AsyncMongoClient, IndexModel, ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from osm_trustmgr.policy.result import AttestationResult
from osm_trustmgr.policy.signing import json_compatible
from osm_trustmgr.store.records import HostRecord, IdentityRecord

log = logging.getLogger(__name__)

HOSTS, IDENTITIES, NONCES, REPORTS = "trust_hosts", "trust_identities", "trust_nonces", "trust_reports"
POLICIES, NSD_POLICIES, GATES, VNFS, KEYS = (
    "trust_policies", "trust_nsd_policies", "trust_gates", "trust_vnfs", "trust_keys"
)  # fmt: skip

INDEXES: Mapping[str, list[IndexModel]] = {
    HOSTS: [IndexModel([("vim_account_id", ASCENDING)]), IndexModel([("next_attempt_at", ASCENDING)])],
    # an AK belongs to one entity: the same AK enrolled twice is a cloned or shared identity
    IDENTITIES: [IndexModel([("ak_name", ASCENDING)], unique=True)],
    NONCES: [IndexModel([("expires_at", ASCENDING)], expireAfterSeconds=0)],
    REPORTS: [
        IndexModel([("entity", ASCENDING), ("time", DESCENDING)]),
        IndexModel([("nonce", ASCENDING)], unique=True),
        IndexModel([("expire_at", ASCENDING)], expireAfterSeconds=0),
    ],
    GATES: [IndexModel([("nsr_id", ASCENDING)])],
    VNFS: [IndexModel([("nsr_id", ASCENDING)])],
}


class TrustStore:
    """The Trust Manager's database. ``retention`` bounds how long reports are kept."""

    def __init__(self, client: AsyncMongoClient[dict[str, Any]], db_name: str, *, retention: timedelta) -> None:
        self._client = client
        self.db: AsyncDatabase[dict[str, Any]] = client[db_name]
        self.retention = retention

    @classmethod
    def connect(cls, uri: str, db_name: str, *, retention: timedelta = timedelta(days=90)) -> TrustStore:
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri, tz_aware=True, serverSelectionTimeoutMS=10000)
        return cls(client, db_name, retention=retention)

    async def create_indexes(self) -> None:
        for name, indexes in INDEXES.items():
            await self.db[name].create_indexes(indexes)

    async def close(self) -> None:
        await self._client.close()

    # -- hosts -----------------------------------------------------------------------------------------

    async def add_host(self, host: HostRecord) -> bool:
        """Register a host; False when the id exists already."""
        try:
            await self.db[HOSTS].insert_one(host.to_document())
        except DuplicateKeyError:
            return False
        return True

    async def update_host_spec(self, host_id: str, changes: Mapping[str, Any]) -> HostRecord | None:
        doc = await self.db[HOSTS].find_one_and_update(
            {"_id": host_id}, {"$set": dict(changes)}, return_document=ReturnDocument.AFTER
        )
        return HostRecord.from_document(doc) if doc else None

    async def delete_host(self, host_id: str) -> bool:
        deleted = await self.db[HOSTS].delete_one({"_id": host_id})
        await self.db[IDENTITIES].delete_one({"_id": f"host:{host_id}"})
        return deleted.deleted_count == 1

    async def get_host(self, host_id: str) -> HostRecord | None:
        doc = await self.db[HOSTS].find_one({"_id": host_id})
        return HostRecord.from_document(doc) if doc else None

    async def list_hosts(self, vim_account_id: str | None = None) -> list[HostRecord]:
        query = {"vim_account_id": vim_account_id} if vim_account_id else {}
        return [HostRecord.from_document(d) async for d in self.db[HOSTS].find(query).sort("_id")]

    async def due_hosts(self, now: datetime) -> list[HostRecord]:
        """Hosts whose next attestation is due (or never scheduled), rejected ones excepted."""
        query = {
            "state": {"$ne": "rejected"},
            "$or": [{"next_attempt_at": None}, {"next_attempt_at": {"$lte": now}}],
        }
        return [HostRecord.from_document(d) async for d in self.db[HOSTS].find(query).sort("next_attempt_at")]

    async def update_host_if(self, host_id: str, expected: Mapping[str, Any], changes: Mapping[str, Any]) -> bool:
        """Apply ``changes`` only if the host still has the ``expected`` values; True when it did."""
        done = await self.db[HOSTS].update_one({"_id": host_id, **expected}, {"$set": dict(changes)})
        return done.matched_count == 1

    async def set_host_state(self, host_id: str, changes: Mapping[str, Any]) -> HostRecord | None:
        """Apply ``changes``; returns the record as it was before (for transition detection)."""
        doc = await self.db[HOSTS].find_one_and_update(
            {"_id": host_id}, {"$set": dict(changes)}, return_document=ReturnDocument.BEFORE
        )
        return HostRecord.from_document(doc) if doc else None

    # -- identities -------------------------------------------------------------------------------------

    async def put_identity(self, record: IdentityRecord) -> bool:
        """Store an enrolled identity; False when the entity already has one (never overwritten)."""
        try:
            await self.db[IDENTITIES].insert_one({"_id": record.entity, **record.model_dump()})
        except DuplicateKeyError:
            return False
        return True

    async def get_identity(self, entity: str) -> IdentityRecord | None:
        doc = await self.db[IDENTITIES].find_one({"_id": entity})
        return IdentityRecord.model_validate(doc) if doc else None

    async def identity_with_ak(self, ak_name: bytes) -> IdentityRecord | None:
        doc = await self.db[IDENTITIES].find_one({"ak_name": ak_name})
        return IdentityRecord.model_validate(doc) if doc else None

    async def delete_identity(self, entity: str) -> bool:
        return (await self.db[IDENTITIES].delete_one({"_id": entity})).deleted_count == 1

    # -- nonces -----------------------------------------------------------------------------------------

    async def issue_nonce(
        self, nonce: bytes, entity: str, now: datetime, ttl: timedelta, data: Mapping[str, Any] | None = None
    ) -> None:
        """Store a single-use nonce; ``data`` travels with it (a strict-mode challenge's selection, say)."""
        await self.db[NONCES].insert_one(
            {"_id": nonce.hex(), "entity": entity, "issued_at": now, "expires_at": now + ttl, "data": dict(data or {})}
        )

    async def take_nonce(self, nonce: bytes, entity: str, now: datetime) -> dict[str, Any] | None:
        """``consume_nonce`` that also returns what was issued with the nonce; None when unknown, used or expired."""
        doc = await self.db[NONCES].find_one_and_delete(
            {"_id": nonce.hex(), "entity": entity, "expires_at": {"$gt": now}}
        )
        return dict(doc.get("data") or {}) if doc else None

    async def consume_nonce(self, nonce: bytes, entity: str, now: datetime) -> bool:
        """True exactly once for an issued, unexpired nonce of ``entity`` (the TTL sweep is not relied on)."""
        done = await self.db[NONCES].delete_one({"_id": nonce.hex(), "entity": entity, "expires_at": {"$gt": now}})
        return done.deleted_count == 1

    # -- reports ----------------------------------------------------------------------------------------

    async def insert_report(self, report_id: str, kind: str, result: AttestationResult, *,
                            projects: list[str] | None = None) -> bool:  # fmt: skip
        """Append a report (``_id`` = ``report_id``); False when it exists already (a replayed round)."""
        doc = result.model_dump(mode="python")
        doc.update(
            _id=report_id,
            kind=kind,
            expire_at=result.time + self.retention,
            _admin={"projects_read": projects or []},
        )
        try:
            await self.db[REPORTS].insert_one(doc)
        except DuplicateKeyError:
            log.info("report %s already stored; not duplicated", report_id)
            return False
        return True

    async def reports_for(self, entity: str, limit: int = 50) -> list[dict[str, Any]]:
        cursor = self.db[REPORTS].find({"entity": entity}).sort("time", DESCENDING).limit(limit)
        return [doc async for doc in cursor]

    # -- policies ---------------------------------------------------------------------------------------

    async def put_policy(self, policy_id: str, document: Mapping[str, Any], now: datetime) -> None:
        """Store a policy document exactly as signed (it is re-verified whenever it is loaded)."""
        await self.db[POLICIES].replace_one(
            {"_id": policy_id},
            {"_id": policy_id, "document": json_compatible(document), "stored_at": now},
            upsert=True,
        )

    async def get_policy_document(self, policy_id: str) -> dict[str, Any] | None:
        doc = await self.db[POLICIES].find_one({"_id": policy_id})
        return doc["document"] if doc else None
