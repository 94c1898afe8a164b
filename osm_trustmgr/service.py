"""``osm-trustmgr serve``: wires configuration, store, bus, policies, host and VNF attestation, the gates, the
monitors and the REST API.

Start-up fails fast and says why (bad configuration, unreadable CA bundle or signer keys); once running,
lost connections to MongoDB, Kafka or agents are retried and logged, never fatal. SIGTERM stops gracefully:
the monitor finishes no new round, connections are closed, and whatever was not done is still due in the
database for the next start.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from cryptography import x509

from osm_trustmgr.api.app import create_app
from osm_trustmgr.api.auth import TokenAuth
from osm_trustmgr.api.queries import query_router
from osm_trustmgr.api.ratelimit import RateLimiter
from osm_trustmgr.attestation import Rounds
from osm_trustmgr.bus.base import Bus
from osm_trustmgr.bus.kafka import KafkaBus
from osm_trustmgr.bus.local import LocalBus
from osm_trustmgr.config import Config
from osm_trustmgr.evidence.vca import VcaDriver, vca_driver_from_config
from osm_trustmgr.gate import GateSettings, NsGate
from osm_trustmgr.gate_consumer import OSM_TOPICS, GateConsumer
from osm_trustmgr.hosts import HostAttestor, HostSettings
from osm_trustmgr.monitor import Monitor, MonitorSettings
from osm_trustmgr.osm.nbi import NbiClient
from osm_trustmgr.osm.records import OsmRecords
from osm_trustmgr.policy.signing import SignerKey, load_signer_keys
from osm_trustmgr.policy_book import PolicyBook
from osm_trustmgr.store.gates import GateStore
from osm_trustmgr.store.mongo import TrustStore
from osm_trustmgr.store.vnfs import VnfStore
from osm_trustmgr.strict import StrictAttestation, StrictSettings
from osm_trustmgr.tpm.ekcert import load_ca_bundle
from osm_trustmgr.vnf_gate import VnfGate
from osm_trustmgr.vnfs import VnfAttestor, VnfSettings

log = logging.getLogger(__name__)


class StartupError(Exception):
    """The service cannot start with this configuration; the message says what to fix."""


@dataclass
class TrustService:
    config: Config
    store: TrustStore
    bus: Bus
    policies: PolicyBook
    hosts: HostAttestor
    monitor: Monitor
    gate: NsGate
    nbi: NbiClient
    vnfs: VnfAttestor
    vnf_monitor: Monitor
    strict: StrictAttestation
    vca: VcaDriver

    @classmethod
    def from_config(cls, config: Config) -> TrustService:
        store = TrustStore.connect(
            config.database.uri,
            config.database.name,
            retention=timedelta(seconds=config.database.report_retention),
        )
        bus: Bus = (
            KafkaBus(f"{config.message.host}:{config.message.port}", group_id=config.message.group_id)
            if config.message.driver == "kafka"
            else LocalBus()
        )
        policies = PolicyBook(store, _signers(config.policy.signers), require_signature=config.policy.require_signature)
        settings = HostSettings(ek_ca_bundle=_ca_bundle(config.tpm.ek_ca_bundle), banks=config.tpm.pcr_banks)
        hosts = HostAttestor(store, policies, bus, settings)
        m = config.monitor
        monitor = Monitor(hosts, MonitorSettings(interval=m.host_interval, concurrency=m.concurrency, jitter=m.jitter))
        nbi = NbiClient.from_config(config.nbi)
        v = config.vca
        try:
            vca = vca_driver_from_config(
                v.driver, nbi=nbi, timeout=v.timeout, poll_interval=v.poll_interval, charm_dir=v.charm_dir
            )
        except (ImportError, ValueError) as e:
            raise StartupError(f"vca.driver {v.driver}: {e}") from None
        # a host verdict counts towards a VNF's LoA 5 while the host monitor keeps it fresh
        vnf_settings = VnfSettings(
            host_max_age=max(config.gate.max_age, 2 * m.host_interval), remediation=m.remediation
        )
        records, gates = OsmRecords(store.db), GateStore(store.db)
        rounds = Rounds(store, policies, settings)
        vnfs = VnfAttestor(store, VnfStore(store.db), rounds, vca, bus, vnf_settings, nbi=nbi)
        vnf_monitor = Monitor(
            vnfs,
            MonitorSettings(
                interval=m.vnf_interval, concurrency=m.concurrency, jitter=m.jitter, round_timeout=v.timeout
            ),
        )
        g = config.gate
        vnf_gate = VnfGate(records, vnfs, timeout=v.timeout, monitor_interval=m.vnf_interval, max_age=g.max_age)
        gate = NsGate(
            gates, records, nbi, hosts, bus,
            GateSettings(mode=g.mode, max_age=g.max_age, timeout=g.timeout, terminate_on_reject=g.terminate_on_reject),
            vnf_gate=vnf_gate,
        )  # fmt: skip
        strict = StrictAttestation(
            vnfs, records, gates, StrictSettings(challenge_ttl=timedelta(seconds=config.api.challenge_ttl))
        )
        return cls(config, store, bus, policies, hosts, monitor, gate, nbi, vnfs, vnf_monitor, strict, vca)

    async def run(self, stop: asyncio.Event) -> None:
        """Monitor, gate consumer and gate resumption until ``stop``; then everything is closed."""
        await self.store.create_indexes()
        await self.bus.start()
        consumer = GateConsumer(self.gate)
        log.info(
            "osm-trustmgr serving: database %s, bus %s (group %s), gate mode %s",
            self.config.database.name, self.config.message.driver, self.config.message.group_id,
            self.config.gate.mode,
        )  # fmt: skip
        tasks = [
            asyncio.create_task(self.monitor.run(stop), name="monitor"),
            asyncio.create_task(self.vnf_monitor.run(stop), name="vnf-monitor"),
            asyncio.create_task(consumer.resume_loop(stop), name="gate-resume"),
            asyncio.create_task(
                self.bus.run_consumer(list(OSM_TOPICS), consumer.on_message, group_id=self.config.message.group_id),
                name="osm-consumer",
            ),
        ]
        if self.config.api.enabled:
            tasks.append(asyncio.create_task(self.serve_api(stop), name="api"))
        try:
            await stop.wait()
        finally:
            await self.bus.stop()  # ends run_consumer: messages in flight stay uncommitted, redelivered later
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.gate.aclose()
            await self.vca.close()
            await self.hosts.close()
            await self.nbi.aclose()
            await self.store.close()
            log.info("osm-trustmgr stopped")

    async def serve_api(self, stop: asyncio.Event) -> None:
        """The REST API until ``stop`` (uvicorn in this event loop; its own signal handling left to us)."""
        import uvicorn

        from osm_trustmgr.api.server import EmbeddedServer

        a = self.config.api
        queries = query_router(self.store, self.vnfs.vnfs, TokenAuth(self.nbi))
        app = create_app(self.strict, RateLimiter(rate=a.rate_limit, burst=a.burst), queries)
        config = uvicorn.Config(
            app, host=a.host, port=a.port, log_config=None, access_log=False, server_header=False,
            timeout_graceful_shutdown=2,
            ssl_certfile=str(a.tls_cert) if a.tls_cert else None, ssl_keyfile=str(a.tls_key) if a.tls_key else None,
        )  # fmt: skip
        server = EmbeddedServer(config)
        served = asyncio.create_task(server.serve())
        await stop.wait()
        server.should_exit = True
        await served


def _ca_bundle(path: Path | None) -> list[x509.Certificate]:
    if path is None:
        log.warning("tpm.ek_ca_bundle is not set: only hosts with an administrator-pinned EK can be enrolled")
        return []
    try:
        return load_ca_bundle(path.read_bytes())
    except (OSError, ValueError) as e:
        raise StartupError(f"tpm.ek_ca_bundle {path}: {e}") from None


def _signers(paths: list[Path]) -> dict[str, SignerKey]:
    try:
        return load_signer_keys([p.read_bytes() for p in paths])
    except (OSError, ValueError) as e:
        raise StartupError(f"policy.signers: {e}") from None


def serve(config: Config) -> None:
    """Run until SIGTERM/SIGINT."""

    async def main() -> None:
        service = TrustService.from_config(config)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await service.run(stop)

    asyncio.run(main())
