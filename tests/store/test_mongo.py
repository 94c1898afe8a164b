"""trust_* collections on a real MongoDB wire server (SecantusDB, or MONGO_URI)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone

import pytest

from osm_trustmgr.policy.result import AttestationResult, FailureRecord
from osm_trustmgr.store.mongo import HOSTS, IDENTITIES, NONCES, REPORTS, TrustStore
from osm_trustmgr.store.records import AgentEndpoint, HostRecord, IdentityRecord

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=timezone.utc)


@pytest.fixture
async def store(mongo_uri: str, mongo_db: str) -> AsyncIterator[TrustStore]:
    s = TrustStore.connect(mongo_uri, mongo_db, retention=timedelta(days=30))
    await s.create_indexes()
    yield s
    await s.close()


def _host(host_id: str, vim: str = "vim-1") -> HostRecord:
    return HostRecord(id=host_id, vim_account_id=vim, agent=AgentEndpoint(url=f"https://127.0.0.1:9443/{host_id}"))


def _result(nonce: str, loa: int = 4, time: datetime = NOW) -> AttestationResult:
    failures = [] if loa == 4 else [FailureRecord(code="ima.unknown_digest", detail="/usr/bin/x", level=4)]
    return AttestationResult(entity="host:h1", loa=loa, failures=failures, evidence_digest="ab", nonce=nonce, time=time)


async def test_indexes_exist(store: TrustStore) -> None:
    names: dict[str, set[tuple[tuple[str, int], ...]]] = {}
    for c in (IDENTITIES, NONCES, REPORTS, HOSTS):
        cursor = await store.db[c].list_indexes()
        names[c] = {tuple(spec["key"].items()) async for spec in cursor}
    assert (("ak_name", 1),) in names[IDENTITIES]
    assert (("expires_at", 1),) in names[NONCES]
    assert (("entity", 1), ("time", -1)) in names[REPORTS]
    assert (("expire_at", 1),) in names[REPORTS]
    assert (("vim_account_id", 1),) in names[HOSTS]


async def test_host_inventory(store: TrustStore) -> None:
    assert await store.add_host(_host("h1"))
    assert not await store.add_host(_host("h1"))  # ids are unique
    await store.add_host(_host("h2", vim="vim-2"))
    assert [h.id for h in await store.list_hosts()] == ["h1", "h2"]
    assert [h.id for h in await store.list_hosts("vim-2")] == ["h2"]
    updated = await store.update_host_spec("h1", {"policy_id": "golden"})
    assert updated is not None and updated.policy_id == "golden"
    before = await store.set_host_state("h1", {"state": "attested", "loa": 4})
    assert before is not None and (before.state, before.loa) == ("new", 0)
    got = await store.get_host("h1")
    assert got is not None and (got.state, got.loa, got.agent.url) == ("attested", 4, "https://127.0.0.1:9443/h1")
    assert await store.delete_host("h2") and not await store.delete_host("h2")
    assert await store.get_host("h2") is None


async def test_due_hosts(store: TrustStore) -> None:
    for h in ("a", "b", "c", "d"):
        await store.add_host(_host(h))
    await store.set_host_state("a", {"next_attempt_at": NOW - timedelta(seconds=1)})
    await store.set_host_state("b", {"next_attempt_at": NOW + timedelta(seconds=60)})
    await store.set_host_state("d", {"state": "rejected"})
    assert sorted(h.id for h in await store.due_hosts(NOW)) == ["a", "c"]  # c was never scheduled; d is rejected


async def test_nonce_is_single_use_and_expires(store: TrustStore) -> None:
    await store.issue_nonce(b"\x01" * 20, "host:h1", NOW, timedelta(seconds=30))
    assert not await store.consume_nonce(b"\x01" * 20, "host:other", NOW)  # another entity's nonce
    assert await store.consume_nonce(b"\x01" * 20, "host:h1", NOW)
    assert not await store.consume_nonce(b"\x01" * 20, "host:h1", NOW)  # replay
    await store.issue_nonce(b"\x02" * 20, "host:h1", NOW, timedelta(seconds=30))
    assert not await store.consume_nonce(b"\x02" * 20, "host:h1", NOW + timedelta(seconds=31))  # expired
    assert not await store.consume_nonce(b"\x03" * 20, "host:h1", NOW)  # never issued


async def test_reports_are_never_duplicated(store: TrustStore) -> None:
    assert await store.insert_report("n1", "host", _result("n1"))
    assert not await store.insert_report("n1", "host", _result("n1"))
    assert await store.insert_report("n2", "host", _result("n2", loa=3, time=NOW + timedelta(minutes=5)),
                                     projects=["p1"])  # fmt: skip
    history = await store.reports_for("host:h1")
    assert [r["_id"] for r in history] == ["n2", "n1"]  # newest first
    newest = history[0]
    assert newest["loa"] == 3 and newest["failures"][0]["code"] == "ima.unknown_digest"
    assert newest["_admin"]["projects_read"] == ["p1"]
    assert newest["expire_at"] - newest["time"] == timedelta(days=30)
    assert newest["time"] == NOW + timedelta(minutes=5)
    assert newest["kind"] == "host" and newest["loa_name"] == "os"


async def test_identity_is_never_overwritten(store: TrustStore) -> None:
    def record(entity: str, ak_name: bytes) -> IdentityRecord:
        return IdentityRecord(entity=entity, method="ek_certificate", ek_public=b"ek", ek_certificate=None,
                              ak_public=b"ak", ak_name=ak_name, ak_qualified_name=b"qn", enrolled_at=NOW)  # fmt: skip

    assert await store.put_identity(record("host:h1", b"\x00\x0b" + b"1" * 32))
    assert not await store.put_identity(record("host:h1", b"\x00\x0b" + b"2" * 32))
    got = await store.get_identity("host:h1")
    assert got is not None and got.ak_name == b"\x00\x0b" + b"1" * 32
    # the same AK cannot belong to a second entity (a cloned identity)
    assert not await store.put_identity(record("host:h2", b"\x00\x0b" + b"1" * 32))
    assert await store.delete_identity("host:h1")
    assert await store.put_identity(record("host:h2", b"\x00\x0b" + b"1" * 32))


async def test_policy_documents_round_trip_with_int_keys(store: TrustStore) -> None:
    await store.put_policy("golden", {"id": "golden", "platform": {"pcrs": {"sha256": {0: ["00" * 32]}}}}, NOW)
    doc = await store.get_policy_document("golden")
    assert doc == {"id": "golden", "platform": {"pcrs": {"sha256": {"0": ["00" * 32]}}}}
    assert await store.get_policy_document("other") is None
