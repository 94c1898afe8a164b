"""Fixtures of the OSM contract and simulator tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from osm_trustmgr.bus.local import LocalBus
from tests.osm.tap import Tap, tapped_local_bus


@pytest.fixture
async def local_bus() -> AsyncIterator[tuple[LocalBus, Tap]]:
    async for pair in tapped_local_bus():
        yield pair
