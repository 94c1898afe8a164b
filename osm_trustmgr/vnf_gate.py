"""The VNF gate (DESIGN.md §5): once LCM has deployed an NS, attest every VNF its LoA covers.

Each VNF that must reach an LoA ≥ 1 is attested through its trust-proxy charm (enrolled first if new); a VNF
without the charm cannot prove anything and fails the requirement. All VNFs are attested in parallel under
``timeout``; one that does not answer in time is ``unreachable``. Accepted VNFs are then monitored.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta

from osm_trustmgr.attestation import utcnow
from osm_trustmgr.osm.records import NsRecord, OsmRecords, VnfRecord
from osm_trustmgr.store.records import VnfTrustRecord
from osm_trustmgr.vnfs import CHARM, VnfAttestor, trust_charm

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VnfCheck:
    """One VNF's verdict in a gate."""

    member_vnf_index: str
    vnfr_id: str
    required_loa: int
    loa: int
    trusted: bool
    report_id: str | None = None
    reasons: list[str] = field(default_factory=list)
    exempt: bool = False  # no charm, and its VNFD is exempt by the NSD policy: not attested


@dataclass(frozen=True)
class VnfGateResult:
    accepted: bool
    achieved_loa: int
    vnfs: list[VnfCheck]

    @property
    def reasons(self) -> list[str]:
        return [r for v in self.vnfs if not v.trusted for r in v.reasons]

    def documents(self) -> list[dict[str, object]]:
        return [asdict(v) for v in self.vnfs]


class VnfGate:
    def __init__(
        self,
        records: OsmRecords,
        attestor: VnfAttestor,
        *,
        timeout: float = 120.0,
        monitor_interval: float = 600.0,
        max_age: float = 300.0,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.records, self.attestor = records, attestor
        self.timeout, self.monitor_interval, self.max_age, self._clock = timeout, monitor_interval, max_age, clock

    async def check(
        self,
        nsr_id: str,
        nslcmop_id: str,
        required: Mapping[str, int],
        default: int = 0,
        *,
        exempt_vnfds: Collection[str] = (),
    ) -> VnfGateResult:
        """Attest the NS's VNFs against ``required`` (member-vnf-index → LoA; ``default`` for others). VNFs of
        the ``exempt_vnfds`` (an NSD policy's) pass without a trust-proxy charm; with one they are attested."""
        nsr = await self.records.nsr(nsr_id)
        if nsr is None:
            vnf = VnfCheck("?", "?", max([default, *required.values()]), 0, False,
                           reasons=[f"NS {nsr_id} no longer exists in OSM"])  # fmt: skip
            return VnfGateResult(False, 0, [vnf])
        vnfrs = await self.records.constituent_vnfrs(nsr_id)
        wanted = [(v, required.get(v.member_vnf_index, default)) for v in vnfrs]
        checks = await asyncio.gather(
            *(self._check_one(nsr, v, loa, nslcmop_id, exempt_vnfds) for v, loa in wanted if loa > 0)
        )
        accepted = all(c.trusted for c in checks)
        if accepted:
            first = self._clock() + timedelta(seconds=self.monitor_interval)
            for c in checks:
                await self.attestor.start_monitoring(c.vnfr_id, first)
        achieved = min((c.loa for c in checks if not c.exempt), default=0)
        return VnfGateResult(accepted, achieved, list(checks))

    async def _check_one(
        self, nsr: NsRecord, vnfr: VnfRecord, required: int, nslcmop_id: str, exempt_vnfds: Collection[str]
    ) -> VnfCheck:
        name = f"VNF {vnfr.member_vnf_index} (vnfr {vnfr.id})"
        if trust_charm(nsr, vnfr.member_vnf_index) is None and vnfr.vnfd_ref in exempt_vnfds:
            log.info("gate %s: %s has no %s charm; its VNFD %s is exempt by the NSD policy", nslcmop_id, name,
                     CHARM, vnfr.vnfd_ref)  # fmt: skip
            note = f"{name}: exempt (VNFD {vnfr.vnfd_ref}), not attested"
            return VnfCheck(vnfr.member_vnf_index, vnfr.id, required, 0, True, reasons=[note], exempt=True)
        if trust_charm(nsr, vnfr.member_vnf_index) is None:
            reason = f"{name}: no {CHARM} charm deployed, it cannot prove LoA {required}"
            return VnfCheck(vnfr.member_vnf_index, vnfr.id, required, 0, False, reasons=[reason])
        record = await self.attestor.track(nsr, vnfr, required, nslcmop_id)
        if self._fresh(record, required):
            # attested moments ago (strict mode's day-1 attest): that verdict stands, as a fresh host report does
            log.info("gate %s: %s attested at %s, LoA %d: verdict reused", nslcmop_id, name, record.attested_at,
                     record.loa)  # fmt: skip
            return VnfCheck(vnfr.member_vnf_index, vnfr.id, required, record.loa, True, record.last_report)
        try:
            outcome = await asyncio.wait_for(self.attestor.attest(record), self.timeout)
        except asyncio.TimeoutError:
            outcome = await self.attestor.mark_unreachable(record.id, f"no verdict within {self.timeout:.0f}s")
        loa = outcome.vnf.loa
        trusted = outcome.result is not None and loa >= required
        reasons = [] if trusted else [_reason(name, loa, required, outcome.vnf.reason, outcome.vnf.state)]
        if not trusted and required == 5 and loa == 4:
            host_loa = outcome.result.claims.get("host_loa") if outcome.result else None
            reasons.append(f"{name}: LoA 5 needs its hosts at LoA >= 4 now; hosts {record.compute_hosts or 'unknown'}"
                           f" at {'unknown LoA' if host_loa is None else f'LoA {host_loa}'}")  # fmt: skip
        log.log(logging.INFO if trusted else logging.WARNING, "gate %s: %s at LoA %d (required %d)%s",
                nslcmop_id, name, loa, required, "" if trusted else ": " + "; ".join(reasons))  # fmt: skip
        return VnfCheck(vnfr.member_vnf_index, vnfr.id, required, loa, trusted, outcome.vnf.last_report, reasons)

    def _fresh(self, record: VnfTrustRecord, required: int) -> bool:
        return (
            record.state == "attested"
            and record.loa >= required
            and record.attested_at is not None
            and self._clock() - record.attested_at <= timedelta(seconds=self.max_age)
        )


def _reason(name: str, loa: int, required: int, why: str | None, state: str) -> str:
    detail = why or "no failures recorded"
    if state in ("rejected", "retired"):
        return f"{name}: {state} ({detail})"
    return f"{name}: LoA {loa} < required {required}: {detail}"
