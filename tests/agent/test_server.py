"""``osm-trust-agent serve`` as a verifier meets it: a real process, real HTTPS, a swtpm booted like a host."""

from __future__ import annotations

import base64
import json
import os
import subprocess
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest

from osm_trustmgr.agent.tpm import TpmDevice
from osm_trustmgr.sandbox.servers import HOST, free_port
from osm_trustmgr.sandbox.swtpm import LocalCa, Swtpm
from osm_trustmgr.sandbox.tls import TestCa
from osm_trustmgr.tpm.credential import make_credential
from osm_trustmgr.tpm.ekcert import verify_ek_certificate
from osm_trustmgr.tpm.eventlog import parse_eventlog, replay
from osm_trustmgr.tpm.pcr import parse_selection_spec
from osm_trustmgr.tpm.public import TpmPublic, ak_qualified_name, parse_public
from osm_trustmgr.tpm.quote import VerifiedQuote, verify_quote

from .conftest import AGENT, AgentProcess, HostLogs, Pair, StartAgent

SPEC = "sha256:0-7,10+sha1:0,10"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def unb64(text: str) -> bytes:
    return base64.b64decode(text)


def keys(identity: dict[str, Any]) -> tuple[TpmPublic, TpmPublic]:
    return parse_public(unb64(identity["ek_public"])), parse_public(unb64(identity["ak_public"]))


def verify(doc: dict[str, Any], identity: dict[str, Any], nonce: bytes, spec: str = SPEC) -> VerifiedQuote:
    """What the Trust Manager checks: signature by the AK, qualified signer through the EK, nonce, PCRs."""
    ek, ak = keys(identity)
    pcrs = {bank: {int(i): bytes.fromhex(v) for i, v in values.items()} for bank, values in doc["pcrs"].items()}
    return verify_quote(
        unb64(doc["attest"]), unb64(doc["signature"]), ak, nonce, pcrs,
        expected_signer=ak_qualified_name(ek, ak), expected_selection=parse_selection_spec(spec),
    )  # fmt: skip


def quote(client: httpx.Client, nonce: bytes, spec: str = SPEC, **params: Any) -> httpx.Response:
    return client.get("/v1/quote", params={"nonce": nonce.hex(), "pcrs": spec, **params})


def activation(ek: TpmPublic, name: bytes, secret: bytes) -> dict[str, str]:
    credential, encrypted = make_credential(ek, name, secret)
    return {"credential": b64(credential), "secret": b64(encrypted)}


def test_identity_carries_the_ek_certificate_and_the_ak_survives_a_restart(
    start_agent: StartAgent, swtpm_ca: LocalCa
) -> None:
    first = start_agent()
    with first.client() as client:
        identity = client.get("/v1/identity").raise_for_status().json()
    ek, ak = keys(identity)
    cert = verify_ek_certificate(
        unb64(identity["ek_certificate"]), swtpm_ca.certificates, datetime.now(timezone.utc), ek
    )
    assert cert.model == "swtpm"
    assert ak.is_restricted_signing and ak.name == bytes.fromhex(identity["ak_name"])
    first.stop()

    with start_agent().client() as client:  # same AK file: the blobs are reloaded, not a new AK created
        assert client.get("/v1/identity").raise_for_status().json() == identity


def test_activation_releases_the_secret_only_to_this_ek_and_ak(start_agent: StartAgent, swtpm: Swtpm) -> None:
    with TpmDevice(swtpm.tcti) as tpm:  # before the agent: swtpm serves one connection at a time
        other_ak = tpm.create_ak("ecc")
        other_ek = parse_public(tpm.create_ek("ecc").public)
    agent = start_agent()
    secret = os.urandom(32)
    with agent.client() as client:
        identity = client.get("/v1/identity").json()
        ek, _ = keys(identity)
        ak_name = bytes.fromhex(identity["ak_name"])
        answer = client.post("/v1/activate", json=activation(ek, ak_name, secret))
        assert answer.status_code == 200, answer.text
        assert unb64(answer.json()["secret"]) == secret

        for body in (activation(ek, other_ak.name, secret), activation(other_ek, ak_name, secret)):
            refused = client.post("/v1/activate", json=body)
            assert refused.status_code == 403, refused.text
            assert refused.json()["detail"].startswith("activation failed")


