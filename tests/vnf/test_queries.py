"""Trust queries scoped by the caller's OSM token (DESIGN.md §5): a tenant sees its own VNFs and their reports,
nothing of other projects'; an admin sees all. Tokens are real NBI tokens of the OSM simulator."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import httpx
import pytest

from osm_trustmgr.api.app import PREFIX, create_app
from osm_trustmgr.api.auth import TokenAuth
from osm_trustmgr.api.queries import query_router
from osm_trustmgr.api.ratelimit import RateLimiter
from osm_trustmgr.failures import Failure
from osm_trustmgr.osm.nbi import NbiClient
from osm_trustmgr.policy.result import AttestationResult, FailureRecord
from osm_trustmgr.sandbox.osmsim import OsmSimulator
from osm_trustmgr.store.mongo import TrustStore
from osm_trustmgr.store.records import VnfTrustRecord
from osm_trustmgr.store.vnfs import VnfStore
from tests.osm.test_nbi import client_for, local_sim


@dataclass
class World:
    sim: OsmSimulator
    http: httpx.AsyncClient
    tenant: str  # project ids
    admin: str

    async def token(self, user: str, password: str) -> str:
        async with client_for(self.sim, user, password) as nbi:
            return await nbi.token()

    async def get(self, path: str, token: str | None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return await self.http.get(f"{PREFIX}{path}", headers=headers)


def _report(entity: str, nonce: str, loa: int) -> AttestationResult:
    failures = [] if loa == 4 else [FailureRecord.of(Failure.IMA_UNKNOWN_DIGEST, "/usr/bin/backdoor", 4)]
    return AttestationResult(entity=entity, loa=loa, failures=failures, evidence_digest="00", nonce=nonce,
                             time=datetime.now(timezone.utc))  # fmt: skip


@pytest.fixture
async def world(mongo_uri: str, mongo_db: str) -> AsyncIterator[World]:
    async with local_sim(mongo_uri, mongo_db) as sim:
        tenant, admin = sim.auth.project_id("tenant"), sim.auth.project_id("admin")
        store = TrustStore.connect(mongo_uri, mongo_db, retention=timedelta(days=1))
        vnfs = VnfStore(store.db)
        for vnf_id, project, loa in (("vnf-t", tenant, 3), ("vnf-a", admin, 4)):
            await vnfs.track(VnfTrustRecord(id=vnf_id, nsr_id=f"ns-{vnf_id}", member_vnf_index="1",
                                            projects_read=[project], required_loa=4))  # fmt: skip
            await vnfs.set(vnf_id, {"state": "attested", "loa": loa, "last_report": f"{vnf_id}-r"})
            await store.insert_report(f"{vnf_id}-r", "vnf", _report(f"vnf:{vnf_id}", f"{vnf_id}-r", loa),
                                      projects=[project])  # fmt: skip
        nbi = NbiClient(sim.nbi_url, user="admin", password="admin", project="admin", retries=0, timeout=5.0)
        app = create_app(None, RateLimiter(rate=100, burst=100), query_router(store, vnfs, TokenAuth(nbi)))  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://trustmgr") as http:
            yield World(sim, http, tenant, admin)
        await nbi.aclose()
        await store.close()


async def test_a_tenant_sees_only_its_own_vnfs_and_reports(world: World) -> None:
    alice = await world.token("alice", "pw")
    listed = (await world.get("/vnfs", alice)).json()
    assert [(v["id"], v["loa"], v["required_loa"]) for v in listed] == [("vnf-t", 3, 4)]
    [report] = (await world.get("/vnfs/vnf-t/reports", alice)).json()
    assert report["loa"] == 3 and report["failures"][0]["detail"] == "/usr/bin/backdoor" and "_admin" not in report
    # another project's VNF: the same answer as a VNF that does not exist
    for path in ("/vnfs/vnf-a", "/vnfs/vnf-a/reports", "/vnfs/nowhere"):
        hidden = await world.get(path, alice)
        assert hidden.status_code == 404 and "your projects" in hidden.json()["detail"]


async def test_an_admin_sees_every_project(world: World) -> None:
    admin = await world.token("admin", "admin")
    assert sorted(v["id"] for v in (await world.get("/vnfs", admin)).json()) == ["vnf-a", "vnf-t"]
    assert (await world.get("/vnfs?nsr_id=ns-vnf-t", admin)).json()[0]["id"] == "vnf-t"
    assert (await world.get("/vnfs/vnf-t", admin)).json()["state"] == "attested"


async def test_no_or_a_bad_token_is_401(world: World) -> None:
    assert (await world.get("/vnfs", None)).status_code == 401
    bad = await world.get("/vnfs", "not-a-token-of-this-nbi")
    assert bad.status_code == 401 and bad.headers["WWW-Authenticate"] == "Bearer"
    token = await world.token("alice", "pw")
    await world.sim.expire_token(token)
    assert (await world.get("/vnfs", token)).status_code == 401


async def test_nbi_down_is_503_not_a_guess(world: World) -> None:
    token = await world.token("alice", "pw")
    world.sim.add_fault(r"/admin/v1/tokens/", 503, count=10)
    answer = await world.get("/vnfs", token)
    assert answer.status_code == 503 and "cannot validate" in answer.json()["detail"]
