"""Who is asking: the caller's NBI token, validated by the NBI (``GET /admin/v1/tokens/{token}``).

The Trust Manager keeps no users of its own: an OSM token is the credential, the project it was issued for scopes
what the caller sees (OpenCIT's Attestation Reporting Hub: tenants see their own NSs and VNFs, admins everything).
A validated token is remembered briefly so a CLI listing does not cost one NBI round trip per request.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable

from osm_trustmgr.osm.nbi import InvalidToken, NbiClient, NbiFailure, TokenInfo


class AuthError(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status, self.detail = status, detail


class TokenAuth:
    def __init__(
        self, nbi: NbiClient, *, ttl: float = 30.0, max_entries: int = 1000, clock: Callable[[], float] = time.time
    ) -> None:
        self.nbi, self.ttl, self.max_entries, self._clock = nbi, ttl, max_entries, clock
        self._known: OrderedDict[str, tuple[TokenInfo, float]] = OrderedDict()  # sha256(token) -> (info, until)

    async def caller(self, authorization: str | None) -> TokenInfo:
        """The token's owner; AuthError 401 without a valid Bearer token, 503 when the NBI cannot say."""
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthError(401, "an OSM NBI token is required: Authorization: Bearer <token>")
        key = hashlib.sha256(token.strip().encode()).hexdigest()  # the token itself is never kept
        now = self._clock()
        cached = self._known.get(key)
        if cached and cached[1] > now:
            return cached[0]
        try:
            info = await self.nbi.validate_token(token.strip())
        except InvalidToken:
            self._known.pop(key, None)
            raise AuthError(401, "the NBI does not accept this token (expired or revoked)") from None
        except NbiFailure as e:
            raise AuthError(503, f"cannot validate the token now: {e}") from None
        self._known[key] = (info, min(now + self.ttl, info.expires))
        self._known.move_to_end(key)
        while len(self._known) > self.max_entries:
            self._known.popitem(last=False)
        return info