def test_malformed_activation_requests_are_400(agent: AgentProcess) -> None:
    with agent.client() as client:
        ek, _ = keys(client.get("/v1/identity").json())
        good = activation(ek, b"\x00\x0b" + bytes(32), os.urandom(16))
        cases: list[tuple[Any, int, str]] = [
            ({**good, "credential": "not base64!"}, 400, "credential is not valid base64"),
            ({**good, "secret": ""}, 400, "secret is empty"),
            ({**good, "credential": b64(b"\x00\x30ab")}, 400, "malformed TPM2B_ID_OBJECT"),
            ({**good, "credential": b64(unb64(good["credential"]) + b"x")}, 400, "trailing bytes"),
            ({"credential": good["credential"]}, 400, "secret: Field required"),
            ({**good, "extra": 1}, 400, "extra: Extra inputs are not permitted"),
            ({**good, "secret": "A" * 5000}, 400, "secret: String should have at most"),
            ("[1, 2", 400, "JSON decode error"),
            ("x" * 20_000, 413, "request body larger than"),
        ]
        for body, status, detail in cases:
            kwargs: dict[str, Any] = {"json": body} if isinstance(body, dict) else {"content": body}
            answer = client.post("/v1/activate", **kwargs, headers={"content-type": "application/json"})
            assert (answer.status_code, detail in answer.json()["detail"]) == (status, True), (body, answer.text)


def test_quote_verifies_and_carries_the_host_logs(agent: AgentProcess, host_logs: HostLogs) -> None:
    nonce = os.urandom(32)
    with agent.client() as client:
        identity = client.get("/v1/identity").json()
        doc = quote(client, nonce).raise_for_status().json()
        # An unencoded '+' arrives as a space; the agent reads it as the separator.
        spaced = client.get(f"/v1/quote?nonce={nonce.hex()}&pcrs=sha256:0,1+sha1:0").raise_for_status().json()
    verified = verify(doc, identity, nonce)
    assert verified.signer_checked
    assert doc["nonce"] == nonce.hex() and doc["ak_public"] == identity["ak_public"]
    uefi = unb64(doc["uefi_log"])
    assert uefi == host_logs.uefi.read_bytes()
    # The log served is the one measured into this TPM: its replay gives the quoted PCRs.
    assert {i: v for i, v in replay(parse_eventlog(uefi), ["sha256"])["sha256"].items() if i < 8} == {
        i: v for i, v in verified.pcrs()["sha256"].items() if i < 8
    }
    assert doc["ima_log"] == host_logs.ima.read_text()
    assert (doc["ima_offset"], doc["ima_next_offset"]) == (0, len(host_logs.ima_lines))
    assert isinstance(doc["boot_time"], int)
    assert verify(spaced, identity, nonce, "sha256:0,1+sha1:0").signer_checked


def test_ima_offset_slices_the_log_and_past_its_end_is_409(agent: AgentProcess, host_logs: HostLogs) -> None:
    lines = host_logs.ima_lines
    with agent.client() as client:
        doc = quote(client, os.urandom(16), ima_offset=2).raise_for_status().json()
        assert (doc["ima_log"], doc["ima_offset"], doc["ima_next_offset"]) == ("".join(lines[2:]), 2, len(lines))

        new_line = "10 " + "11" * 20 + " ima-ng sha256:" + "22" * 32 + " /usr/bin/new\n"
        with host_logs.ima.open("a") as log:  # the kernel appends while the host runs
            log.write(new_line)
        doc = quote(client, os.urandom(16), ima_offset=len(lines)).raise_for_status().json()
        assert (doc["ima_log"], doc["ima_next_offset"]) == (new_line, len(lines) + 1)

        beyond = quote(client, os.urandom(16), ima_offset=len(lines) + 5)
    assert beyond.status_code == 409
    assert beyond.json()["ima_entries"] == len(lines) + 1 and "beyond the IMA log" in beyond.json()["detail"]


