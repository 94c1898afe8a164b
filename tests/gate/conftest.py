"""The NS gate in an OSM of its own: the OSM simulator (NBI REST, LCM, PLA side) and the Trust Manager on a
Tansu broker of this test, SecantusDB, and swtpm hosts with real agents (tests/hosts/conftest.py)."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
import yaml
from aiokafka import AIOKafkaConsumer

from osm_trustmgr.bus.kafka import KafkaBus
from osm_trustmgr.gate import GateMode, GateSettings, NsGate
from osm_trustmgr.gate_consumer import OSM_TOPICS, GateConsumer
from osm_trustmgr.hosts import HostAttestor, HostSettings
from osm_trustmgr.osm.nbi import NbiClient
from osm_trustmgr.osm.records import OsmRecords
from osm_trustmgr.policy_book import PolicyBook
from osm_trustmgr.sandbox.osmsim import OsmSimulator
from osm_trustmgr.sandbox.servers import TansuBroker
from osm_trustmgr.sandbox.swtpm import LocalCa
from osm_trustmgr.store.gates import GateStore
from osm_trustmgr.store.mongo import TrustStore
from osm_trustmgr.store.records import HostSpec
from tests.hosts.conftest import FleetHost, MakeHost, Tls, make_host, tls  # noqa: F401  (fixtures)

FAST = {"session_timeout_ms": 2000, "heartbeat_interval_ms": 500, "publish_timeout": 20.0, "fetch_max_wait_ms": 10}


@dataclass
class TrustManagerProcess:
    """What one ``osm-trustmgr serve`` holds for the gate; ``stop()`` is a crash or a shutdown."""

    bus: KafkaBus
    store: TrustStore
    attestor: HostAttestor
    nbi: NbiClient
    gate: NsGate
    task: asyncio.Task[None]

    async def stop(self) -> None:
        await self.bus.stop()
        await asyncio.gather(self.task, return_exceptions=True)
        await self.attestor.close()
        await self.nbi.aclose()
        await self.store.close()


@dataclass
class OsmWorld:
    broker: TansuBroker
    sim: OsmSimulator
    mongo_uri: str
    db: str
    ca: LocalCa
    tls: Tls
    make_host: MakeHost
    processes: list[TrustManagerProcess] = field(default_factory=list)

    async def trustmgr(self, mode: GateMode = "enforce", *, terminate_on_reject: bool = True,
                       timeout: float = 20.0, max_age: float = 300.0) -> TrustManagerProcess:  # fmt: skip
        store = TrustStore.connect(self.mongo_uri, self.db, retention=timedelta(days=7))
        await store.create_indexes()
        bus = KafkaBus(self.broker.bootstrap, group_id="trustmgr", **FAST)  # type: ignore[arg-type]
        await bus.start()
        attestor = HostAttestor(store, PolicyBook(store, {}, require_signature=False), bus,
                                HostSettings(ek_ca_bundle=self.ca.certificates))  # fmt: skip
        nbi = NbiClient(self.sim.nbi_url, user="admin", password="admin", project="admin", retries=1, backoff=0.05)
        settings = GateSettings(mode=mode, max_age=max_age, timeout=timeout, terminate_on_reject=terminate_on_reject)
        gate = NsGate(GateStore(store.db), OsmRecords(store.db), nbi, attestor, bus, settings)
        consumer = GateConsumer(gate)
        task = asyncio.create_task(bus.run_consumer(list(OSM_TOPICS), consumer.on_message, group_id="trustmgr"))
        process = TrustManagerProcess(bus, store, attestor, nbi, gate, task)
        self.processes.append(process)
        return process

    async def host(self, vim: str, *, tampered: bool = False, secure_boot: bool = True) -> FleetHost:
        """A swtpm host with its agent, registered for ``vim`` with its golden policy."""
        host = self.make_host(secure_boot=secure_boot)
        store = TrustStore.connect(self.mongo_uri, self.db, retention=timedelta(days=7))
        try:
            book = PolicyBook(store, {}, require_signature=False)
            from osm_trustmgr.hosts import utcnow

            policy = await book.put(host.sim.reference_policy(policy_id=f"golden-{host.id}"), utcnow())
            spec = HostSpec(id=host.id, vim_account_id=vim, agent=host.endpoint(self.tls), policy_id=policy.id)
            from osm_trustmgr.store.records import HostRecord

            await store.add_host(HostRecord(**spec.model_dump()))
        finally:
            await store.close()
        if tampered:
            host.sim.execute("/usr/local/bin/implant", b"not in the golden image")
        return host

    async def gate_doc(self, nslcmop_id: str, *, status: str = "done", timeout: float = 30.0) -> dict[str, Any]:
        """The gate document once it reaches ``status``."""
        store = TrustStore.connect(self.mongo_uri, self.db, retention=timedelta(days=7))
        try:
            return await poll(lambda: GateStore(store.db).get(nslcmop_id),
                              lambda d: d is not None and d.get("status") == status, timeout)  # fmt: skip
        finally:
            await store.close()

    async def trust_gate_messages(self, nslcmop_id: str, *, wait: float = 3.0) -> list[dict[str, Any]]:
        return [v for k, v in await read_topic(self.broker, "trust", wait) if k == "gate"
                and v.get("nslcmop_id") == nslcmop_id]  # fmt: skip

    def nbi_calls(self, kind: str, ident: str) -> list[Any]:
        """Successful NBI calls of ``kind`` (cancel/terminate) about ``ident``."""
        return [c for c in self.sim.calls if c.path.endswith(f"/{ident}/{kind}") and c.status < 300]


async def poll(fetch: Callable[[], Awaitable[Any]], done: Callable[[Any], bool], timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await fetch()
        if done(value):
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not met after {timeout}s; last value: {value!r}"[:2000])
        await asyncio.sleep(0.05)


async def read_topic(broker: TansuBroker, topic: str, wait: float) -> list[tuple[str, dict[str, Any]]]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=broker.bootstrap, auto_offset_reset="earliest",
                                group_id=None)  # fmt: skip
    await consumer.start()
    out: list[tuple[str, dict[str, Any]]] = []
    try:
        deadline = asyncio.get_running_loop().time() + wait
        while asyncio.get_running_loop().time() < deadline:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                out += [(r.key.decode(), yaml.safe_load(r.value)) for r in records]
    finally:
        await consumer.stop()
    return out


@pytest.fixture
async def osm(mongo_uri: str, mongo_db: str, swtpm_ca: LocalCa, tls: Tls,  # noqa: F811
              make_host: MakeHost) -> AsyncIterator[OsmWorld]:  # noqa: F811  # fmt: skip
    """A broker of this test (OSM topics start empty), the simulator with slow deployments (5 s) so that the
    gate's cancel lands while LCM is still PROCESSING, and a short PLA wait."""
    with TansuBroker().start() as broker:
        sim_bus = KafkaBus(broker.bootstrap, group_id=f"sim-{uuid.uuid4().hex[:6]}", **FAST)  # type: ignore[arg-type]
        await sim_bus.start()
        sim = await OsmSimulator.start(mongo_uri, mongo_db, sim_bus, lcm_delay=5.0, terminate_delay=0.2,
                                       pla_timeout=8.0, pla_poll_interval=0.2, token_delay=0.0)  # fmt: skip
        world = OsmWorld(broker, sim, mongo_uri, mongo_db, swtpm_ca, tls, make_host)
        try:
            yield world
        finally:
            for process in world.processes:
                with contextlib.suppress(Exception):
                    await process.stop()
            await sim.stop()
            await sim_bus.stop()
