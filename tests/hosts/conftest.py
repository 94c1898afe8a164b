"""A fleet of simulated NFVI hosts: each a swtpm booted with generated UEFI/IMA logs, served by a real
``osm-trust-agent`` over HTTPS (client certificates required); and the Trust Manager side on SecantusDB and
the Tansu Kafka broker."""

from __future__ import annotations

import asyncio
import shutil
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiokafka import AIOKafkaConsumer

from osm_trustmgr.bus.kafka import KafkaBus
from osm_trustmgr.hosts import HostAttestor, HostSettings
from osm_trustmgr.policy_book import PolicyBook
from osm_trustmgr.sandbox.host import SimulatedHost
from osm_trustmgr.sandbox.servers import TansuBroker
from osm_trustmgr.sandbox.swtpm import LocalCa, Swtpm
from osm_trustmgr.sandbox.tls import TestCa
from osm_trustmgr.store.mongo import TrustStore
from osm_trustmgr.store.records import AgentEndpoint, HostSpec
from tests.agent_process import AGENT, AgentProcess, Pair


@dataclass
class FleetHost:
    id: str
    swtpm: Swtpm
    sim: SimulatedHost
    agent: AgentProcess
    ak_file: Path

    def endpoint(self, tls: Tls) -> AgentEndpoint:
        return AgentEndpoint(url=self.agent.url, ca_file=str(tls.ca.ca_path), client_cert=str(tls.client[0]),
                             client_key=str(tls.client[1]), timeout=5.0)  # fmt: skip


@dataclass
class Tls:
    ca: TestCa
    server: Pair
    client: Pair


@pytest.fixture(scope="session")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    ca = TestCa(tmp_path_factory.mktemp("fleet-tls"))
    return Tls(ca, ca.issue("agent"), ca.issue("trustmgr", client=True, server=False))


MakeHost = Callable[..., FleetHost]


@pytest.fixture
def make_host(tmp_path: Path, swtpm_state_template: Path, swtpm_ca: LocalCa, tls: Tls) -> Iterator[MakeHost]:
    """``make_host(secure_boot=True)``: a booted swtpm host and its running agent; all stopped afterwards."""
    made: list[FleetHost] = []

    def make(*, secure_boot: bool = True) -> FleetHost:
        host_id = f"compute-{len(made)}-{uuid.uuid4().hex[:6]}"
        root = tmp_path / host_id
        shutil.copytree(swtpm_state_template, root / "tpm")
        swtpm = Swtpm(root / "tpm", ca=swtpm_ca, provision=False).start()
        sim = SimulatedHost(swtpm, secure_boot=secure_boot, log_dir=root / "logs")
        sim.boot()
        ak_file = root / "agent" / "ak.json"
        argv = [
            str(AGENT), "serve", "--tcti", swtpm.tcti, "--ak-file", str(ak_file),
            "--uefi-log", str(sim.uefi_log_path), "--ima-log", str(sim.ima_log_path),
            "--cert", str(tls.server[0]), "--key", str(tls.server[1]), "--client-ca", str(tls.ca.ca_path),
        ]  # fmt: skip
        agent = AgentProcess(argv, root, tls.ca.ca_path, probe_cert=tls.client).start()
        host = FleetHost(host_id, swtpm, sim, agent, ak_file)
        made.append(host)
        return host

    yield make
    for host in made:
        host.agent.stop()
        host.swtpm.close()


@dataclass
class TrustManager:
    """The Trust Manager side of one test: store, Kafka bus, policies, attestor."""

    store: TrustStore
    bus: KafkaBus
    policies: PolicyBook
    attestor: HostAttestor
    kafka: TansuBroker
    tls: Tls
    hosts: dict[str, FleetHost] = field(default_factory=dict)

    async def add(self, host: FleetHost, *, policy: bool = True) -> None:
        """Register ``host`` with a policy derived from its golden image (stored, then re-loaded by id)."""
        policy_id = None
        if policy:
            document = host.sim.reference_policy(policy_id=f"golden-{host.id}")
            policy_id = (await self.policies.put(document, self.attestor._clock())).id
        spec = HostSpec(id=host.id, vim_account_id="vim-a", agent=host.endpoint(self.tls), policy_id=policy_id)
        await self.attestor.register(spec)
        self.hosts[host.id] = host

    async def trust_messages(self, host_id: str, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        """The first ``count`` ``trust``/``host_trust`` messages about ``host_id``, read back from Kafka."""
        consumer = AIOKafkaConsumer(
            "trust", bootstrap_servers=self.kafka.bootstrap, auto_offset_reset="earliest", group_id=None
        )
        await consumer.start()
        found: list[dict[str, Any]] = []
        deadline = asyncio.get_running_loop().time() + timeout
        try:
            while len(found) < count and asyncio.get_running_loop().time() < deadline:
                batches = await consumer.getmany(timeout_ms=200)
                for records in batches.values():
                    for record in records:
                        value = yaml.safe_load(record.value)
                        if record.key == b"host_trust" and value.get("id") == host_id:
                            found.append(value)
        finally:
            await consumer.stop()
        return found[:count] if len(found) >= count else found


@pytest.fixture
async def trustmgr(mongo_uri: str, mongo_db: str, kafka_broker: TansuBroker, swtpm_ca: LocalCa,
                   tls: Tls) -> AsyncIterator[TrustManager]:  # fmt: skip
    store = TrustStore.connect(mongo_uri, mongo_db, retention=timedelta(days=7))
    await store.create_indexes()
    bus = KafkaBus(kafka_broker.bootstrap)
    await bus.start()
    policies = PolicyBook(store, {}, require_signature=False)
    attestor = HostAttestor(store, policies, bus, HostSettings(ek_ca_bundle=swtpm_ca.certificates))
    yield TrustManager(store, bus, policies, attestor, kafka_broker, tls)
    await attestor.close()
    await bus.stop()
    await store.close()
