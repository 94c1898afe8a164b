"""The charm's status and action paths through ops.testing.

Substitutions, in these unit tests only: the VNF's TPM is a :class:`FakeTpm` (put in place of
``TrustProxyCharm.tpm_factory``; the SSH connection is opened lazily, so none is made), and in strict mode
the Trust Manager is a real HTTP server on loopback answering scripted documents (tests/charm/helpers.py).
The SSH failure tests use the real SSH client against a port nobody listens on. test_vnf.py runs every
action against a real sshd and swtpm.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from typing import Any

import ops
import pytest
from charm import TrustProxyCharm
from ops import testing
from vnf_tpm import TpmCommandError

from osm_trustmgr.sandbox.servers import free_port
from tests.charm.helpers import TrustManagerStub, failure, run_action

CONFIG = {"ssh-hostname": "127.0.0.1", "ssh-username": "vnf", "ssh-password": "s3cret"}
IDENTITY = {"ek_public": "RUs=", "ek_certificate": "Q0VSVA==", "ak_public": "QUs=", "ak_name": "000b" + "11" * 32}
NONCE = "a1" * 20
LenientContext = Callable[[str, dict[str, Any]], testing.Context[TrustProxyCharm]]
OSM_PARAMS = "{ns_id: ns-1, vnf_id: vnfr-7, member_vnf_index: '1'}"


class FakeTpm:
    """Canned TPM answers in the agent's format; records what the charm asked for."""

    def __init__(self, fail: Exception | None = None, ek_certificate: str | None = "Q0VSVA==") -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.fail = fail
        self.ek_certificate = ek_certificate

    def __call__(self, runner: object) -> FakeTpm:  # stands in for the factory too
        return self

    def _check(self, *call: Any) -> None:
        self.calls.append(call)
        if self.fail:
            raise self.fail

    def identity(self) -> dict[str, Any]:
        self._check("identity")
        return {**IDENTITY, "ek_certificate": self.ek_certificate}

    def activate(self, credential: bytes, secret: bytes) -> bytes:
        self._check("activate", credential, secret)
        return b"recovered:" + secret

    def quote(self, nonce: bytes, selection: dict[str, list[int]], ima_offset: int) -> dict[str, Any]:
        self._check("quote", nonce, selection, ima_offset)
        return {
            "attest": "QVRU", "signature": "U0lH", "pcrs": {"sha256": {"0": "00" * 32}}, "uefi_log": None,
            "ima_log": "10 aa ima-ng sha256:bb /bin/x\n", "ima_offset": ima_offset, "ima_next_offset": ima_offset + 1,
            "boot_time": 1700000000, "nonce": nonce.hex(), "ak_public": "QUs=",
        }  # fmt: skip


@pytest.fixture
def tpm(monkeypatch: pytest.MonkeyPatch) -> FakeTpm:
    fake = FakeTpm()
    monkeypatch.setattr(TrustProxyCharm, "tpm_factory", fake)
    return fake


# -- status ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({}, "missing config: ssh-hostname, ssh-username, ssh-password or ssh-private-key"),
        ({"ssh-hostname": "10.0.0.5"}, "missing config: ssh-username, ssh-password or ssh-private-key"),
        ({"ssh-hostname": "10.0.0.5", "ssh-username": "ubuntu"}, "missing config: ssh-password or ssh-private-key"),
        ({"ssh-username": "ubuntu", "ssh-password": "x"}, "missing config: ssh-hostname"),
        ({**CONFIG, "ssh-hostname": "  "}, "missing config: ssh-hostname"),
        ({**CONFIG, "ssh-port": 0}, "ssh-port 0 is not a TCP port"),
        ({**CONFIG, "ssh-private-key": "-----BEGIN OPENSSH PRIVATE KEY-----\nnope\n"}, "not an Ed25519, ECDSA or RSA"),
    ],
)
def test_blocked_until_configured(ctx: testing.Context[TrustProxyCharm], config: dict[str, Any], message: str) -> None:
    out = ctx.run(ctx.on.config_changed(), testing.State(config=config))
    assert isinstance(out.unit_status, ops.BlockedStatus)
    assert message in out.unit_status.message


@pytest.mark.parametrize("event", ["install", "start", "config_changed"])
def test_active_once_configured(ctx: testing.Context[TrustProxyCharm], event: str) -> None:
    out = ctx.run(getattr(ctx.on, event)(), testing.State(config=CONFIG))
    assert out.unit_status == ops.ActiveStatus("ready")


