"""A VNF's attestation round through the trust-proxy charm, against the same round without the charm.

One simulated VNF (sshd + swtpm booted like a guest, with its UEFI and IMA logs). Measured: wall time of one
round — fresh nonce → the real charm's ``attest`` action (run in-process as ``vca.driver: local`` does: SSH
login, ``osm-trust-agent quote`` inside the VNF, results back) → verification against the VNF image's policy.
Baseline, in the same run: the same quote and logs taken directly from the same swtpm in this process
(``quote_document``), verified the same way: the cost of the TPM and the verifier alone. ``ratio`` = charm
round / direct round: what the Juju-less proxy path (SSH, a process in the VNF, action plumbing) adds. With
real Juju add the controller's action round trip; with ``vca.driver: nbi`` also LCM's queueing.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import report

from osm_trustmgr.agent.evidence import quote_document
from osm_trustmgr.agent.tpm import TpmDevice
from osm_trustmgr.evidence.document import parse_evidence_document
from osm_trustmgr.policy.evaluate import Request, evaluate
from osm_trustmgr.sandbox.vnf_demo import VnfSandbox, vnf_sandbox
from osm_trustmgr.tpm.pcr import selection_map

ROUNDS = 30


def _verify(box: VnfSandbox, nonce: bytes, document: dict[str, Any]) -> int:
    selection = box.policy.selection()
    result = evaluate(parse_evidence_document(document).evidence, box.enrollment.claim(), Request(nonce, selection),
                      entity="vnf:bench", now=datetime.now(timezone.utc), policy=box.policy)  # fmt: skip
    return result.loa


def _charm_round(box: VnfSandbox) -> int:
    nonce = os.urandom(20)
    document = asyncio.run(box.client.quote(nonce, box.policy.selection(), 0))
    return _verify(box, nonce, document)


def _direct_round(box: VnfSandbox, ak_file: Path) -> int:
    from osm_trustmgr.agent.evidence import load_or_create_ak

    nonce = os.urandom(20)
    with TpmDevice(box.vnf.swtpm.tcti) as tpm:
        ak = load_or_create_ak(tpm, ak_file)  # the AK the agent in the VNF created: the enrolled one
        document = quote_document(tpm, ak, nonce, selection_map(box.policy.selection()),
                                  uefi_log=box.vnf.host.uefi_log_path, ima_log=box.vnf.host.ima_log_path)  # fmt: skip
    return _verify(box, nonce, document)


def _timed(fn: Callable[[], int], rounds: int) -> list[float]:
    fn()  # warm-up: first SSH host key, imports, AK loaded
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        loa = fn()
        times.append(time.perf_counter() - start)
        assert loa == 4, f"the benchmark VNF must verify at LoA 4, got {loa}"
    return times


def main() -> None:
    with vnf_sandbox() as box:
        charm = _timed(lambda: _charm_round(box), ROUNDS)
        direct = _timed(lambda: _direct_round(box, box.vnf.ak_file), ROUNDS)
    p50, base = statistics.median(charm) * 1000, statistics.median(direct) * 1000
    report("vnf", "charm_round_p50", p50, "ms", base, p50 / base)
    p90 = statistics.quantiles(charm, n=10)[-1] * 1000
    base90 = statistics.quantiles(direct, n=10)[-1] * 1000
    report("vnf", "charm_round_p90", p90, "ms", base90, p90 / base90)


if __name__ == "__main__":
    main()
