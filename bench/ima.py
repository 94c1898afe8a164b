"""IMA log verification throughput against the least work any verifier must do.

Full verification of a 100,000-entry ima-ng log = parse the ASCII list + check every template hash + replay PCR 10
in the SHA-1 and SHA-256 banks + allow-list check of every file. Baseline: a bare loop hashing each entry's
template data once with SHA-1 (the template-hash check alone). Goal: >= 200,000 entries/s.
"""

from __future__ import annotations

import hashlib
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import report

from osm_trustmgr.policy.ima_policy import ImaPolicy, evaluate_ima
from osm_trustmgr.tpm.algorithms import SHA1, SHA256
from osm_trustmgr.tpm.ima import parse_ima_ascii, parse_ima_binary, replay_ima
from osm_trustmgr.tpm.ima_builder import ImaLogBuilder

ENTRIES = 100_000


def best_seconds(fn: Callable[[], object], repeat: int = 3) -> float:
    """Shortest process CPU time of ``repeat`` calls (after one warm-up call)."""
    fn()
    times = []
    for _ in range(repeat):
        start = time.process_time()
        fn()
        times.append(time.process_time() - start)
    return min(times)


def main() -> None:
    builder = ImaLogBuilder()
    builder.add_boot_aggregate({i: bytes(32) for i in range(10)}, SHA256)
    for i in range(ENTRIES - 1):
        builder.add_file(f"/usr/lib/x86_64-linux-gnu/lib{i:06d}.so.1", f"content {i}".encode())
    text, binary = builder.ascii(), builder.binary()
    policy = ImaPolicy.build(allow={e.path: [e.file_digest.hex()] for e in builder.entries[1:]})
    template_data = [e.template_data for e in builder.entries]
    expected = (builder.pcr10(SHA1), builder.pcr10(SHA256))

    def verify(parse: Callable[[], list]) -> Callable[[], None]:  # type: ignore[type-arg]
        def run() -> None:
            entries = parse()
            assert (replay_ima(entries, SHA1), replay_ima(entries, SHA256)) == expected
            assert not evaluate_ima(entries, policy)

        return run

    def baseline() -> None:
        sha1 = hashlib.sha1
        for data in template_data:
            sha1(data).digest()

    base = ENTRIES / best_seconds(baseline)
    for metric, parse in (
        ("replay_allowlist_rate", lambda: parse_ima_ascii(text)),
        ("binary_replay_allowlist_rate", lambda: parse_ima_binary(binary)),
    ):
        value = ENTRIES / best_seconds(verify(parse))
        report("ima", metric, value, "entries/s", base, value / base)


if __name__ == "__main__":
    main()
