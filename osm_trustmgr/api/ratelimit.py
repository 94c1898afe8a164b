"""Token buckets per client: the strict-mode endpoints are unauthenticated (the exchange authenticates itself),
so a misbehaving or hostile client must not be able to make the Trust Manager issue nonces or verify evidence
without bound."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class _Bucket:
    tokens: float
    updated: float


@dataclass
class RateLimiter:
    """``rate`` requests per second per key, bursts up to ``burst``; at most ``max_keys`` keys are tracked
    (the least recently used are forgotten, which only ever lets a client through, never locks it out)."""

    rate: float
    burst: float
    max_keys: int = 10000
    clock: Callable[[], float] = time.monotonic
    _buckets: dict[str, _Bucket] = field(default_factory=dict)

    def acquire(self, key: str) -> float:
        """0 when the request may go ahead; otherwise the seconds to wait before the next one."""
        now = self.clock()
        bucket = self._buckets.pop(key, None) or _Bucket(self.burst, now)
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate)
        bucket.updated = now
        self._buckets[key] = bucket  # re-inserted last: dict order is the LRU order
        if len(self._buckets) > self.max_keys:
            del self._buckets[next(iter(self._buckets))]
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return 0.0
        return (1 - bucket.tokens) / self.rate
