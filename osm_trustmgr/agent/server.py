"""``osm-trust-agent serve``: the agent's HTTPS API (DESIGN.md §7).

``GET /v1/identity``, ``POST /v1/activate``, ``GET /v1/quote`` and ``GET /healthz``. One TpmDevice is opened
at startup and every TPM call holds one lock: the endpoints are plain ``def`` functions that FastAPI runs in
its thread pool, an ESAPI context is not thread-safe, and a TPM runs one command at a time anyway.

Every answer that is not a 2xx carries ``{"detail": "<reason>"}``; nothing from a traceback ever reaches a
client. One log line per request records what was decided and why.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, MutableMapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.exceptions import HTTPException as StarletteHTTPException
from tpm2_pytss import TSS2_Exception

from osm_trustmgr.agent.evidence import IMA_LOG, UEFI_LOG, identity_document, load_or_create_ak, quote_document
from osm_trustmgr.agent.tpm import Ak, TpmDevice, TpmError
from osm_trustmgr.tpm.algorithms import hash_by_name
from osm_trustmgr.tpm.errors import EvidenceError
from osm_trustmgr.tpm.pcr import parse_selection_spec

__all__ = ["DEFAULT_AK", "AgentSettings", "create_app"]

log = logging.getLogger(__name__)

DEFAULT_AK = Path("/var/lib/osm-trust-agent/ak.json")
MIN_NONCE, MAX_NONCE = 8, 64  # fewer than 8 random bytes is no freshness; TPM2B_DATA holds at most 64
MAX_QUERY = 2048  # the longest legitimate query (64-byte nonce, every PCR of four banks) is ~600 bytes
MAX_BODY = 16 * 1024  # an activation body is under 1 KB
_B64_MAX = 4096  # characters of one base64 field: a TPM2B_ENCRYPTED_SECRET of RSA 4096 is ~700
_HEX = re.compile(r"[0-9a-fA-F]*")
_INT = re.compile(r"-?[0-9]{1,18}")
_TPM_RC_FMT1 = 0x080  # format-one response code: the TPM rejected a parameter, handle or session


class AgentSettings(BaseModel):
    """What ``serve`` needs; the CLI fills it from options and ``OSMTRUSTAGENT_*`` variables."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    tcti: str | None = None  # None: tpm2-tss picks its default (usually /dev/tpmrm0)
    ak_file: Path = DEFAULT_AK
    ak_alg: Literal["ecc", "rsa"] = "ecc"
    ek_alg: Literal["rsa", "ecc", "ecc384"] = "rsa"
    uefi_log: Path = UEFI_LOG
    ima_log: Path = IMA_LOG
    banks: list[str] = Field(default_factory=lambda: ["sha1", "sha256"], min_length=1)

    @field_validator("banks")
    @classmethod
    def _known_banks(cls, banks: list[str]) -> list[str]:
        names = []
        for bank in banks:
            known = hash_by_name(bank)
            if known is None:
                raise ValueError(f"unknown PCR bank {bank!r}")
            names.append(known.name)
        return sorted(set(names))


class ActivateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    credential: str = Field(max_length=_B64_MAX)  # base64 TPM2B_ID_OBJECT
    secret: str = Field(max_length=_B64_MAX)  # base64 TPM2B_ENCRYPTED_SECRET


