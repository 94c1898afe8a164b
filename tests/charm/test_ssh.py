"""The charm's SSH client (src/ssh.py) and verify-ssh-credentials against a real OpenSSH sshd on loopback
(osm_trustmgr.sandbox.sshd)."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from charm import TrustProxyCharm
from ops import testing
from ssh import SshError, SshRunner, SshTarget, load_private_key

from osm_trustmgr.sandbox.sshd import Sshd, generate_key
from tests.charm.helpers import failure, run_action


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    if not Path("/usr/sbin/sshd").exists():
        pytest.skip("OpenSSH sshd is not installed")
    home = tmp_path_factory.mktemp("home")
    with Sshd(tmp_path_factory.mktemp("sshd"), env={"GREETING": "hello vnf", "HOME": str(home)}) as server:
        yield server


def _config(sshd: Sshd, **changes: Any) -> dict[str, Any]:
    config = {"ssh-hostname": "127.0.0.1", "ssh-port": sshd.port, "ssh-username": sshd.user,
              "ssh-private-key": sshd.client_private_key}  # fmt: skip
    config.update({k.replace("_", "-"): v for k, v in changes.items()})
    return config


def _runner(sshd: Sshd, pins: dict[str, str] | None = None, **options: float) -> SshRunner:
    target = SshTarget("127.0.0.1", sshd.port, sshd.user, private_key=sshd.client_private_key)
    return SshRunner(target, {} if pins is None else pins, **options)


def test_sshd_listens_on_loopback_only(sshd: Sshd) -> None:
    assert sshd.running and sshd.pid is not None
    with socket.create_connection(("127.0.0.1", sshd.port), timeout=2) as s:
        assert s.recv(64).startswith(b"SSH-2.0-OpenSSH")
    # Bound to 127.0.0.1 only: another loopback address of the same machine is refused.
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.2", sshd.port), timeout=2).close()


def test_sshd_restart_keeps_its_keys(tmp_path: Path) -> None:
    server = Sshd(tmp_path / "sshd").start()
    try:
        host_key, first_pid = server.host_public_key, server.pid
        server.stop()
        assert not server.running and server.pid is None
        server.start()
        assert server.host_public_key == host_key and server.pid != first_pid
        with _runner(server) as runner:
            assert runner.run("echo ok")[0] == 0
    finally:
        server.close()


def test_run_returns_status_output_and_environment(sshd: Sshd) -> None:
    with _runner(sshd) as runner:
        assert runner.run("echo $GREETING; echo oops >&2; exit 3") == (3, b"hello vnf\n", b"oops\n")
        # stdin reaches the command; the same connection serves several commands.
        assert runner.run("sh -s -- arg1", b'echo "$1"; cat; exit 0\n') == (0, b"arg1\n", b"")
        big = runner.run("head -c 3000000 /dev/zero; head -c 3000000 /dev/zero >&2")
        assert (len(big[1]), len(big[2])) == (3000000, 3000000)  # both streams drained, no flow-control stall


def test_run_times_out(sshd: Sshd) -> None:
    with _runner(sshd, command_timeout=0.3) as runner:
        start = time.monotonic()
        with pytest.raises(SshError, match="sleep did not finish within 0 s"):
            runner.run("sleep 2")
        assert time.monotonic() - start < 1.5


def test_host_key_is_pinned_on_first_use(sshd: Sshd) -> None:
    pins: dict[str, str] = {}
    with _runner(sshd, pins) as runner:
        runner.run("true")
    assert pins == {f"127.0.0.1:{sshd.port}": sshd.host_public_key}
    forged = {f"127.0.0.1:{sshd.port}": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOtherKeyOtherKeyOtherKeyOtherKeyOtherK"}
    with _runner(sshd, forged) as runner, pytest.raises(SshError, match=r"host key of 127\.0\.0\.1:\d+ changed"):
        runner.run("true")


def test_private_key_formats(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    generate_key(tmp_path / "ed25519")
    assert load_private_key((tmp_path / "ed25519").read_text()).get_name() == "ssh-ed25519"
    for key, name in ((rsa.generate_private_key(65537, 2048), "ssh-rsa"), (ec.generate_private_key(ec.SECP256R1()),
                      "ecdsa-sha2-nistp256")):  # fmt: skip
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption()).decode()  # fmt: skip
        assert load_private_key(pem).get_name() == name
    encrypted = (tmp_path / "ed25519").read_bytes()
    key = serialization.load_ssh_private_key(encrypted, None)
    locked = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                               serialization.BestAvailableEncryption(b"pw")).decode()  # fmt: skip
    with pytest.raises(SshError, match="encrypted"):
        load_private_key(locked)


def test_verify_ssh_credentials(sshd: Sshd, tmp_path: Path) -> None:
    ctx = testing.Context(TrustProxyCharm)
    results, _ = run_action(ctx, "verify-ssh-credentials", _config(sshd))
    assert results == {"verified": "true"}

    generate_key(tmp_path / "stranger")
    wrong_key = _config(sshd, ssh_private_key=(tmp_path / "stranger").read_text())
    message = failure(ctx, "verify-ssh-credentials", wrong_key)
    assert message.startswith(f"SSH authentication as {sshd.user} on 127.0.0.1:{sshd.port} failed")

    wrong_password = _config(sshd, ssh_private_key="", ssh_password="not-the-password")
    assert "SSH authentication" in failure(ctx, "verify-ssh-credentials", wrong_password)

    wrong_user = _config(sshd, ssh_username="nobody-here")
    assert "SSH authentication as nobody-here" in failure(ctx, "verify-ssh-credentials", wrong_user)


def test_verify_ssh_credentials_refuses_a_changed_host_key(sshd: Sshd) -> None:
    ctx = testing.Context(TrustProxyCharm)
    configured = ctx.run(ctx.on.config_changed(), testing.State(config=_config(sshd)))
    stored = next(s for s in configured.stored_states if s.owner_path == "TrustProxyCharm")
    forged = {f"127.0.0.1:{sshd.port}": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFake"}
    pinned = testing.StoredState(owner_path="TrustProxyCharm", content={**stored.content, "host_keys": forged})
    state = testing.State(config=_config(sshd), stored_states={pinned})
    assert "changed" in failure(ctx, "verify-ssh-credentials", {}, state=state)
    # The same config again keeps the pin; new ssh-* values (the operator re-pointing the charm) drop it.
    same = ctx.run(ctx.on.config_changed(), state)
    assert "changed" in failure(ctx, "verify-ssh-credentials", {}, state=same)
    new_values = ctx.run(ctx.on.config_changed(), testing.State(config=_config(sshd, ssh_password="also"),
                                                                stored_states=same.stored_states))  # fmt: skip
    assert run_action(ctx, "verify-ssh-credentials", {}, state=new_values)[0] == {"verified": "true"}
