"""NS gate latency: ``ns``/``instantiate`` published → ``trust``/``gate`` published, through the real path.

Pipeline: Tansu (Kafka protocol) + SecantusDB (MongoDB wire) + the Trust Manager in a process of its own, assembled
as ``osm-trustmgr serve`` assembles it (KafkaBus → GateConsumer → NsGate with GateStore, OsmRecords, HostAttestor,
NbiClient; logging at the default INFO), without the host monitor (it would attest the hosts).
20 NFVI hosts over 2 VIM accounts are registered with fresh LoA 4 verdicts, so every gate reuses them: no agent
exists, and the hosts' agent URLs and the NBI URL point at a listening trap that counts connections (asserted 0).
Each NS has two VNFs, one per VIM account, and asks ``trust_loa: 4``, so every gate reads all 20 hosts.

This process plays NBI: per gate it writes nsr, vnfrs (``vim-account-id`` set) and nslcmop as NBI does
(``osmsim_docs`` builders), then publishes the nslcmop on ``ns``/``instantiate``; a consumer of ``trust`` records
when each ``gate`` arrives. Phase 1 publishes ``--gates`` at a steady ``--rate`` (latency); phase 2 publishes
``--burst`` more (documents written beforehand) all at once and measures gates/s end to end (throughput).
Baseline, same run, same producer and consumer setup (KafkaBus, same value size): a raw Kafka round trip on a
scratch topic, at the same rate for the latencies and all at once for messages/s.
Every consumer (the Trust Manager's included) fetches with ``fetch_max_wait_ms`` 10 (``--fetch-max-wait-ms``): Tansu
answers a waiting fetch only on a timer, not when a message arrives as Apache Kafka does, so with aiokafka's 500 ms
default each hop costs U(0, 250) ms on Tansu (``--fetch-max-wait-ms default`` measures that; see ``tansu_bus``).
Goals: gate latency p50 < 50 ms and p99 < 200 ms. ``--profile FILE`` cProfiles the Trust Manager during phase 1
(top costs to stderr; latencies measured under the profiler are inflated).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import io
import logging
import os
import pstats
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import report

from osm_trustmgr.bus.base import Message
from osm_trustmgr.bus.kafka import KafkaBus
from osm_trustmgr.gate import GateSettings, NsGate
from osm_trustmgr.gate_consumer import OSM_TOPICS, GateConsumer
from osm_trustmgr.hosts import HostAttestor, HostSettings
from osm_trustmgr.osm.nbi import NbiClient
from osm_trustmgr.osm.records import NSLCMOPS, NSRS, VIM_ACCOUNTS, VNFRS, OsmRecords
from osm_trustmgr.policy_book import PolicyBook
from osm_trustmgr.sandbox.osmsim_docs import (
    VnfSpec,
    descriptors_for,
    format_on_new,
    new_id,
    nslcmop_document,
    nsr_document,
    vnfr_document,
)
from osm_trustmgr.sandbox.servers import HOST, SecantusServer, TansuBroker
from osm_trustmgr.store.gates import GateStore
from osm_trustmgr.store.mongo import GATES, HOSTS, NONCES, REPORTS, TrustStore
from osm_trustmgr.store.records import AgentEndpoint, HostRecord

BENCH = "gate"
DB_NAME = "osm"
HOSTS_PER_RUN, VIMS = 20, ("vim-a", "vim-b")
SCRATCH = "bench_scratch"
# Tansu group joins take ~1 s; short sessions keep them quick (tests/gate/conftest.py FAST)
FAST: dict[str, Any] = {"session_timeout_ms": 2000, "heartbeat_interval_ms": 500, "publish_timeout": 20.0}
CLK_TCK = os.sysconf("SC_CLK_TCK")
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"  # osm-trustmgr serve's


def tansu_bus(bootstrap: str, fetch_max_wait_ms: int | None, **kwargs: Any) -> KafkaBus:
    """KafkaBus with the consumers' ``fetch_max_wait_ms`` (None: as shipped, 500 ms). Apache Kafka answers a
    waiting fetch as soon as a message arrives; Tansu only on a timer of about half that value."""
    return KafkaBus(bootstrap, fetch_max_wait_ms=500 if fetch_max_wait_ms is None else fetch_max_wait_ms, **kwargs)


# -- the Trust Manager process ------------------------------------------------------------------------------


async def trustmgr(args: argparse.Namespace) -> None:
    """What ``osm-trustmgr serve`` runs for the gate, until SIGTERM; SIGUSR1/SIGUSR2 start/stop the profiler."""
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    store = TrustStore.connect(args.mongo, DB_NAME)
    await store.create_indexes()
    bus = tansu_bus(args.bootstrap, args.fetch_max_wait_ms, group_id="trustmgr", **FAST)
    await bus.start()
    attestor = HostAttestor(store, PolicyBook(store, {}, require_signature=False), bus, HostSettings(ek_ca_bundle=()))
    nbi = NbiClient(args.nbi, user="admin", password="admin", project="admin", timeout=5.0, retries=0)
    settings = GateSettings(mode=args.mode, max_age=300.0, timeout=10.0, terminate_on_reject=True)
    gate = NsGate(GateStore(store.db), OsmRecords(store.db), nbi, attestor, bus, settings)
    consumer = GateConsumer(gate)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    profile = cProfile.Profile()
    loop.add_signal_handler(signal.SIGUSR1, profile.enable)
    loop.add_signal_handler(signal.SIGUSR2, profile.disable)
    task = asyncio.create_task(bus.run_consumer(list(OSM_TOPICS), consumer.on_message, group_id="trustmgr"))
    try:
        await stop.wait()
    finally:
        profile.disable()
        await bus.stop()
        await asyncio.gather(task, return_exceptions=True)
        await attestor.close()
        await nbi.aclose()
        await store.close()
        if args.profile:
            profile.dump_stats(args.profile)


@contextlib.contextmanager
def trustmgr_process(args: argparse.Namespace, bootstrap: str, mongo: str, nbi: str) -> Iterator[Child]:
    """The Trust Manager as a child process (its CPU is not this process's); stopped by PID."""
    with tempfile.TemporaryFile() as out:
        argv = [sys.executable, __file__, "--trustmgr", "--bootstrap", bootstrap, "--mongo", mongo, "--nbi", nbi,
                "--mode", args.mode, "--fetch-max-wait-ms", str(args.fetch_max_wait_ms or "default")]  # fmt: skip
        argv += ["--profile", args.profile] if args.profile else []
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        child = Child(process, out)
        try:
            yield child
        except BaseException:
            sys.stderr.write(child.output()[-3000:])
            raise
        finally:
            child.stop()


@dataclass
class Child:
    process: subprocess.Popen[bytes]
    out: Any

    def signal(self, sig: int) -> None:
        if self.process.poll() is None:
            self.process.send_signal(sig)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def output(self) -> str:
        self.out.seek(0)
        return str(self.out.read().decode(errors="replace"))


def cpu_seconds(pid: int | None) -> float:
    """utime + stime of ``pid`` and its live children, from /proc (0 when unavailable)."""
    if pid is None:
        return 0.0
    stats: dict[int, tuple[int, float]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError):
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                stats[int(entry.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / CLK_TCK)
    family = {pid} | {p for p, (ppid, _) in stats.items() if ppid == pid}
    return sum(stats.get(p, (0, 0.0))[1] for p in family)


# -- OSM's side: what NBI writes and publishes --------------------------------------------------------------


class Trap:
    """A listener standing in for NBI and every agent: nothing must ever connect to it."""

    def __init__(self) -> None:
        self.connections = 0
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._accept, HOST, 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        writer.close()

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


@dataclass
class Osm:
    """OSM's records for the bench: VIM accounts, one onboarded NSD with two VNFs, and the admin project."""

    db: Any
    project: str = field(default_factory=new_id)
    vims: dict[str, str] = field(default_factory=dict)
    nsd: dict[str, Any] = field(default_factory=dict)
    vnfd: dict[str, Any] = field(default_factory=dict)

    async def onboard(self) -> None:
        for name in VIMS:
            doc = format_on_new({"name": name, "vim_type": "openstack", "vim_url": f"http://{name}.invalid:5000/v3",
                                 "vim_tenant_name": "osm", "vim_user": "osm"}, [self.project])  # fmt: skip
            doc["_admin"].update({"operationalState": "ENABLED", "detailed-status": "Done"})
            await self.db[VIM_ACCOUNTS].insert_one(doc)
            self.vims[name] = doc["_id"]
        state = {"onboardingState": "ONBOARDED", "operationalState": "ENABLED", "usageState": "NOT_IN_USE"}
        nsd, vnfds = descriptors_for("bench-ns", [VnfSpec("1"), VnfSpec("2")])
        (vnfd,) = vnfds
        for doc in (nsd, vnfd):
            format_on_new(doc, [self.project])["_admin"].update(state)
        await self.db["nsds"].insert_one(nsd)
        await self.db["vnfds"].insert_one(vnfd)
        self.nsd, self.vnfd = nsd, vnfd

    def instantiation(self, name: str) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any]]:
        """nsr, vnfrs and the instantiate nslcmop as NBI writes them (NsrTopic.new + NsLcmOpTopic.new)."""
        vim_a, vim_b = (self.vims[v] for v in VIMS)
        request = {
            "nsName": name, "nsdId": self.nsd["_id"], "vimAccountId": vim_a,
            "vnf": [{"member-vnf-index": "1", "vimAccountId": vim_a}, {"member-vnf-index": "2", "vimAccountId": vim_b}],
            "additionalParamsForNs": {"trust_loa": 4},
        }  # fmt: skip
        nsr_id = new_id()
        nsr = format_on_new(nsr_document(nsr_id, self.nsd, request), [self.project])
        nsr["_admin"]["nsState"] = "NOT_INSTANTIATED"
        nsr["vnfd-id"].append(self.vnfd["_id"])
        vnfrs = []
        for member, vim in (("1", vim_a), ("2", vim_b)):
            vnfr = format_on_new(vnfr_document(nsr_id, member, self.vnfd, request), [self.project])
            vnfr["_admin"]["nsState"] = "NOT_INSTANTIATED"
            vnfr["vim-account-id"] = vim  # NsLcmOpTopic._update_vnfrs, before ns/instantiate
            vnfrs.append(vnfr)
            nsr["constituent-vnfr-ref"].append(vnfr["_id"])
        indata = {**request, "lcmOperationType": "instantiate", "nsInstanceId": nsr_id}
        nslcmop = format_on_new(nslcmop_document(nsr_id, "instantiate", indata), [self.project])
        return nsr, vnfrs, nslcmop

    async def write(self, nsr: dict[str, Any], vnfrs: list[dict[str, Any]], nslcmop: dict[str, Any]) -> None:
        await self.db[NSRS].insert_one(nsr)
        await self.db[VNFRS].insert_many(vnfrs)
        await self.db[NSLCMOPS].insert_one(nslcmop)


