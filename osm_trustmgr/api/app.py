"""FastAPI application: strict-mode challenges and evidence, trust queries (``api/queries.py``), health.

Every refusal is a JSON ``{"detail": ...}`` with a status that tells the charm what happened: 404 unknown VNF,
403 identity refused, 409 unknown/used/expired challenge, 413 body too large, 422 malformed, 429 rate-limited
(with ``Retry-After``).
"""

from __future__ import annotations

import logging
import math
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from osm_trustmgr import __version__
from osm_trustmgr.api.ratelimit import RateLimiter
from osm_trustmgr.strict import StrictAttestation, StrictError

log = logging.getLogger(__name__)

PREFIX = "/osm/trust/v1"
MAX_BODY = 64 * 1024 * 1024  # the evidence carries the IMA log; far above any real one
_ID = r"^[A-Za-z0-9_.:-]{1,128}$"


class IdentityDocument(BaseModel):
    model_config = ConfigDict(extra="ignore")

    ek_public: str
    ek_certificate: str | None = None
    ak_public: str
    ak_name: str | None = None


class ChallengeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    vnfr_id: str = Field(pattern=_ID)
    identity: IdentityDocument


class EvidenceRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    vnfr_id: str = Field(pattern=_ID)
    nonce: str = Field(pattern=r"^[0-9a-fA-F]{2,128}$")
    activated_secret: str | None = None
    evidence: dict[str, Any]


def create_app(strict: StrictAttestation, limiter: RateLimiter, queries: APIRouter | None = None) -> FastAPI:
    app = FastAPI(title="osm-trustmgr", version=__version__, docs_url=f"{PREFIX}/docs",
                  openapi_url=f"{PREFIX}/openapi.json")  # fmt: skip

    @app.middleware("http")
    async def _guard(request: Request, call_next: Any) -> Any:
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY):
            return JSONResponse({"detail": f"request body larger than {MAX_BODY} bytes"}, status_code=413)
        if request.method == "POST":
            client = request.client.host if request.client else "unknown"
            wait = limiter.acquire(client)
            if wait > 0:
                log.warning("rate limit: %s %s from %s refused", request.method, request.url.path, client)
                return JSONResponse({"detail": "too many requests"}, status_code=429,
                                    headers={"Retry-After": str(max(1, math.ceil(wait)))})  # fmt: skip
        return await call_next(request)

    @app.exception_handler(StrictError)
    async def _refused(request: Request, exc: StrictError) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status)

    @app.get(f"{PREFIX}/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "version": __version__}

    @app.post(f"{PREFIX}/challenges", status_code=201)
    async def challenges(body: ChallengeRequest) -> dict[str, Any]:
        """A nonce (and, for a VNF not yet enrolled, a MakeCredential challenge) for the VNF's quote."""
        return await strict.challenge(body.vnfr_id, body.identity.model_dump())

    @app.post(f"{PREFIX}/evidence")
    async def evidence(body: EvidenceRequest) -> dict[str, Any]:
        """The verdict on the VNF's quote for an outstanding challenge: accept or reject, with the reasons."""
        verdict = await strict.evidence(body.vnfr_id, body.nonce, body.activated_secret, body.evidence)
        return verdict.to_json()

    if queries is not None:
        app.include_router(queries, prefix=PREFIX)
    return app
