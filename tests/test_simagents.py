"""The simulated agent fleet: its HTTP answers verify like a real agent's, and deviations show in the LoA."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timezone
from typing import Any

import httpx
import pytest

from osm_trustmgr.evidence.document import parse_evidence_document
from osm_trustmgr.policy.evaluate import IdentityClaim, Request, evaluate
from osm_trustmgr.policy.load import load_policy
from osm_trustmgr.policy.model import TrustPolicy
from osm_trustmgr.policy.result import AttestationResult, VerifierState
from osm_trustmgr.sandbox.simagents import SimulatedFleet, pinned_ak_record
from osm_trustmgr.tpm.pcr import PcrSelection, parse_selection_spec
from osm_trustmgr.tpm.public import parse_public

IMA_ENTRIES = 8


@pytest.fixture
def fleet() -> SimulatedFleet:
    return SimulatedFleet(2, ima_entries=IMA_ENTRIES)


@pytest.fixture
async def http(fleet: SimulatedFleet) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=fleet.app())
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        yield client


@pytest.fixture
def policy(fleet: SimulatedFleet) -> TrustPolicy:
    return load_policy(fleet.reference_policy(), {}, require_signature=False)


def selection_of(policy: TrustPolicy) -> tuple[PcrSelection, ...]:
    pcrs = ",".join(map(str, policy.quoted_pcrs()))
    return parse_selection_spec("+".join(f"{b}:{pcrs}" for b in policy.pcr_banks))


async def quote(http: httpx.AsyncClient, i: int, nonce: bytes, spec: str, offset: int = 0) -> httpx.Response:
    # the query the attestor's HostAgentClient sends ('+' between banks is percent-encoded by httpx)
    return await http.get(f"/hosts/{i}/v1/quote", params={"nonce": nonce.hex(), "pcrs": spec, "ima_offset": offset})


async def attest(
    http: httpx.AsyncClient, i: int, policy: TrustPolicy, previous: VerifierState | None = None
) -> AttestationResult:
    """One round as the attestor runs it: identity over HTTP (pinned), quote over HTTP, the bare verifier."""
    identity = pinned_ak_record(f"host:{i}", (await http.get(f"/hosts/{i}/v1/identity")).json())
    nonce = bytes(range(i, i + 20))
    selection = selection_of(policy)
    spec = "+".join(f"{s.bank.name}:{','.join(map(str, s.pcrs))}" for s in selection)
    response = await quote(http, i, nonce, spec, previous.ima_offset if previous else 0)
    assert response.status_code == 200, response.text
    evidence = parse_evidence_document(response.json()).evidence
    claim = IdentityClaim(parse_public(identity.ak_public), identity.method, identity.ak_qualified_name)
    now = datetime.now(timezone.utc)
    return evaluate(
        evidence, claim, Request(nonce, selection), entity=f"host:{i}", now=now, policy=policy, previous=previous,
        collected_at=now,
    )  # fmt: skip


async def test_quote_over_http_verifies_at_loa4(http: httpx.AsyncClient, policy: TrustPolicy) -> None:
    result = await attest(http, 0, policy)
    assert (result.loa, result.failures) == (4, [])
    assert result.claims["identity"]["method"] == "pinned_ak"
    assert result.claims["quote"]["signer_checked"] is True
    assert result.state is not None and result.state.ima_offset == IMA_ENTRIES

    # the next round reads only the IMA entries after the verified offset, and still reaches LoA 4
    again = await attest(http, 0, policy, previous=result.state)
    assert (again.loa, again.failures) == (4, [])


async def test_identity_matches_the_fleet_record(http: httpx.AsyncClient, fleet: SimulatedFleet) -> None:
    served = pinned_ak_record("host:sim-0001", (await http.get("/hosts/1/v1/identity")).json())
    recorded = fleet.identity_record(1)
    assert recorded.entity == "host:sim-0001" and recorded.method == "pinned_ak"
    assert served.model_dump(exclude={"enrolled_at"}) == recorded.model_dump(exclude={"enrolled_at"})
    assert recorded.ak_qualified_name == fleet.host(1).tpm.ak_qualified_name
    assert (await http.get("/fleet/policy")).json()["id"] == fleet.reference_policy()["id"]


async def test_ima_offset_slices_the_log(http: httpx.AsyncClient) -> None:
    nonce = bytes(16)

    async def body(offset: int) -> dict[str, Any]:
        response = await quote(http, 0, nonce, "sha256:0-10", offset)
        assert response.status_code == 200, response.text
        return dict(response.json())

    full, tail, end = await body(0), await body(5), await body(IMA_ENTRIES)
    lines = full["ima_log"].splitlines(keepends=True)
    assert len(lines) == IMA_ENTRIES and full["ima_next_offset"] == IMA_ENTRIES
    assert (tail["ima_log"], tail["ima_offset"], tail["ima_next_offset"]) == ("".join(lines[5:]), 5, IMA_ENTRIES)
    assert (end["ima_log"], end["ima_next_offset"]) == ("", IMA_ENTRIES)
    assert set(full) >= {"attest", "signature", "pcrs", "uefi_log", "boot_time", "nonce", "ak_public"}

    beyond = await quote(http, 0, nonce, "sha256:0-10", IMA_ENTRIES + 1)
    assert beyond.status_code == 409
    assert beyond.json()["ima_entries"] == IMA_ENTRIES and "beyond" in beyond.json()["detail"]


async def test_unknown_file_drops_the_host_to_loa3(
    http: httpx.AsyncClient, fleet: SimulatedFleet, policy: TrustPolicy
) -> None:
    first = await attest(http, 1, policy)
    assert first.loa == 4
    fleet.execute(1, "/usr/local/bin/cryptominer", b"not in the golden image")

    result = await attest(http, 1, policy, previous=first.state)
    assert result.loa == 3
    assert result.failures and {f.level for f in result.failures} == {4}
    assert any("cryptominer" in f.detail for f in result.failures)
    assert (await attest(http, 0, policy)).loa == 4  # the other host is untouched


async def test_reboot_starts_a_new_boot(http: httpx.AsyncClient, fleet: SimulatedFleet, policy: TrustPolicy) -> None:
    before = await attest(http, 0, policy)
    assert before.state is not None
    fleet.reboot(0)
    # the attestor re-reads a rebooted host's IMA log from 0; the counters still show the reset
    after = await attest(http, 0, policy, previous=before.state.model_copy(update={"ima_offset": 0, "ima_pcr10": {}}))
    assert after.claims["rebooted"] is True
    assert (after.loa, after.failures) == (4, [])


@pytest.mark.parametrize(
    ("path", "params", "status"),
    [
        ("/hosts/7/v1/quote", {"nonce": "00" * 16, "pcrs": "sha256:0"}, 404),
        ("/hosts/7/v1/identity", {}, 404),
        ("/hosts/0/v1/quote", {"nonce": "zz", "pcrs": "sha256:0"}, 400),
        ("/hosts/0/v1/quote", {"nonce": "00" * 4, "pcrs": "sha256:0"}, 400),
        ("/hosts/0/v1/quote", {"nonce": "00" * 16, "pcrs": "sha1:0"}, 400),
        ("/hosts/0/v1/quote", {"nonce": "00" * 16, "pcrs": "sha256:0", "ima_offset": -1}, 400),
    ],
)
async def test_bad_requests_are_refused_with_a_detail(
    http: httpx.AsyncClient, path: str, params: dict[str, Any], status: int
) -> None:
    response = await http.get(path, params=params)
    assert response.status_code == status
    assert "detail" in response.json()
