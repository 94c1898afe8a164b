"""Shared fixtures: paths to the real public evidence in ../shared/realdata, and swtpm-backed TPMs."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:  # imported lazily so that tests without tpm2-pytss still collect
    from osm_trustmgr.agent.tpm import Ak, TpmDevice
    from osm_trustmgr.sandbox.servers import TansuBroker
    from osm_trustmgr.sandbox.swtpm import LocalCa, Swtpm

REPO = Path(__file__).resolve().parents[1]
REALDATA = (REPO.parent / "shared" / "realdata").resolve()


@pytest.fixture
def realdata() -> Path:
    """Directory of real UEFI/IMA logs (never copied into the repo); skips when absent."""
    if not REALDATA.is_dir():
        pytest.skip(f"real evidence not available at {REALDATA}")
    return REALDATA


# -- TPM fixtures: swtpm processes (by PID, loopback only) and TpmDevice on them ---------------------------
#
# Provisioning (swtpm_setup, EK certificates) costs ~0.6 s, so it runs once per session into a template state
# directory; each test gets a copy of it and its own swtpm process: a fresh TPM with the same EK certificates.


def _require_swtpm() -> None:
    pytest.importorskip("tpm2_pytss")
    for tool in ("swtpm", "swtpm_setup", "swtpm_ioctl", "swtpm_localca"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")


@pytest.fixture(scope="session")
def swtpm_ca(tmp_path_factory: pytest.TempPathFactory) -> LocalCa:
    """The private swtpm-localca that certified the test TPMs' EKs (the trusted CA)."""
    _require_swtpm()
    from osm_trustmgr.sandbox.swtpm import LocalCa

    return LocalCa(tmp_path_factory.mktemp("swtpm-ca")).ensure()


@pytest.fixture(scope="session")
def untrusted_ca(tmp_path_factory: pytest.TempPathFactory) -> LocalCa:
    """An independent swtpm-localca with the same names, which certified nothing the tests use."""
    _require_swtpm()
    from osm_trustmgr.sandbox.swtpm import LocalCa

    return LocalCa(tmp_path_factory.mktemp("untrusted-ca")).ensure()


@pytest.fixture(scope="session")
def swtpm_state_template(tmp_path_factory: pytest.TempPathFactory, swtpm_ca: LocalCa) -> Path:
    """State of a TPM provisioned once with RSA 2048, ECC P-256 and ECC P-384 EK certificates."""
    from osm_trustmgr.sandbox.swtpm import Swtpm

    state = tmp_path_factory.mktemp("swtpm-template") / "state"
    with Swtpm(state, ca=swtpm_ca):
        pass
    return state


def _swtpm_from_template(template: Path, target: Path, ca: LocalCa) -> Swtpm:
    from osm_trustmgr.sandbox.swtpm import Swtpm

    shutil.copytree(template, target)
    return Swtpm(target, ca=ca, provision=False)


@pytest.fixture
def swtpm(tmp_path: Path, swtpm_state_template: Path, swtpm_ca: LocalCa) -> Iterator[Swtpm]:
    """A running swtpm with a fresh copy of the provisioned state; stopped (by PID) after the test."""
    with _swtpm_from_template(swtpm_state_template, tmp_path / "tpm-state", swtpm_ca) as process:
        yield process


@pytest.fixture
def tpm(swtpm: Swtpm) -> Iterator[TpmDevice]:
    from osm_trustmgr.agent.tpm import TpmDevice

    with TpmDevice(swtpm.tcti) as device:
        yield device


@pytest.fixture(scope="module")
def module_swtpm(
    tmp_path_factory: pytest.TempPathFactory, swtpm_state_template: Path, swtpm_ca: LocalCa
) -> Iterator[Swtpm]:
    """Like ``swtpm`` but shared by a test module, for tests that reuse expensive AKs."""
    target = tmp_path_factory.mktemp("module-tpm") / "state"
    with _swtpm_from_template(swtpm_state_template, target, swtpm_ca) as process:
        yield process


@pytest.fixture(scope="module")
def module_tpm(module_swtpm: Swtpm) -> Iterator[TpmDevice]:
    from osm_trustmgr.agent.tpm import TpmDevice

    with TpmDevice(module_swtpm.tcti) as device:
        yield device


@pytest.fixture(scope="module")
def module_aks(module_tpm: TpmDevice) -> dict[str, Ak]:
    """An RSA and an ECC AK under the RSA EK of ``module_tpm`` (an RSA AK takes ~150 ms to create)."""
    return {alg: module_tpm.create_ak(alg) for alg in ("rsa", "ecc")}


# -- servers: MongoDB wire (SecantusDB, or a real mongod through MONGO_URI) and Kafka protocol (Tansu) -----


@pytest.fixture(scope="session")
def mongo_uri() -> Iterator[str]:
    """``MONGO_URI`` when set (a real mongod), else a SecantusDB process on loopback for the session."""
    import os

    if os.environ.get("MONGO_URI"):
        yield os.environ["MONGO_URI"]
        return
    from osm_trustmgr.sandbox.servers import SecantusServer

    with SecantusServer().start() as server:
        yield server.uri


@pytest.fixture
def mongo_db(mongo_uri: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """A database name of its own for each test, dropped afterwards."""
    import re
    import uuid

    from pymongo import MongoClient

    name = "t_" + re.sub(r"\W", "_", request.node.name)[:40] + "_" + uuid.uuid4().hex[:8]
    yield name
    with MongoClient(mongo_uri) as client:
        client.drop_database(name)


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[TansuBroker]:
    """A Tansu broker (Kafka protocol, memory storage) on a free loopback port for the session."""
    from osm_trustmgr.sandbox.servers import TansuBroker

    with TansuBroker().start() as broker:
        yield broker
