"""Host attestation end to end: real agents over HTTPS (swtpm), SecantusDB, Tansu; DESIGN.md §5."""

from __future__ import annotations

import logging

import pytest

from osm_trustmgr.failures import Failure
from osm_trustmgr.hosts import entity_of
from tests.hosts.conftest import MakeHost, TrustManager


async def test_honest_host_reaches_runtime_and_is_published(trustmgr: TrustManager, make_host: MakeHost) -> None:
    host = make_host()
    await trustmgr.add(host)
    outcome = await trustmgr.attestor.attest(host.id)
    assert outcome.result is not None and outcome.result.failures == []
    assert (outcome.host.state, outcome.host.loa) == ("attested", 4)
    identity = await trustmgr.store.get_identity(entity_of(host.id))
    assert identity is not None and identity.method == "ek_certificate"
    messages = await trustmgr.trust_messages(host.id, 1)
    assert len(messages) == 1
    assert messages[0]["previous_loa"] == 0 and messages[0]["loa"] == 4 and messages[0]["state"] == "attested"
    assert messages[0]["report_id"] == outcome.result.nonce and messages[0]["vim_account_id"] == "vim-a"
    # a second round with nothing changed: new report, no new transition
    again = await trustmgr.attestor.attest(host.id)
    assert again.host.loa == 4
    assert again.result is not None and again.result.claims["ima"]["entries_verified"] == 0
    assert len(await trustmgr.store.reports_for(entity_of(host.id))) == 2
    assert len(await trustmgr.trust_messages(host.id, 2, timeout=2)) == 1


async def test_unknown_file_drops_to_os_level_and_names_it(trustmgr: TrustManager, make_host: MakeHost) -> None:
    host = make_host()
    await trustmgr.add(host)
    assert (await trustmgr.attestor.attest(host.id)).host.loa == 4
    host.sim.execute("/usr/local/bin/xmrig", b"a miner")
    outcome = await trustmgr.attestor.attest(host.id)
    assert outcome.host.loa == 3
    assert outcome.result is not None and outcome.result.codes() == [Failure.IMA_UNKNOWN_DIGEST.value]
    assert "/usr/local/bin/xmrig" in outcome.result.failures[0].detail
    assert outcome.host.reason is not None and "/usr/local/bin/xmrig" in outcome.host.reason
    messages = await trustmgr.trust_messages(host.id, 2)
    assert [(m["previous_loa"], m["loa"]) for m in messages] == [(0, 4), (4, 3)]
    assert "xmrig" in messages[1]["reasons"][0]


async def test_secure_boot_off(trustmgr: TrustManager, make_host: MakeHost) -> None:
    host = make_host(secure_boot=False)
    await trustmgr.add(host)
    outcome = await trustmgr.attestor.attest(host.id)
    assert outcome.host.loa == 1
    assert outcome.result is not None and outcome.result.codes() == [Failure.SECUREBOOT_DISABLED.value]


@pytest.mark.parametrize("grows", ["before_reboot", "after_reboot"])
async def test_reboot_stays_trusted_and_restarts_ima_offset(
    trustmgr: TrustManager, make_host: MakeHost, grows: str
) -> None:
    """Either the new boot's log is shorter than the verified offset (the agent answers 409) or longer (the
    quote's resetCount tells): both times the log is read again from its first entry."""
    host = make_host()
    await trustmgr.add(host)
    first = await trustmgr.attestor.attest(host.id)
    assert first.host.verifier_state is not None
    if grows == "before_reboot":
        host.sim.execute("/tmp/scratch", b"excluded")
        host.sim.execute("/tmp/scratch2", b"excluded")
        await trustmgr.attestor.attest(host.id)
    host.sim.reboot()
    if grows == "after_reboot":
        host.sim.execute("/tmp/scratch", b"excluded")
        host.sim.execute("/tmp/scratch2", b"excluded")
    after = await trustmgr.attestor.attest(host.id)
    assert after.result is not None and after.result.claims["rebooted"] is True, after.result.failures
    assert after.host.loa == 4, after.result.failures
    state = after.host.verifier_state
    assert state is not None and state.reset_count == first.host.verifier_state.reset_count + 1
    assert state.ima_offset == len(host.sim.ima.entries)  # counted from the new boot's first entry