class ApiError(Exception):
    """A decided refusal: ``status`` and a ``detail`` for the client, plus optional extra JSON fields."""

    def __init__(self, status: int, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.status, self.detail, self.extra = status, detail, extra


# -- request parsing: each returns the value or raises ApiError(400) naming the parameter ---------------


def parse_nonce(value: str | None) -> bytes:
    if not value:
        raise ApiError(400, "nonce is required (hex)")
    if not _HEX.fullmatch(value):
        raise ApiError(400, "nonce is not hexadecimal")
    if len(value) % 2:
        raise ApiError(400, "nonce has an odd number of hex digits")
    size = len(value) // 2
    if not MIN_NONCE <= size <= MAX_NONCE:
        raise ApiError(400, f"nonce must be {MIN_NONCE} to {MAX_NONCE} bytes, got {size}")
    return bytes.fromhex(value)


def parse_pcrs(value: str | None, allowed: list[str]) -> dict[str, list[int]]:
    """``sha256:0,1,7+sha1:0-7`` (tpm2-tools syntax) into ``{bank: sorted indices}``, banks in ``allowed``."""
    if not value:
        raise ApiError(400, "pcrs is required, e.g. sha256:0-7,10")
    # An unencoded '+' in a query string arrives as a space: read it as the separator it was meant to be.
    try:
        selections = parse_selection_spec(value.replace(" ", "+"))
    except EvidenceError as exc:
        raise ApiError(400, f"pcrs: {exc.detail}") from None
    merged: dict[str, set[int]] = {}
    for sel in selections:
        if sel.bank.name not in allowed:
            raise ApiError(400, f"pcrs: PCR bank {sel.bank.name!r} is not allowed; allowed: {', '.join(allowed)}")
        merged.setdefault(sel.bank.name, set()).update(sel.pcrs)
    if not merged:
        raise ApiError(400, "pcrs selects no PCRs")
    return {bank: sorted(indices) for bank, indices in merged.items()}


def parse_offset(value: str | None) -> int:
    if value is None or value == "":
        return 0
    if not _INT.fullmatch(value):
        raise ApiError(400, "ima_offset must be an integer")
    offset = int(value)
    if offset < 0:
        raise ApiError(400, "ima_offset must not be negative")
    return offset


def _b64_field(name: str, value: str) -> bytes:
    try:
        data = base64.b64decode(value, validate=True)
    except binascii.Error as exc:
        raise ApiError(400, f"{name} is not valid base64: {exc}") from None
    if not data:
        raise ApiError(400, f"{name} is empty")
    return data


# -- the TPM side ----------------------------------------------------------------------------------------


@dataclass
class _Agent:
    """The AK, the identity (static for the TPM's life, so computed once) and the lock serialising TPM use.

    The TPM is opened for each request, not held: without a resource manager (swtpm, /dev/tpm0) a TPM
    serves one client at a time, so holding it would lock out every other tool on the host; and a TPM
    that was restarted is simply picked up by the next request.
    """

    ak: Ak
    identity: dict[str, Any]
    settings: AgentSettings
    lock: threading.Lock = field(default_factory=threading.Lock)

    @contextmanager
    def _tpm(self, operation: str) -> Iterator[TpmDevice]:
        with self.lock, _tpm_errors(operation), TpmDevice(self.settings.tcti) as tpm:
            yield tpm

    def activate(self, credential: bytes, secret: bytes) -> bytes:
        with self._tpm("activation") as tpm:
            return tpm.activate_credential(self.ak, credential, secret)

    def quote(self, nonce: bytes, selection: dict[str, list[int]], ima_offset: int) -> dict[str, Any]:
        s = self.settings
        with self._tpm("quote") as tpm:
            return quote_document(
                tpm, self.ak, nonce, selection, uefi_log=s.uefi_log, ima_log=s.ima_log, ima_offset=ima_offset
            )


@contextmanager
def _tpm_errors(operation: str) -> Iterator[None]:
    """Map what the TPM layer raises to answers: bad input 400, TPM refusal 403, TPM unusable 503."""
    try:
        yield
    except TSS2_Exception as exc:
        if operation == "activation" and _tpm_refused(exc):
            # The credential is not for this EK and AK (or was tampered with): the TPM's integrity check failed.
            raise ApiError(403, f"activation failed: the TPM refused the credential ({exc})") from None
        raise ApiError(503, f"TPM error during {operation}: {exc}") from None
    except TpmError as exc:
        raise ApiError(503, f"TPM error during {operation}: {exc}") from None
    except ValueError as exc:  # the TPM layer's own checks of marshalled input
        raise ApiError(400, f"{operation}: {exc}") from None
    except OSError as exc:  # an unreadable UEFI or IMA log
        raise ApiError(503, f"cannot read evidence log {exc.filename}: {exc.strerror}") from None


def _tpm_refused(exc: TSS2_Exception) -> bool:
    """A format-one error from the TPM itself (layer 0): it judged the input, it is not broken or busy."""
    return exc.rc >> 16 == 0 and bool(exc.rc & _TPM_RC_FMT1)


def _load_ak(tpm: TpmDevice, settings: AgentSettings) -> Ak:
    ak = load_or_create_ak(tpm, settings.ak_file, settings.ak_alg, settings.ek_alg)
    if ak.blobs.ek_alg != settings.ek_alg:
        # The identity must name the AK's parent EK, or no verifier can check the quote's qualified signer.
        raise RuntimeError(f"{settings.ak_file} holds an AK under the {ak.blobs.ek_alg} EK, not {settings.ek_alg}")
    return ak


def _open_agent(settings: AgentSettings) -> _Agent:
    with TpmDevice(settings.tcti) as tpm:
        ak = _load_ak(tpm, settings)
        identity = identity_document(tpm, ak, settings.ek_alg)
    return _Agent(ak, identity, settings)


# -- HTTP --------------------------------------------------------------------------------------------------


def _note(request: Request, text: str) -> None:
    """What the access log line says about this request's decision (see _RequestGuard)."""
    request.state.note = text


def _error(request: Request, status: int, detail: str, **extra: Any) -> JSONResponse:
    _note(request, detail)
    return JSONResponse({"detail": detail, **extra}, status_code=status)


def _validation_detail(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def _install_error_handlers(app: FastAPI) -> None:
    async def api_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiError)
        return _error(request, exc.status, exc.detail, **exc.extra)

    async def invalid(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return _error(request, 400, _validation_detail(exc))

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        return _error(request, exc.status_code, str(exc.detail))

    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Starlette re-raises after this answer, so uvicorn logs the traceback: on the server, not to the client.
        return _error(request, 500, "internal error")

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, unexpected)


Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Asgi = Callable[[Scope, Receive, Send], Awaitable[None]]


class _RequestGuard:
    """Refuses oversized queries (414) and bodies (413) before any parsing; logs one line per request."""

    def __init__(self, app: Asgi) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, state = time.monotonic(), scope.setdefault("state", {})
        status = 500
        refusal = self._refusal(scope)

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            if refusal:
                state["note"] = refusal[1]
                await JSONResponse({"detail": refusal[1]}, status_code=refusal[0])(scope, receive, send_status)
            else:
                await self.app(scope, receive, send_status)
        finally:
            _log_request(scope, status, state.get("note", ""), time.monotonic() - started)

    @staticmethod
    def _refusal(scope: Scope) -> tuple[int, str] | None:
        if len(scope.get("query_string", b"")) > MAX_QUERY:
            return 414, f"query string longer than {MAX_QUERY} bytes"
        length = dict(scope.get("headers", ())).get(b"content-length", b"0")
        if not length.isdigit() or int(length) > MAX_BODY:
            return 413, f"request body larger than {MAX_BODY} bytes"
        return None


def _log_request(scope: Scope, status: int, note: str, seconds: float) -> None:
    level = logging.INFO if status < 400 else logging.WARNING if status < 500 else logging.ERROR
    if scope["path"] == "/healthz" and status == 200:
        level = logging.DEBUG  # probes every few seconds would drown the decisions that matter
    client = scope.get("client") or ("-", 0)
    log.log(level, "%s %s %s -> %d %s(%.1f ms)", client[0], scope["method"], scope["path"], status,
            f"{note} " if note else "", seconds * 1000)  # fmt: skip


def _install_routes(app: FastAPI) -> None:
    def agent(request: Request) -> _Agent:
        return request.app.state.agent  # type: ignore[no-any-return]

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        # Liveness only: it never waits for the TPM lock behind a slow quote.
        return {"status": "ok"}

    @app.get("/v1/identity")
    def identity(request: Request) -> dict[str, Any]:
        _note(request, f"ak_name={agent(request).identity['ak_name']}")
        return agent(request).identity

    @app.post("/v1/activate")
    def activate(request: Request, body: ActivateRequest) -> dict[str, str]:
        credential = _b64_field("credential", body.credential)
        secret = _b64_field("secret", body.secret)
        recovered = agent(request).activate(credential, secret)
        _note(request, "activated")  # never log the secret
        return {"secret": base64.b64encode(recovered).decode()}

    @app.get("/v1/quote")
    def quote(
        request: Request, nonce: str | None = None, pcrs: str | None = None, ima_offset: str | None = None
    ) -> Response:
        a = agent(request)
        raw_nonce, selection, offset = parse_nonce(nonce), parse_pcrs(pcrs, a.settings.banks), parse_offset(ima_offset)
        doc = a.quote(raw_nonce, selection, offset)
        entries = doc["ima_next_offset"]
        # Checked after the quote so that the log is read once, under the lock; the IMA log only grows
        # within a boot, so a shorter log means a reboot or rotation and the verifier starts over from 0.
        if entries < offset:
            raise ApiError(
                409, f"ima_offset {offset} is beyond the IMA log ({entries} entries): read it again from 0",
                ima_entries=entries,
            )  # fmt: skip
        spec = "+".join(f"{b}:{','.join(map(str, i))}" for b, i in selection.items())
        _note(request, f"pcrs={spec} ima={offset}..{entries}")
        # json.dumps escapes the surrogates of non-UTF-8 file names; FastAPI's encoder would fail on them
        return Response(json.dumps(doc), media_type="application/json")


def create_app(settings: AgentSettings) -> FastAPI:
    """The agent's API; the TPM opens when the app starts (a broken TPM fails the start, not a request)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            app.state.agent = _open_agent(settings)
        except Exception as exc:
            # uvicorn prints the traceback and exits 3; this line says what to fix first.
            log.error("cannot start: TPM %s, AK %s: %s", settings.tcti or "default TCTI", settings.ak_file, exc)
            raise
        log.info(
            "agent ready: TPM %s, AK %s (%s), EK certificate %s, banks %s", settings.tcti or "default TCTI",
            app.state.agent.identity["ak_name"], settings.ak_file,
            "present" if app.state.agent.identity["ek_certificate"] else "absent", ",".join(settings.banks),
        )  # fmt: skip
        yield

    # No /docs or /openapi.json: the agent serves verifiers, not browsers, and exposes nothing it needn't.
    app = FastAPI(title="osm-trust-agent", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    _install_error_handlers(app)
    _install_routes(app)
    app.add_middleware(_RequestGuard)
    return app