def test_private_key_alone_is_enough(ctx: testing.Context[TrustProxyCharm], tmp_path: Any) -> None:
    from osm_trustmgr.sandbox.sshd import generate_key

    generate_key(tmp_path / "key")
    config = {"ssh-hostname": "h", "ssh-username": "u", "ssh-private-key": (tmp_path / "key").read_text()}
    out = ctx.run(ctx.on.config_changed(), testing.State(config=config))
    assert out.unit_status == ops.ActiveStatus("ready")


def _pins(state: testing.State) -> dict[str, str]:
    stored = next(s for s in state.stored_states if s.owner_path == "TrustProxyCharm")
    return dict(stored.content["host_keys"])


def test_host_key_pins_are_dropped_when_the_ssh_config_changes(ctx: testing.Context[TrustProxyCharm]) -> None:
    first = ctx.run(ctx.on.config_changed(), testing.State(config=CONFIG))
    stored = next(s for s in first.stored_states if s.owner_path == "TrustProxyCharm")
    pinned = testing.StoredState(owner_path="TrustProxyCharm", content={**stored.content, "host_keys": {"h:22": "k"}})
    state = testing.State(config=CONFIG, stored_states={pinned})
    assert _pins(ctx.run(ctx.on.config_changed(), state)) == {"h:22": "k"}  # same config: the pin stays
    moved = testing.State(config={**CONFIG, "ssh-hostname": "10.0.0.9"}, stored_states={pinned})
    assert _pins(ctx.run(ctx.on.config_changed(), moved)) == {}


# -- parameters and configuration are checked before anything connects ------------------------------


@pytest.mark.parametrize(
    ("action", "params", "message"),
    [
        ("verify-ssh-credentials", {"bogus": "1"}, "unknown parameter(s) for verify-ssh-credentials: bogus"),
        ("identity", {"bogus": "1"}, "unknown parameter(s) for identity: bogus"),
        ("activate", {"credential": "AAAA"}, "secret is required"),
        ("activate", {"credential": "AAAA", "secret": "%%%"}, "secret is not valid base64"),
        ("activate", {"credential": "AAAA", "secret": "AAAA", "bogus": "1"}, "unknown parameter(s) for activate"),
        ("attest", {}, "nonce is required"),
        ("attest", {"nonce": "xyz1"}, "nonce must be a hex string"),
        ("attest", {"nonce": "ab" * 65}, "nonce is 65 bytes; at most 64"),
        ("attest", {"nonce": NONCE, "pcrs": "sha256:0-24"}, "pcrs: '0-24' in sha256 is outside 0-23"),
        ("attest", {"nonce": NONCE, "pcrs": "sm3:0"}, "with a bank among sha1, sha256, sha384, sha512"),
        ("attest", {"nonce": NONCE, "ima-offset": "-3"}, "ima-offset must be a non-negative integer"),
        ("attest", {"nonce": NONCE, "ima-offset": 2.5}, "ima-offset must be a non-negative integer"),
        ("attest", {"nonce": NONCE, "bogus": 1}, "unknown parameter(s) for attest: bogus"),
        ("attest", {"nonce": NONCE, "trustmgr-url": "http://tm"}, "nonce must not be given with trustmgr-url"),
        ("attest", {"trustmgr-url": "http://tm"}, "osm-params is required in strict mode"),
        ("attest", {"trustmgr-url": "tm:9998", "osm-params": OSM_PARAMS}, "trustmgr-url must be an http(s) URL"),
        ("attest", {"trustmgr-url": "http://tm", "osm-params": "ns_id: x"}, "osm-params has no vnf_id"),
        ("attest", {"nonce": NONCE, "osm-params": OSM_PARAMS}, "osm-params is only used with trustmgr-url"),
    ],
)
def test_bad_params_fail_clearly(
    lenient_ctx: LenientContext, tpm: FakeTpm, action: str, params: dict[str, Any], message: str
) -> None:
    assert message in failure(lenient_ctx(action, params), action, CONFIG, params)
    assert tpm.calls == []


def test_lenient_offset_string_reaches_the_tpm(lenient_ctx: LenientContext, tpm: FakeTpm) -> None:
    params = {"nonce": NONCE, "ima-offset": "4"}
    results, _ = run_action(lenient_ctx("attest", params), "attest", CONFIG, params)
    assert tpm.calls == [("quote", bytes.fromhex(NONCE), {"sha256": list(range(11))}, 4)]
    assert results["ima-offset"] == "4"


@pytest.mark.parametrize(
    ("action", "params"),
    [("verify-ssh-credentials", {}), ("identity", {}), ("activate", {"credential": "AAAA", "secret": "AAAA"}),
     ("attest", {"nonce": NONCE})],
)  # fmt: skip
def test_actions_fail_when_not_configured(
    ctx: testing.Context[TrustProxyCharm], tpm: FakeTpm, action: str, params: dict[str, Any]
) -> None:
    message = failure(ctx, action, {"ssh-hostname": "h"}, params)
    assert message == "charm not configured: missing config: ssh-username, ssh-password or ssh-private-key"


