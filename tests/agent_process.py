"""A real ``osm-trust-agent serve`` process on loopback, stopped by PID (shared by agent and host tests)."""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx

from osm_trustmgr.sandbox.servers import HOST, free_port

AGENT = Path(sys.executable).parent / "osm-trust-agent"
START_TIMEOUT = 30.0

Pair = tuple[Path, Path]  # (certificate, key)


def tls_context(ca: Path, cert: Pair | None = None) -> ssl.SSLContext:
    """What a verifier uses: trust ``ca`` for the agent, present ``cert`` when the agent asks for one."""
    context = ssl.create_default_context(cafile=str(ca))
    if cert is not None:
        context.load_cert_chain(*map(str, cert))
    return context


class AgentProcess:
    """One ``osm-trust-agent serve``; ``client()`` talks to it over HTTPS trusting ``ca``."""

    def __init__(
        self, argv: list[str], workdir: Path, ca: Path, probe_cert: Pair | None = None, scheme: str = "https"
    ) -> None:
        self.argv, self.workdir, self.ca, self.probe_cert, self.scheme = argv, workdir, ca, probe_cert, scheme
        self.port = 0
        self.log = workdir / "agent.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"{self.scheme}://{HOST}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def client(self, cert: Pair | None = None, timeout: float = 15) -> httpx.Client:
        verify = tls_context(self.ca, cert) if self.scheme == "https" else False
        return httpx.Client(base_url=self.url, verify=verify, timeout=timeout)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def start(self, attempts: int = 3, *, same_port: bool = False) -> AgentProcess:
        """Start (or restart, with ``same_port``, at the URL a verifier already knows)."""
        for _ in range(attempts):  # a free port can be taken between free_port() and bind(): try another
            if not (same_port and self.port):
                self.port = free_port()
            env = {k: v for k, v in os.environ.items() if not k.startswith("OSMTRUSTAGENT_")}
            with self.log.open("ab") as out:
                self._process = subprocess.Popen(
                    [*self.argv, "--host", HOST, "--port", str(self.port)],
                    stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=env,
                )  # fmt: skip
            if self._wait_healthy():
                return self
            if "address already in use" not in self.output():
                break
        self.stop()
        raise RuntimeError(f"osm-trust-agent did not start:\n{self.output()[-4000:]}")

    def _wait_healthy(self) -> bool:
        assert self._process is not None
        deadline = time.monotonic() + START_TIMEOUT
        with self.client(self.probe_cert, timeout=2) as client:
            while time.monotonic() < deadline:
                if self._process.poll() is not None:
                    return False
                try:
                    if client.get("/healthz").status_code == 200:
                        return True
                except httpx.TransportError:
                    pass
                time.sleep(0.05)
        return False

    def stop(self) -> None:
        """SIGTERM by PID (uvicorn shuts down and the app closes its TPM), SIGKILL if that hangs."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
