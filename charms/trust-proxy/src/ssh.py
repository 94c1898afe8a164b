"""Commands in the VNF over SSH (paramiko), with the credentials OSM's ``config`` primitive set.

Host keys: a proxy charm learns the VNF's address from OSM (``<rw_mgmt_ip>``) and nothing about its host key,
which the VNF generates on first boot, so there is nothing to check the first connection against. The charm
therefore trusts the key it sees first for a host:port and refuses any other key later (trust on first use,
pins kept in the charm's stored state, cleared when the ssh-* config changes). What the pin protects is the
SSH credentials; the attestation itself does not rely on the channel: quotes are signed in the TPM by the
enrolled AK over a fresh nonce, so a man in the middle can delay or drop evidence but not forge it.
"""

from __future__ import annotations

import io
import select
import time
from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import Any

import paramiko


class SshError(Exception):
    """Connecting, authenticating or running a command failed; the message says which and why."""


@dataclass(frozen=True)
class SshTarget:
    hostname: str
    port: int
    username: str
    password: str | None = None
    private_key: str | None = None

    @property
    def endpoint(self) -> str:
        return f"{self.username}@{self.hostname}:{self.port}"


def load_private_key(text: str) -> paramiko.PKey:
    """The key in ``text`` (PEM or OpenSSH format; Ed25519, ECDSA or RSA)."""
    for kind in (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey):
        try:
            return kind.from_private_key(io.StringIO(text))
        except paramiko.PasswordRequiredException:
            raise SshError("ssh-private-key is encrypted; give an unencrypted key") from None
        except (paramiko.SSHException, ValueError, TypeError, IndexError):
            continue  # not this type: paramiko has no "detect the type" loader for text
    raise SshError("ssh-private-key is not an Ed25519, ECDSA or RSA private key")


class _PinningPolicy(paramiko.MissingHostKeyPolicy):
    """Trust on first use, per host:port (see the module docstring for why)."""

    def __init__(self, pins: MutableMapping[str, str], address: str) -> None:
        self._pins, self._address = pins, address

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        seen = f"{key.get_name()} {key.get_base64()}"
        pinned = self._pins.get(self._address)
        if pinned is None:
            self._pins[self._address] = seen
        elif pinned != seen:
            raise SshError(
                f"host key of {self._address} changed (now {key.get_name()} {key.fingerprint}); refusing to log in. "
                "If the VNF was rebuilt, set the ssh-* config again to accept its new key"
            )


class SshRunner:
    """One SSH connection, opened on the first command and reused until :meth:`close`."""

    def __init__(
        self,
        target: SshTarget,
        pins: MutableMapping[str, str],
        *,
        connect_timeout: float = 15.0,
        command_timeout: float = 120.0,
    ) -> None:
        self.target = target
        self._pins = pins
        self._connect_timeout = connect_timeout
        self._command_timeout = command_timeout
        self._client: paramiko.SSHClient | None = None

    def connect(self) -> paramiko.Transport:
        if self._client is None:
            self._client = self._open()
        transport = self._client.get_transport()
        if transport is None or not transport.is_active():
            raise SshError(f"SSH connection to {self.target.endpoint} was closed")
        return transport

    def _open(self) -> paramiko.SSHClient:
        t = self.target
        client = paramiko.SSHClient()
        client.set_missing_host_key_policy(_PinningPolicy(self._pins, f"{t.hostname}:{t.port}"))
        credentials: dict[str, Any] = {}
        if t.private_key:
            credentials["pkey"] = load_private_key(t.private_key)
        if t.password:
            credentials["password"] = t.password
        try:
            # Only the configured credentials: never the agent's or ~/.ssh keys of the machine the charm runs on.
            client.connect(
                t.hostname, port=t.port, username=t.username, allow_agent=False, look_for_keys=False,
                timeout=self._connect_timeout, banner_timeout=self._connect_timeout,
                auth_timeout=self._connect_timeout, channel_timeout=self._connect_timeout, **credentials,
            )  # fmt: skip
        except SshError:
            client.close()
            raise
        except paramiko.AuthenticationException as e:
            client.close()
            raise SshError(f"SSH authentication as {t.username} on {t.hostname}:{t.port} failed: {e}") from None
        except (paramiko.SSHException, OSError, EOFError) as e:
            client.close()
            raise SshError(f"cannot connect to {t.hostname}:{t.port} over SSH: {e or type(e).__name__}") from None
        return client

    def run(self, command: str, stdin: bytes | None = None) -> tuple[int, bytes, bytes]:
        """Run ``command`` through the login shell; returns (exit status, stdout, stderr).

        Both streams are drained as they arrive: a command that fills stderr while we wait on stdout would
        otherwise stall on SSH flow control.
        """
        try:
            channel = self.connect().open_session(timeout=self._connect_timeout)
            with channel:
                channel.exec_command(command)
                if stdin:
                    channel.sendall(stdin)
                channel.shutdown_write()
                return self._collect(channel, command)
        except (paramiko.SSHException, OSError, EOFError) as e:
            raise SshError(f"SSH command on {self.target.endpoint} failed: {e or type(e).__name__}") from None

    def _collect(self, channel: paramiko.Channel, command: str) -> tuple[int, bytes, bytes]:
        out, err = bytearray(), bytearray()
        deadline = time.monotonic() + self._command_timeout
        while True:
            if channel.recv_ready():
                out += channel.recv(65536)
            elif channel.recv_stderr_ready():
                err += channel.recv_stderr(65536)
            elif channel.exit_status_ready():
                # The exit status follows all of a command's output in the channel: nothing is left to read.
                return channel.recv_exit_status(), bytes(out), bytes(err)
            elif time.monotonic() > deadline:
                name = command.split()[0] if command.split() else command
                raise SshError(f"{name} did not finish within {self._command_timeout:.0f} s on {self.target.endpoint}")
            else:
                select.select([channel], [], [], 0.02)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def __enter__(self) -> SshRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
