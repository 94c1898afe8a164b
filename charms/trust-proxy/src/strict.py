"""Strict mode: the charm answers a Trust Manager challenge itself and fails when the VNF is not trusted.

Listed as the last day-1 primitive, a failing ``attest`` fails the NS instantiation in OSM's LCM, so an
untrusted VNF never reaches service even when nothing else watches it (DESIGN.md §5, "Strict mode").

Protocol (JSON over HTTP(S), TLS checked against the system CAs):
``POST {url}/challenges {vnfr_id, identity}`` → 201 ``{nonce, pcrs, ima_offset, activation|null, expires_in}``;
``POST {url}/evidence {vnfr_id, nonce, activated_secret, evidence}`` → 200 ``{decision, loa, required_loa,
reasons, report_id}``. The standard library's urllib keeps the charm's dependencies to ops, paramiko, PyYAML.
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from params import ParamError, Selection, parse_b64, parse_ima_offset, parse_nonce, parse_pcrs
from vnf_tpm import VnfTpm

IDENTITY_FIELDS = ("ek_public", "ek_certificate", "ak_public", "ak_name")
_MAX_DETAIL = 500


class StrictModeError(Exception):
    """The Trust Manager could not be reached, refused a request or answered nonsense."""


@dataclass(frozen=True)
class Challenge:
    nonce: bytes
    selection: Selection
    ima_offset: int
    credential: bytes | None = None  # activation: the AK is not enrolled yet
    secret: bytes | None = None


@dataclass(frozen=True)
class Verdict:
    decision: str  # accept | reject
    loa: int
    required_loa: int
    reasons: list[str]
    report_id: str

    @property
    def accepted(self) -> bool:
        return self.decision == "accept"


class TrustManagerClient:
    def __init__(self, base_url: str, timeout: float = 60.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout

    def challenge(self, vnfr_id: str, identity: Mapping[str, Any]) -> Challenge:
        body = {"vnfr_id": vnfr_id, "identity": {k: identity.get(k) for k in IDENTITY_FIELDS}}
        doc = self._post("/challenges", body, "the challenge request")
        try:
            activation = doc.get("activation")
            if activation is not None and not isinstance(activation, Mapping):
                raise ParamError("activation must be an object or null")
            return Challenge(
                parse_nonce(doc.get("nonce")),
                parse_pcrs(doc.get("pcrs")),
                parse_ima_offset(doc.get("ima_offset", 0)),
                parse_b64("credential", activation.get("credential")) if activation else None,
                parse_b64("secret", activation.get("secret")) if activation else None,
            )
        except ParamError as e:
            raise StrictModeError(f"the Trust Manager sent a malformed challenge: {e}") from None

    def submit(
        self, vnfr_id: str, nonce: bytes, activated_secret: bytes | None, evidence: Mapping[str, Any]
    ) -> Verdict:
        body = {
            "vnfr_id": vnfr_id,
            "nonce": nonce.hex(),
            "activated_secret": base64.b64encode(activated_secret).decode() if activated_secret is not None else None,
            "evidence": dict(evidence),
        }
        doc = self._post("/evidence", body, "the evidence")
        decision, loa, required, reasons = (doc.get(k) for k in ("decision", "loa", "required_loa", "reasons"))
        if (
            decision not in ("accept", "reject")
            or not isinstance(loa, int)
            or not isinstance(required, int)
            or isinstance(loa, bool)
            or isinstance(required, bool)
            or not isinstance(reasons, list)
            or not all(isinstance(r, str) for r in reasons)
        ):
            raise StrictModeError(f"the Trust Manager's verdict is malformed: {_excerpt(json.dumps(doc))}")
        return Verdict(str(decision), loa, required, [str(r) for r in reasons], str(doc.get("report_id", "")))

    def _post(self, path: str, body: Mapping[str, Any], what: str) -> dict[str, Any]:
        url = self.base_url + path
        request = urllib.request.Request(
            url, data=json.dumps(body).encode(), method="POST",
            headers={"Content-Type": "application/json", "Accept": "application/json", "User-Agent": "trust-proxy"},
        )  # fmt: skip
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as e:
            detail = _detail(e.read())
            raise StrictModeError(f"the Trust Manager refused {what} (HTTP {e.code}): {detail}") from None
        except urllib.error.URLError as e:
            raise StrictModeError(f"cannot reach the Trust Manager at {url}: {e.reason}") from None
        except (OSError, ValueError) as e:  # timeouts, resets, an unusable URL
            raise StrictModeError(f"cannot reach the Trust Manager at {url}: {e}") from None
        try:
            doc = json.loads(raw)
        except ValueError:
            doc = None
        if not isinstance(doc, dict):
            raise StrictModeError(f"the Trust Manager answered {what} with no JSON object: {_excerpt(raw)}")
        return doc


def attest_strictly(tpm: VnfTpm, client: TrustManagerClient, vnfr_id: str) -> Verdict:
    """identity → challenge → (ActivateCredential) → quote with the challenge's nonce → verdict."""
    challenge = client.challenge(vnfr_id, tpm.identity())
    secret = None
    if challenge.credential is not None and challenge.secret is not None:
        secret = tpm.activate(challenge.credential, challenge.secret)
    evidence = tpm.quote(challenge.nonce, challenge.selection, challenge.ima_offset)
    return client.submit(vnfr_id, challenge.nonce, secret, evidence)


def _detail(raw: bytes) -> str:
    """FastAPI's ``{"detail": …}`` (text or validation errors), else the start of the body."""
    try:
        doc = json.loads(raw)
    except ValueError:
        return _excerpt(raw)
    detail = doc.get("detail", doc) if isinstance(doc, dict) else doc
    return _excerpt(detail if isinstance(detail, str) else json.dumps(detail))


def _excerpt(data: str | bytes) -> str:
    text = (data.decode(errors="replace") if isinstance(data, bytes) else data).strip()
    return (text[:_MAX_DETAIL] + "…" if len(text) > _MAX_DETAIL else text) or "(empty)"
