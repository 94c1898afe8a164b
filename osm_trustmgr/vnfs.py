"""VNF attestation through the trust-proxy charm (DESIGN.md §4–§5).

A VNF is attested like a host — same rounds, same verifier — with evidence from its proxy charm's actions
(``evidence/vca.py``: NBI action, N2VC, or in-process). What is VNF-specific lives here: which charm serves
a VNF, the workload level (LoA 5 needs the VNF at ≥ 4 on hosts at ≥ 4 right now), reports readable by the
NS's project only, and what happens when a monitored VNF drops below its NS's LoA (``trust_lost`` and the
configured remediation).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from osm_trustmgr.attestation import Publisher, Rounds, Subject, failed, utcnow
from osm_trustmgr.evidence.errors import SourceUnreachable
from osm_trustmgr.evidence.vca import CharmClient, VcaDriver, VnfTarget
from osm_trustmgr.failures import Failure
from osm_trustmgr.osm.nbi import NbiClient, NbiFailure
from osm_trustmgr.osm.records import NsRecord, VcaDeployment, VnfRecord
from osm_trustmgr.policy.result import AttestationResult
from osm_trustmgr.store.mongo import TrustStore
from osm_trustmgr.store.records import VnfTrustRecord
from osm_trustmgr.store.vnfs import VnfStore

log = logging.getLogger(__name__)

TRUST_TOPIC = "trust"
CHARM = "trust-proxy"
Remediation = Literal["notify", "terminate", "heal"]
VnfScheduler = Callable[[VnfTrustRecord], datetime]


def vnf_entity(vnfr_id: str) -> str:
    return f"vnf:{vnfr_id}"


def vnf_policy_id(vnfd_ref: str) -> str:
    """The policy that describes a VNFD's image is stored as ``vnfd:<vnfd id>``."""
    return f"vnfd:{vnfd_ref}"


def trust_charm(nsr: NsRecord, member_vnf_index: str) -> VcaDeployment | None:
    """The VNF-level trust-proxy execution environment of a member, from ``_admin.deployed.VCA[]``."""
    for vca in nsr.vca:
        if vca.member_vnf_index == member_vnf_index and vca.charm_name == CHARM and not vca.vdu_id:
            return vca
    return None


@dataclass(frozen=True)
class VnfSettings:
    host_max_age: float = 600.0  # a host verdict older than this does not count towards LoA 5
    remediation: Remediation = "notify"


@dataclass(frozen=True)
class VnfOutcome:
    vnf: VnfTrustRecord
    result: AttestationResult | None


