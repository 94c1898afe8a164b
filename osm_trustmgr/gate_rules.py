"""The gate's rules as pure functions: which actions a decision needs, which VIMs a placement chooses, and the
``trust``/``gate`` message (DESIGN.md §5, docs/gate.md)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from osm_trustmgr.host_check import VimTrust
from osm_trustmgr.osm.messages import NsOperation

GateMode = Literal["enforce", "placement", "audit"]


@dataclass(frozen=True)
class GateSettings:
    mode: GateMode = "enforce"
    max_age: float = 300.0
    timeout: float = 30.0
    terminate_on_reject: bool = True


def planned_actions(settings: GateSettings, decision: str, placement: bool, vnfs: bool) -> list[str]:
    attest_vnfs = ["vnfs"] if vnfs and decision == "accept" else []  # audit mode attests and records them too
    if settings.mode == "audit":
        return attest_vnfs
    if placement:
        return ["placement", *attest_vnfs] if decision == "accept" else ["cancel"]
    if decision != "reject":
        return attest_vnfs
    return ["cancel", "terminate"] if settings.terminate_on_reject else ["cancel"]


def choose_vims(op: NsOperation, trust: VimTrust, candidates: list[str], members: list[str]) -> dict[str, str] | None:
    """A trusted VIM account for every VNF member: the one asked for when trusted, else the first trusted
    candidate. Every member is listed: LCM keeps NBI's default VIM for a member the answer leaves out."""
    trusted = [v for v in candidates if trust.trusted(v)]
    if not trusted:
        return None
    asked = {v.member_vnf_index: v.vim_account_id for v in op.params.vnfs}
    chosen = {}
    for member in sorted(set(members) | set(asked)):
        wanted = asked.get(member) or op.params.vim_account_id
        chosen[member] = wanted if wanted in trusted else trusted[0]
    return chosen


def gate_message(doc: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "nslcmop_id": doc["_id"],
        "nsr_id": doc.get("nsr_id"),
        "decision": doc.get("decision"),
        "mode": doc.get("mode"),
        "required_loa": doc.get("required_loa"),
        "required_host_loa": doc.get("required_host_loa"),
        "achieved_loa": doc.get("achieved_loa"),
        "stage": "hosts",
        "reasons": list(doc.get("reasons") or []),
    }
