"""Fixtures for the trust-proxy charm: its src/ on sys.path (as Juju runs it), ops.testing contexts, and
simulated VNFs (a real sshd in front of a booted swtpm, see osm_trustmgr.sandbox.vnf)."""

from __future__ import annotations

import copy
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml

CHARM_DIR = Path(__file__).resolve().parents[2] / "charms" / "trust-proxy"
if str(CHARM_DIR / "src") not in sys.path:
    sys.path.insert(0, str(CHARM_DIR / "src"))

from charm import TrustProxyCharm  # noqa: E402
from ops import testing  # noqa: E402

if TYPE_CHECKING:
    from osm_trustmgr.sandbox.swtpm import LocalCa
    from osm_trustmgr.sandbox.vnf import SimulatedVnf


@pytest.fixture(scope="session")
def charmcraft() -> dict[str, Any]:
    return yaml.safe_load((CHARM_DIR / "charmcraft.yaml").read_text())  # type: ignore[no-any-return]


@pytest.fixture
def ctx() -> testing.Context[TrustProxyCharm]:
    """The charm with the metadata, config and actions of its charmcraft.yaml."""
    return testing.Context(TrustProxyCharm)


_JSON_TYPES = {bool: "boolean", int: "integer", float: "number", str: "string", list: "array", dict: "object"}


@pytest.fixture
def lenient_ctx(charmcraft: dict[str, Any]) -> Callable[[str, dict[str, Any]], testing.Context[TrustProxyCharm]]:
    """``lenient_ctx(action, params)``: the charm with ``action`` declaring each of ``params`` with its own type.

    ops.testing refuses params of the wrong type or undeclared ones before the charm runs; this context lets
    such values through, to show the charm rejects them itself (LCM may forward what it got untyped).
    """

    def make(action: str, params: dict[str, Any]) -> testing.Context[TrustProxyCharm]:
        actions = copy.deepcopy(charmcraft["actions"])
        declared = actions[action].setdefault("params", {})
        for name, value in params.items():
            declared.setdefault(name, {})["type"] = _JSON_TYPES[type(value)]
        return testing.Context(TrustProxyCharm, meta={"name": charmcraft["name"]}, actions=actions,
                               config=charmcraft["config"])  # fmt: skip

    return make


def _require_vnf_tools() -> None:
    pytest.importorskip("tpm2_pytss")
    if not Path("/usr/sbin/sshd").exists():
        pytest.skip("OpenSSH sshd is not installed")
    for tool in ("swtpm", "tpm2_quote", "tpm2_createak", "tpm2_activatecredential"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")


@pytest.fixture(scope="module", params=[True, False], ids=["agent", "tpm2-tools"])
def vnf(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    swtpm_state_template: Path,
    swtpm_ca: LocalCa,
) -> Iterator[SimulatedVnf]:
    """A started VNF shared by a module, once with osm-trust-agent on its PATH and once with tpm2-tools only."""
    _require_vnf_tools()
    from osm_trustmgr.sandbox.vnf import SimulatedVnf

    root = tmp_path_factory.mktemp("vnf")
    with SimulatedVnf(root, ca=swtpm_ca, state_template=swtpm_state_template, with_agent=request.param) as v:
        yield v


@pytest.fixture
def make_vnf(tmp_path: Path, swtpm_state_template: Path, swtpm_ca: LocalCa) -> Iterator[Any]:
    """``make_vnf(with_agent=...)``: a fresh VNF of the test's own (for tests that change it); all closed after."""
    _require_vnf_tools()
    from osm_trustmgr.sandbox.vnf import SimulatedVnf

    made: list[SimulatedVnf] = []

    def make(*, with_agent: bool) -> SimulatedVnf:
        vnf = SimulatedVnf(tmp_path / f"vnf-{len(made)}", ca=swtpm_ca, state_template=swtpm_state_template,
                           with_agent=with_agent)  # fmt: skip
        made.append(vnf)
        return vnf.start()

    yield make
    for vnf in made:
        vnf.close()
