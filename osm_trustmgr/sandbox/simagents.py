"""A simulated fleet of osm-trust-agents for load tests and the sandbox — a SIMULATION, not evidence.

Every simulated host has a :class:`~osm_trustmgr.sandbox.softtpm.SoftTpm` whose PCRs were extended by a
generated UEFI boot (firmware, Secure Boot, shim, GRUB, kernel) and a generated IMA measurement list, so its
quotes, logs and PCRs agree exactly as on a real machine and the verifier runs every LoA 1-4 check on them.
Its AK and EK, however, are software keys in this process's memory: a quote proves nothing about any platform,
and the hosts cannot be enrolled (a SoftTpm cannot ActivateCredential), so :meth:`SimulatedFleet.identity_record`
gives the ``pinned_ak`` identity an administrator would record. Use it to load the Trust Manager (benchmarks,
the sandbox's large fleets), never as evidence of anything; tests of the TPM handling itself use swtpm.

:meth:`SimulatedFleet.app` serves the agent API of DESIGN.md §7 for host ``i`` under ``/hosts/{i}``
(``GET /hosts/{i}/v1/identity``, ``GET /hosts/{i}/v1/quote?nonce=&pcrs=&ima_offset=``), answering with the
real agent's JSON (:func:`osm_trustmgr.agent.evidence.quote_document`), plus ``GET /fleet/policy`` (the golden
reference policy) for a client in another process. Run it on loopback with::

    python -m osm_trustmgr.sandbox.simagents --hosts 200 --port 8600
"""

from __future__ import annotations

import argparse
import base64
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from fastapi import FastAPI, HTTPException
from fastapi.responses import JSONResponse

from osm_trustmgr.policy.evaluate import IdentityMethod
from osm_trustmgr.sandbox.golden import CMDLINE, CMDLINE_PATTERN, GOLDEN_FILES
from osm_trustmgr.sandbox.softtpm import SoftTpm
from osm_trustmgr.store.records import IdentityRecord
from osm_trustmgr.tpm.algorithms import SHA256, hash_by_name
from osm_trustmgr.tpm.errors import EvidenceError
from osm_trustmgr.tpm.eventlog import parse_eventlog
from osm_trustmgr.tpm.eventlog_builder import BuiltLog, build_eventlog, typical_boot
from osm_trustmgr.tpm.eventlog_facts import boot_components
from osm_trustmgr.tpm.ima_builder import ImaLogBuilder, format_ima_ascii
from osm_trustmgr.tpm.ima_replay import pcr10_digests
from osm_trustmgr.tpm.ima_templates import ImaEntry
from osm_trustmgr.tpm.pcr import PcrSelection, parse_selection_spec
from osm_trustmgr.tpm.public import ak_qualified_name, parse_public

HOST = "127.0.0.1"
IMA_PCR = 10
MIN_NONCE, MAX_NONCE = 8, 64  # the real agent's bounds (agent/server.py)


def golden_files(count: int) -> dict[str, bytes]:
    """``count`` files every host runs at boot: the usual binaries, then synthetic libraries."""
    files = dict(list(GOLDEN_FILES.items())[:count])
    for k in range(count - len(files)):
        files[f"/usr/lib/osm-sim/libsim{k:04d}.so"] = f"simulated library {k}".encode()
    return files


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@dataclass
class SimAgent:
    """One simulated host: a SoftTpm, the UEFI log of its boot and its IMA log (kept as rendered lines)."""

    tpm: SoftTpm
    uefi: BuiltLog
    banks: tuple[str, ...]
    ima: ImaLogBuilder = field(default_factory=ImaLogBuilder)
    lines: list[str] = field(default_factory=list)
    boot_time: int = 0
    _uefi_b64: str = ""

    @classmethod
    def create(cls, uefi: BuiltLog, files: Mapping[str, bytes], ak_alg: str, banks: tuple[str, ...]) -> SimAgent:
        agent = cls(SoftTpm(ak_alg=ak_alg, banks=banks), uefi, banks)
        agent.boot(files)
        return agent

    def boot(self, files: Mapping[str, bytes]) -> None:
        """Measure the UEFI boot into PCRs 0-9, then IMA's boot_aggregate and ``files`` into PCR 10."""
        for pcr, digests in self.uefi.extends:
            self.tpm.extend(pcr, digests)
        self._uefi_b64 = _b64(self.uefi.data)  # encoded once: the log never changes within a boot
        self.boot_time = int(time.time())
        self.ima, self.lines = ImaLogBuilder(), []
        self._measure(self.ima.add_boot_aggregate(self.tpm.pcrs[SHA256.name], SHA256))
        for path, content in files.items():
            self.execute(path, content)

    def reboot(self, files: Mapping[str, bytes]) -> None:
        """A reset: PCRs back to their initial values, resetCount + 1, a new boot and a new IMA log."""
        self.tpm.reboot()
        self.boot(files)

    def execute(self, path: str, content: bytes) -> ImaEntry:
        """IMA measures a file before it runs: one log line, one PCR 10 extend per bank."""
        return self._measure(self.ima.add_file(path, content))

    def _measure(self, entry: ImaEntry) -> ImaEntry:
        for name in self.banks:
            bank = hash_by_name(name)
            assert bank is not None  # banks are validated by SimulatedFleet
            for digest in pcr10_digests([entry], bank):
                self.tpm.extend(IMA_PCR, {name: digest})
        self.lines.append(format_ima_ascii([entry]))
        return entry

    def identity_document(self) -> dict[str, Any]:
        """``GET /v1/identity`` as the real agent answers it (agent/evidence.py identity_document)."""
        return {
            "ek_public": _b64(self.tpm.ek_public),
            "ek_certificate": None,  # a software EK has no manufacturer certificate
            "ak_public": _b64(self.tpm.ak_public),
            "ak_name": (parse_public(self.tpm.ak_public).name or b"").hex(),
        }

    def quote_document(self, nonce: bytes, selection: Sequence[PcrSelection], ima_offset: int) -> dict[str, Any]:
        """``GET /v1/quote`` in the field layout of agent/evidence.py quote_document: quote first, logs after."""
        q = self.tpm.quote(nonce, selection)
        attest, signature, pcrs = q["attest"], q["signature"], q["pcrs"]
        assert isinstance(attest, bytes) and isinstance(signature, bytes) and isinstance(pcrs, dict)
        return {
            "attest": _b64(attest),
            "signature": _b64(signature),
            "pcrs": {b: {str(i): v.hex() for i, v in sorted(vals.items())} for b, vals in pcrs.items()},
            "uefi_log": self._uefi_b64,
            "ima_log": "".join(self.lines[ima_offset:]),
            "ima_offset": ima_offset,
            "ima_next_offset": len(self.lines),
            "boot_time": self.boot_time,
            "nonce": nonce.hex(),
            "ak_public": _b64(self.tpm.ak_public),
        }