async def register_hosts(store: TrustStore, trap: int, now: datetime) -> dict[str, dict[str, Any]]:
    """20 hosts over the two VIM accounts, attested at LoA 4 just now; agents point at the trap."""
    vims = [d["_id"] async for d in store.db[VIM_ACCOUNTS].find({}).sort("name")]
    for i in range(HOSTS_PER_RUN):
        host_id = f"nfvi-{i:02d}"
        record = HostRecord(
            id=host_id, vim_account_id=vims[i % len(vims)], agent=AgentEndpoint(url=f"http://{HOST}:{trap}/{host_id}"),
            state="attested", loa=4, last_report=f"bench-report-{i:02d}", attested_at=now,
        )  # fmt: skip
        assert await store.add_host(record)
    return {d["_id"]: d async for d in store.db[HOSTS].find({})}


# -- measuring ----------------------------------------------------------------------------------------------


class Tracker:
    """Publish and receive times by message id, and the values received (a redelivery shows as a duplicate);
    messages with another key than ``key`` are kept aside in ``others``."""

    def __init__(self, key: str, id_field: str) -> None:
        self.key, self.id_field = key, id_field
        self.sent: dict[str, float] = {}
        self.received: dict[str, float] = {}
        self.values: dict[str, list[dict[str, Any]]] = {}
        self.others: list[Message] = []
        self._waiters: dict[str, asyncio.Future[None]] = {}

    async def on_message(self, message: Message) -> None:
        now = time.perf_counter()
        if message.key != self.key:
            self.others.append(message)
            return
        ident = str(message.value.get(self.id_field))
        self.received.setdefault(ident, now)
        self.values.setdefault(ident, []).append(message.value)
        waiter = self._waiters.pop(ident, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait(self, idents: list[str], timeout: float) -> None:
        loop = asyncio.get_running_loop()
        futures = []
        for ident in idents:
            if ident not in self.received:
                futures.append(self._waiters.setdefault(ident, loop.create_future()))
        if futures:
            _, pending = await asyncio.wait(futures, timeout=timeout)
            if pending:
                raise TimeoutError(f"{len(pending)} of {len(idents)} messages not received within {timeout:.0f} s")

    def latencies(self, idents: list[str]) -> list[float]:
        return [self.received[i] - self.sent[i] for i in idents]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def publish(bus: KafkaBus, tracker: Tracker, topic: str, key: str, value: dict[str, Any]) -> None:
    tracker.sent[str(value["_id"])] = time.perf_counter()
    await bus.publish(topic, key, value)


async def paced(count: int, rate: float, one: Any) -> None:
    """``one(i)`` started at a steady ``rate`` (not waiting for the previous one), then all awaited."""
    start, tasks = time.perf_counter(), []
    for i in range(count):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i)))
    await asyncio.gather(*tasks)