class VnfAttestor:
    def __init__(
        self,
        store: TrustStore,
        vnfs: VnfStore,
        rounds: Rounds,
        driver: VcaDriver,
        publisher: Publisher,
        settings: VnfSettings,
        *,
        nbi: NbiClient | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.store, self.vnfs, self.rounds, self.driver = store, vnfs, rounds, driver
        self.publisher, self.settings, self.nbi, self._clock = publisher, settings, nbi, clock

    # -- inventory ----------------------------------------------------------------------------------

    async def track(
        self, nsr: NsRecord, vnfr: VnfRecord, required_loa: int, nslcmop_id: str | None = None
    ) -> VnfTrustRecord:
        """Record (or refresh) a VNF of ``nsr`` as one the Trust Manager attests."""
        vca = trust_charm(nsr, vnfr.member_vnf_index)
        policy_id = vnf_policy_id(vnfr.vnfd_ref) if vnfr.vnfd_ref else None
        if policy_id and await self.store.get_policy_document(policy_id) is None:
            policy_id = None
        hosts = sorted({h for h in (v.compute_host() for v in vnfr.vdur) if h})
        return await self.vnfs.track(
            VnfTrustRecord(
                id=vnfr.id,
                nsr_id=nsr.id,
                member_vnf_index=vnfr.member_vnf_index,
                vnfd_ref=vnfr.vnfd_ref,
                projects_read=list(nsr.projects_read or vnfr.projects_read),
                required_loa=required_loa,
                nslcmop_id=nslcmop_id,
                ee_id=vca.ee_id if vca else None,
                vca_type=vca.type if vca else None,
                vca_id=vnfr.vca_id,
                compute_hosts=hosts,
                policy_id=policy_id,
            )
        )

    def target(self, vnf: VnfTrustRecord) -> VnfTarget:
        project = vnf.projects_read[0] if vnf.projects_read else None
        return VnfTarget(
            nsr_id=vnf.nsr_id, vnfr_id=vnf.id, member_vnf_index=vnf.member_vnf_index, project=project,
            ee_id=vnf.ee_id, vca_type=vnf.vca_type, vca_id=vnf.vca_id,
        )  # fmt: skip

    async def subject(self, vnf: VnfTrustRecord) -> Subject:
        return Subject(vnf_entity(vnf.id), vnf.policy_id, vnf.verifier_state, host_loa=await self.host_loa(vnf))

    async def host_loa(self, vnf: VnfTrustRecord) -> int | None:
        """The lowest current LoA of the hosts the VNF runs on (a stale or missing verdict counts as 0);
        None when no host of the VNF is known, which keeps the VNF below LoA 5."""
        if not vnf.compute_hosts:
            return None
        now, loas = self._clock(), []
        for host_id in vnf.compute_hosts:
            host = await self.store.get_host(host_id)
            fresh = (
                host is not None
                and host.state == "attested"
                and host.attested_at is not None
                and now - host.attested_at <= timedelta(seconds=self.settings.host_max_age)
            )
            loas.append(host.loa if fresh and host else 0)
        return min(loas)

    # -- attestation ---------------------------------------------------------------------------------

    async def attest(self, vnf: str | VnfTrustRecord, *, schedule: VnfScheduler | None = None) -> VnfOutcome:
        """One round through the VNF's charm; ``schedule`` gives the next attempt (the monitor's)."""
        record = await self._record_of(vnf)
        if record.state in ("rejected", "retired"):
            log.info("VNF %s is %s (%s): not attested", record.id, record.state, record.reason)
            return VnfOutcome(record, None)
        source = CharmClient(self.driver, self.target(record))
        try:
            result = await self.rounds.run(await self.subject(record), source)
        except SourceUnreachable as e:
            return await self._unreachable(record, str(e), schedule)
        return await self.record(record, result, schedule)

    async def _record_of(self, vnf: str | VnfTrustRecord) -> VnfTrustRecord:
        if isinstance(vnf, VnfTrustRecord):
            return vnf
        record = await self.vnfs.get(vnf)
        if record is None:
            raise KeyError(f"VNF {vnf!r} is not tracked")
        return record

    async def record(
        self, vnf: VnfTrustRecord, result: AttestationResult, schedule: VnfScheduler | None = None
    ) -> VnfOutcome:
        """Store a verdict (from a round, or from strict-mode evidence) and apply its transition."""
        await self.store.insert_report(result.nonce, "vnf", result, projects=vnf.projects_read)
        rejected = Failure.IDENTITY_CHANGED.value in result.codes()
        changes: dict[str, Any] = {
            "state": "rejected" if rejected else "attested",
            "loa": result.loa,
            "last_report": result.nonce,
            "attested_at": result.time,
            "unreachable_count": 0,
            "reason": "; ".join(f"{f.code}: {f.detail}" for f in result.failures[:3]) or None,
        }
        if result.state is not None and result.loa >= 1:
            changes["verifier_state"] = result.state.model_dump()
        return await self._transition(vnf, changes, result, schedule)

    async def mark_unreachable(self, vnf_id: str, reason: str, schedule: VnfScheduler | None = None) -> VnfOutcome:
        return await self._unreachable(await self._record_of(vnf_id), reason, schedule)

    async def _unreachable(self, vnf: VnfTrustRecord, reason: str, schedule: VnfScheduler | None) -> VnfOutcome:
        log.warning("VNF %s (member %s of NS %s) unreachable: %s", vnf.id, vnf.member_vnf_index, vnf.nsr_id, reason)
        result = failed(await self.subject(vnf), os.urandom(20), self._clock(), Failure.AGENT_UNREACHABLE, reason)
        await self.store.insert_report(result.nonce, "vnf", result, projects=vnf.projects_read)
        changes = {"state": "unreachable", "loa": 0, "last_report": result.nonce,
                   "unreachable_count": vnf.unreachable_count + 1, "reason": reason}  # fmt: skip
        return await self._transition(vnf, changes, result, schedule)

    async def _transition(
        self, vnf: VnfTrustRecord, changes: dict[str, Any], result: AttestationResult, schedule: VnfScheduler | None
    ) -> VnfOutcome:
        after = VnfTrustRecord.model_validate({**vnf.model_dump(), **changes})
        if schedule is not None:
            changes["next_attempt_at"] = after.next_attempt_at = schedule(after)
        before = vnf
        expected = {"state": vnf.state, "loa": vnf.loa, "last_report": vnf.last_report}
        if not await self.vnfs.update_if(vnf.id, expected, changes):
            before = await self.vnfs.set(vnf.id, changes) or vnf
            after = VnfTrustRecord.model_validate({**before.model_dump(), **changes})
        if (before.state, before.loa) != (after.state, after.loa):
            log.info("VNF %s (member %s of NS %s): %s/LoA %d -> %s/LoA %d (%s)", vnf.id, vnf.member_vnf_index,
                     vnf.nsr_id, before.state, before.loa, after.state, after.loa,
                     ", ".join(result.codes()) or "no failures")  # fmt: skip
            await self.publisher.publish(TRUST_TOPIC, "vnf_trust", transition_message(before, after, result))
        if after.monitored and before.loa >= after.required_loa > after.loa:
            await self._trust_lost(after, result)
        return VnfOutcome(after, result)

    async def reenroll(self, vnf_id: str) -> None:
        """An administrator accepts a new vTPM identity (e.g. a redeployed VNF): forget the old one."""
        await self._record_of(vnf_id)
        await self.store.delete_identity(vnf_entity(vnf_id))
        await self.vnfs.set(vnf_id, {"state": "new", "reason": "re-enrollment requested"})

    # -- monitoring and remediation -----------------------------------------------------------------------

    async def due(self, now: datetime) -> list[VnfTrustRecord]:
        return await self.vnfs.due(now)

    async def reschedule(self, vnf_id: str, when: datetime) -> None:
        await self.vnfs.set(vnf_id, {"next_attempt_at": when})

    async def start_monitoring(self, vnf_id: str, first: datetime) -> None:
        await self.vnfs.set(vnf_id, {"monitored": True, "next_attempt_at": first})

    async def retire(self, nsr_id: str) -> int:
        count = await self.vnfs.retire(nsr_id, self._clock())
        if count:
            log.info("NS %s terminated: %d VNFs no longer monitored", nsr_id, count)
        return count

    async def healed(self, nslcmop_id: str, operation_state: str) -> None:
        """LCM finished a heal this Trust Manager asked for: the VNF was redeployed, with a new vTPM, so its
        identity is enrolled again (EK chain and activation as at first) and it is attested at once."""
        vnf = await self.vnfs.healing(nslcmop_id)
        if vnf is None:
            return
        if operation_state != "COMPLETED":
            log.error("heal %s of VNF %s ended %s: its trust stays lost", nslcmop_id, vnf.id, operation_state)
            await self.vnfs.set(vnf.id, {"healing_op": None})
            return
        log.info("VNF %s healed (nslcmop %s): re-enrolling its new vTPM", vnf.id, nslcmop_id)
        await self.store.delete_identity(vnf_entity(vnf.id))
        changes = {"healing_op": None, "state": "new", "verifier_state": None, "next_attempt_at": self._clock(),
                   "reason": f"healed by {nslcmop_id}"}  # fmt: skip
        await self.vnfs.set(vnf.id, changes)

    async def _trust_lost(self, vnf: VnfTrustRecord, result: AttestationResult) -> None:
        reasons = [f"{f.code}: {f.detail}" for f in result.failures]
        log.warning("TRUST LOST: VNF %s (member %s) of NS %s at LoA %d, its NS requires %d (%s); remediation: %s",
                    vnf.id, vnf.member_vnf_index, vnf.nsr_id, vnf.loa, vnf.required_loa,
                    "; ".join(reasons) or "no failures", self.settings.remediation)  # fmt: skip
        outcome = await self._remediate(vnf, reasons)
        await self.publisher.publish(TRUST_TOPIC, "trust_lost", {
            "nsr_id": vnf.nsr_id, "vnfr_id": vnf.id, "member_vnf_index": vnf.member_vnf_index,
            "required_loa": vnf.required_loa, "loa": vnf.loa, "report_id": vnf.last_report, "reasons": reasons,
            "remediation": self.settings.remediation, "remediation_result": outcome,
        })  # fmt: skip

    async def _remediate(self, vnf: VnfTrustRecord, reasons: list[str]) -> str:
        mode = self.settings.remediation
        if mode == "notify":
            return "notified"
        if self.nbi is None:
            return f"not done: no NBI client for {mode}"
        project = vnf.projects_read[0] if vnf.projects_read else None
        try:
            if mode == "terminate":
                op = await self.nbi.terminate_ns(vnf.nsr_id, as_project=project)
            else:
                cause = f"trust lost: LoA {vnf.loa} < {vnf.required_loa}"
                op = await self.nbi.heal_vnf(vnf.nsr_id, vnf.id, cause, as_project=project)
                await self.vnfs.set(vnf.id, {"healing_op": op})
        except NbiFailure as e:
            log.error("remediation %s of NS %s failed: %s", mode, vnf.nsr_id, e)
            return f"failed: {e}"
        return f"{mode} requested (nslcmop {op})"


def transition_message(before: VnfTrustRecord, after: VnfTrustRecord, result: AttestationResult) -> dict[str, Any]:
    return {
        "id": after.id,
        "nsr_id": after.nsr_id,
        "member_vnf_index": after.member_vnf_index,
        "previous_loa": before.loa,
        "loa": after.loa,
        "previous_state": before.state,
        "state": after.state,
        "required_loa": after.required_loa,
        "report_id": after.last_report,
        "reasons": [f"{f.code}: {f.detail}" for f in result.failures],
        "time": result.time.isoformat(),
    }
