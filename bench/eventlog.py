"""UEFI event log: parse + replay of the real ~49 KB log (uefi-eventlog-a.bin, sha1 + sha256 banks).

Baseline: a bare hand-written walk of the same bytes (struct.unpack_from over the headers, no bounds
checks, no Event objects, no warnings) that performs the same extends with hashlib: the cost floor
of the job. ``ratio`` = our time / baseline time (lower is better). Goal: parse_replay_time < 5 ms.
The JSON report (every event decoded, certificates parsed) is timed without a baseline.
"""

from __future__ import annotations

import hashlib
import struct
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import rate, report

from osm_trustmgr.tpm.eventlog import parse_eventlog, replay, to_dict

REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata"
LOG = REALDATA / "uefi-eventlog-a.bin"


def bare_replay(data: bytes) -> dict[str, dict[int, bytes]]:
    """Crypto-agile walk with the Spec ID's banks, EV_NO_ACTION skipped, PCR 0 locality honoured."""
    (spec_size,) = struct.unpack_from("<I", data, 28)
    (count,) = struct.unpack_from("<I", data, 32 + 24)
    algs = {}
    for i in range(count):
        alg, size = struct.unpack_from("<HH", data, 32 + 28 + 4 * i)
        algs[alg] = ({0x4: "sha1", 0xB: "sha256"}[alg], size)
    pcrs: dict[str, dict[int, bytes]] = {name: {} for name, _ in algs.values()}
    locality, pos = 0, 32 + spec_size
    while pos < len(data):
        pcr, etype, n = struct.unpack_from("<III", data, pos)
        pos += 12
        digests = []
        for _ in range(n):
            name, size = algs[struct.unpack_from("<H", data, pos)[0]]
            digests.append((name, data[pos + 2 : pos + 2 + size]))
            pos += 2 + size
        (size,) = struct.unpack_from("<I", data, pos)
        event = data[pos + 4 : pos + 4 + size]
        pos += 4 + size
        if etype == 3:
            if event.startswith(b"StartupLocality\x00"):
                locality = event[16]
            continue
        for name, digest in digests:
            old = pcrs[name].get(pcr) or bytes(len(digest) - 1) + bytes([locality if pcr == 0 else 0])
            pcrs[name][pcr] = hashlib.new(name, old + digest).digest()
    return pcrs


def main() -> int:
    if not LOG.is_file():
        print(f"note: {LOG} not found, event log benchmark skipped", file=sys.stderr)
        return 0
    data = LOG.read_bytes()
    log = parse_eventlog(data)
    replayed = replay(log)
    assert bare_replay(data) == replayed, "the baseline must compute the same PCRs"

    ours = 1000 / rate(lambda: replay(parse_eventlog(data)))
    floor = 1000 / rate(lambda: bare_replay(data))
    report("eventlog", "parse_replay_time", ours, "ms", floor, ours / floor)
    parse_ms = 1000 / rate(lambda: parse_eventlog(data))
    report("eventlog", "parse_time", parse_ms, "ms", None, None)
    replay_ms = 1000 / rate(lambda: replay(log))
    report("eventlog", "replay_time", replay_ms, "ms", None, None)
    report_ms = 1000 / rate(lambda: to_dict(log, replayed), min_seconds=0.5, batch=5)
    report("eventlog", "json_report_time", report_ms, "ms", None, None)
    report("eventlog", "log_size", len(data) / 1024, "KiB", None, None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