# -- results ----------------------------------------------------------------------------------------


def test_identity_results(ctx: testing.Context[TrustProxyCharm], tpm: FakeTpm) -> None:
    results, _ = run_action(ctx, "identity", CONFIG)
    assert results == {"ek-public": "RUs=", "ek-certificate": "Q0VSVA==", "ak-public": "QUs=",
                       "ak-name": IDENTITY["ak_name"]}  # fmt: skip


def test_identity_without_ek_certificate_omits_the_key(
    ctx: testing.Context[TrustProxyCharm], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(TrustProxyCharm, "tpm_factory", FakeTpm(ek_certificate=None))
    results, _ = run_action(ctx, "identity", CONFIG)
    assert "ek-certificate" not in results and results["ek-public"] == "RUs="


def test_activate_returns_the_secret(ctx: testing.Context[TrustProxyCharm], tpm: FakeTpm) -> None:
    results, _ = run_action(ctx, "activate", CONFIG, {"credential": "AAEC", "secret": "AwQF"})
    assert tpm.calls == [("activate", b"\x00\x01\x02", b"\x03\x04\x05")]
    assert base64.b64decode(results["secret"]) == b"recovered:\x03\x04\x05"


def test_attest_results(ctx: testing.Context[TrustProxyCharm], tpm: FakeTpm) -> None:
    params = {"nonce": NONCE, "pcrs": "sha1:0+sha256:0-2,10", "ima-offset": 3}
    results, _ = run_action(ctx, "attest", CONFIG, params)
    assert tpm.calls == [("quote", bytes.fromhex(NONCE), {"sha1": [0], "sha256": [0, 1, 2, 10]}, 3)]
    # No uefi-log: the fake VNF has none.
    expected = "attest signature pcrs ima-log ima-offset ima-next-offset boot-time nonce ak-public"
    assert set(results) == set(expected.split())
    assert json.loads(results["pcrs"]) == {"sha256": {"0": "00" * 32}}
    assert (results["ima-offset"], results["ima-next-offset"], results["boot-time"]) == ("3", "4", "1700000000")
    assert all(isinstance(v, str) for v in results.values())


@pytest.mark.parametrize(
    ("error", "message"),
    [
        (TpmCommandError("tpm2_quote failed: Esys_Quote(0x1c4)"), "tpm2_quote failed: Esys_Quote(0x1c4)"),
        (RuntimeError("boom"), "unexpected error: RuntimeError: boom"),
    ],
)
def test_tpm_failures_fail_the_action(
    ctx: testing.Context[TrustProxyCharm], monkeypatch: pytest.MonkeyPatch, error: Exception, message: str
) -> None:
    monkeypatch.setattr(TrustProxyCharm, "tpm_factory", FakeTpm(fail=error))
    for action, params in (("identity", {}), ("attest", {"nonce": NONCE})):
        assert failure(ctx, action, CONFIG, params) == message


@pytest.mark.parametrize("action", ["verify-ssh-credentials", "identity", "attest"])
def test_ssh_failure_fails_the_action(ctx: testing.Context[TrustProxyCharm], action: str) -> None:
    port = free_port()  # nothing listens there
    params = {"nonce": NONCE} if action == "attest" else {}
    message = failure(ctx, action, {**CONFIG, "ssh-port": port}, params)
    assert message.startswith(f"cannot connect to 127.0.0.1:{port} over SSH")


# -- strict mode ----------------------------------------------------------------------------------


STRICT = {"trustmgr-url": "", "osm-params": OSM_PARAMS, "pcrs": "sha256:0-10", "ima-offset": 0}
CHALLENGE = {"nonce": "b2" * 16, "pcrs": "sha256:0-7,10", "ima_offset": 5, "activation": None, "expires_in": 30}
ACCEPT = {"decision": "accept", "loa": 4, "required_loa": 3, "reasons": [], "report_id": "r-1"}


def _scripted(challenge: tuple[int, Any], evidence: tuple[int, Any]) -> Any:
    return lambda path, body: challenge if path == "/challenges" else evidence


@pytest.fixture
def stub() -> Iterator[TrustManagerStub]:
    with TrustManagerStub(_scripted((201, CHALLENGE), (200, ACCEPT))) as server:
        yield server


def _strict(stub: TrustManagerStub) -> dict[str, Any]:
    return {**STRICT, "trustmgr-url": stub.url}


def test_strict_accept(ctx: testing.Context[TrustProxyCharm], tpm: FakeTpm, stub: TrustManagerStub) -> None:
    results, _ = run_action(ctx, "attest", CONFIG, _strict(stub))
    assert results == {"decision": "accept", "loa": "4", "required-loa": "3", "report-id": "r-1"}
    assert [path for path, _ in stub.requests] == ["/challenges", "/evidence"]
    challenge, evidence = (body for _, body in stub.requests)
    assert challenge == {"vnfr_id": "vnfr-7", "identity": IDENTITY}
    # The challenge's nonce, PCRs and offset win over the action's defaults; no activation was asked for.
    quoted = {"sha256": [0, 1, 2, 3, 4, 5, 6, 7, 10]}
    assert tpm.calls == [("identity",), ("quote", bytes.fromhex("b2" * 16), quoted, 5)]
    assert (evidence["vnfr_id"], evidence["nonce"], evidence["activated_secret"]) == ("vnfr-7", "b2" * 16, None)
    fields = "attest signature pcrs uefi_log ima_log ima_offset ima_next_offset boot_time nonce ak_public"
    assert set(evidence["evidence"]) == set(fields.split())
    assert ctx.action_logs and "vnfr-7" in ctx.action_logs[0]


def test_strict_activation(ctx: testing.Context[TrustProxyCharm], tpm: FakeTpm, stub: TrustManagerStub) -> None:
    activation = {"credential": base64.b64encode(b"cred").decode(), "secret": base64.b64encode(b"sec").decode()}
    stub.handler = _scripted((201, {**CHALLENGE, "activation": activation}), (200, ACCEPT))
    run_action(ctx, "attest", CONFIG, _strict(stub))
    assert [c[0] for c in tpm.calls] == ["identity", "activate", "quote"]
    assert tpm.calls[1][1:] == (b"cred", b"sec")
    assert base64.b64decode(stub.requests[1][1]["activated_secret"]) == b"recovered:sec"


def test_strict_reject(ctx: testing.Context[TrustProxyCharm], tpm: FakeTpm, stub: TrustManagerStub) -> None:
    reasons = ["ima.unknown_digest: /usr/local/bin/miner", "policy.max_age: too old"]
    reject = {"decision": "reject", "loa": 3, "required_loa": 4, "reasons": reasons, "report_id": "r-2"}
    stub.handler = _scripted((201, CHALLENGE), (200, reject))
    message = failure(ctx, "attest", CONFIG, _strict(stub))
    assert message == "VNF not trusted: LoA 3 < required 4: " + "; ".join(reasons)


@pytest.mark.parametrize(
    ("challenge", "evidence", "message"),
    [
        ((404, {"detail": "no VNF record vnfr-7"}), None,
         "the Trust Manager refused the challenge request (HTTP 404): no VNF record vnfr-7"),
        ((422, {"detail": [{"loc": ["body", "identity"], "msg": "field required"}]}), None,
         'refused the challenge request (HTTP 422): [{"loc": ["body", "identity"], "msg": "field required"}]'),
        ((201, CHALLENGE), (409, {"detail": "nonce expired"}),
         "the Trust Manager refused the evidence (HTTP 409): nonce expired"),
        ((201, CHALLENGE), (500, b"Internal Server Error"), "refused the evidence (HTTP 500): Internal Server Error"),
        ((201, {**CHALLENGE, "nonce": "not hex"}), None, "malformed challenge: nonce must be a hex string"),
        ((201, {**CHALLENGE, "pcrs": "sha256:99"}), None, "malformed challenge: pcrs"),
        ((201, CHALLENGE), (200, {"decision": "maybe"}), "the Trust Manager's verdict is malformed"),
        ((200, b"<html>proxy</html>"), None, "answered the challenge request with no JSON object: <html>proxy</html>"),
    ],
)  # fmt: skip
def test_strict_errors(
    ctx: testing.Context[TrustProxyCharm], tpm: FakeTpm, stub: TrustManagerStub,
    challenge: tuple[int, Any], evidence: tuple[int, Any] | None, message: str,
) -> None:  # fmt: skip
    stub.handler = _scripted(challenge, evidence or (200, ACCEPT))
    assert message in failure(ctx, "attest", CONFIG, _strict(stub))
    if evidence is None:
        assert [c[0] for c in tpm.calls] == ["identity"]  # nothing quoted for a refused or malformed challenge


def test_strict_unreachable_trust_manager(ctx: testing.Context[TrustProxyCharm], tpm: FakeTpm) -> None:
    url = f"http://127.0.0.1:{free_port()}/osm/trust/v1"
    message = failure(ctx, "attest", CONFIG, {**STRICT, "trustmgr-url": url})
    assert message.startswith(f"cannot reach the Trust Manager at {url}/challenges")
