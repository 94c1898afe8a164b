"""Documents of the trust_* collections (DESIGN.md §6), as pydantic models.

Binary TPM structures are stored as BSON binary; times are timezone-aware UTC datetimes.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from osm_trustmgr.policy.evaluate import IdentityMethod
from osm_trustmgr.policy.result import VerifierState

HostState = Literal["new", "attested", "unreachable", "rejected"]
"""``new``: registered, not yet enrolled; ``attested``: ``loa`` holds the last verdict; ``unreachable``: the
agent did not answer (never trusted: loa 0); ``rejected``: the TPM identity changed, an administrator must
re-enroll the host (an AK is never silently replaced)."""


_D = TypeVar("_D", bound="KeyedDocument")


class KeyedDocument(BaseModel):
    """A record whose ``id`` is the MongoDB ``_id``."""

    id: str

    def to_document(self) -> dict[str, Any]:
        doc = self.model_dump(exclude={"id"})
        doc["_id"] = self.id
        return doc

    @classmethod
    def from_document(cls: type[_D], doc: dict[str, Any]) -> _D:
        return cls.model_validate({**{k: v for k, v in doc.items() if k != "_id"}, "id": doc["_id"]})


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


class HostRecord(HostSpec, KeyedDocument):
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


VnfState = Literal["new", "attested", "unreachable", "rejected", "retired"]
"""As ``HostState``, plus ``retired``: the NS was terminated, the VNF is no longer attested."""


class VnfTrustRecord(KeyedDocument):
    """trust_vnfs: a VNF the Trust Manager attests through its trust-proxy charm, and its current trust.

    ``loa`` is the VNF's verdict including the workload level (5 needs the hosts it runs on at ≥ 4 too);
    ``required_loa`` is what its NS asked for. ``monitored`` turns on once its VNF gate accepted it: from then
    on the monitor re-attests it every ``monitor.vnf_interval`` and a drop below ``required_loa`` is a
    ``trust_lost``.
    """

    id: str = Field(description="the vnfr _id")
    nsr_id: str
    member_vnf_index: str
    vnfd_ref: str | None = None
    projects_read: list[str] = Field(default_factory=list, description="the NS's _admin.projects_read")
    required_loa: int = Field(0, ge=0, le=5)
    nslcmop_id: str | None = None
    ee_id: str | None = None
    vca_type: str | None = None
    vca_id: str | None = None
    compute_hosts: list[str] = Field(default_factory=list, description="trust_hosts ids of its VDUs' hosts")
    policy_id: str | None = None
    monitored: bool = False
    healing_op: str | None = Field(None, description="the heal nslcmop the Trust Manager requested, until it ends")
    state: VnfState = "new"
    loa: int = 0
    last_report: str | None = None
    attested_at: datetime | None = None
    verifier_state: VerifierState | None = None
    unreachable_count: int = 0
    next_attempt_at: datetime | None = None
    reason: str | None = None
