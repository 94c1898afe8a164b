"""A real ``osm-trust-agent serve`` process over HTTPS, against a swtpm booted like a host (SimulatedHost).

Every agent runs on 127.0.0.1 and a free port, is stopped by PID, and logs into the test's directory.
"""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from osm_trustmgr.sandbox.servers import HOST, free_port
from osm_trustmgr.sandbox.swtpm import Swtpm
from osm_trustmgr.sandbox.tls import TestCa

AGENT = Path(sys.executable).parent / "osm-trust-agent"
START_TIMEOUT = 30.0

Pair = tuple[Path, Path]  # (certificate, key)


def tls_context(ca: Path, cert: Pair | None = None) -> ssl.SSLContext:
    """What a verifier uses: trust ``ca`` for the agent, present ``cert`` when the agent asks for one."""
    context = ssl.create_default_context(cafile=str(ca))
    if cert is not None:
        context.load_cert_chain(*map(str, cert))
    return context


@dataclass
class HostLogs:
    uefi: Path
    ima: Path

    @property
    def ima_lines(self) -> list[str]:
        return self.ima.read_text().splitlines(keepends=True)


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

    def start(self, attempts: int = 3) -> AgentProcess:
        for _ in range(attempts):  # a free port can be taken between free_port() and bind(): try another
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


StartAgent = Callable[..., AgentProcess]


@pytest.fixture(scope="session")
def tls_ca(tmp_path_factory: pytest.TempPathFactory) -> TestCa:
    return TestCa(tmp_path_factory.mktemp("agent-tls"))


@pytest.fixture(scope="session")
def server_cert(tls_ca: TestCa) -> Pair:
    return tls_ca.issue("agent")


@pytest.fixture(scope="session")
def client_cert(tls_ca: TestCa) -> Pair:
    return tls_ca.issue("verifier", client=True, server=False)


@pytest.fixture
def host_logs(swtpm: Swtpm, tmp_path: Path) -> HostLogs:
    """Boot the swtpm as a host (UEFI + IMA extended into its PCRs) and write the logs the agent serves."""
    from osm_trustmgr.agent.tpm import TpmDevice
    from osm_trustmgr.sandbox.host import SimulatedHost

    # swtpm serves one connection at a time: this one closes before the agent opens its own.
    with TpmDevice(swtpm.tcti) as tpm:
        host = SimulatedHost(swtpm, tpm)
        host.boot()
    assert host.uefi is not None
    logs = HostLogs(tmp_path / "binary_bios_measurements", tmp_path / "ascii_runtime_measurements")
    logs.uefi.write_bytes(host.uefi.data)
    logs.ima.write_text(host.ima.ascii())
    return logs


@pytest.fixture
def start_agent(
    swtpm: Swtpm, tmp_path: Path, tls_ca: TestCa, server_cert: Pair, host_logs: HostLogs
) -> Iterator[StartAgent]:
    """``start_agent(*extra_args, probe_cert=None)`` starts an agent on this test's swtpm (same AK file)."""
    started: list[AgentProcess] = []

    def start(*extra: str, probe_cert: Pair | None = None) -> AgentProcess:
        argv = [
            str(AGENT), "serve", "--tcti", swtpm.tcti, "--ak-file", str(tmp_path / "agent" / "ak.json"),
            "--uefi-log", str(host_logs.uefi), "--ima-log", str(host_logs.ima),
            "--cert", str(server_cert[0]), "--key", str(server_cert[1]), *extra,
        ]  # fmt: skip
        agent = AgentProcess(argv, tmp_path, tls_ca.ca_path, probe_cert)
        started.append(agent)
        return agent.start()

    yield start
    for agent in started:
        agent.stop()


@pytest.fixture
def agent(start_agent: StartAgent) -> AgentProcess:
    return start_agent()
