"""A real OpenSSH ``sshd`` on loopback: the management interface of a simulated VNF.

The trust-proxy charm logs into a VNF over SSH; tests give it a real sshd instead of a fake so the charm's
SSH client, authentication and remote commands run as they would against a VM. The daemon gets an empty
system configuration (``-f /dev/null``) and everything it needs as ``-o`` options: a generated ed25519 host
key, an authorized_keys file with a generated client key, and ``SetEnv`` variables every session sees (the
VNF's TPM TCTI, log paths, PATH). It runs as the current user; as root, sshd also wants its privilege
separation directory /run/sshd.
"""

from __future__ import annotations

import getpass
import os
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from osm_trustmgr.sandbox.servers import HOST, ManagedProcess, free_port

SSHD = Path("/usr/sbin/sshd")  # sshd refuses to start unless called by its absolute path (it re-executes itself)
PRIVSEP_DIR = Path("/run/sshd")


class SshdError(RuntimeError):
    """sshd did not start; the message carries the end of its log."""


def generate_key(path: Path) -> str:
    """Write a new ed25519 private key in OpenSSH format to ``path`` (mode 0600); return its public key line."""
    key = ed25519.Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_bytes(pem)
    return public_key_line(path)


def public_key_line(path: Path) -> str:
    """``ssh-ed25519 AAAA…`` of the private key in ``path``."""
    key = serialization.load_ssh_private_key(path.read_bytes(), password=None)
    return key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()


def _set_env_option(env: Mapping[str, str]) -> str:
    """One ``SetEnv`` option; sshd splits its value on spaces unless a NAME=value pair is double-quoted."""
    pairs = []
    for name, value in env.items():
        if not name.isidentifier() or any(c in value for c in '"\\\n'):
            raise ValueError(f"cannot pass {name}={value!r} through sshd's SetEnv")
        pair = f"{name}={value}"
        pairs.append(f'"{pair}"' if " " in pair else pair)
    return "SetEnv=" + " ".join(pairs)


class Sshd(ManagedProcess):
    """``with Sshd(env={...}) as sshd:`` log in as ``sshd.user`` with ``sshd.client_key`` on ``sshd.port``.

    Keys live in ``root`` (a temporary directory removed by :meth:`close` when none is given) and are kept
    across restarts, so the host key a client pinned stays valid.
    """

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        *,
        env: Mapping[str, str] | None = None,
        user: str | None = None,
        stop_timeout: float = 5.0,
    ) -> None:
        self._scratch: tempfile.TemporaryDirectory[str] | None = None
        if root is None:
            self._scratch = tempfile.TemporaryDirectory(prefix="osm-trustmgr-sshd-")
            root = self._scratch.name
        self.root = Path(root).resolve()
        self.env = dict(env or {})
        self.user = user or getpass.getuser()
        super().__init__(stop_timeout)
        self.host_key = self.root / "ssh_host_ed25519_key"
        self.client_key = self.root / "client_ed25519_key"
        self.authorized_keys = self.root / "authorized_keys"
        self.log_path = self.root / "sshd.log"
        self.port = 0

    @property
    def client_private_key(self) -> str:
        """The client key as text (what a charm's ``ssh-private-key`` option holds)."""
        return self.client_key.read_text()

    @property
    def host_public_key(self) -> str:
        return public_key_line(self.host_key)

    def start(self, attempts: int = 5) -> Sshd:
        if self.running:
            return self
        self.stop()
        self._ensure_keys()
        if os.geteuid() == 0:
            PRIVSEP_DIR.mkdir(mode=0o755, exist_ok=True)
        for _ in range(attempts):
            if self._launch():
                return self
        raise SshdError(f"sshd did not start: {self._log_tail()}")

    def close(self) -> None:
        self.stop()
        if self._scratch is not None:
            self._scratch.cleanup()

    def __enter__(self) -> Sshd:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _ensure_keys(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if not self.host_key.exists():
            generate_key(self.host_key)
        if not self.client_key.exists():
            self.authorized_keys.write_text(generate_key(self.client_key) + "\n")

    def _argv(self) -> list[str]:
        options = [
            f"ListenAddress={HOST}", f"HostKey={self.host_key}", f"AuthorizedKeysFile={self.authorized_keys}",
            "StrictModes=no",  # the key files live in a test directory sshd would otherwise find too open
            "PidFile=none",  # never touch /run/sshd.pid of a system sshd
            f"AllowUsers={self.user}", "KbdInteractiveAuthentication=no", "UsePAM=no", "PrintMotd=no",
        ]  # fmt: skip
        if self.env:
            options.append(_set_env_option(self.env))
        argv = [str(SSHD), "-D", "-e", "-f", "/dev/null", "-p", str(self.port)]
        for option in options:
            argv += ["-o", option]
        return argv

    def _launch(self) -> bool:
        """Start sshd once; False when it exited during start-up (the port was taken meanwhile)."""
        self.port = free_port()
        with self.log_path.open("ab") as log:
            process = subprocess.Popen(self._argv(), stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        self._adopt(process)
        deadline = time.monotonic() + 10
        while process.poll() is None and time.monotonic() < deadline:
            if self._banner():
                return True
            time.sleep(0.005)
        self.stop()
        return False

    def _banner(self) -> bool:
        """True once our sshd answers with an SSH banner (another process could hold the port)."""
        try:
            with socket.create_connection((HOST, self.port), timeout=1) as probe:
                ready = probe.recv(64).startswith(b"SSH-2.0-")
        except OSError:
            return False
        return ready and self.running

    def _log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-2000:] or "(no output)"
        except OSError:
            return "(no log)"