@dataclass
class Results:
    gate_lat: list[float]
    kafka_lat: list[float]
    gates_per_s: float
    kafka_per_s: float
    cpu: dict[str, float]


async def run(args: argparse.Namespace, broker: TansuBroker, db: SecantusServer) -> Results:
    trap = Trap()
    trap_port = await trap.start()
    store = TrustStore.connect(db.uri, DB_NAME)
    osm = Osm(store.db)
    bus = tansu_bus(broker.bootstrap, args.fetch_max_wait_ms, group_id="bench", client_id="bench-nbi",
                   **FAST)  # fmt: skip
    gates, scratch = Tracker("gate", "nslcmop_id"), Tracker("ping", "_id")
    consumers: list[asyncio.Task[None]] = []
    try:
        await store.create_indexes()
        await osm.onboard()
        hosts_before = await register_hosts(store, trap_port, datetime.now(timezone.utc))
        await bus.start()
        nbi_url = f"http://{HOST}:{trap_port}/osm"
        with trustmgr_process(args, broker.bootstrap, db.uri, nbi_url) as tm:
            consumers = [
                asyncio.create_task(bus.run_consumer(["trust"], gates.on_message, group_id="bench-trust")),
                asyncio.create_task(bus.run_consumer([SCRATCH], scratch.on_message, group_id="bench-scratch")),
            ]

            async def gate(i: int, docs: tuple[Any, ...] | None = None) -> str:
                nsr, vnfrs, nslcmop = docs or osm.instantiation(f"bench-{i}")
                if docs is None:
                    await osm.write(nsr, vnfrs, nslcmop)
                await publish(bus, gates, "ns", "instantiate", nslcmop)
                return str(nslcmop["_id"])

            payload = osm.instantiation("scratch")[2]

            async def ping(i: int) -> str:
                value = {**payload, "_id": new_id()}
                await publish(bus, scratch, SCRATCH, "ping", value)
                return str(value["_id"])

            # warm-up: the Trust Manager and both consumers have joined their groups, connections are open
            t0 = time.perf_counter()
            for i in range(5):
                await gates.wait([await gate(-1 - i)], timeout=45.0 if i == 0 else 10.0)
                await scratch.wait([await ping(i)], timeout=45.0 if i == 0 else 10.0)
            print(f"# warm-up (joins, first gates) {time.perf_counter() - t0:.1f} s", file=sys.stderr)

            # phase 1: steady rate, latency
            window = args.gates / args.rate
            ids: list[str] = []
            await paced(args.gates, args.rate, lambda i: _collect(ping(i), ids))
            await scratch.wait(ids, timeout=window + 20)
            kafka_lat = scratch.latencies(ids)

            pids = {"trustmgr": tm.process.pid, "secantus": db.pid, "tansu": broker.pid}
            cpu0 = {name: cpu_seconds(pid) for name, pid in pids.items()}
            cpu0["bench"] = time.process_time()
            tm.signal(signal.SIGUSR1)
            gate_ids: list[str] = []
            await paced(args.gates, args.rate, lambda i: _collect(gate(i), gate_ids))
            await gates.wait(gate_ids, timeout=window + 30)
            tm.signal(signal.SIGUSR2)
            cpu = {n: (cpu_seconds(p) - cpu0[n]) / args.gates for n, p in pids.items()}
            cpu["bench"] = (time.process_time() - cpu0["bench"]) / args.gates
            gate_lat = gates.latencies(gate_ids)

            # phase 2: all at once, throughput
            start = time.perf_counter()
            ids = list(await asyncio.gather(*(ping(i) for i in range(args.burst))))
            await scratch.wait(ids, timeout=30)
            kafka_per_s = len(ids) / (max(scratch.received[i] for i in ids) - start)

            burst = [osm.instantiation(f"burst-{i}") for i in range(args.burst)]
            for docs in burst:
                await osm.write(*docs)
            start = time.perf_counter()
            burst_ids = list(await asyncio.gather(*(gate(i, docs) for i, docs in enumerate(burst))))
            await gates.wait(burst_ids, timeout=45)
            gates_per_s = len(burst_ids) / (max(gates.received[i] for i in burst_ids) - start)

            await check(store, gates, hosts_before, trap)
    finally:
        await bus.stop()
        await asyncio.gather(*consumers, return_exceptions=True)
        await store.close()
        await trap.close()
    if args.profile:
        print_profile(args.profile)
    return Results(gate_lat, kafka_lat, gates_per_s, kafka_per_s, cpu)


