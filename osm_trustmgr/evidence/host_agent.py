"""HTTPS client of osm-trust-agent (DESIGN.md §7): identity, activate, quote.

Transport problems (refused, timeout, TLS) are ``AgentUnreachable``: the host is then ``unreachable``, never
trusted. An answer the agent gives with an error status is ``AgentError`` with the agent's reason.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import httpx

from osm_trustmgr.enrollment import PresentedIdentity
from osm_trustmgr.evidence.errors import SourceError, SourceUnreachable
from osm_trustmgr.store.records import AgentEndpoint
from osm_trustmgr.tpm.pcr import PcrSelection, format_selection_spec


class AgentUnreachable(SourceUnreachable):
    """The agent could not be reached or did not answer in time."""


class AgentError(SourceError):
    """The agent answered with an error status."""

    def __init__(self, status: int, detail: str, body: Mapping[str, Any] | None = None) -> None:
        super().__init__(detail)
        self.args = (f"agent answered {status}: {detail}",)
        self.status = status
        self.body = dict(body or {})


class ImaOffsetBeyondLog(AgentError):
    """409: the IMA log is shorter than the offset asked for (a reboot, or a rotated log)."""


def _b64(value: Any, what: str) -> bytes:
    if not isinstance(value, str):
        raise AgentError(200, f"agent sent no {what}")
    try:
        return base64.b64decode(value, validate=True)
    except ValueError:
        raise AgentError(200, f"agent sent {what} that is not base64") from None


def tls_context(endpoint: AgentEndpoint) -> ssl.SSLContext | bool:
    if not endpoint.url.startswith("https://"):
        return False
    ctx = ssl.create_default_context(cafile=endpoint.ca_file)
    if endpoint.client_cert:
        ctx.load_cert_chain(endpoint.client_cert, endpoint.client_key)
    return ctx


class HostAgentClient:
    """One agent. Use ``async with``; connections are kept alive between calls."""

    def __init__(self, endpoint: AgentEndpoint) -> None:
        self.endpoint = endpoint
        self._http = httpx.AsyncClient(
            base_url=endpoint.url.rstrip("/"), verify=tls_context(endpoint), timeout=endpoint.timeout
        )

    async def __aenter__(self) -> HostAgentClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.aclose()

    async def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        try:
            response = await self._http.request(method, path, **kwargs)
        except httpx.TransportError as e:  # refused, timeouts, TLS failures
            raise AgentUnreachable(f"{self.endpoint.url}{path}: {type(e).__name__}: {e}") from None
        try:
            body = response.json()
        except ValueError:
            body = {"detail": response.text[:200]}
        if not isinstance(body, dict):
            raise AgentError(response.status_code, "agent answer is not a JSON object")
        if response.status_code == 409:
            raise ImaOffsetBeyondLog(409, str(body.get("detail", "")), body)
        if response.status_code >= 400:
            raise AgentError(response.status_code, str(body.get("detail", response.reason_phrase)), body)
        return body

    async def identity(self) -> PresentedIdentity:
        body = await self._call("GET", "/v1/identity")
        cert = body.get("ek_certificate")
        return PresentedIdentity(
            ek_public=_b64(body.get("ek_public"), "ek_public"),
            ek_certificate=_b64(cert, "ek_certificate") if cert else None,
            ak_public=_b64(body.get("ak_public"), "ak_public"),
        )

    async def activate(self, credential_blob: bytes, encrypted_secret: bytes) -> bytes:
        body = await self._call(
            "POST",
            "/v1/activate",
            json={
                "credential": base64.b64encode(credential_blob).decode(),
                "secret": base64.b64encode(encrypted_secret).decode(),
            },
        )
        return _b64(body.get("secret"), "secret")

    async def quote(self, nonce: bytes, selection: Sequence[PcrSelection], ima_offset: int) -> dict[str, Any]:
        """The evidence document (DESIGN.md §7), to be parsed by evidence.document."""
        spec = format_selection_spec(selection)
        return await self._call(
            "GET", "/v1/quote", params={"nonce": nonce.hex(), "pcrs": spec, "ima_offset": ima_offset}
        )


class AgentPool:
    """One kept-alive client per host: a TLS handshake per round would cost more than the verification.

    A client is replaced when the host's endpoint changes and dropped after a transport failure, so the next
    round starts with a fresh connection. ``close()`` at shutdown.
    """

    def __init__(self, factory: Callable[[AgentEndpoint], HostAgentClient] = HostAgentClient) -> None:
        self.factory = factory
        self._clients: dict[str, HostAgentClient] = {}
        self._closing: set[asyncio.Task[None]] = set()

    def get(self, host_id: str, endpoint: AgentEndpoint) -> HostAgentClient:
        client = self._clients.get(host_id)
        if client is None or client.endpoint != endpoint:
            if client is not None:
                self._retire(client)
            client = self._clients[host_id] = self.factory(endpoint)
        return client

    async def drop(self, host_id: str) -> None:
        client = self._clients.pop(host_id, None)
        if client is not None:
            await client.close()

    def _retire(self, client: HostAgentClient) -> None:
        # an endpoint changed under a live client: close it in the background, never block the round
        task = asyncio.get_running_loop().create_task(client.close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def close(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
