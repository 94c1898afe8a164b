"""Fixtures of the descriptor tests: the documents (session-scoped: deep-copy before mutating) and OSM's
pyangbind bindings, built once per session (see support.py)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.descriptors.support import (
    CHARMCRAFT,
    HACKFEST_DIR,
    NSD_FILE,
    VNFD_FILE,
    OsmBindings,
    build_bindings,
    load_yaml,
    unavailable,
)


@pytest.fixture(scope="session")
def osm_bindings(tmp_path_factory: pytest.TempPathFactory) -> OsmBindings:
    return build_bindings(tmp_path_factory.mktemp("osm_im"))


@pytest.fixture(scope="session")
def hackfest() -> dict[str, Any]:
    """OSM's own hackfest3charmed VNFD and NSD (the positive controls)."""
    vnfd, nsd = HACKFEST_DIR / "hackfest_charmed_vnfd_sol006.yaml", HACKFEST_DIR / "hackfest_charmed_nsd_sol006.yaml"
    if not vnfd.is_file() or not nsd.is_file():
        unavailable(f"OSM's hackfest3charmed package not found under {HACKFEST_DIR}")
    return {"vnfd": load_yaml(vnfd), "nsd": load_yaml(nsd)}


@pytest.fixture(scope="session")
def vnfd_doc() -> dict[str, Any]:
    doc: dict[str, Any] = load_yaml(VNFD_FILE)
    return doc


@pytest.fixture(scope="session")
def nsd_doc() -> dict[str, Any]:
    doc: dict[str, Any] = load_yaml(NSD_FILE)
    return doc


@pytest.fixture(scope="session")
def charmcraft() -> dict[str, Any]:
    if not CHARMCRAFT.is_file():
        pytest.fail(f"the charm contract {CHARMCRAFT} is missing")
    doc: dict[str, Any] = load_yaml(CHARMCRAFT)
    return doc


@pytest.fixture(scope="session")
def vnfds(vnfd_doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The packaged VNFDs by id, unwrapped (what an NSD's vnfd-id refers to)."""
    from tests.descriptors import osm_rules

    vnfd = osm_rules.unwrap_vnfd(vnfd_doc)
    return {vnfd["id"]: vnfd}
