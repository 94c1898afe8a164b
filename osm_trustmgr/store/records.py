"""Documents of the trust_* collections (DESIGN.md §6), as pydantic models.

Binary TPM structures are stored as BSON binary; times are timezone-aware UTC datetimes.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from osm_trustmgr.policy.evaluate import IdentityMethod
from osm_trustmgr.policy.result import VerifierState

HostState = Literal["new", "attested", "unreachable", "rejected"]
"""``new``: registered, not yet enrolled; ``attested``: ``loa`` holds the last verdict; ``unreachable``: the
agent did not answer (never trusted: loa 0); ``rejected``: the TPM identity changed, an administrator must
re-enroll the host (an AK is never silently replaced)."""


class AgentEndpoint(BaseModel):
    """How to reach a host's osm-trust-agent: HTTPS URL and the TLS material to use."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(pattern=r"^https?://")
    ca_file: str | None = Field(None, description="CA bundle that signed the agent's server certificate")
    client_cert: str | None = None
    client_key: str | None = None
    timeout: float = Field(10.0, gt=0)


class HostSpec(BaseModel):
    """What an administrator registers for an NFVI host."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=r"^[A-Za-z0-9_.:-]{1,128}$")
    vim_account_id: str = Field(min_length=1)
    agent: AgentEndpoint
    policy_id: str | None = None
    ek_ca_file: str | None = Field(None, description="EK CA bundle for this host (default: tpm.ek_ca_bundle)")
    pinned_ek: bytes | None = Field(None, description="TPM2B_PUBLIC of the EK, vouched for by an administrator")


class HostRecord(HostSpec):
    """trust_hosts: the inventory entry plus the host's current trust."""

    state: HostState = "new"
    loa: int = 0
    last_report: str | None = None
    attested_at: datetime | None = None
    boot_time: int | None = None
    verifier_state: VerifierState | None = None
    unreachable_count: int = 0
    next_attempt_at: datetime | None = None
    reason: str | None = None

    def to_document(self) -> dict[str, Any]:
        doc = self.model_dump(exclude={"id"})
        doc["_id"] = self.id
        return doc

    @classmethod
    def from_document(cls, doc: dict[str, Any]) -> HostRecord:
        return cls.model_validate({**{k: v for k, v in doc.items() if k != "_id"}, "id": doc["_id"]})


class IdentityRecord(BaseModel):
    """trust_identities: what enrollment proved, per entity (``host:<id>`` or ``vnf:<id>``)."""

    entity: str
    method: IdentityMethod
    ek_public: bytes
    ek_certificate: bytes | None
    ak_public: bytes
    ak_name: bytes
    ak_qualified_name: bytes
    enrolled_at: datetime
