"""Strict mode's REST endpoints (``/osm/trust/v1/challenges``, ``/evidence``) against SecantusDB and a swtpm.

The VNF side is played by this test with the swtpm (the charm does the same over SSH, see test_strict.py);
the OSM records are the few fields the Trust Manager reads, written as NBI writes them.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import pytest

from osm_trustmgr.agent.evidence import identity_document, quote_document
from osm_trustmgr.agent.tpm import Ak, TpmDevice
from osm_trustmgr.api.app import PREFIX, create_app
from osm_trustmgr.api.ratelimit import RateLimiter
from osm_trustmgr.attestation import Rounds
from osm_trustmgr.bus.local import LocalBus
from osm_trustmgr.evidence.vca import VcaDriver
from osm_trustmgr.hosts import HostSettings
from osm_trustmgr.osm.records import OsmRecords
from osm_trustmgr.policy_book import PolicyBook
from osm_trustmgr.sandbox.swtpm import LocalCa
from osm_trustmgr.store.gates import GateStore
from osm_trustmgr.store.mongo import TrustStore
from osm_trustmgr.store.vnfs import VnfStore
from osm_trustmgr.strict import StrictAttestation, StrictSettings
from osm_trustmgr.vnfs import VnfAttestor, VnfSettings

NSR, VNFR = "ns-0001", "vnf-0001"


class NoVca:
    """Strict mode never runs charm actions from the Trust Manager side."""

    async def run(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        raise AssertionError("strict mode must not call the VCA")

    async def close(self) -> None:
        pass


@dataclass
class Api:
    http: httpx.AsyncClient
    store: TrustStore
    bus: LocalBus
    vnfs: VnfStore

    async def challenge(self, identity: dict[str, Any], vnfr_id: str = VNFR) -> httpx.Response:
        return await self.http.post(f"{PREFIX}/challenges", json={"vnfr_id": vnfr_id, "identity": identity})

    async def evidence(self, nonce: str, evidence: dict[str, Any], secret: bytes | None = None) -> httpx.Response:
        body = {"vnfr_id": VNFR, "nonce": nonce, "evidence": evidence,
                "activated_secret": base64.b64encode(secret).decode() if secret else None}  # fmt: skip
        return await self.http.post(f"{PREFIX}/evidence", json=body)


async def _api(mongo_uri: str, db: str, ca: LocalCa, limiter: RateLimiter) -> tuple[Api, TrustStore]:
    store = TrustStore.connect(mongo_uri, db, retention=timedelta(days=1))
    await store.create_indexes()
    await store.db["nsrs"].insert_one({"_id": NSR, "name": "ns", "_admin": {"projects_read": ["p1"]}})
    await store.db["vnfrs"].insert_one({"_id": VNFR, "nsr-id-ref": NSR, "member-vnf-index-ref": "1",
                                        "vnfd-ref": "trust-vnf", "_admin": {"projects_read": ["p1"]}})  # fmt: skip
    # the NS's gate asked LoA 1 of member 1 (what NsGate records from trust_vnf_loa)
    await store.db["trust_gates"].insert_one({"_id": "op-1", "nsr_id": NSR, "message": "{}", "created_at": 1,
                                              "required_vnf_loa": {"1": 1}, "required_vnf_default": 1})  # fmt: skip
    settings = HostSettings(ek_ca_bundle=ca.certificates)
    policies = PolicyBook(store, {}, require_signature=False)
    bus = LocalBus()
    await bus.start()
    vca: VcaDriver = NoVca()
    vnfs = VnfStore(store.db)
    attestor = VnfAttestor(store, vnfs, Rounds(store, policies, settings), vca, bus, VnfSettings())
    strict = StrictAttestation(attestor, OsmRecords(store.db), GateStore(store.db), StrictSettings())
    transport = httpx.ASGITransport(app=create_app(strict, limiter), client=("127.0.0.7", 4242))
    http = httpx.AsyncClient(transport=transport, base_url="http://trustmgr")
    return Api(http, store, bus, vnfs), store


@pytest.fixture
async def api(mongo_uri: str, mongo_db: str, swtpm_ca: LocalCa) -> AsyncIterator[Api]:
    client, store = await _api(mongo_uri, mongo_db, swtpm_ca, RateLimiter(rate=100, burst=100))
    yield client
    await client.http.aclose()
    await client.bus.stop()
    await store.close()


@pytest.fixture(scope="module")
def aks(module_tpm: TpmDevice) -> dict[str, Ak]:
    return {"vnf": module_tpm.create_ak("ecc"), "other": module_tpm.create_ak("ecc")}


def _quote(tpm: TpmDevice, ak: Ak, challenge: dict[str, Any]) -> dict[str, Any]:
    from osm_trustmgr.tpm.pcr import parse_selection_spec

    selection = {s.bank.name: list(s.pcrs) for s in parse_selection_spec(challenge["pcrs"])}
    return quote_document(tpm, ak, bytes.fromhex(challenge["nonce"]), selection)


def _activate(tpm: TpmDevice, ak: Ak, challenge: dict[str, Any]) -> bytes:
    activation = challenge["activation"]
    return tpm.activate_credential(ak, base64.b64decode(activation["credential"]),
                                   base64.b64decode(activation["secret"]))  # fmt: skip


async def test_enrollment_then_quote_is_accepted_once(api: Api, module_tpm: TpmDevice, aks: dict[str, Ak]) -> None:
    ak = aks["vnf"]
    first = await api.challenge(identity_document(module_tpm, ak))
    assert first.status_code == 201, first.text
    challenge = first.json()
    assert challenge["activation"] is not None and challenge["ima_offset"] == 0 and len(challenge["nonce"]) == 40
    evidence = _quote(module_tpm, ak, challenge)
    verdict = await api.evidence(challenge["nonce"], evidence, _activate(module_tpm, ak, challenge))
    assert verdict.status_code == 200, verdict.text
    body = verdict.json()
    assert (body["decision"], body["required_loa"]) == ("accept", 1) and body["loa"] >= 1, body
    report = await api.store.db["trust_reports"].find_one({"_id": body["report_id"]})
    assert report is not None and report["entity"] == f"vnf:{VNFR}" and report["_admin"]["projects_read"] == ["p1"]
    # the same evidence again: its nonce was single-use
    replay = await api.evidence(challenge["nonce"], evidence)
    assert replay.status_code == 409 and "challenge" in replay.json()["detail"]
    # enrolled now: the next challenge carries no activation
    again = (await api.challenge(identity_document(module_tpm, ak))).json()
    assert again["activation"] is None
    verdict = await api.evidence(again["nonce"], _quote(module_tpm, ak, again))
    assert verdict.json()["decision"] == "accept"


async def test_another_ak_for_an_enrolled_vnf_is_refused(api: Api, module_tpm: TpmDevice, aks: dict[str, Ak]) -> None:
    ak = aks["vnf"]
    challenge = (await api.challenge(identity_document(module_tpm, ak))).json()
    await api.evidence(challenge["nonce"], _quote(module_tpm, ak, challenge), _activate(module_tpm, ak, challenge))
    swapped = await api.challenge(identity_document(module_tpm, aks["other"]))
    assert swapped.status_code == 403 and "identity.changed" in swapped.json()["detail"]
    record = await api.vnfs.get(VNFR)
    assert record is not None and record.state == "rejected" and record.loa == 0


async def test_wrong_activation_secret_is_a_reject(api: Api, module_tpm: TpmDevice, aks: dict[str, Ak]) -> None:
    ak = aks["vnf"]
    challenge = (await api.challenge(identity_document(module_tpm, ak))).json()
    verdict = (await api.evidence(challenge["nonce"], _quote(module_tpm, ak, challenge), b"\x00" * 32)).json()
    assert verdict["decision"] == "reject" and verdict["loa"] == 0
    assert any(r.startswith("identity.activation_failed") for r in verdict["reasons"]), verdict
    assert await api.store.get_identity(f"vnf:{VNFR}") is None  # not enrolled


async def test_quote_over_another_nonce_is_a_reject(api: Api, module_tpm: TpmDevice, aks: dict[str, Ak]) -> None:
    ak = aks["vnf"]
    challenge = (await api.challenge(identity_document(module_tpm, ak))).json()
    stale = _quote(module_tpm, ak, {**challenge, "nonce": "00" * 20})
    verdict = (await api.evidence(challenge["nonce"], stale, _activate(module_tpm, ak, challenge))).json()
    assert verdict["decision"] == "reject" and any("nonce" in r for r in verdict["reasons"]), verdict


async def test_untrusted_ek_is_refused(mongo_uri: str, mongo_db: str, untrusted_ca: LocalCa,
                                       module_tpm: TpmDevice, aks: dict[str, Ak]) -> None:  # fmt: skip
    client, store = await _api(mongo_uri, mongo_db, untrusted_ca, RateLimiter(rate=100, burst=100))
    try:
        refused = await client.challenge(identity_document(module_tpm, aks["vnf"]))
        assert refused.status_code == 403 and refused.json()["detail"].startswith("ek.cert_untrusted")
        record = await client.vnfs.get(VNFR)
        assert record is not None and record.loa == 0 and "ek.cert_untrusted" in (record.reason or "")
    finally:
        await client.http.aclose()
        await client.bus.stop()
        await store.close()


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("challenges", {"vnfr_id": "no-such-vnf", "identity": {"ek_public": "AA==", "ak_public": "AA=="}}, 404),
        ("challenges", {"vnfr_id": VNFR, "identity": {"ek_public": "not base64!", "ak_public": "AA=="}}, 422),
        ("challenges", {"vnfr_id": {"$ne": 1}, "identity": {"ek_public": "AA==", "ak_public": "AA=="}}, 422),
        ("challenges", {"vnfr_id": VNFR}, 422),
        ("evidence", {"vnfr_id": VNFR, "nonce": "zz", "evidence": {}}, 422),
        ("evidence", {"vnfr_id": "no-such-vnf", "nonce": "00" * 20, "evidence": {}}, 404),
        ("evidence", {"vnfr_id": VNFR, "nonce": "00" * 20, "evidence": {}, "extra": 1}, 422),
    ],
)
async def test_malformed_requests_get_clear_errors(api: Api, path: str, body: dict[str, Any], status: int) -> None:
    response = await api.http.post(f"{PREFIX}/{path}", json=body)
    assert response.status_code == status, response.text
    assert response.json()["detail"]


async def test_no_challenge_for_an_ns_the_trust_manager_did_not_gate(api: Api) -> None:
    await api.store.db["nsrs"].insert_one({"_id": "ns-ungated", "_admin": {"projects_read": ["p1"]}})
    await api.store.db["vnfrs"].insert_one(
        {"_id": "vnf-ungated", "nsr-id-ref": "ns-ungated", "member-vnf-index-ref": "1"}
    )
    refused = await api.challenge({"ek_public": "AA==", "ak_public": "AA=="}, vnfr_id="vnf-ungated")
    assert refused.status_code == 409 and "gated" in refused.json()["detail"]
    assert await api.vnfs.get("vnf-ungated") is None  # not even tracked


async def test_evidence_for_a_nonce_never_issued_is_refused(api: Api, module_tpm: TpmDevice,
                                                           aks: dict[str, Ak]) -> None:  # fmt: skip
    await api.challenge(identity_document(module_tpm, aks["vnf"]))  # the VNF is known, the nonce is not
    response = await api.evidence("ab" * 20, {})
    assert response.status_code == 409


async def test_rate_limit_per_client(mongo_uri: str, mongo_db: str, swtpm_ca: LocalCa) -> None:
    client, store = await _api(mongo_uri, mongo_db, swtpm_ca, RateLimiter(rate=0.5, burst=2))
    try:
        body = {"vnfr_id": "no-such-vnf", "identity": {"ek_public": "AA==", "ak_public": "AA=="}}
        statuses = [(await client.http.post(f"{PREFIX}/challenges", json=body)).status_code for _ in range(3)]
        assert statuses == [404, 404, 429]
        limited = await client.http.post(f"{PREFIX}/challenges", json=body)
        assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1
        assert (await client.http.get(f"{PREFIX}/healthz")).status_code == 200  # reads are not limited
    finally:
        await client.http.aclose()
        await client.bus.stop()
        await store.close()


def test_rate_limiter_refills_and_forgets_old_clients() -> None:
    now = [0.0]
    limiter = RateLimiter(rate=1.0, burst=2, max_keys=2, clock=lambda: now[0])
    assert [limiter.acquire("a") for _ in range(3)] == [0.0, 0.0, 1.0]
    now[0] = 1.0
    assert limiter.acquire("a") == 0.0
    limiter.acquire("b")
    limiter.acquire("c")  # "a" is forgotten: a full bucket again
    assert [limiter.acquire("a"), limiter.acquire("a")] == [0.0, 0.0]


async def test_one_ak_behind_two_vnfs_is_refused(api: Api, module_tpm: TpmDevice, aks: dict[str, Ak]) -> None:
    """A cloned (or reused) vTPM: the second VNF presenting an AK already enrolled elsewhere is rejected."""
    ak = aks["vnf"]
    challenge = (await api.challenge(identity_document(module_tpm, ak))).json()
    await api.evidence(challenge["nonce"], _quote(module_tpm, ak, challenge), _activate(module_tpm, ak, challenge))
    await api.store.db["vnfrs"].insert_one({"_id": "vnf-0002", "nsr-id-ref": NSR, "member-vnf-index-ref": "1"})
    clone = (await api.challenge(identity_document(module_tpm, ak), vnfr_id="vnf-0002")).json()
    body = {"vnfr_id": "vnf-0002", "nonce": clone["nonce"], "evidence": _quote(module_tpm, ak, clone),
            "activated_secret": base64.b64encode(_activate(module_tpm, ak, clone)).decode()}  # fmt: skip
    verdict = (await api.http.post(f"{PREFIX}/evidence", json=body)).json()
    assert verdict["decision"] == "reject" and verdict["loa"] == 0
    assert any(f"already enrolled as vnf:{VNFR}" in r for r in verdict["reasons"]), verdict
    assert (await api.vnfs.get("vnf-0002")).state == "rejected"  # type: ignore[union-attr]
