"""A simulated VNF for the trust-proxy charm: a vTPM (swtpm) booted like a real guest, behind a real sshd.

The charm sees what it would see in a VM: it logs in over SSH and finds the TPM through ``TPM2TOOLS_TCTI``,
the UEFI and IMA logs where ``OSMTRUSTAGENT_UEFI_LOG`` / ``OSMTRUSTAGENT_IMA_LOG`` point, and either
``osm-trust-agent`` on its PATH (``with_agent=True``) or only tpm2-tools (``with_agent=False``). The
:class:`~osm_trustmgr.sandbox.host.SimulatedHost` stays usable, so a test can run a file "in the VNF"
(``vnf.host.execute``) and IMA measures it into the log and PCR 10 the charm reports next.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from osm_trustmgr.sandbox.host import SimulatedHost
from osm_trustmgr.sandbox.sshd import Sshd
from osm_trustmgr.sandbox.swtpm import LocalCa, Swtpm

SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def agent_bin_dir() -> Path:
    """The directory of this interpreter's ``osm-trust-agent`` (the virtualenv's bin)."""
    directory = Path(sys.executable).parent
    if not (directory / "osm-trust-agent").exists():
        raise FileNotFoundError(f"osm-trust-agent is not installed next to {sys.executable}")
    return directory


class SimulatedVnf:
    """``with SimulatedVnf(ca=ca) as vnf:`` then configure the charm with ``vnf.ssh_config``.

    ``state_template`` is a provisioned swtpm state directory to copy (fast); without it the swtpm is
    provisioned with EK certificates from ``ca`` (about half a second). Everything lives under ``root``
    (a temporary directory removed by :meth:`close` when none is given).
    """

    def __init__(
        self,
        root: str | Path | None = None,
        *,
        ca: LocalCa,
        state_template: Path | None = None,
        with_agent: bool = True,
        secure_boot: bool = True,
    ) -> None:
        self._scratch: tempfile.TemporaryDirectory[str] | None = None
        if root is None:
            self._scratch = tempfile.TemporaryDirectory(prefix="osm-trustmgr-vnf-")
            root = self._scratch.name
        self.root = Path(root).resolve()
        self.with_agent = with_agent
        self.ak_file = self.root / "agent" / "ak.json"
        tpm_state = self.root / "tpm"
        if state_template is not None and not tpm_state.exists():
            shutil.copytree(state_template, tpm_state)
        self.swtpm = Swtpm(tpm_state, ca=ca, provision=state_template is None)
        self.host = SimulatedHost(self.swtpm, secure_boot=secure_boot, log_dir=self.root / "logs")
        self.sshd: Sshd | None = None

    def start(self) -> SimulatedVnf:
        """Start the vTPM, boot the guest (measured boot and IMA), then sshd."""
        self.swtpm.start()
        self.host.boot()
        path = f"{agent_bin_dir()}:{SYSTEM_PATH}" if self.with_agent else SYSTEM_PATH
        env = {
            "TPM2TOOLS_TCTI": self.swtpm.tcti,
            "TSS2_LOG": "all+NONE",
            "OSMTRUSTAGENT_UEFI_LOG": str(self.host.uefi_log_path),
            "OSMTRUSTAGENT_IMA_LOG": str(self.host.ima_log_path),
            "OSMTRUSTAGENT_AK_FILE": str(self.ak_file),
            "PATH": path,
            # A home of its own: the login shell must not read the real user's ~/.bashrc (which may extend PATH).
            "HOME": str(self.root / "home"),
        }
        (self.root / "home").mkdir(parents=True, exist_ok=True)
        self.sshd = Sshd(self.root / "ssh", env=env).start()
        return self

    def stop(self) -> None:
        """Stop sshd and the swtpm (by PID); the TPM state and keys stay for a restart."""
        if self.sshd is not None:
            self.sshd.stop()
        self.swtpm.stop()

    def close(self) -> None:
        self.stop()
        self.swtpm.close()
        if self._scratch is not None:
            self._scratch.cleanup()

    def __enter__(self) -> SimulatedVnf:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def ssh_config(self) -> dict[str, Any]:
        """The trust-proxy charm's config for this VNF (what OSM's ``config`` primitive would set)."""
        if self.sshd is None or not self.sshd.running:
            raise RuntimeError("the VNF is not started")
        return {
            "ssh-hostname": "127.0.0.1",
            "ssh-port": self.sshd.port,
            "ssh-username": self.sshd.user,
            "ssh-private-key": self.sshd.client_private_key,
        }
