"""Paths of the example packages and of OSM's models, and the pyangbind build of osm/IM's bindings.

The bindings are what osm/NBI validates descriptors with (``from osm_im import etsi_nfv_vnfd, etsi_nfv_nsd``).
osm/IM's Makefile builds them as (``%.py`` rule, ``etsi`` targets, ``PYANG_OPTIONS := -Werror``)::

    pyang -Werror --path sol006_model/src/yang --plugindir <pyangbind>/plugin -f pybind \\
        -o osm_im/etsi-nfv-vnfd.py models/augments/* sol006_model/src/yang/etsi-nfv-vnfd.yang

(and the same for ``etsi-nfv-nsd``), where ``sol006_model`` is SOL006 branch v2.6.1 after OSM's two patches.
Those inputs are in ``../shared/sol006/osm-im/`` (``sol006-v2.6.1-osm-patched/`` and ``augments/``), outside this
repository: without them the pyangbind tests skip, or fail when ``OSM_TRUSTMGR_REQUIRE_SHARED=1``.
"""

from __future__ import annotations

import copy
import importlib.util
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, NoReturn

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared"
OSM_IM = SHARED / "sol006" / "osm-im"
SOL006_DIR = OSM_IM / "sol006-v2.6.1-osm-patched"
AUGMENTS_DIR = OSM_IM / "augments"
HACKFEST_DIR = SHARED / "osm-samples" / "packages" / "osm-hackfest3charmed"

DESCRIPTORS = REPO / "descriptors"
VNF_PACKAGE = DESCRIPTORS / "trust_proxy_vnf"
NS_PACKAGE = DESCRIPTORS / "trust_proxy_ns"
VNFD_FILE = VNF_PACKAGE / "trust_proxy_vnfd.yaml"
NSD_FILE = NS_PACKAGE / "trust_proxy_nsd.yaml"
PARAMS_DIR = DESCRIPTORS / "params"
CHARMCRAFT = REPO / "charms" / "trust-proxy" / "charmcraft.yaml"


def unavailable(reason: str) -> NoReturn:
    """Skip explicitly, or fail where the shared inputs must exist (``OSM_TRUSTMGR_REQUIRE_SHARED=1``)."""
    if os.environ.get("OSM_TRUSTMGR_REQUIRE_SHARED") == "1":
        pytest.fail(f"{reason} (OSM_TRUSTMGR_REQUIRE_SHARED=1)")
    pytest.skip(reason)


def load_yaml(path: Path) -> Any:
    with path.open(encoding="utf-8") as f:
        return yaml.safe_load(f)


def params_files() -> list[Path]:
    return sorted(PARAMS_DIR.glob("*.yaml"))


def pyang_module_set(kind: str) -> list[Path]:
    """The YANG files of OSM's build of ``osm_im/etsi_nfv_<kind>.py``, in the Makefile's order: every augment
    module (``models/augments/*``), then ``etsi-nfv-<kind>.yang`` of the patched SOL006 v2.6.1."""
    return [*sorted(AUGMENTS_DIR.glob("*.yang")), SOL006_DIR / f"etsi-nfv-{kind}.yang"]


@dataclass(frozen=True)
class OsmBindings:
    vnfd: ModuleType  # defines class etsi_nfv_vnfd
    nsd: ModuleType  # defines class etsi_nfv_nsd
    commands: tuple[tuple[str, ...], ...]
    seconds: float


def _import_file(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build_bindings(out: Path) -> OsmBindings:
    """Run pyang + the pyangbind plugin like osm/IM's Makefile into ``out`` and import the two modules."""
    if not (SOL006_DIR / "etsi-nfv-vnfd.yang").is_file() or not AUGMENTS_DIR.is_dir():
        unavailable(f"OSM's SOL006 v2.6.1 + augments not found under {OSM_IM} (expected at ../shared of the repo)")
    try:
        import pyang  # noqa: F401
        import pyangbind
    except ImportError as exc:
        unavailable(f"pyang/pyangbind are not installed ({exc}); they are in the 'test' extra")
    plugin_dir = Path(pyangbind.__file__).parent / "plugin"
    started = time.perf_counter()
    commands = []
    modules = {}
    for kind in ("vnfd", "nsd"):
        target = out / f"etsi_nfv_{kind}.py"
        command = (
            sys.executable, "-m", "pyang", "-Werror", "--path", str(SOL006_DIR), "--plugindir", str(plugin_dir),
            "-f", "pybind", "-o", str(target), *map(str, pyang_module_set(kind)),
        )  # fmt: skip
        run = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
        if run.returncode != 0 or not target.is_file():
            pytest.fail(f"pyang could not build {target.name} (exit {run.returncode}):\n{run.stderr[-3000:]}")
        commands.append(command)
        modules[kind] = _import_file(f"osm_im_etsi_nfv_{kind}", target)
    return OsmBindings(modules["vnfd"], modules["nsd"], tuple(commands), time.perf_counter() - started)


Doc = dict[str, Any]
Mutation = Callable[[Doc], None]


def day12(doc: Doc) -> Doc:
    """The VNF-level day1-2 entry of a VNFD document (``vnfd: {...}``)."""
    config: Doc = doc["vnfd"]["df"][0]["lcm-operations-configuration"]["operate-vnf-op-config"]["day1-2"][0]
    return config


def primitive(doc: Doc, kind: str, name: str) -> Doc:
    return next(p for p in day12(doc)[kind] if p["name"] == name)


def param(prim: Doc, name: str) -> Doc:
    return next(p for p in prim["parameter"] if p["name"] == name)


def mutated(doc: Doc, mutate: Mutation) -> Doc:
    new = copy.deepcopy(doc)
    mutate(new)
    return new