def pinned_ak_record(entity: str, identity: Mapping[str, Any], now: datetime | None = None) -> IdentityRecord:
    """The identity an administrator pins from an agent's ``/v1/identity`` answer (no ActivateCredential)."""
    ek_public = base64.b64decode(identity["ek_public"])
    ak_public = base64.b64decode(identity["ak_public"])
    ak = parse_public(ak_public)
    method: IdentityMethod = "pinned_ak"
    return IdentityRecord(
        entity=entity,
        method=method,
        ek_public=ek_public,
        ek_certificate=None,
        ak_public=ak_public,
        ak_name=ak.name or b"",
        ak_qualified_name=ak_qualified_name(parse_public(ek_public), ak),
        enrolled_at=now or datetime.now(timezone.utc),
    )


class SimulatedFleet:
    """``n`` simulated hosts booted from the same golden image: same boot and files, so the same PCRs."""

    def __init__(
        self, n: int, *, ak_alg: str = "ecc", banks: Sequence[str] = ("sha256",), ima_entries: int = 20
    ) -> None:
        if n < 1 or ima_entries < 1:
            raise ValueError("a fleet needs at least one host, and an IMA log at least its boot_aggregate")
        if SHA256.name not in banks or any(hash_by_name(b) is None for b in banks):
            raise ValueError(f"banks {list(banks)}: known banks, sha256 among them (IMA's boot_aggregate)")
        self.banks = tuple(banks)
        self.files = golden_files(ima_entries - 1)
        self.uefi = build_eventlog(typical_boot(secure_boot_enabled=True, cmdline=CMDLINE), self.banks)
        self.hosts = [SimAgent.create(self.uefi, self.files, ak_alg, self.banks) for _ in range(n)]
        self._golden = self._golden_values(self.hosts[0])  # before any host deviates from the image

    def __len__(self) -> int:
        return len(self.hosts)

    @staticmethod
    def host_id(i: int) -> str:
        return f"sim-{i:04d}"

    def host(self, i: int) -> SimAgent:
        if not 0 <= i < len(self.hosts):
            raise KeyError(f"no simulated host {i}")
        return self.hosts[i]

    # -- what an operator records for the fleet --------------------------------------------------------------

    def identity_record(self, i: int, entity: str | None = None) -> IdentityRecord:
        """Host ``i``'s identity with method ``pinned_ak``, so a benchmark can skip enrollment."""
        return pinned_ak_record(entity or f"host:{self.host_id(i)}", self.host(i).identity_document())

    def reference_policy(self, policy_id: str = "sim-golden") -> dict[str, Any]:
        """One golden policy for every host: PCRs 0-7, boot chain, kernel command line, IMA allow-list."""
        pcrs, apps, allow = self._golden
        return {
            "id": policy_id,
            "version": 1,
            "description": "reference values of the simulated fleet's golden image (software TPMs: load only)",
            "pcr_banks": list(self.banks),
            "platform": {"secure_boot": "required", "pcrs": pcrs},
            "os": {"boot_components": apps, "kernel_cmdline": [CMDLINE_PATTERN]},
            "runtime": {"ima": {"allow": allow, "exclude": ["/tmp/"]}, "max_age": 300},
        }

    def _golden_values(self, host: SimAgent) -> tuple[dict[str, dict[int, list[str]]], list[str], dict[str, list[str]]]:
        pcrs = {b: {i: [host.tpm.pcrs[b][i].hex()] for i in range(8)} for b in self.banks}
        components = boot_components(parse_eventlog(self.uefi.data))
        apps = sorted({c.digests["sha256"] for c in components if c.kind == "efi_application"})
        allow = {e.path: [f"{e.digest_alg}:{e.file_digest.hex()}"] for e in host.ima.entries[1:]}
        return pcrs, apps, allow

    # -- what happens to hosts -----------------------------------------------------------------------------

    def execute(self, i: int, path: str, content: bytes) -> ImaEntry:
        """Host ``i`` runs a file (IMA measures it); one outside the golden image drops it to LoA 3."""
        return self.host(i).execute(path, content)

    def reboot(self, i: int) -> None:
        self.host(i).reboot(self.files)

    # -- the agent API ---------------------------------------------------------------------------------------

    def app(self) -> FastAPI:
        """DESIGN.md §7's agent API per host under ``/hosts/{i}``; errors carry ``{"detail"}`` like the agent."""
        app = FastAPI(title="osm-trustmgr simulated agents", docs_url=None, redoc_url=None, openapi_url=None)
        _install_routes(app, self)
        return app


