"""Host attestation throughput through the real path, against the bare verifier on the same evidence.

Pipeline: a SecantusDB process (MongoDB wire) + a simulated agent fleet served by uvicorn in another process
(SoftTpm-backed hosts, osm_trustmgr.sandbox.simagents; software keys, so this measures load, not trust) over
HTTP on 127.0.0.1 + HostMonitor/HostAttestor + TrustStore (every report stored) + the fleet's golden policy
stored through PolicyBook, so every round runs the LoA 1-4 checks. Hosts are always due (interval 0) and
cycles run back to back for ``--seconds``, after one warm-up cycle that reads every full IMA log.

Baseline: parse_evidence_document + evaluate over evidence pre-fetched from the same fleet (same policy,
identities and verifier state, so the same steady-state rounds) in this process.
Goal: >= 300 host attestations/s with reports stored, and CPU per attestation < 3x the bare verification.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import io
import os
import pstats
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import httpx
from _common import report

from osm_trustmgr.evidence.document import parse_evidence_document
from osm_trustmgr.evidence.host_agent import HostAgentClient
from osm_trustmgr.hosts import HostAttestor, HostSettings, Outcome, entity_of
from osm_trustmgr.monitor import HostMonitor, MonitorSettings
from osm_trustmgr.policy.evaluate import IdentityClaim, Request, evaluate
from osm_trustmgr.policy.model import TrustPolicy
from osm_trustmgr.policy.result import VerifierState
from osm_trustmgr.policy_book import PolicyBook
from osm_trustmgr.sandbox.servers import HOST, SecantusServer, free_port
from osm_trustmgr.sandbox.simagents import SimulatedFleet, pinned_ak_record
from osm_trustmgr.store.mongo import REPORTS, TrustStore
from osm_trustmgr.store.records import AgentEndpoint, HostSpec
from osm_trustmgr.tpm.public import parse_public

BENCH = "hosts"
DB_NAME = "bench_hosts"
CLK_TCK = os.sysconf("SC_CLK_TCK")


# -- the processes: agent fleet (uvicorn) and its CPU accounting --------------------------------------------


@contextlib.contextmanager
def fleet_process(hosts: int, port: int) -> Iterator[subprocess.Popen[bytes]]:
    """The simulated agents in a process of their own, so their CPU is not the pipeline's; stopped by PID."""
    with tempfile.TemporaryFile() as out:
        argv = [sys.executable, "-m", "osm_trustmgr.sandbox.simagents", "--hosts", str(hosts), "--port", str(port)]
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            yield process
        except BaseException:
            out.seek(0)
            sys.stderr.write(out.read().decode(errors="replace")[-2000:])
            raise
        finally:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


async def wait_for_fleet(base: str, process: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(base_url=base, timeout=2.0) as http:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"simulated agents exited with {process.returncode}")
            with contextlib.suppress(httpx.TransportError):
                if (await http.get("/healthz")).status_code == 200:
                    return
            await asyncio.sleep(0.1)
    raise RuntimeError("simulated agents did not start in time")


