"""N2vcVcaDriver's contract with OSM's N2VCJujuConnector.exec_primitive.

``N2vcSimulator.exec_primitive`` has the exact parameter list of osm/LCM v19
``LCM/osm_lcm/n2vc/n2vc_juju_conn.py`` ``N2VCJujuConnector.exec_primitive`` (github.com/seltonlucas/osm-capk):
``(self, ee_id: str, primitive_name: str, params_dict: dict, db_dict: dict = None, progress_timeout: float =
None, total_timeout: float = None, vca_id: str = None, vca_type: str = None) -> str``, and its behaviour: results
dict for an action, "CONFIG OK" for ``config``, ``N2VCExecutionException`` when the action fails,
``N2VCBadArgumentsException`` for a bad ee_id. Every call the driver makes must bind to that signature — and to
the real class's when OSM's N2VC is importable here; when it is not, loading it must fail with a clear error.
"""

from __future__ import annotations

import asyncio
import importlib.util
import inspect
from typing import Any

import pytest

from osm_trustmgr.evidence.vca import (
    CharmClient,
    N2vcVcaDriver,
    VcaError,
    VcaUnavailable,
    VnfTarget,
    load_n2vc_connector_class,
    vca_driver_from_config,
)

TARGET = VnfTarget("nsr-1", "vnfr-1", "1", ee_id="nsr-1.app-1.0", vca_type="lxc_proxy_charm", vca_id="vca-9")


class N2VCException(Exception):  # osm_lcm/n2vc/exceptions.py: message attribute, __str__ with the class
    def __init__(self, message: str = "") -> None:
        super().__init__(message)
        self.message = message


class N2VCExecutionException(N2VCException):
    def __init__(self, message: str = "", primitive_name: str = "") -> None:
        super().__init__(message)
        self.primitive_name = primitive_name

    def __str__(self) -> str:
        return f"<{type(self)}> Error executing primitive {self.primitive_name} failed: {self.message}"


class N2VCBadArgumentsException(N2VCException):
    pass


class N2vcSimulator:
    def __init__(self, delay: float = 0.0) -> None:
        self.calls: list[dict[str, Any]] = []
        self.delay = delay

    async def exec_primitive(  # the parameter list is OSM's, verbatim
        self,
        ee_id: str,
        primitive_name: str,
        params_dict: dict,  # type: ignore[type-arg]
        db_dict: dict = None,  # type: ignore[assignment,type-arg]  # noqa: RUF013 - OSM's own annotation
        progress_timeout: float = None,  # type: ignore[assignment]  # noqa: RUF013 - OSM's own annotation
        total_timeout: float = None,  # type: ignore[assignment]  # noqa: RUF013 - OSM's own annotation
        vca_id: str = None,  # type: ignore[assignment]  # noqa: RUF013 - OSM's own annotation
        vca_type: str = None,  # type: ignore[assignment]  # noqa: RUF013 - OSM's own annotation
    ) -> str:
        self.calls.append(dict(locals()))
        await asyncio.sleep(self.delay)
        if len(ee_id.split(".")) != 3:
            raise N2VCBadArgumentsException(message=f"ee_id={ee_id} is not a valid execution environment id")
        if primitive_name == "config":
            return "CONFIG OK"
        if params_dict.get("nonce") == "ff":
            raise N2VCExecutionException(
                message=f"Error executing primitive attest in ee={ee_id}: failed: quote refused",
                primitive_name=primitive_name,
            )
        return {"secret": params_dict.get("credential", "")}  # type: ignore[return-value]


def bound_calls(sim: N2vcSimulator) -> list[inspect.BoundArguments]:
    """Each recorded call re-bound, by keyword, to OSM's signature (our simulator's copy of it)."""
    signature = inspect.signature(N2vcSimulator.exec_primitive)
    return [signature.bind(**call) for call in sim.calls]