def _parse_nonce(value: str | None) -> bytes:
    try:
        nonce = bytes.fromhex(value or "")
    except ValueError:
        raise HTTPException(400, "nonce is not hexadecimal") from None
    if not MIN_NONCE <= len(nonce) <= MAX_NONCE:
        raise HTTPException(400, f"nonce must be {MIN_NONCE} to {MAX_NONCE} bytes")
    return nonce


def _parse_pcrs(value: str | None, banks: Sequence[str]) -> tuple[PcrSelection, ...]:
    try:
        # an unencoded '+' in a query string arrives as a space: the real agent reads it as '+', so do we
        selection = parse_selection_spec((value or "").replace(" ", "+"))
    except EvidenceError as e:
        raise HTTPException(400, f"pcrs: {e.detail}") from None
    if not selection or any(s.bank.name not in banks for s in selection):
        raise HTTPException(400, f"pcrs: a selection of the banks {', '.join(banks)} is required")
    return selection


def _install_routes(app: FastAPI, fleet: SimulatedFleet) -> None:
    # Handlers are ``async def`` and answer with JSONResponse: a quote is ~0.1 ms of CPU, so running it on the
    # event loop beats a thread hop, and skipping FastAPI's response encoding keeps the agent side light.
    def host(i: int) -> SimAgent:
        try:
            return fleet.host(i)
        except KeyError:
            raise HTTPException(404, f"no simulated host {i}") from None

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "hosts": len(fleet)}

    @app.get("/fleet/policy")
    async def policy() -> JSONResponse:
        return JSONResponse(fleet.reference_policy())

    @app.get("/hosts/{i}/v1/identity")
    async def identity(i: int) -> JSONResponse:
        return JSONResponse(host(i).identity_document())

    @app.get("/hosts/{i}/v1/quote")
    async def quote(i: int, nonce: str | None = None, pcrs: str | None = None, ima_offset: int = 0) -> JSONResponse:
        agent = host(i)
        raw_nonce, selection = _parse_nonce(nonce), _parse_pcrs(pcrs, fleet.banks)
        if ima_offset < 0:
            raise HTTPException(400, "ima_offset must be a non-negative integer")
        entries = len(agent.lines)
        if ima_offset > entries:  # a reboot or rotation: the verifier must read the log again from 0
            detail = f"ima_offset {ima_offset} is beyond the IMA log ({entries} entries): read it again from 0"
            return JSONResponse({"detail": detail, "ima_entries": entries}, status_code=409)
        return JSONResponse(agent.quote_document(raw_nonce, selection, ima_offset))


def main(argv: Sequence[str] | None = None) -> None:
    """Serve a simulated fleet on 127.0.0.1 (loopback only: these are software keys)."""
    import uvicorn

    parser = argparse.ArgumentParser(prog="python -m osm_trustmgr.sandbox.simagents", description=main.__doc__)
    parser.add_argument("--hosts", type=int, default=200)
    parser.add_argument("--port", type=int, default=8600)
    parser.add_argument("--ak-alg", choices=("ecc", "rsa"), default="ecc")
    parser.add_argument("--banks", default="sha256", help="comma-separated PCR banks, e.g. sha1,sha256")
    parser.add_argument("--ima-entries", type=int, default=20)
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args(argv)
    fleet = SimulatedFleet(
        args.hosts, ak_alg=args.ak_alg, banks=tuple(args.banks.split(",")), ima_entries=args.ima_entries
    )
    uvicorn.run(fleet.app(), host=HOST, port=args.port, log_level=args.log_level, access_log=False)


if __name__ == "__main__":
    main()
