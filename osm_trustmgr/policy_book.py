"""Trust policies as the service uses them: stored documents, re-verified against the configured signers.

A policy is loaded (shape + signature) each time its stored document changes, and cached otherwise, so a
policy replaced in the database takes effect at the next attestation without a restart.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import datetime

from osm_trustmgr.failures import Failure
from osm_trustmgr.policy.load import load_policy
from osm_trustmgr.policy.model import TrustPolicy
from osm_trustmgr.policy.signing import SignerKey
from osm_trustmgr.store.mongo import TrustStore
from osm_trustmgr.tpm.errors import EvidenceError


class PolicyBook:
    def __init__(self, store: TrustStore, signers: Mapping[str, SignerKey], *, require_signature: bool) -> None:
        self._store = store
        self._signers = dict(signers)
        self._require = require_signature
        self._cache: dict[str, tuple[str, TrustPolicy]] = {}

    async def get(self, policy_id: str) -> TrustPolicy:
        """The policy ``policy_id``; raises EvidenceError(policy.missing / policy.*) when unusable."""
        document = await self._store.get_policy_document(policy_id)
        if document is None:
            raise EvidenceError(Failure.POLICY_MISSING, f"trust policy {policy_id!r} is not stored")
        digest = hashlib.sha256(json.dumps(document, sort_keys=True, default=str).encode()).hexdigest()
        cached = self._cache.get(policy_id)
        if cached is not None and cached[0] == digest:
            return cached[1]
        policy = load_policy(document, self._signers, require_signature=self._require)
        if policy.id != policy_id:
            raise EvidenceError(Failure.POLICY_MALFORMED, f"document stored as {policy_id!r} has id {policy.id!r}")
        self._cache[policy_id] = (digest, policy)
        return policy

    async def put(self, document: Mapping[str, object], now: datetime) -> TrustPolicy:
        """Validate (shape and signature) before storing: a bad policy never reaches the database."""
        policy = load_policy(document, self._signers, require_signature=self._require)
        await self._store.put_policy(policy.id, document, now)
        return policy
