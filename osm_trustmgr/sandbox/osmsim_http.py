"""The NBI simulator's REST face (FastAPI): OSM's URLs under ``/osm``, its status codes and its body formats.

Reproduces ``osm_nbi/nbi.py`` ``Server.default``/``Server.token`` (osm/NBI v19, github.com/seltonlucas/osm-capk):
Bearer auth on every route but ``POST /admin/v1/tokens``; 202 with ``{id, nsName}`` and a ``Location`` for NS
operations; 202 and an empty body for cancel; errors as ``{code, status, detail}``; unknown URLs 405. Bodies are
read as JSON or YAML by ``Content-Type`` (``Server._format_in``) and written as JSON only when ``Accept`` names
``application/json`` without ``*/*`` (``Server._format_out``). Every request is recorded in ``calls``, and
``faults`` lets a test make the next matching requests fail or stall.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, NamedTuple

import yaml
from fastapi import FastAPI, Request, Response

from .osmsim_auth import NbiAuth, NbiHttpError
from .osmsim_nbi import NbiEngine

__all__ = ["Fault", "NbiCall", "nbi_app"]


class NbiCall(NamedTuple):
    """One request the simulated NBI received (``body`` decoded when possible) and the status it answered."""

    method: str
    path: str
    body: Any
    time: float
    status: int


@dataclass
class Fault:
    """Answer the next ``count`` requests matching ``method`` and ``path`` (a regex) with ``status`` after ``delay``.

    ``status=None`` only delays (then the request is served normally): a slow NBI.
    """

    path: str
    status: int | None = 503
    count: int = 1
    method: str | None = None
    delay: float = 0.0

    def matches(self, method: str, path: str) -> bool:
        return self.count > 0 and (self.method in (None, method)) and re.search(self.path, path) is not None


def _format_out(request: Request, data: Any, status: int) -> Response:
    """``Server._format_out``: no data → empty; YAML for ``application/yaml``, ``*/*`` or no Accept; JSON when
    Accept names ``application/json`` (or anything else, for an error)."""
    if data is None:
        return Response(status_code=status)
    accept = request.headers.get("accept", "")
    yaml_asked = "application/yaml" in accept or "*/*" in accept
    if accept and not yaml_asked and ("application/json" in accept or status >= 300):
        content = (json.dumps(data, indent=4) + "\n").encode()
        return Response(content, status_code=status, media_type="application/json; charset=utf-8")
    content = yaml.safe_dump(data, explicit_start=True, indent=4, default_flow_style=False, encoding="utf-8")
    return Response(content, status_code=status, media_type="application/yaml")


def _format_in(raw: bytes, content_type: str) -> Any:
    """``Server._format_in``: JSON when the Content-Type says so, YAML otherwise; empty → {}."""
    if not raw:
        return {}
    try:
        data = json.loads(raw) if "application/json" in content_type else yaml.safe_load(raw)
    except (ValueError, yaml.YAMLError) as exc:
        kind = "json" if "application/json" in content_type else "yaml"
        raise NbiHttpError(HTTPStatus.BAD_REQUEST, f"Invalid {kind} format {exc}") from None
    return data or {}


Route = Callable[[Request, Any, dict[str, str]], Awaitable[tuple[Any, int, str | None]]]


