"""REST client of OSM's NBI (DESIGN.md §3): session token, token check, cancel, terminate, NS action.

What the NBI does, from its source (osm/NBI v19, read in the fork github.com/seltonlucas/osm-capk, ``NBI/``):

* ``POST /admin/v1/tokens {username, password, project_id}`` → 200 with the token document (``_id``/``id``,
  ``issued_at``, ``expires`` = issued + 3600 s, ``project_id``, ``project_name``, ``username``, ``user_id``,
  ``admin``, ``roles[{name, id}]``) (``nbi.py`` ``Server.token``; ``authconn_internal.py``
  ``AuthconnInternal.authenticate``). A second login of a user within 2 s is delayed 1 s (``token_time_window``,
  ``token_delay``), so the token is cached here and concurrent callers share one login.
* ``GET /admin/v1/tokens/{token}`` with that token as Bearer: ``Authenticator.authorize`` first validates the
  Bearer (401 "Invalid/Expired Token ..."), then ``_internal_get_token`` returns the stored document (404
  "token not found"; 401 when it belongs to another user and the caller is not admin) (``auth.py``).
* ``POST /nslcm/v1/ns_lcm_op_occs/{id}/cancel {cancelMode}`` → 202, empty body; 409 CONFLICT "Operation is not
  in STARTING, PROCESSING or ROLLING_BACK state" for a finished operation (``instance_topics.py``
  ``NsLcmOpTopic.cancel``; ``nbi.py`` ``Server.default``).
* ``POST /nslcm/v1/ns_instances/{id}/terminate|action`` → 202 ``{id: <nslcmop id>, nsName}``
  (``Server.default``); the bodies follow ``validation.py`` ``ns_terminate`` / ``ns_action``.
* Errors are ``{code: <HTTPStatus name>, status, detail}`` (``Server.default``); unknown URLs are 405.
* Answers are YAML unless ``Accept`` asks for JSON *without* ``*/*`` (``Server._format_out``), hence the header.
* Writes are scoped to the token's project (``BaseTopic._get_project_filter`` on ``_admin.projects_write``); an
  admin token may act in another project with the query string ``ADMIN=<project id>``
  (``Server._manage_admin_query``): that is ``as_project`` below.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import re
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import httpx
import yaml

if TYPE_CHECKING:
    from osm_trustmgr.config import NbiSection

__all__ = [
    "InvalidToken",
    "NbiClient",
    "NbiError",
    "NbiFailure",
    "NbiUnreachable",
    "OperationNotCancellable",
    "TokenInfo",
]

log = logging.getLogger("osm_trustmgr.osm.nbi")

# NBI tokens are secrets.token_urlsafe(32); Keystone's are longer URL-safe strings. Anything else is refused
# before it reaches a URL path.
_TOKEN_RE = re.compile(r"^[A-Za-z0-9_\-.~=]{8,512}$")
_REFRESH_MARGIN = 60.0  # renew this long before expiry, so a token never expires in flight


class NbiFailure(Exception):
    """Base of every failure of this client; ``operation`` says what was attempted."""

    def __init__(self, message: str, operation: str) -> None:
        super().__init__(message)
        self.operation = operation


class NbiError(NbiFailure):
    """The NBI answered with an error status (after retries for 5xx)."""

    def __init__(self, status: int, code: str, detail: str, operation: str) -> None:
        super().__init__(f"NBI refused to {operation}: {status} {code}: {detail}", operation)
        self.status, self.code, self.detail = status, code, detail


class InvalidToken(NbiError):
    """The token checked with ``validate_token`` is unknown, expired or not visible to its bearer (401/404)."""


class OperationNotCancellable(NbiError):
    """409 on cancel: the operation is no longer STARTING/PROCESSING/ROLLING_BACK; nothing left to cancel."""


class NbiUnreachable(NbiFailure):
    """No answer from the NBI (refused, timeout, TLS) after the retries."""


@dataclass(frozen=True)
class TokenInfo:
    """Who a token belongs to, as the NBI stores it (``roles`` are role names)."""

    username: str
    project_id: str
    project_name: str
    admin: bool
    roles: tuple[str, ...]
    expires: float
    user_id: str | None = None

    @classmethod
    def from_document(cls, doc: Mapping[str, Any]) -> TokenInfo:
        roles = doc.get("roles") or []
        return cls(
            username=str(doc["username"]),
            project_id=str(doc["project_id"]),
            project_name=str(doc.get("project_name", "")),
            admin=bool(doc.get("admin", False)),
            roles=tuple(str(r.get("name", "")) if isinstance(r, Mapping) else str(r) for r in roles),
            expires=float(doc["expires"]),
            user_id=str(doc["user_id"]) if doc.get("user_id") is not None else None,
        )


def _path_id(value: str, what: str) -> str:
    if not isinstance(value, str) or not value or len(value) > 256:
        raise ValueError(f"{what} must be a non-empty string")
    return quote(value, safe="")


def _decode(response: httpx.Response) -> Any:
    """Body as JSON or YAML (NBI picks by ``Accept``); None when empty or unreadable."""
    if not response.content:
        return None
    try:
        if "json" in response.headers.get("content-type", ""):
            return json.loads(response.content)
        return yaml.safe_load(response.content)
    except (ValueError, yaml.YAMLError):
        return None


class NbiClient:
    """One NBI account. Use ``async with`` (or ``aclose()``); safe for concurrent calls."""

    def __init__(
        self,
        url: str,
        *,
        user: str,
        password: str,
        project: str,
        verify_tls: bool | str | ssl.SSLContext = True,
        timeout: float = 30.0,
        retries: int = 3,
        backoff: float = 0.5,
        backoff_max: float = 5.0,
    ) -> None:
        self.url = url.rstrip("/")
        self.user, self.project = user, project
        self._password = password
        self.retries, self.backoff, self.backoff_max = retries, backoff, backoff_max
        headers = {"Accept": "application/json", "Content-Type": "application/json"}
        if isinstance(verify_tls, str):  # a CA bundle (httpx wants an SSLContext for that)
            verify_tls = ssl.create_default_context(cafile=verify_tls)
        self._http = httpx.AsyncClient(base_url=self.url, verify=verify_tls, timeout=timeout, headers=headers)
        self._token: str | None = None
        self._token_renew_at = 0.0  # monotonic
        self._token_lock = asyncio.Lock()

    @classmethod
    def from_config(cls, section: NbiSection, **overrides: Any) -> NbiClient:
        password = section.password.get_secret_value() if section.password is not None else ""
        options: dict[str, Any] = {
            "user": section.user,
            "password": password,
            "project": section.project,
            "verify_tls": section.verify_tls,
            "timeout": section.timeout,
            **overrides,
        }
        return cls(section.url, **options)

    async def __aenter__(self) -> NbiClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # -- tokens ---------------------------------------------------------------------------------------

    async def token(self) -> str:
        """This client's session token, logging in when there is none or it is about to expire."""
        return await self._token_for("")

    async def _token_for(self, purpose: str) -> str:
        async with self._token_lock:
            if self._token is not None and time.monotonic() < self._token_renew_at:
                return self._token
            operation = f"log in to NBI as {self.user!r}" + (f" to {purpose}" if purpose else "")
            body = {"username": self.user, "password": self._password, "project_id": self.project}
            doc = await self._send("POST", "/admin/v1/tokens", operation, body=body)
            if not isinstance(doc, Mapping) or not doc.get("id") or "expires" not in doc:
                # e.g. {id, message: change_password} when the password expired (Server.token)
                message = doc.get("message") if isinstance(doc, Mapping) else None
                raise NbiError(200, "NO_TOKEN", f"no token in the answer ({message or 'unexpected body'})", operation)
            # NBI's clock may differ from ours: keep the lifetime it grants, not its absolute expiry
            lifetime = float(doc["expires"]) - float(doc.get("issued_at") or time.time())
            margin = min(_REFRESH_MARGIN, max(lifetime, 0.0) / 10)
            self._token = str(doc["id"])
            self._token_renew_at = time.monotonic() + lifetime - margin
            return self._token

    def forget_token(self) -> None:
        """Drop the cached token (the next call logs in again)."""
        self._token, self._token_renew_at = None, 0.0

    async def validate_token(self, token: str) -> TokenInfo:
        """Who ``token`` belongs to; ``InvalidToken`` when the NBI does not accept it."""
        operation = "validate a token"
        if not isinstance(token, str) or not _TOKEN_RE.match(token):
            raise InvalidToken(401, "UNAUTHORIZED", "malformed token", operation)
        try:
            doc = await self._send("GET", f"/admin/v1/tokens/{quote(token, safe='')}", operation, bearer=token)
        except NbiError as exc:
            if exc.status in (401, 404):
                raise InvalidToken(exc.status, exc.code, exc.detail, operation) from None
            raise
        try:
            info = TokenInfo.from_document(doc)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise NbiError(200, "BAD_RESPONSE", f"token document without {exc}", operation) from None
        # no expiry check here: NBI checked it against its own clock (Authenticator.authorize), ours may differ
        return info

    # -- operations -----------------------------------------------------------------------------------

    async def cancel_operation(self, nslcmop_id: str, mode: str = "FORCEFUL", *, as_project: str | None = None) -> None:
        """Cancel an ongoing operation; ``OperationNotCancellable`` when it already ended (NBI 409)."""
        if mode not in ("GRACEFUL", "FORCEFUL"):
            raise ValueError("mode must be GRACEFUL or FORCEFUL")
        operation = f"cancel operation {nslcmop_id} ({mode})"
        path = f"/nslcm/v1/ns_lcm_op_occs/{_path_id(nslcmop_id, 'nslcmop_id')}/cancel"
        try:
            await self._call("POST", path, operation, body={"cancelMode": mode}, as_project=as_project)
        except NbiError as exc:
            if exc.status == 409:
                raise OperationNotCancellable(exc.status, exc.code, exc.detail, operation) from None
            raise

    async def terminate_ns(
        self,
        nsr_id: str,
        *,
        autoremove: bool = False,
        skip_terminate_primitives: bool | None = None,
        timeout_ns_terminate: int | None = None,
        as_project: str | None = None,
    ) -> str | None:
        """Start terminating an NS; the new nslcmop id (None: NBI had nothing to terminate, with autoremove)."""
        body: dict[str, Any] = {"autoremove": autoremove}
        if skip_terminate_primitives is not None:
            body["skip_terminate_primitives"] = skip_terminate_primitives
        if timeout_ns_terminate is not None:
            body["timeout_ns_terminate"] = timeout_ns_terminate
        path = f"/nslcm/v1/ns_instances/{_path_id(nsr_id, 'nsr_id')}/terminate"
        doc = await self._call("POST", path, f"terminate NS {nsr_id}", body=body, as_project=as_project)
        op_id = doc.get("id") if isinstance(doc, Mapping) else None
        return str(op_id) if op_id else None

    async def ns_action(
        self,
        nsr_id: str,
        member_vnf_index: str,
        primitive: str,
        params: Mapping[str, Any],
        vdu_id: str | None = None,
        *,
        vdu_count_index: int | None = None,
        timeout_ns_action: int | None = None,
        as_project: str | None = None,
    ) -> str:
        """Run a day-2 primitive on a VNF (its charm); the nslcmop id whose ``detailed-status`` gets the output."""
        body: dict[str, Any] = {
            "member_vnf_index": member_vnf_index,
            "primitive": primitive,
            "primitive_params": dict(params),
        }
        if vdu_id is not None:
            body["vdu_id"] = vdu_id
        if vdu_count_index is not None:
            body["vdu_count_index"] = vdu_count_index
        if timeout_ns_action is not None:
            body["timeout_ns_action"] = timeout_ns_action
        operation = f"run primitive {primitive!r} on VNF {member_vnf_index} of NS {nsr_id}"
        path = f"/nslcm/v1/ns_instances/{_path_id(nsr_id, 'nsr_id')}/action"
        doc = await self._call("POST", path, operation, body=body, as_project=as_project)
        if not isinstance(doc, Mapping) or not doc.get("id"):
            raise NbiError(202, "BAD_RESPONSE", "no operation id in the answer", operation)
        return str(doc["id"])

    async def heal_vnf(self, nsr_id: str, vnfr_id: str, cause: str, *, as_project: str | None = None) -> str:
        """Heal (redeploy, then re-run day-1) one VNF: ``POST .../heal`` with NBI's ``ns_heal`` schema
        (osm_nbi/validation.py: ``healVnfData[] {vnfInstanceId, cause, additionalParams {run-day1}}``)."""
        text = re.sub("['\"]", "", cause)[:255] or "trust lost"  # NBI's description_schema: no quotes, <= 255
        body = {"healVnfData": [{"vnfInstanceId": vnfr_id, "cause": text, "additionalParams": {"run-day1": True}}]}
        operation = f"heal VNF {vnfr_id} of NS {nsr_id}"
        path = f"/nslcm/v1/ns_instances/{_path_id(nsr_id, 'nsr_id')}/heal"
        doc = await self._call("POST", path, operation, body=body, as_project=as_project)
        if not isinstance(doc, Mapping) or not doc.get("id"):
            raise NbiError(202, "BAD_RESPONSE", "no operation id in the answer", operation)
        return str(doc["id"])

    async def get_operation(self, nslcmop_id: str, *, as_project: str | None = None) -> dict[str, Any]:
        """The nslcmop document (``operationState``, ``detailed-status``, …)."""
        path = f"/nslcm/v1/ns_lcm_op_occs/{_path_id(nslcmop_id, 'nslcmop_id')}"
        doc = await self._call("GET", path, f"read operation {nslcmop_id}", as_project=as_project)
        if not isinstance(doc, dict):
            raise NbiError(200, "BAD_RESPONSE", "operation is not a document", f"read operation {nslcmop_id}")
        return doc

    # -- transport ------------------------------------------------------------------------------------

    async def _call(
        self, method: str, path: str, operation: str, *, body: Any = None, as_project: str | None = None
    ) -> Any:
        """An authenticated call; on 401 the token is renewed once (revoked, or expired early)."""
        params = {"ADMIN": as_project} if as_project else None
        for attempt in (1, 2):
            token = await self._token_for(operation)
            try:
                return await self._send(method, path, operation, body=body, bearer=token, params=params)
            except NbiError as exc:
                if exc.status != 401 or attempt == 2:
                    raise
                log.info("NBI rejected our token (%s); logging in again", exc.detail)
                async with self._token_lock:
                    if self._token == token:
                        self.forget_token()
        raise AssertionError("not reached")

    async def _send(
        self,
        method: str,
        path: str,
        operation: str,
        *,
        body: Any = None,
        bearer: str | None = None,
        params: Mapping[str, str] | None = None,
    ) -> Any:
        """One request with bounded retries on transport errors and 5xx; 4xx is never retried."""
        headers = {"Authorization": f"Bearer {bearer}"} if bearer else None
        content = json.dumps(body).encode() if body is not None else None
        delay = self.backoff
        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            try:
                response = await self._http.request(method, path, content=content, headers=headers, params=params)
            except httpx.TransportError as exc:  # connect, read, write, TLS, timeouts
                if last:
                    message = f"NBI at {self.url} unreachable, could not {operation}: {exc!r}"
                    raise NbiUnreachable(message, operation) from exc
                log.warning("NBI unreachable (%r) trying to %s; retry in %.1fs", exc, operation, delay)
            else:
                if response.status_code < 400:
                    return _decode(response)
                error = self._error(response, operation)
                if response.status_code < 500 or last:
                    raise error
                log.warning("NBI answered %s trying to %s; retry in %.1fs", response.status_code, operation, delay)
            await asyncio.sleep(random.uniform(delay / 2, delay))
            delay = min(self.backoff_max, delay * 2)
        raise AssertionError("not reached")

    @staticmethod
    def _error(response: httpx.Response, operation: str) -> NbiError:
        doc = _decode(response)
        status = response.status_code
        if isinstance(doc, Mapping) and "detail" in doc:  # NBI's problem details
            return NbiError(status, str(doc.get("code") or response.reason_phrase), str(doc["detail"]), operation)
        detail = response.text[:300].strip() or response.reason_phrase
        return NbiError(status, response.reason_phrase.upper().replace(" ", "_"), detail, operation)
