"""Fixtures for the evidence transport tests: the fake trust-proxy charm (charms/fake-trust-proxy), an
in-process charm runner, and the OSM simulator on the in-process bus with SecantusDB (or MONGO_URI)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from osm_trustmgr.bus.local import LocalBroker, LocalBus
from osm_trustmgr.evidence.charm_local import CharmRunner
from osm_trustmgr.sandbox.osmsim import OsmSimulator

FAKE_CHARM = Path(__file__).parent / "charms" / "fake-trust-proxy"
TRUST_PROXY = Path(__file__).resolve().parents[2] / "charms" / "trust-proxy"


@pytest.fixture
def runner() -> Iterator[CharmRunner]:
    """The fake trust-proxy charm, run in-process; its private charm root is removed afterwards."""
    charm = CharmRunner(FAKE_CHARM)
    yield charm
    charm.close()


def charm_module(charm: CharmRunner) -> ModuleType:
    """The module the runner imported the charm from (the fake charm's ``TPMS`` and ``CALLS`` live there)."""
    return sys.modules[charm._load().__module__]


@pytest.fixture
async def local_bus() -> AsyncIterator[LocalBus]:
    bus = LocalBus(LocalBroker())
    await bus.start()
    yield bus
    await bus.stop()


def start_sim(mongo_uri: str, mongo_db: str, bus: LocalBus, **options: Any) -> Any:
    """The OSM simulator with fast LCM timings (``async with start_sim(...) as sim``)."""
    defaults: dict[str, Any] = {"token_delay": 0.0, "lcm_delay": 0.05, "pla_poll_interval": 0.05, "pla_timeout": 2.0}
    return OsmSimulator.start(mongo_uri, mongo_db, bus, **{**defaults, **options})


async def deployed_vca(sim: OsmSimulator, nsr_id: str, member: str = "1") -> dict[str, Any]:
    """The member's ``_admin.deployed.VCA`` entry once LCM wrote it."""
    for _ in range(200):
        nsr = await sim.db.get_one("nsrs", {"_id": nsr_id}) or {}
        for vca in ((nsr.get("_admin") or {}).get("deployed") or {}).get("VCA") or ():
            if vca.get("member-vnf-index") == member:
                return dict(vca)
        await asyncio.sleep(0.02)
    raise AssertionError(f"no VCA for member {member} of {nsr_id}")