BAD_QUOTES: list[tuple[dict[str, str], int, str]] = [
    ({"nonce": "zz" * 16, "pcrs": SPEC}, 400, "nonce is not hexadecimal"),
    ({"nonce": "ab " * 16, "pcrs": SPEC}, 400, "nonce is not hexadecimal"),
    ({"nonce": "abc" * 7, "pcrs": SPEC}, 400, "nonce has an odd number"),
    ({"nonce": "ab" * 7, "pcrs": SPEC}, 400, "nonce must be 8 to 64 bytes, got 7"),
    ({"nonce": "ab" * 65, "pcrs": SPEC}, 400, "nonce must be 8 to 64 bytes, got 65"),
    ({"pcrs": SPEC}, 400, "nonce is required"),
    ({"nonce": "ab" * 16, "pcrs": "md5:0"}, 400, "unknown PCR bank 'md5'"),
    ({"nonce": "ab" * 16, "pcrs": "sha384:0"}, 400, "PCR bank 'sha384' is not allowed"),
    ({"nonce": "ab" * 16, "pcrs": "sha256:24"}, 400, "PCR index out of range"),
    ({"nonce": "ab" * 16, "pcrs": "sha256:x"}, 400, "bad PCR index 'x'"),
    ({"nonce": "ab" * 16, "pcrs": "sha256"}, 400, "no PCR indexes for bank 'sha256'"),
    ({"nonce": "ab" * 16}, 400, "pcrs is required"),
    ({"nonce": "ab" * 16, "pcrs": SPEC, "ima_offset": "-1"}, 400, "ima_offset must not be negative"),
    ({"nonce": "ab" * 16, "pcrs": SPEC, "ima_offset": "1e3"}, 400, "ima_offset must be an integer"),
    ({"nonce": "ab" * 16, "pcrs": SPEC, "pad": "x" * 3000}, 414, "query string longer than 2048 bytes"),
]


def test_bad_requests_get_their_status_and_a_reason(agent: AgentProcess) -> None:
    with agent.client() as client:
        answers = [(client.get("/v1/quote", params=params), status, detail) for params, status, detail in BAD_QUOTES]
        answers.append((client.get("/v1/nothing"), 404, "Not Found"))
        answers.append((client.post("/v1/quote"), 405, "Method Not Allowed"))
    for answer, status, detail in answers:
        assert answer.status_code == status, (detail, answer.text)
        assert detail in answer.json()["detail"], answer.text
    log = agent.output()
    # One line per decision, with its reason, on the agent's side.
    lines = [line for line in log.splitlines() if "GET /v1/quote -> 4" in line]
    assert len(lines) == len(BAD_QUOTES)
    assert all(
        f"-> {status} " in line and detail in line for line, (_, status, detail) in zip(lines, BAD_QUOTES, strict=True)
    )
    assert "Traceback" not in log


def test_mutual_tls_requires_a_client_certificate_from_the_ca(
    start_agent: StartAgent, tls_ca: TestCa, client_cert: Pair, tmp_path: Path
) -> None:
    agent = start_agent("--client-ca", str(tls_ca.ca_path), probe_cert=client_cert)
    stranger = TestCa(tmp_path / "other-ca").issue("verifier", client=True, server=False)
    server_only = tls_ca.issue("server-only")  # right CA, but not issued for client authentication
    for cert in (None, stranger, server_only):
        with agent.client(cert) as client, pytest.raises(httpx.TransportError):
            client.get("/v1/identity")
    with agent.client(client_cert) as client:
        assert client.get("/v1/identity").status_code == 200


def test_the_agent_is_https_only_and_proves_its_name(agent: AgentProcess) -> None:
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://{HOST}:{agent.port}/healthz", timeout=5)
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):  # a verifier without our CA
        httpx.get(f"{agent.url}/healthz", timeout=5)


def test_serve_needs_tls_unless_plain_http_is_asked_for(swtpm: Swtpm, tmp_path: Path, host_logs: HostLogs) -> None:
    base = [str(AGENT), "serve", "--tcti", swtpm.tcti, "--ak-file", str(tmp_path / "ak.json")]
    refusals = [([], "--cert and --key are required"), (["--insecure-http", "--cert", str(host_logs.ima)], "cannot be")]
    for extra, message in refusals:
        run = subprocess.run([*base, "--port", str(free_port()), *extra], capture_output=True, text=True, timeout=30)
        assert run.returncode == 2 and message in run.stderr, run.stderr
    plain = AgentProcess([*base, "--insecure-http"], tmp_path, tmp_path / "unused", scheme="http").start()
    try:
        with plain.client() as client:
            assert client.get("/v1/identity").status_code == 200
    finally:
        plain.stop()
    assert "WARNING osm_trustmgr.agent: INSECURE: --insecure-http" in plain.output()