def cpu_seconds(pid: int | None) -> float:
    """utime + stime of ``pid`` and its live descendants, from /proc (0 when unavailable)."""
    if pid is None:
        return 0.0
    total, stats = 0.0, {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                # fields after the parenthesised command name: state ppid ... utime(14) stime(15)
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                stats[int(entry.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / CLK_TCK)
    family = {pid}
    for _ in range(4):  # a few generations are plenty for a server and its workers
        family |= {p for p, (ppid, _) in stats.items() if ppid in family}
    for p in family:
        total += stats.get(p, (0, 0.0))[1]
    return total


# -- the pipeline --------------------------------------------------------------------------------------------


class NullPublisher:
    """Kafka is not what is measured: transitions are counted and dropped."""

    def __init__(self) -> None:
        self.published = 0

    async def publish(self, topic: str, key: str, value: Any) -> None:
        self.published += 1


class TimedAttestor(HostAttestor):
    """Records how long each round took (attest() alone: queueing for the monitor's semaphore excluded)."""

    latencies: list[float]
    loas: Counter[int | None]

    def reset(self) -> None:
        self.latencies, self.loas = [], Counter()

    async def attest(self, host_id: str, *args: Any, **kwargs: Any) -> Outcome:
        start = time.perf_counter()
        outcome = await super().attest(host_id, *args, **kwargs)  # forwards whatever the monitor passes
        self.latencies.append(time.perf_counter() - start)
        self.loas[outcome.result.loa if outcome.result else None] += 1
        return outcome


async def provision(store: TrustStore, attestor: HostAttestor, base: str, hosts: int) -> str:
    """Golden policy through PolicyBook, a pinned-AK identity and an inventory entry per simulated host."""
    async with httpx.AsyncClient(base_url=base, timeout=10.0) as http:
        policy = await attestor.policies.put((await http.get("/fleet/policy")).json(), datetime.now(timezone.utc))
        for i in range(hosts):
            host_id = SimulatedFleet.host_id(i)
            identity = (await http.get(f"/hosts/{i}/v1/identity")).json()
            await store.put_identity(pinned_ak_record(entity_of(host_id), identity))
            agent = AgentEndpoint(url=f"{base}/hosts/{i}")
            await attestor.register(HostSpec(id=host_id, vim_account_id="vim-sim", agent=agent, policy_id=policy.id))
    return policy.id


@dataclass
class RunStats:
    count: int
    wall: float
    cpu: float
    agent_cpu: float
    db_cpu: float
    latencies: list[float]
    cycles: int


async def measure(
    monitor: HostMonitor, attestor: TimedAttestor, store: TrustStore, seconds: float, pids: tuple[int | None, ...]
) -> RunStats:
    """Cycles back to back for ``seconds`` (the last cycle completes); counts the reports actually stored."""
    attestor.reset()
    stored_before = await store.db[REPORTS].count_documents({})
    agent0, db0 = (cpu_seconds(p) for p in pids)
    cpu0, start, cycles = time.process_time(), time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        await monitor.run_cycle()
        cycles += 1
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu0
    agent_cpu, db_cpu = cpu_seconds(pids[0]) - agent0, cpu_seconds(pids[1]) - db0
    count = await store.db[REPORTS].count_documents({}) - stored_before
    return RunStats(count, wall, cpu, agent_cpu, db_cpu, attestor.latencies, cycles)


async def check_sanity(store: TrustStore, attestor: TimedAttestor, stats: RunStats) -> None:
    """The numbers must be of successful rounds: every round judged, every stored report LoA 4, no failure."""
    assert attestor.loas == Counter({4: len(attestor.latencies)}), f"round verdicts: {dict(attestor.loas)}"
    assert stats.count == len(attestor.latencies), f"{stats.count} reports for {len(attestor.latencies)} rounds"
    bad = await store.db[REPORTS].count_documents({"$or": [{"loa": {"$ne": 4}}, {"failures": {"$ne": []}}]})
    assert bad == 0, f"{bad} stored reports below LoA 4 or with failures"


# -- the baseline: the bare verifier over pre-fetched evidence ----------------------------------------------


@dataclass(frozen=True)
class Round:
    doc: dict[str, Any]
    claim: IdentityClaim
    request: Request
    previous: VerifierState | None


async def prefetch(store: TrustStore, policy: TrustPolicy, base: str, hosts: int) -> list[Round]:
    """One steady-state round per host (IMA from the verified offset), fetched like the attestor does."""
    rounds = []
    selection = policy.selection()  # what the attestor asks for
    for i in range(hosts):
        host = await store.get_host(SimulatedFleet.host_id(i))
        identity = await store.get_identity(entity_of(SimulatedFleet.host_id(i)))
        assert host is not None and identity is not None
        nonce = os.urandom(20)
        async with HostAgentClient(AgentEndpoint(url=f"{base}/hosts/{i}")) as agent:
            offset = host.verifier_state.ima_offset if host.verifier_state else 0
            doc = await agent.quote(nonce, selection, offset)
        claim = IdentityClaim(parse_public(identity.ak_public), identity.method, identity.ak_qualified_name)
        rounds.append(Round(doc, claim, Request(nonce, selection), host.verifier_state))
    return rounds


def bare_cpu_per_verification(rounds: list[Round], policy: TrustPolicy, min_seconds: float = 1.0) -> float:
    """Process CPU seconds per parse_evidence_document + evaluate, over at least ``min_seconds``."""

    def verify(r: Round) -> int:
        now = datetime.now(timezone.utc)
        evidence = parse_evidence_document(r.doc).evidence
        result = evaluate(
            evidence, r.claim, r.request, entity="host:bench", now=now, policy=policy, previous=r.previous,
            collected_at=now,
        )  # fmt: skip
        return result.loa

    assert {verify(r) for r in rounds} == {4}, "the pre-fetched evidence must verify at LoA 4"
    count, start = 0, time.process_time()
    while (elapsed := time.process_time() - start) < min_seconds:
        for r in rounds:
            verify(r)
        count += len(rounds)
    return elapsed / count


# -- orchestration -------------------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def print_profile(profile: cProfile.Profile, path: str, top: int = 30) -> None:
    profile.dump_stats(path)  # for pstats / snakeviz: callers, cumulative views
    out = io.StringIO()
    pstats.Stats(profile, stream=out).sort_stats("tottime").print_stats(top)
    print(out.getvalue(), file=sys.stderr)


async def run(args: argparse.Namespace, db: SecantusServer, fleet: subprocess.Popen[bytes], base: str) -> None:
    await wait_for_fleet(base, fleet)
    store = TrustStore.connect(db.uri, DB_NAME)
    try:
        await store.create_indexes()
        book = PolicyBook(store, {}, require_signature=False)
        attestor = TimedAttestor(store, book, NullPublisher(), HostSettings(ek_ca_bundle=()))
        policy = await book.get(await provision(store, attestor, base, args.hosts))
        settings = MonitorSettings(interval=0.0, jitter=0.0, concurrency=args.concurrency, round_timeout=30.0)
        monitor = HostMonitor(attestor, settings)
        attestor.reset()
        await monitor.run_cycle()  # warm-up: first rounds read whole IMA logs, connections and caches warm
        await check_sanity(store, attestor, RunStats(args.hosts, 0, 0, 0, 0, [], 1))
        profile = cProfile.Profile() if args.profile else None
        if profile:
            profile.enable()
        stats = await measure(monitor, attestor, store, args.seconds, (fleet.pid, db.pid))
        if profile:
            profile.disable()
            print_profile(profile, args.profile)
        await check_sanity(store, attestor, stats)
        bare = bare_cpu_per_verification(await prefetch(store, policy, base, args.hosts), policy)
    finally:
        await store.close()
    emit(stats, bare, args.hosts)


def emit(stats: RunStats, bare: float, hosts: int) -> None:
    rate, bare_rate = stats.count / stats.wall, 1 / bare
    cpu = stats.cpu / stats.count
    summary = f"# {stats.count} attestations of {hosts} hosts in {stats.cycles} cycles, {stats.wall:.1f} s"
    cpus = f"CPU: bench {stats.cpu:.1f} s, agents {stats.agent_cpu:.1f} s, db {stats.db_cpu:.1f} s"
    print(f"{summary}; {cpus}", file=sys.stderr)
    report(BENCH, "attestations_per_s", rate, "attestations/s", bare_rate, rate / bare_rate)
    report(BENCH, "round_latency_p50", percentile(stats.latencies, 0.50) * 1000, "ms", None, None)
    report(BENCH, "round_latency_p99", percentile(stats.latencies, 0.99) * 1000, "ms", None, None)
    report(BENCH, "cpu_per_attestation", cpu * 1000, "ms", bare * 1000, cpu / bare)
    report(BENCH, "agent_cpu_per_attestation", stats.agent_cpu / stats.count * 1000, "ms", None, None)
    report(BENCH, "db_cpu_per_attestation", stats.db_cpu / stats.count * 1000, "ms", None, None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument(
        "--profile", metavar="FILE", help="cProfile the measured window: top costs to stderr, stats to FILE"
    )
    args = parser.parse_args()
    port = free_port()
    # The fleet generates its keys while SecantusDB starts: both are seconds of start-up.
    db = SecantusServer()
    with fleet_process(args.hosts, port) as fleet, db:
        db.start()
        asyncio.run(run(args, db, fleet, f"http://{HOST}:{port}"))


if __name__ == "__main__":
    main()