async def test_calls_bind_to_osm_signature_and_results_come_back() -> None:
    sim = N2vcSimulator()
    driver = N2vcVcaDriver(sim, progress_timeout=60.0, total_timeout=120.0)
    assert await CharmClient(driver, TARGET).activate(b"abc", b"xyz") == b"abc"
    assert await driver.run(TARGET, "config", {"ssh-hostname": "10.0.0.1"}) == {"output": "CONFIG OK"}
    (activate, config) = bound_calls(sim)
    assert activate.arguments["ee_id"] == "nsr-1.app-1.0" and activate.arguments["primitive_name"] == "activate"
    assert activate.arguments["params_dict"] == {"credential": "YWJj", "secret": "eHl6"}
    assert type(activate.arguments["params_dict"]) is dict
    assert (activate.arguments["vca_id"], activate.arguments["vca_type"]) == ("vca-9", "lxc_proxy_charm")
    assert (activate.arguments["progress_timeout"], activate.arguments["total_timeout"]) == (60.0, 120.0)
    assert activate.arguments["db_dict"] is None and config.arguments["primitive_name"] == "config"
    # the same calls bind to the real N2VCJujuConnector when OSM's N2VC is installed here
    try:
        real = load_n2vc_connector_class()
    except ImportError as exc:
        assert importlib.util.find_spec("osm_lcm") is None or importlib.util.find_spec("osm_lcm.n2vc") is None
        text = str(exc)
        assert "osm_lcm.n2vc.n2vc_juju_conn" in text and "n2vc.n2vc_juju_conn" in text
        assert "not published on PyPI" in text and "vca.driver nbi" in text
    else:
        signature = inspect.signature(real.exec_primitive)
        for call in sim.calls:
            signature.bind(**call)


async def test_n2vc_failures() -> None:
    sim = N2vcSimulator()
    driver = N2vcVcaDriver(sim)
    with pytest.raises(VcaError) as failed:
        await driver.run(TARGET, "attest", {"nonce": "ff"})
    assert failed.value.detail == "Error executing primitive attest in ee=nsr-1.app-1.0: failed: quote refused"
    bad = VnfTarget("nsr-1", "vnfr-1", "1", ee_id="not-an-ee-id")
    with pytest.raises(VcaUnavailable, match="N2VCBadArgumentsException: ee_id=not-an-ee-id is not a valid"):
        await driver.run(bad, "identity", {})
    with pytest.raises(VcaUnavailable, match="has no execution environment"):
        await driver.run(VnfTarget("nsr-1", "vnfr-1", "1"), "identity", {})
    assert len(sim.calls) == 2  # no ee_id: N2VC was not even called
    assert bound_calls(sim)[1].arguments["vca_type"] == "lxc_proxy_charm"  # OSM's default VCA type
    hung = N2vcVcaDriver(N2vcSimulator(delay=5.0), total_timeout=0.1)
    with pytest.raises(VcaUnavailable, match="no answer from N2VC"):
        await hung.run(TARGET, "identity", {})


def test_factory() -> None:
    sim = N2vcSimulator()
    driver = vca_driver_from_config("n2vc", n2vc_connector=sim, timeout=42.0)
    assert isinstance(driver, N2vcVcaDriver) and driver.connector is sim and driver.total_timeout == 42.0
    try:
        load_n2vc_connector_class()
    except ImportError:
        with pytest.raises(ImportError, match="not published on PyPI"):
            vca_driver_from_config("n2vc")
    else:
        with pytest.raises(ValueError, match="needs an N2VCJujuConnector"):
            vca_driver_from_config("n2vc")
    with pytest.raises(ValueError, match="needs the NBI client"):
        vca_driver_from_config("nbi")
    with pytest.raises(ValueError, match=r"needs vca\.charm_dir"):
        vca_driver_from_config("local")
    with pytest.raises(ValueError, match=r"unknown vca\.driver 'juju'"):
        vca_driver_from_config("juju")
