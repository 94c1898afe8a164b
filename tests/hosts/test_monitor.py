"""The monitor: bounded, jittered re-attestation with backoff; restart-safe; a hung agent blocks nobody."""

from __future__ import annotations

import asyncio
import os
import random
import signal
from datetime import timedelta

from osm_trustmgr.hosts import HostAttestor, entity_of, utcnow
from osm_trustmgr.monitor import HostMonitor, MonitorSettings
from osm_trustmgr.store.mongo import REPORTS, TrustStore
from tests.hosts.conftest import MakeHost, TrustManager


async def test_cycle_attests_due_hosts_and_schedules_with_jitter(trustmgr: TrustManager, make_host: MakeHost) -> None:
    hosts = [make_host(), make_host()]
    for h in hosts:
        await trustmgr.add(h)
    monitor = HostMonitor(trustmgr.attestor, MonitorSettings(interval=100, jitter=0.1), rng=random.Random(7))
    start = utcnow()
    assert await monitor.run_cycle() == 2
    for h in hosts:
        record = await trustmgr.store.get_host(h.id)
        assert record is not None and record.loa == 4 and record.next_attempt_at is not None
        delay = (record.next_attempt_at - start).total_seconds()
        assert 90 <= delay <= 115, delay
    assert await monitor.run_cycle() == 0  # nobody is due before the interval


async def test_unreachable_hosts_back_off_exponentially(trustmgr: TrustManager, make_host: MakeHost) -> None:
    host = make_host()
    await trustmgr.add(host)
    monitor = HostMonitor(trustmgr.attestor, MonitorSettings(interval=300, retry_base=5))
    host.agent.stop()
    delays = []
    for _ in range(3):
        before = utcnow()
        await monitor.attest_one(host.id)
        record = await trustmgr.store.get_host(host.id)
        assert record is not None and record.state == "unreachable" and record.next_attempt_at is not None
        delays.append(round((record.next_attempt_at - before).total_seconds()))
    assert delays == [5, 10, 20]
    host.agent.start(same_port=True)
    outcome = await monitor.attest_one(host.id)
    assert outcome is not None and outcome.host.loa == 4


async def test_restart_in_the_middle_of_a_cycle_loses_nothing(
    trustmgr: TrustManager, make_host: MakeHost, mongo_uri: str, mongo_db: str
) -> None:
    hosts = [make_host() for _ in range(3)]
    for h in hosts:
        await trustmgr.add(h)
    monitor = HostMonitor(trustmgr.attestor, MonitorSettings(interval=600, concurrency=1))
    cycle = asyncio.create_task(monitor.run_cycle())
    while not any([(await trustmgr.store.get_host(h.id)).next_attempt_at for h in hosts]):  # type: ignore[union-attr]
        await asyncio.sleep(0.02)
    cycle.cancel()  # the Trust Manager dies with the cycle half done
    await asyncio.gather(cycle, return_exceptions=True)
    done_before = {h.id for h in hosts if (await trustmgr.store.get_host(h.id)).next_attempt_at}  # type: ignore[union-attr]
    assert 1 <= len(done_before) < 3

    # a new Trust Manager process: new connections, same database
    store = TrustStore.connect(mongo_uri, mongo_db, retention=timedelta(days=7))
    attestor = HostAttestor(store, trustmgr.policies, trustmgr.bus, trustmgr.attestor.settings)
    restarted = HostMonitor(attestor, MonitorSettings(interval=600, concurrency=1))
    assert await restarted.run_cycle() == 3 - len(done_before)
    for h in hosts:
        reports = await store.reports_for(entity_of(h.id))
        assert reports and all(r["loa"] == 4 for r in reports), h.id
        if h.id in done_before:
            assert len(reports) == 1  # attested before the restart and not again
    ids = [r["_id"] async for r in store.db[REPORTS].find({}, {"_id": 1})]
    assert len(ids) == len(set(ids))
    await attestor.close()
    await store.close()


async def test_a_hung_agent_does_not_hold_up_the_others(trustmgr: TrustManager, make_host: MakeHost) -> None:
    hung, healthy = make_host(), make_host()
    for h in (hung, healthy):
        await trustmgr.add(h)
    assert (await trustmgr.attestor.attest(hung.id)).host.loa == 4
    assert hung.agent.pid is not None
    os.kill(hung.agent.pid, signal.SIGSTOP)  # accepts TCP connections in the kernel, never answers
    try:
        monitor = HostMonitor(trustmgr.attestor, MonitorSettings(interval=600, round_timeout=2, retry_base=5))
        loop = asyncio.get_running_loop()
        started = loop.time()
        await monitor.run_cycle()
        assert loop.time() - started < 10
        ok = await trustmgr.store.get_host(healthy.id)
        assert ok is not None and ok.loa == 4
        stuck = await trustmgr.store.get_host(hung.id)
        assert stuck is not None and (stuck.state, stuck.loa) == ("unreachable", 0)  # no longer trusted
        assert stuck.next_attempt_at is not None and stuck.reason is not None and "hung" in stuck.reason
        assert (stuck.next_attempt_at - utcnow()).total_seconds() <= 5  # retried soon, not after the interval
    finally:
        os.kill(hung.agent.pid, signal.SIGCONT)
