"""Shared benchmark plumbing: timing loops and the JSON-lines output format of `make bench`."""

from __future__ import annotations

import json
import time
from collections.abc import Callable


def rate(fn: Callable[[], object], *, min_seconds: float = 1.0, batch: int = 50) -> float:
    """Calls per second of ``fn``, measured over at least ``min_seconds`` of process CPU time."""
    for _ in range(batch):  # warm caches and lazy imports outside the timed window
        fn()
    calls, start = 0, time.process_time()
    while True:
        for _ in range(batch):
            fn()
        calls += batch
        elapsed = time.process_time() - start
        if elapsed >= min_seconds:
            return calls / elapsed


def report(bench: str, metric: str, value: float, unit: str, baseline: float | None, ratio: float | None) -> None:
    print(
        json.dumps(
            {
                "bench": bench,
                "metric": metric,
                "value": round(value, 3),
                "unit": unit,
                "baseline": None if baseline is None else round(baseline, 3),
                "ratio": None if ratio is None else round(ratio, 3),
            }
        ),
        flush=True,
    )