async def _collect(coro: Any, into: list[str]) -> None:
    into.append(await coro)


async def check(store: TrustStore, gates: Tracker, hosts_before: dict[str, dict[str, Any]], trap: Trap) -> None:
    """Every gate accepted at LoA 4 exactly once, from the stored verdicts: no host attested, NBI never called."""
    assert set(gates.received) == set(gates.sent), "a gate message for an nslcmop that was not published"
    assert not gates.others, f"unexpected on trust: {[(m.key, m.value) for m in gates.others][:3]}"
    decisions = {(v["decision"], v["achieved_loa"], v["required_host_loa"]) for vs in gates.values.values() for v in vs}
    assert decisions == {("accept", 4, 4)}, f"gate decisions: {decisions}"
    duplicates = sum(len(vs) - 1 for vs in gates.values.values())
    assert duplicates == 0, f"{duplicates} gate messages published more than once"
    deadline = time.monotonic() + 10  # the gate message goes out before the gate's last step is written
    while await store.db[GATES].count_documents({"status": {"$ne": "done"}}) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    async for doc in store.db[GATES].find({}):
        assert doc["status"] == "done" and doc["decision"] == "accept", f"gate {doc['_id']}: {doc.get('status')}"
        assert doc["actions"] == {}, f"gate {doc['_id']} ran actions {doc['actions']}"
        assert len(doc["hosts"]) == HOSTS_PER_RUN and all(h["fresh"] for h in doc["hosts"]), "hosts not reused"
    assert await store.db[GATES].count_documents({}) == len(gates.sent)
    hosts_after = {d["_id"]: d async for d in store.db[HOSTS].find({})}
    assert hosts_after == hosts_before, "a host record changed during the run"
    assert await store.db[REPORTS].count_documents({}) == 0, "a host was attested"
    assert await store.db[NONCES].count_documents({}) == 0, "a nonce was issued"
    assert trap.connections == 0, f"{trap.connections} connections to the NBI/agent trap"


