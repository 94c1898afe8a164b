"""VNF attestation end to end: the OSM simulator (NBI, LCM, and its VCA running the real trust-proxy charm
in-process), Tansu, SecantusDB, swtpm hosts with agents, and "VNFs" that are each a real sshd in front of a
swtpm booted like a guest (``osm_trustmgr.sandbox.vnf``)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from osm_trustmgr.api.app import create_app
from osm_trustmgr.api.ratelimit import RateLimiter
from osm_trustmgr.api.server import EmbeddedServer
from osm_trustmgr.attestation import Rounds
from osm_trustmgr.bus.kafka import KafkaBus
from osm_trustmgr.evidence.charm_local import CharmRunner
from osm_trustmgr.evidence.vca import LocalVcaDriver, NbiVcaDriver, VcaDriver
from osm_trustmgr.gate import GateMode, GateSettings, NsGate
from osm_trustmgr.gate_consumer import OSM_TOPICS, GateConsumer
from osm_trustmgr.hosts import HostAttestor, HostSettings, utcnow
from osm_trustmgr.monitor import Monitor, MonitorSettings
from osm_trustmgr.osm.nbi import NbiClient
from osm_trustmgr.osm.records import OsmRecords
from osm_trustmgr.policy_book import PolicyBook
from osm_trustmgr.sandbox.osmsim_lcm import ActionRequest
from osm_trustmgr.sandbox.osmsim_vca import charm_action_handler
from osm_trustmgr.sandbox.servers import free_port
from osm_trustmgr.sandbox.swtpm import LocalCa
from osm_trustmgr.sandbox.vnf import SimulatedVnf
from osm_trustmgr.store.gates import GateStore
from osm_trustmgr.store.mongo import TrustStore
from osm_trustmgr.store.vnfs import VnfStore
from osm_trustmgr.strict import StrictAttestation, StrictSettings
from osm_trustmgr.vnf_gate import VnfGate
from osm_trustmgr.vnfs import Remediation, VnfAttestor, VnfSettings, vnf_policy_id
from tests.gate.conftest import FAST, OsmWorld, osm  # noqa: F401  (fixture)
from tests.hosts.conftest import make_host, tls  # noqa: F401  (fixtures)

CHARM_DIR = Path(__file__).resolve().parents[2] / "charms" / "trust-proxy"
VNFD_ID = "trust-vnf"


@dataclass
class VnfTrustManager:
    """One Trust Manager with hosts, VNFs, both gates, the VNF monitor and (optionally) the strict-mode API."""

    store: TrustStore
    bus: KafkaBus
    nbi: NbiClient
    hosts: HostAttestor
    vnfs: VnfAttestor
    gate: NsGate
    monitor: Monitor
    driver: VcaDriver
    task: asyncio.Task[None]
    api_url: str | None = None
    api: EmbeddedServer | None = None
    api_task: asyncio.Task[None] | None = None

    async def stop(self) -> None:
        if self.api and self.api_task:
            self.api.should_exit = True
            await asyncio.gather(self.api_task, return_exceptions=True)
        await self.bus.stop()
        await asyncio.gather(self.task, return_exceptions=True)
        await self.gate.aclose()
        await self.driver.close()
        await self.hosts.close()
        await self.nbi.aclose()
        await self.store.close()


@dataclass
class VnfWorld:
    osm: OsmWorld
    runner: CharmRunner
    ca: LocalCa
    template: Path
    root: Path
    vnfs: dict[str, SimulatedVnf] = field(default_factory=dict)  # member-vnf-index -> VNF
    managers: list[VnfTrustManager] = field(default_factory=list)

    def vnf(self, member: str, *, ca: LocalCa | None = None, with_agent: bool = True) -> SimulatedVnf:
        """A started VNF for ``member``; ``ca`` other than the trusted one gives an untrusted vTPM EK."""
        vnf = SimulatedVnf(self.root / f"vnf-{member}", ca=ca or self.ca,
                           state_template=None if ca else self.template, with_agent=with_agent)  # fmt: skip
        self.vnfs[member] = vnf.start()
        return vnf

    def _ssh(self, request: ActionRequest) -> dict[str, Any]:
        # the simulator's VDU addresses are not routable: the charm is pointed at the member's loopback sshd
        return self.vnfs[str(request.member_vnf_index)].ssh_config

    async def vnf_policy(self, vnfd_id: str = VNFD_ID) -> None:
        """The reference policy of the VNF image (every simulated VNF boots the same golden image)."""
        store = TrustStore.connect(self.osm.mongo_uri, self.osm.db, retention=timedelta(days=7))
        try:
            vnf = next(iter(self.vnfs.values()))
            await PolicyBook(store, {}, require_signature=False).put(
                vnf.host.reference_policy(policy_id=vnf_policy_id(vnfd_id)), utcnow()
            )
        finally:
            await store.close()

    async def trustmgr(
        self,
        mode: GateMode = "enforce",
        *,
        driver: str = "nbi",
        remediation: Remediation = "notify",
        api: bool = False,
        vnf_interval: float = 600.0,
    ) -> VnfTrustManager:
        o = self.osm
        store = TrustStore.connect(o.mongo_uri, o.db, retention=timedelta(days=7))
        await store.create_indexes()
        bus = KafkaBus(o.broker.bootstrap, group_id="trustmgr", **FAST)  # type: ignore[arg-type]
        await bus.start()
        policies = PolicyBook(store, {}, require_signature=False)
        settings = HostSettings(ek_ca_bundle=self.ca.certificates)
        hosts = HostAttestor(store, policies, bus, settings)
        nbi = NbiClient(o.sim.nbi_url, user="admin", password="admin", project="admin", retries=1, backoff=0.05)
        vca: VcaDriver = (
            NbiVcaDriver(nbi, poll_interval=0.1, timeout=60.0) if driver == "nbi" else LocalVcaDriver(self.runner)
        )
        vnfs = VnfAttestor(store, VnfStore(store.db), Rounds(store, policies, settings), vca, bus,
                           VnfSettings(remediation=remediation), nbi=nbi)  # fmt: skip
        records, gates = OsmRecords(store.db), GateStore(store.db)
        vnf_gate = VnfGate(records, vnfs, timeout=60.0, monitor_interval=vnf_interval)
        gate = NsGate(gates, records, nbi, hosts, bus, GateSettings(mode=mode, timeout=20.0), vnf_gate=vnf_gate)
        consumer = GateConsumer(gate)
        task = asyncio.create_task(bus.run_consumer(list(OSM_TOPICS), consumer.on_message, group_id="trustmgr"))
        monitor = Monitor(vnfs, MonitorSettings(interval=vnf_interval, round_timeout=60.0))
        manager = VnfTrustManager(store, bus, nbi, hosts, vnfs, gate, monitor, vca, task)
        if api:
            strict = StrictAttestation(vnfs, records, gates, StrictSettings())
            port = free_port()
            import uvicorn

            server = EmbeddedServer(uvicorn.Config(create_app(strict, RateLimiter(rate=50, burst=50)),
                                                   host="127.0.0.1", port=port, log_config=None))  # fmt: skip
            manager.api, manager.api_task = server, asyncio.create_task(server.serve())
            manager.api_url = f"http://127.0.0.1:{port}/osm/trust/v1"
            while not server.started:
                await asyncio.sleep(0.01)
        self.managers.append(manager)
        return manager


@pytest.fixture
def vnf_root(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "vnfs"


@pytest.fixture
async def world(osm: OsmWorld, swtpm_ca: LocalCa, swtpm_state_template: Path,  # noqa: F811
                vnf_root: Path) -> AsyncIterator[VnfWorld]:  # fmt: skip
    runner = CharmRunner(CHARM_DIR)
    w = VnfWorld(osm, runner, swtpm_ca, swtpm_state_template, vnf_root)
    osm.sim.lcm.action_handler = charm_action_handler(runner, config_overrides=w._ssh)
    try:
        yield w
    finally:
        for manager in w.managers:
            with contextlib.suppress(Exception):
                await manager.stop()
        for vnf in w.vnfs.values():
            vnf.close()
        runner.close()