def nbi_app(auth: NbiAuth, engine: NbiEngine, calls: list[NbiCall], faults: list[Fault]) -> FastAPI:
    """The app; ``calls`` and ``faults`` are the simulator's lists (shared, mutated here)."""
    app = FastAPI(title="OSM NBI simulator", openapi_url=None, docs_url=None, redoc_url=None)

    async def tokens_post(request: Request, body: Any, _: dict[str, str]) -> tuple[Any, int, str | None]:
        client = (request.client.host, request.client.port) if request.client else None
        token = await auth.new_token(body, client)
        return token, 200, f"/osm/admin/v1/tokens/{token['_id']}"

    async def tokens_get(request: Request, _: Any, args: dict[str, str]) -> tuple[Any, int, str | None]:
        info = await auth.authorize(request.headers.get("authorization"))
        if args.get("token"):
            return await auth.get_token(info, args["token"]), 200, None
        return await auth.list_tokens(info), 200, None

    async def tokens_delete(request: Request, _: Any, args: dict[str, str]) -> tuple[Any, int, str | None]:
        info = await auth.authorize(request.headers.get("authorization"))
        return await auth.del_token(args.get("token") or info["_id"]), 200, None

    async def ns_operation(request: Request, body: Any, args: dict[str, str]) -> tuple[Any, int, str | None]:
        session = auth.session(
            await auth.authorize(request.headers.get("authorization")), request.query_params.get("ADMIN")
        )
        if not isinstance(body, dict):
            raise NbiHttpError(HTTPStatus.BAD_REQUEST, "Expected application/yaml or application/json Content-Type")
        op_id, ns_name = await engine.new_operation(session, args["id"], args["op"], body)
        return {"id": op_id, "nsName": ns_name}, 202, f"/osm/nslcm/v1/ns_lcm_op_occs/{op_id}"

    async def op_cancel(request: Request, body: Any, args: dict[str, str]) -> tuple[Any, int, str | None]:
        session = auth.session(
            await auth.authorize(request.headers.get("authorization")), request.query_params.get("ADMIN")
        )
        await engine.cancel(
            session, args["id"], {**body, "nsLcmOpOccId": args["id"]} if isinstance(body, dict) else body
        )
        return None, 202, f"/osm/nslcm/v1/ns_lcm_op_occs/{args['id']}"

    async def op_show(request: Request, _: Any, args: dict[str, str]) -> tuple[Any, int, str | None]:
        session = auth.session(
            await auth.authorize(request.headers.get("authorization")), request.query_params.get("ADMIN")
        )
        return await engine.show_nslcmop(session, args["id"]), 200, None

    seg = r"(?P<{}>[^/]+)"
    routes: list[tuple[str, re.Pattern[str], Route]] = [
        ("POST", re.compile(r"^/osm/admin/v1/tokens/?$"), tokens_post),
        ("GET", re.compile(r"^/osm/admin/v1/tokens/?$"), tokens_get),
        ("GET", re.compile(rf"^/osm/admin/v1/tokens/{seg.format('token')}$"), tokens_get),
        ("DELETE", re.compile(rf"^/osm/admin/v1/tokens/{seg.format('token')}$"), tokens_delete),
        (
            "POST",
            re.compile(rf"^/osm/nslcm/v1/ns_instances/{seg.format('id')}/(?P<op>terminate|action|heal)$"),
            ns_operation,
        ),
        ("POST", re.compile(rf"^/osm/nslcm/v1/ns_lcm_op_occs/{seg.format('id')}/cancel$"), op_cancel),
        ("GET", re.compile(rf"^/osm/nslcm/v1/ns_lcm_op_occs/{seg.format('id')}$"), op_show),
    ]

    @app.api_route("/{path:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
    async def dispatch(request: Request) -> Response:
        path, method = request.url.path, request.method
        raw = await request.body()
        try:
            recorded: Any = _format_in(raw, request.headers.get("content-type", ""))
        except NbiHttpError:
            recorded = raw
        response = await _serve(request, method, path, raw)
        calls.append(NbiCall(method, path, recorded, time.time(), response.status_code))
        return response

    async def _serve(request: Request, method: str, path: str, raw: bytes) -> Response:
        fault = next((f for f in faults if f.matches(method, path)), None)
        if fault is not None:
            fault.count -= 1
            if fault.delay:
                await asyncio.sleep(fault.delay)
            if fault.status is not None:
                injected = HTTPStatus(fault.status)
                body = NbiHttpError(injected, f"injected fault: {injected.phrase}").body()
                return _format_out(request, body, injected.value)
        try:
            for route_method, pattern, handler in routes:
                match = pattern.match(path)
                if match and route_method == method:
                    body = _format_in(raw, request.headers.get("content-type", ""))
                    data, status, location = await handler(request, body, match.groupdict())
                    response = _format_out(request, data, status)
                    if location:
                        response.headers["Location"] = location
                    return response
            # Server._check_valid_url_method: an unknown URL or method is METHOD_NOT_ALLOWED
            raise NbiHttpError(HTTPStatus.METHOD_NOT_ALLOWED, f"Method {method} not allowed for {path}")
        except NbiHttpError as exc:
            response = _format_out(request, exc.body(), exc.status.value)
            if exc.status == HTTPStatus.UNAUTHORIZED:
                response.headers["WWW-Authenticate"] = f'Bearer realm="{exc.detail}"'
            return response

    return app