def print_profile(path: str, top: int = 35) -> None:
    for order in ("tottime", "cumulative"):
        out = io.StringIO()
        pstats.Stats(path, stream=out).sort_stats(order).print_stats(top)
        print(out.getvalue(), file=sys.stderr)


def emit(res: Results, args: argparse.Namespace) -> None:
    p50, p99 = percentile(res.gate_lat, 0.50) * 1000, percentile(res.gate_lat, 0.99) * 1000
    k50, k99 = percentile(res.kafka_lat, 0.50) * 1000, percentile(res.kafka_lat, 0.99) * 1000
    cpu = ", ".join(f"{k} {v * 1000:.1f}" for k, v in res.cpu.items())
    print(f"# {args.gates} gates at {args.rate:g}/s (mode {args.mode}, fetch_max_wait_ms {args.fetch_max_wait_ms}): "
          f"max {max(res.gate_lat) * 1000:.1f} ms, raw Kafka max {max(res.kafka_lat) * 1000:.1f} ms; "
          f"CPU ms per gate: {cpu}", file=sys.stderr)  # fmt: skip
    report(BENCH, "latency_p50", p50, "ms", k50, p50 / k50)
    report(BENCH, "latency_p99", p99, "ms", k99, p99 / k99)
    report(BENCH, "gates_per_s", res.gates_per_s, "gates/s", res.kafka_per_s, res.gates_per_s / res.kafka_per_s)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gates", type=int, default=500, help="gates per phase (and raw Kafka messages)")
    parser.add_argument("--rate", type=float, default=50.0, help="offered rate of phase 1, per second")
    parser.add_argument("--burst", type=int, default=150, help="gates (and raw Kafka messages) of phase 2")
    parser.add_argument("--mode", choices=("enforce", "audit"), default="enforce")
    parser.add_argument(
        "--fetch-max-wait-ms", type=lambda v: None if v == "default" else int(v), default=10,
        help="consumers' fetch_max_wait_ms, Trust Manager included (see tansu_bus); 'default': KafkaBus as shipped",
    )  # fmt: skip
    parser.add_argument("--profile", metavar="FILE", help="cProfile the Trust Manager in phase 1; top costs to stderr")
    parser.add_argument("--trustmgr", action="store_true", help=argparse.SUPPRESS)  # the child process
    parser.add_argument("--bootstrap", help=argparse.SUPPRESS)
    parser.add_argument("--mongo", help=argparse.SUPPRESS)
    parser.add_argument("--nbi", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.trustmgr:
        asyncio.run(trustmgr(args))
        return
    with TansuBroker() as broker, SecantusServer() as db:
        broker.start()
        db.start()
        results = asyncio.run(run(args, broker, db))
    emit(results, args)


if __name__ == "__main__":
    main()
