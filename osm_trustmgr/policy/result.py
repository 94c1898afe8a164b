"""What a verification produces: the AttestationResult record and the state carried to the next round."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, computed_field

from osm_trustmgr.failures import Failure

LOA_NAMES = {0: "none", 1: "identity", 2: "platform", 3: "os", 4: "runtime", 5: "workload"}


class FailureRecord(BaseModel):
    """One failed check: stable ``code``, human ``detail``, and the LoA the check belongs to."""

    model_config = ConfigDict(frozen=True)

    code: str
    detail: str
    level: int = Field(ge=1, le=5)

    @classmethod
    def of(cls, code: Failure, detail: str, level: int) -> FailureRecord:
        return cls(code=code.value, detail=detail, level=level)


class VerifierState(BaseModel):
    """What the next round needs from this one: TPM counters and how far the IMA log was verified."""

    reset_count: int = 0
    restart_count: int = 0
    clock: int = 0
    ima_offset: int = 0
    ima_pcr10: dict[str, str] = Field(default_factory=dict, description="bank -> hex PCR 10 after ima_offset entries")


class AttestationResult(BaseModel):
    """DESIGN.md §5: the verdict on one piece of evidence."""

    entity: str
    loa: int = Field(ge=0, le=5)
    claims: dict[str, Any] = Field(default_factory=dict)
    failures: list[FailureRecord] = Field(default_factory=list)
    evidence_digest: str
    nonce: str
    policy_id: str | None = None
    time: datetime
    state: VerifierState | None = None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def loa_name(self) -> str:
        return LOA_NAMES[self.loa]

    def codes(self) -> list[str]:
        return [f.code for f in self.failures]
