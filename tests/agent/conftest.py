"""A real ``osm-trust-agent serve`` process over HTTPS, against a swtpm booted like a host (SimulatedHost).

Every agent runs on 127.0.0.1 and a free port, is stopped by PID, and logs into the test's directory.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from osm_trustmgr.sandbox.swtpm import Swtpm
from osm_trustmgr.sandbox.tls import TestCa
from tests.agent_process import AGENT, AgentProcess, Pair


@dataclass
class HostLogs:
    uefi: Path
    ima: Path

    @property
    def ima_lines(self) -> list[str]:
        return self.ima.read_text().splitlines(keepends=True)


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
