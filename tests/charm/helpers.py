"""Helpers for the charm tests: running actions through ops.testing, and a Trust Manager on loopback HTTP.

:class:`TrustManagerStub` is a real HTTP server (the charm's urllib client talks to it over TCP); what it
answers comes from a handler: scripted answers for the unit tests, or :class:`VerifyingTrustManager`, which
enrolls and judges VNFs with the Trust Manager's own enrollment and verifier code.
"""

from __future__ import annotations

import base64
import json
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from cryptography import x509
from ops import testing

from osm_trustmgr.enrollment import Challenge, Enrollment, PresentedIdentity, begin_enrollment, complete_enrollment
from osm_trustmgr.evidence.document import parse_evidence_document
from osm_trustmgr.policy.evaluate import Request, evaluate
from osm_trustmgr.policy.model import TrustPolicy
from osm_trustmgr.policy.result import AttestationResult
from osm_trustmgr.tpm.pcr import PcrSelection, format_selection_spec, parse_selection_spec

API_PREFIX = "/osm/trust/v1"
Handler = Callable[[str, dict[str, Any]], tuple[int, Any]]


def run_action(
    ctx: testing.Context[Any], name: str, config: dict[str, Any], params: dict[str, Any] | None = None,
    state: testing.State | None = None,
) -> tuple[dict[str, Any], testing.State]:  # fmt: skip
    """Run action ``name`` with the charm configured by ``config``; raises testing.ActionFailed on event.fail."""
    state = state or testing.State(config=config)
    out = ctx.run(ctx.on.action(name, params=params or {}), state)
    assert ctx.action_results is not None
    return dict(ctx.action_results), out


def failure(ctx: testing.Context[Any], name: str, config: dict[str, Any], params: dict[str, Any] | None = None,
            state: testing.State | None = None) -> str:  # fmt: skip
    """The message of the ``event.fail`` that action ``name`` must end with."""
    try:
        results, _ = run_action(ctx, name, config, params, state)
    except testing.ActionFailed as e:
        return e.message
    raise AssertionError(f"{name} succeeded with {results}, expected a failure")


def evidence_from_results(results: dict[str, str]) -> dict[str, Any]:
    """The agent's quote document back from the attest action's results (what the Trust Manager's driver does)."""
    return {
        "attest": results["attest"],
        "signature": results["signature"],
        "pcrs": json.loads(results["pcrs"]),
        "uefi_log": results.get("uefi-log"),
        "ima_log": results.get("ima-log"),
        "ima_offset": int(results["ima-offset"]),
        "ima_next_offset": int(results["ima-next-offset"]),
        "boot_time": int(results["boot-time"]) if "boot-time" in results else None,
        "nonce": results["nonce"],
        "ak_public": results["ak-public"],
    }


def presented_identity(results: dict[str, str]) -> PresentedIdentity:
    cert = results.get("ek-certificate")
    return PresentedIdentity(
        base64.b64decode(results["ek-public"]),
        base64.b64decode(cert) if cert else None,
        base64.b64decode(results["ak-public"]),
    )


class TrustManagerStub:
    """``POST {url}/<path>`` answered by ``handler(path, body)``; requests are recorded in ``requests``."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[tuple[str, dict[str, Any]]] = []
        stub = self

        class _Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"null")
                path = self.path.removeprefix(API_PREFIX)
                stub.requests.append((path, body))
                status, doc = stub.handler(path, body)
                data = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        # A short poll interval: shutdown() waits for the serving loop to notice it.
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,), daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}{API_PREFIX}"

    def __enter__(self) -> TrustManagerStub:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


@dataclass
class VerifyingTrustManager:
    """The Trust Manager's side of strict mode, with its real enrollment and verifier (DESIGN.md §5).

    First contact of a VNF: EK certificate checked, a credential for its AK sent as ``activation``; the
    evidence then carries the secret (enrollment completes) and a quote over the challenge's nonce.
    """

    ca_bundle: Sequence[x509.Certificate]
    policy: TrustPolicy | None
    required_loa: int
    enrollments: dict[str, Enrollment] = field(default_factory=dict)
    pending: dict[str, Challenge] = field(default_factory=dict)
    nonces: dict[str, str] = field(default_factory=dict)  # issued, single-use: nonce hex → vnfr id
    results: list[AttestationResult] = field(default_factory=list)

    @property
    def selection(self) -> tuple[PcrSelection, ...]:
        return self.policy.selection() if self.policy else parse_selection_spec("sha256:0-10")

    def __call__(self, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        if path == "/challenges":
            return self._challenge(body)
        if path == "/evidence":
            return self._evidence(body)
        return 404, {"detail": "not found"}

    def _challenge(self, body: dict[str, Any]) -> tuple[int, Any]:
        vnfr_id, ident = body["vnfr_id"], body["identity"]
        activation = None
        if vnfr_id not in self.enrollments:
            presented = PresentedIdentity(
                base64.b64decode(ident["ek_public"]),
                base64.b64decode(ident["ek_certificate"]) if ident.get("ek_certificate") else None,
                base64.b64decode(ident["ak_public"]),
            )
            challenge = begin_enrollment(presented, ca_bundle=self.ca_bundle, now=datetime.now(timezone.utc))
            self.pending[vnfr_id] = challenge
            activation = {
                "credential": base64.b64encode(challenge.credential_blob).decode(),
                "secret": base64.b64encode(challenge.encrypted_secret).decode(),
            }
        nonce = os.urandom(20).hex()
        self.nonces[nonce] = vnfr_id
        pcrs = format_selection_spec(self.selection)
        return 201, {"nonce": nonce, "pcrs": pcrs, "ima_offset": 0, "activation": activation, "expires_in": 60}

    def _evidence(self, body: dict[str, Any]) -> tuple[int, Any]:
        vnfr_id = body["vnfr_id"]
        if self.nonces.pop(body["nonce"], None) != vnfr_id:
            return 409, {"detail": "unknown or used nonce"}
        if vnfr_id in self.pending:
            returned = base64.b64decode(body["activated_secret"] or "")
            self.enrollments[vnfr_id] = complete_enrollment(self.pending.pop(vnfr_id), returned)
        doc = parse_evidence_document(body["evidence"])
        result = evaluate(
            doc.evidence, self.enrollments[vnfr_id].claim(), Request(bytes.fromhex(body["nonce"]), self.selection),
            entity=vnfr_id, now=datetime.now(timezone.utc), policy=self.policy,
        )  # fmt: skip
        self.results.append(result)
        decision = "accept" if result.loa >= self.required_loa else "reject"
        reasons = [f"{f.code}: {f.detail}" for f in result.failures]
        verdict = {"decision": decision, "loa": result.loa, "required_loa": self.required_loa, "reasons": reasons}
        return 200, {**verdict, "report_id": f"report-{len(self.results)}"}