async def test_swapped_ak_is_rejected_and_alarmed(
    trustmgr: TrustManager, make_host: MakeHost, caplog: pytest.LogCaptureFixture
) -> None:
    host = make_host()
    await trustmgr.add(host)
    assert (await trustmgr.attestor.attest(host.id)).host.loa == 4
    host.agent.stop()
    host.ak_file.unlink()  # the agent comes back with a brand-new AK
    host.agent.start(same_port=True)
    with caplog.at_level(logging.ERROR, logger="osm_trustmgr.hosts"):
        outcome = await trustmgr.attestor.attest(host.id)
    assert outcome.host.state == "rejected" and outcome.host.loa == 0
    assert outcome.result is not None
    assert Failure.IDENTITY_CHANGED.value in outcome.result.codes()
    assert Failure.SIGNATURE_INVALID.value in outcome.result.codes()
    assert any("ALARM" in r.message and host.id in r.message for r in caplog.records)
    messages = await trustmgr.trust_messages(host.id, 2)
    assert messages[-1]["state"] == "rejected"
    # rejected hosts are not attested again until an administrator re-enrolls them
    reports = len(await trustmgr.store.reports_for(entity_of(host.id)))
    assert (await trustmgr.attestor.attest(host.id)).result is None
    assert len(await trustmgr.store.reports_for(entity_of(host.id))) == reports
    await trustmgr.attestor.reenroll(host.id)
    assert (await trustmgr.attestor.attest(host.id)).host.loa == 4


async def test_replayed_quote_is_rejected(trustmgr: TrustManager, make_host: MakeHost) -> None:
    """A compromised agent answers every challenge with a quote it recorded earlier."""
    from osm_trustmgr.evidence.host_agent import HostAgentClient

    host = make_host()
    await trustmgr.add(host)
    recorded: list[dict[str, object]] = []

    class ReplayingAgent(HostAgentClient):
        async def quote(self, nonce, pcrs, ima_offset):  # type: ignore[no-untyped-def]
            if not recorded:
                recorded.append(await super().quote(nonce, pcrs, ima_offset))
            return dict(recorded[0])

    trustmgr.attestor.agents.factory = ReplayingAgent
    assert (await trustmgr.attestor.attest(host.id)).host.loa == 4
    replayed = await trustmgr.attestor.attest(host.id)
    assert replayed.host.loa == 0
    assert replayed.result is not None and replayed.result.codes() == [Failure.NONCE_MISMATCH.value]


async def test_unreachable_agent_then_back(trustmgr: TrustManager, make_host: MakeHost) -> None:
    host = make_host()
    await trustmgr.add(host)
    assert (await trustmgr.attestor.attest(host.id)).host.loa == 4
    host.agent.stop()
    down = await trustmgr.attestor.attest(host.id)
    assert (down.host.state, down.host.loa, down.host.unreachable_count) == ("unreachable", 0, 1)
    assert down.result is not None and down.result.codes() == [Failure.AGENT_UNREACHABLE.value]
    assert (await trustmgr.attestor.attest(host.id)).host.unreachable_count == 2
    host.agent.start(same_port=True)
    back = await trustmgr.attestor.attest(host.id)
    assert (back.host.state, back.host.loa, back.host.unreachable_count) == ("attested", 4, 0)
    states = [m["state"] for m in await trustmgr.trust_messages(host.id, 3)]
    assert states == ["attested", "unreachable", "attested"]


async def test_untrusted_ek_ca_is_refused(trustmgr: TrustManager, make_host: MakeHost, untrusted_ca) -> None:  # type: ignore[no-untyped-def]
    from osm_trustmgr.hosts import HostSettings

    host = make_host()
    await trustmgr.add(host)
    trustmgr.attestor.settings = HostSettings(ek_ca_bundle=untrusted_ca.certificates)
    outcome = await trustmgr.attestor.attest(host.id)
    assert outcome.host.loa == 0
    assert outcome.result is not None and outcome.result.codes() == [Failure.EK_CERT_UNTRUSTED.value]
    assert await trustmgr.store.get_identity(entity_of(host.id)) is None


async def test_report_history_and_state_shapes(trustmgr: TrustManager, make_host: MakeHost) -> None:
    host = make_host()
    await trustmgr.add(host)
    await trustmgr.attestor.attest(host.id)
    host.sim.execute("/opt/unknown", b"x")
    await trustmgr.attestor.attest(host.id)
    reports = await trustmgr.store.reports_for(entity_of(host.id))
    assert [r["loa"] for r in reports] == [3, 4]  # newest first
    newest = reports[0]
    assert {"_id", "entity", "kind", "loa", "loa_name", "claims", "failures", "evidence_digest", "nonce",
            "policy_id", "time", "state", "expire_at", "_admin"} <= set(newest)  # fmt: skip
    assert newest["_id"] == newest["nonce"] and newest["kind"] == "host"
    assert newest["failures"][0] == {"code": "ima.unknown_digest", "detail": newest["failures"][0]["detail"],
                                     "level": 4}  # fmt: skip
    doc = await trustmgr.store.db["trust_hosts"].find_one({"_id": host.id})
    assert doc is not None
    assert doc["state"] == "attested" and doc["loa"] == 3 and doc["last_report"] == newest["_id"]
    assert doc["vim_account_id"] == "vim-a" and doc["verifier_state"]["ima_offset"] == len(host.sim.ima.entries)