def test_serve_exits_when_the_tpm_or_ak_is_unusable(swtpm: Swtpm, tmp_path: Path) -> None:
    ak_file = tmp_path / "ak.json"
    base = [str(AGENT), "serve", "--insecure-http", "--host", HOST, "--ak-file", str(ak_file)]

    def serve(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*base, "--port", str(free_port()), *extra], capture_output=True, text=True, timeout=30)

    run = serve("--tcti", f"swtpm:host={HOST},port=1")
    assert run.returncode == 3, run.stderr  # uvicorn: application startup failed
    assert "ERROR osm_trustmgr.agent.server: cannot start" in run.stderr and "tcti:IO failure" in run.stderr
    assert not ak_file.exists()
    # an AK created under the RSA EK must not be served as if it were under the ECC EK
    made = subprocess.run([str(AGENT), "identity", "--tcti", swtpm.tcti, "--ak-file", str(ak_file)],
                          capture_output=True, text=True, timeout=30)  # fmt: skip
    assert made.returncode == 0 and ak_file.exists(), made.stderr
    run = serve("--tcti", swtpm.tcti, "--ek-alg", "ecc")
    assert run.returncode == 3, run.stderr
    assert "cannot start" in run.stderr and "under the rsa EK, not ecc" in run.stderr


def test_a_dead_tpm_is_503_with_a_reason(agent: AgentProcess, swtpm: Swtpm) -> None:
    swtpm.stop()
    with agent.client() as client:
        answer = quote(client, os.urandom(16))
    assert answer.status_code == 503 and answer.json()["detail"].startswith("TPM error during quote")
    assert "Traceback" not in answer.text


def test_no_transient_object_outlives_any_request(start_agent: StartAgent, swtpm: Swtpm) -> None:
    agent = start_agent()
    with agent.client() as client:
        identity = client.get("/v1/identity").json()
        ek, _ = keys(identity)
        ak_name = bytes.fromhex(identity["ak_name"])
        assert client.post("/v1/activate", json=activation(ek, ak_name, b"s" * 32)).status_code == 200
        assert client.post("/v1/activate", json=activation(ek, b"\x00\x0b" + bytes(32), b"s" * 32)).status_code == 403
        assert client.post("/v1/activate", json={"credential": b64(b"\x00\x01"), "secret": "AA=="}).status_code == 400
        assert quote(client, os.urandom(16), ima_offset=10_000).status_code == 409

        # Concurrent verifiers: the agent serializes them on its one TPM context; every quote still verifies.
        nonces = [os.urandom(20) for _ in range(12)]
        with ThreadPoolExecutor(6) as pool:
            docs = list(pool.map(lambda n: quote(client, n).raise_for_status().json(), nonces))
    assert all(verify(doc, identity, nonce).signer_checked for doc, nonce in zip(docs, nonces, strict=True))
    agent.stop()  # closes its TPM connection; only then can another client reach this swtpm

    with TpmDevice(swtpm.tcti) as tpm:
        assert tpm.transient_handles() == [] and tpm.loaded_sessions() == []


def test_non_utf8_file_names_survive_the_round_trip(tmp_path: Path) -> None:
    """IMA records file names as bytes; a Latin-1 name must reach the verifier byte for byte."""
    from osm_trustmgr.agent.evidence import _read_ima
    from osm_trustmgr.evidence.document import evidence_to_document, parse_evidence_document
    from osm_trustmgr.tpm.ima import parse_ima_ascii
    from osm_trustmgr.tpm.ima_builder import ImaLogBuilder

    builder = ImaLogBuilder()
    builder.add_file("/opt/caf\udce9/run", b"binary")  # surrogate escape of the byte 0xe9
    raw = builder.ascii().encode("utf-8", "surrogateescape")
    assert b"caf\xe9/run" in raw
    log = tmp_path / "ima"
    log.write_bytes(raw)
    text, count = _read_ima(log, 0)
    assert count == 1 and text is not None
    wire = json.dumps({**evidence_to_document(_empty_evidence()), "ima_log": text})  # what the agent sends
    assert "\\udce9" in wire
    evidence = parse_evidence_document(json.loads(wire)).evidence
    assert evidence.ima_log == raw
    assert parse_ima_ascii(evidence.ima_log)[0].path == "/opt/caf\udce9/run"


def _empty_evidence():  # type: ignore[no-untyped-def]
    from osm_trustmgr.policy.evaluate import Evidence

    return Evidence(b"a", b"b", {})
