"""A simulated NFVI host: a swtpm whose PCRs were extended by a generated, realistic boot.

The UEFI event log (firmware, Secure Boot, shim, GRUB, kernel) and the IMA measurement list are generated and
every event's digests are extended into the swtpm, so the TPM's quotes and the logs agree exactly as on a real
machine. The "golden image" the host booted gives the reference policy an operator would write for it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from osm_trustmgr.agent.tpm import Ak, TpmDevice
from osm_trustmgr.evidence.document import evidence_to_document
from osm_trustmgr.policy.evaluate import Evidence
from osm_trustmgr.sandbox.golden import CMDLINE, CMDLINE_PATTERN, GOLDEN_FILES
from osm_trustmgr.sandbox.swtpm import Swtpm
from osm_trustmgr.tpm.algorithms import SHA256, hash_by_name
from osm_trustmgr.tpm.eventlog import parse_eventlog
from osm_trustmgr.tpm.eventlog_builder import BuiltLog, build_eventlog, typical_boot
from osm_trustmgr.tpm.eventlog_facts import boot_components
from osm_trustmgr.tpm.ima_builder import ImaLogBuilder
from osm_trustmgr.tpm.ima_replay import pcr10_digests
from osm_trustmgr.tpm.ima_templates import ImaEntry

IMA_PCR = 10


@dataclass
class SimulatedHost:
    """One machine: ``boot()`` after every (re)start, ``execute()`` to run a file (IMA measures it).

    ``tpm`` is an open device to use; without one, the swtpm is opened for each operation, which leaves it
    free for an agent in between (swtpm serves one client at a time). With ``log_dir`` the logs are also
    written where an agent reads them (``binary_bios_measurements``, ``ascii_runtime_measurements``).
    """

    swtpm: Swtpm
    tpm: TpmDevice | None = None
    secure_boot: bool = True
    files: Mapping[str, bytes] = field(default_factory=lambda: dict(GOLDEN_FILES))
    banks: Sequence[str] = ("sha1", "sha256")
    log_dir: Path | None = None
    uefi: BuiltLog | None = None
    ima: ImaLogBuilder = field(default_factory=ImaLogBuilder)

    @contextmanager
    def _device(self) -> Iterator[TpmDevice]:
        if self.tpm is not None:
            yield self.tpm
        else:
            with TpmDevice(self.swtpm.tcti) as tpm:
                yield tpm

    @property
    def uefi_log_path(self) -> Path:
        assert self.log_dir is not None
        return self.log_dir / "binary_bios_measurements"

    @property
    def ima_log_path(self) -> Path:
        assert self.log_dir is not None
        return self.log_dir / "ascii_runtime_measurements"

    def boot(self) -> None:
        """Measure a UEFI + shim + GRUB boot into PCRs 0-9, then IMA's boot_aggregate and the golden files."""
        self.uefi = build_eventlog(typical_boot(secure_boot_enabled=self.secure_boot, cmdline=CMDLINE), self.banks)
        self.ima = ImaLogBuilder()
        with self._device() as tpm:
            for pcr, digests in self.uefi.extends:
                tpm.pcr_extend(pcr, digests)
            boot_pcrs = tpm.pcr_read({SHA256.name: range(10)})[SHA256.name]
            entries = [self.ima.add_boot_aggregate(boot_pcrs, SHA256)]
            entries += [self.ima.add_file(path, content) for path, content in self.files.items()]
            for entry in entries:
                tpm.pcr_extend(IMA_PCR, self._pcr10_digests(entry))
        self._write_logs()

    def reboot(self) -> None:
        self.swtpm.reboot()
        self.boot()

    def execute(self, path: str, content: bytes) -> ImaEntry:
        """IMA measures a file before it runs: one entry in the log, one extend of PCR 10 per bank."""
        entry = self.ima.add_file(path, content)
        with self._device() as tpm:
            tpm.pcr_extend(IMA_PCR, self._pcr10_digests(entry))
        self._write_logs()
        return entry

    def _pcr10_digests(self, entry: ImaEntry) -> dict[str, bytes]:
        digests = {}
        for name in self.banks:
            bank = hash_by_name(name)
            assert bank is not None
            digests[name] = next(pcr10_digests([entry], bank))
        return digests

    def _write_logs(self) -> None:
        if self.log_dir is None or self.uefi is None:
            return
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.uefi_log_path.write_bytes(self.uefi.data)
        self.ima_log_path.write_bytes(self.ima.ascii().encode("utf-8", "surrogateescape"))

    def evidence(self, ak: Ak, nonce: bytes, selection: Mapping[str, Sequence[int]], ima_offset: int = 0) -> Evidence:
        """What the agent's ``/v1/quote`` returns: a quote, then the logs (read after it, as an agent does)."""
        assert self.uefi is not None, "boot() first"
        with self._device() as tpm:
            q = tpm.quote(ak, nonce, selection)
        ima_lines = self.ima.ascii().splitlines(keepends=True)[ima_offset:]
        return Evidence(q.attest, q.signature, q.pcrs, self.uefi.data, "".join(ima_lines).encode(), ima_offset)

    def evidence_document(self, ak: Ak, nonce: bytes, selection: Mapping[str, Sequence[int]]) -> dict[str, Any]:
        return evidence_to_document(self.evidence(ak, nonce, selection), ak_public=ak.public, nonce=nonce)

    def reference_policy(self, policy_id: str = "sandbox-golden") -> dict[str, Any]:
        """The policy an operator derives from the golden image: PCR 0-7, boot chain, cmdline, allow-list."""
        assert self.uefi is not None, "boot() first"
        log = parse_eventlog(self.uefi.data)
        apps = [c for c in boot_components(log) if c.kind == "efi_application"]
        with self._device() as tpm:
            platform_pcrs = tpm.pcr_read({SHA256.name: range(8)})[SHA256.name]
        allow = {
            e.path: [f"{e.digest_alg}:{e.file_digest.hex()}"] for e in self.ima.entries if e.path != "boot_aggregate"
        }
        return {
            "id": policy_id,
            "version": 1,
            "description": "reference values of the sandbox's golden host image",
            "pcr_banks": ["sha256"],
            "platform": {
                "secure_boot": "required",
                "pcrs": {"sha256": {i: [v.hex()] for i, v in platform_pcrs.items()}},
            },
            "os": {
                "boot_components": sorted({a.digests["sha256"] for a in apps}),
                "kernel_cmdline": [CMDLINE_PATTERN],
            },
            "runtime": {"ima": {"allow": allow, "exclude": ["/tmp/"]}, "max_age": 300},
        }
