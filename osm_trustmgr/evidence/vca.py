"""Evidence from a VNF through its trust-proxy charm (DESIGN.md §5, §7): ``vca.driver: nbi | n2vc | local``.

:class:`CharmClient` has the shape of :class:`~osm_trustmgr.evidence.host_agent.HostAgentClient`
(``identity``, ``activate``, ``quote``), so enrollment and attestation treat hosts and VNFs alike. How the
charm's action is run is a :class:`VcaDriver`:

* :class:`NbiVcaDriver` — an NS action through OSM's NBI (``POST /nslcm/v1/ns_instances/{id}/action``), then the
  nslcmop is polled: LCM stores the charm's results as its ``detailed-status`` (osm/LCM v19 ``ns.py``
  ``NsLcm.action``). Works from anywhere the NBI is reachable; every call is visible in OSM's history.
* :class:`N2vcVcaDriver` — ``N2VCJujuConnector.exec_primitive`` directly, inside OSM's LCM image (N2VC is not on
  PyPI). Faster, but bypasses OSM's operation records.
* :class:`LocalVcaDriver` — the charm run in-process by :class:`~osm_trustmgr.evidence.charm_local.CharmRunner`
  (sandbox, simulator).

Failures are :class:`VcaError` (a ``SourceError``: the action ran and failed — the charm's ``event.fail``, LCM's
FAILED) or :class:`VcaUnavailable` (a ``SourceUnreachable``: it could not be run — NBI down or refusing, no
execution environment, timeout). Results
that cannot be decoded are ``EvidenceError(evidence.malformed)`` (:mod:`~osm_trustmgr.evidence.charm_results`).
"""

from __future__ import annotations

import asyncio
import base64
import importlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from osm_trustmgr.enrollment import PresentedIdentity
from osm_trustmgr.evidence.charm_results import (
    action_output,
    identity_from_results,
    quote_document_from_results,
    secret_from_results,
)
from osm_trustmgr.evidence.errors import SourceError, SourceUnreachable
from osm_trustmgr.osm.nbi import NbiError, NbiFailure, NbiUnreachable
from osm_trustmgr.tpm.pcr import PcrSelection, format_selection_spec

if TYPE_CHECKING:
    from osm_trustmgr.evidence.charm_local import CharmRunner
    from osm_trustmgr.osm.nbi import NbiClient

__all__ = [
    "CharmClient",
    "LocalVcaDriver",
    "N2vcVcaDriver",
    "NbiVcaDriver",
    "VcaDriver",
    "VcaError",
    "VcaUnavailable",
    "VnfTarget",
    "load_n2vc_connector_class",
    "vca_driver_from_config",
]

FINAL_STATES = ("COMPLETED", "PARTIALLY_COMPLETED", "FAILED", "FAILED_TEMP")
# where OSM keeps N2VC: inside LCM since N2VC was merged into it (v19 verified), a package of its own before
N2VC_MODULES = ("osm_lcm.n2vc.n2vc_juju_conn", "n2vc.n2vc_juju_conn")


@dataclass(frozen=True)
class VnfTarget:
    """One VNF's charm: where to run its actions.

    ``project`` is the NBI project to act in (NBI's ``?ADMIN=<project id>``) when the Trust Manager's account
    is an admin of another project; ``ee_id``, ``vca_type`` and ``vca_id`` come from the NS record's
    ``_admin.deployed.VCA[]`` entry of this member index (the n2vc and local drivers need ``ee_id``).
    """

    nsr_id: str
    vnfr_id: str
    member_vnf_index: str
    project: str | None = None
    ee_id: str | None = None
    vca_type: str | None = None
    vca_id: str | None = None

    def describe(self) -> str:
        return f"VNF {self.member_vnf_index} ({self.vnfr_id}) of NS {self.nsr_id}"


class VcaError(SourceError):
    """The action ran and failed (the charm failed it, or LCM marked the operation FAILED)."""

    def __init__(self, detail: str, *, operation: str | None = None) -> None:
        super().__init__(detail)
        self.operation = operation  # the nslcmop id, when the action went through the NBI


class VcaUnavailable(SourceUnreachable):
    """The action could not be run: NBI unreachable or refusing, no execution environment, timeout."""

    def __init__(self, detail: str, *, operation: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.operation = operation


class VcaDriver(Protocol):
    async def run(self, target: VnfTarget, primitive: str, params: Mapping[str, Any]) -> dict[str, Any]:
        """Run the charm's ``primitive`` for ``target``; its results (Juju's: every value text)."""
        ...

    async def close(self) -> None: ...


class CharmClient:
    """The trust-proxy charm of one VNF, with the host agent client's methods. The driver is shared: ``close``
    does not close it."""

    def __init__(self, driver: VcaDriver, target: VnfTarget) -> None:
        self.driver = driver
        self.target = target

    async def identity(self) -> PresentedIdentity:
        return identity_from_results(await self.driver.run(self.target, "identity", {}))

    async def activate(self, credential_blob: bytes, encrypted_secret: bytes) -> bytes:
        params = {
            "credential": base64.b64encode(credential_blob).decode(),
            "secret": base64.b64encode(encrypted_secret).decode(),
        }
        return secret_from_results(await self.driver.run(self.target, "activate", params))

    async def quote(self, nonce: bytes, selection: Sequence[PcrSelection], ima_offset: int) -> dict[str, Any]:
        """The evidence document (DESIGN.md §7), to be parsed by evidence.document."""
        params = {"nonce": nonce.hex(), "pcrs": format_selection_spec(selection), "ima-offset": ima_offset}
        results = await self.driver.run(self.target, "attest", params)
        return quote_document_from_results(results, ima_offset=ima_offset)

    async def close(self) -> None:
        return None


class NbiVcaDriver:
    """NS actions through OSM's NBI, polled until LCM finishes them (DESIGN.md §3).

    ``timeout`` bounds one action end to end and is also sent as ``timeout_ns_action`` so that LCM gives up
    too. While polling, an NBI that is briefly down or answering 5xx is waited for until the deadline.
    """

    def __init__(self, nbi: NbiClient, poll_interval: float = 1.0, timeout: float = 300.0) -> None:
        self.nbi = nbi
        self.poll_interval = poll_interval
        self.timeout = timeout

    async def run(self, target: VnfTarget, primitive: str, params: Mapping[str, Any]) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        what = f"{primitive} on {target.describe()}"
        try:
            op_id = await asyncio.wait_for(
                self.nbi.ns_action(
                    target.nsr_id,
                    target.member_vnf_index,
                    primitive,
                    params,
                    timeout_ns_action=max(1, math.ceil(self.timeout)),
                    as_project=target.project,
                ),
                self.timeout,
            )
        except NbiFailure as exc:
            raise VcaUnavailable(f"could not start {what}: {exc}") from None
        except asyncio.TimeoutError:
            raise VcaUnavailable(f"could not start {what}: no NBI answer in {self.timeout}s") from None
        state, problem = "PROCESSING", ""
        while True:
            remaining = deadline - loop.time()
            try:
                op = await asyncio.wait_for(self.nbi.get_operation(op_id, as_project=target.project), remaining)
            except (asyncio.TimeoutError, NbiUnreachable) as exc:
                problem = f"; last NBI error: {exc}" if isinstance(exc, NbiFailure) else ""
            except NbiError as exc:
                if exc.status < 500:
                    raise VcaUnavailable(f"{what}: {exc}", operation=op_id) from None
                problem = f"; last NBI error: {exc}"
            else:
                state, problem = str(op.get("operationState")), ""
                if state == "COMPLETED":
                    return action_output(op.get("detailed-status"))
                if state in FINAL_STATES:
                    detail = op.get("errorMessage") or op.get("detailed-status") or f"operation {state}"
                    raise VcaError(str(detail), operation=op_id)
            if loop.time() + self.poll_interval > deadline:
                message = f"{what}: nslcmop {op_id} still {state} after {self.timeout}s{problem}"
                raise VcaUnavailable(message, operation=op_id)
            await asyncio.sleep(self.poll_interval)

    async def close(self) -> None:
        return None  # the NBI client belongs to the caller


class N2vcVcaDriver:
    """``exec_primitive`` on OSM's ``N2VCJujuConnector`` (inside OSM's LCM image).

    The call follows osm/LCM v19 ``osm_lcm/n2vc/n2vc_juju_conn.py`` ``N2VCJujuConnector.exec_primitive(ee_id,
    primitive_name, params_dict, db_dict=None, progress_timeout=None, total_timeout=None, vca_id=None,
    vca_type=None)``: it returns the action's results dict (``"CONFIG OK"`` for ``config``) and raises
    ``N2VCExecutionException`` when the action fails — mapped to :class:`VcaError`; anything else it raises
    (bad ee_id, connection) and a timeout are :class:`VcaUnavailable`. N2VC wraps some Juju connection failures
    during an action in ``N2VCExecutionException`` too, so a VcaError here is not always the charm's verdict.
    """

    def __init__(
        self, connector: Any, *, progress_timeout: float | None = None, total_timeout: float | None = 300.0
    ) -> None:
        self.connector = connector
        self.progress_timeout = progress_timeout
        self.total_timeout = total_timeout

    async def run(self, target: VnfTarget, primitive: str, params: Mapping[str, Any]) -> dict[str, Any]:
        if not target.ee_id:
            raise VcaUnavailable(f"{target.describe()} has no execution environment (no ee_id in its deployed VCA)")
        call = self.connector.exec_primitive(
            ee_id=target.ee_id,
            primitive_name=primitive,
            params_dict=dict(params),
            db_dict=None,
            progress_timeout=self.progress_timeout,
            total_timeout=self.total_timeout,
            vca_id=target.vca_id,
            vca_type=target.vca_type or "lxc_proxy_charm",
        )
        # N2VC's own total_timeout should fire first; this bound only catches a connector that hangs
        limit = None if self.total_timeout is None else self.total_timeout + min(10.0, self.total_timeout)
        try:
            output = await asyncio.wait_for(call, limit)
        except asyncio.TimeoutError:
            raise VcaUnavailable(f"{primitive} on {target.describe()}: no answer from N2VC in {limit}s") from None
        except Exception as exc:
            detail = str(getattr(exc, "message", "") or exc)
            if type(exc).__name__ == "N2VCExecutionException":
                raise VcaError(detail) from None
            raise VcaUnavailable(f"{primitive} on {target.describe()}: {type(exc).__name__}: {detail}") from None
        return action_output(output)

    async def close(self) -> None:
        return None  # the connector belongs to the caller


def load_n2vc_connector_class() -> type[Any]:
    """``N2VCJujuConnector``, imported now; ImportError naming what is missing when OSM's N2VC is absent."""
    missing = []
    for module_name in N2VC_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            missing.append(f"{module_name} ({exc})")
            continue
        connector: type[Any] = module.N2VCJujuConnector
        return connector
    raise ImportError(
        "vca.driver n2vc needs OSM's N2VC connector, which is not installed: tried "
        + "; ".join(missing)
        + ". N2VC is not published on PyPI (it ships inside OSM's LCM image, as osm_lcm.n2vc, or as the n2vc "
        "package of older releases): run the Trust Manager in that image, or use vca.driver nbi."
    )


class LocalVcaDriver:
    """Actions of a charm run in this process (:class:`~osm_trustmgr.evidence.charm_local.CharmRunner`), each in a
    worker thread (the trust-proxy charm blocks on SSH). The application is the target's ``ee_id`` (as in the
    OSM simulator), else ``<nsr_id>.<member index>``; ``config`` is N2VC's config primitive. After ``timeout``
    the caller gets VcaUnavailable, but the action goes on in its thread (as a Juju action would) and the runner
    runs nothing else until it ends."""

    def __init__(self, runner: CharmRunner, *, timeout: float | None = None, owns_runner: bool = False) -> None:
        self.runner = runner
        self.timeout = timeout
        self.owns_runner = owns_runner

    async def run(self, target: VnfTarget, primitive: str, params: Mapping[str, Any]) -> dict[str, Any]:
        from osm_trustmgr.evidence.charm_local import run_config_primitive

        app = target.ee_id or f"{target.nsr_id}.{target.member_vnf_index}"
        try:
            if primitive == "config":
                text = await asyncio.wait_for(
                    asyncio.to_thread(run_config_primitive, self.runner, app, dict(params)), self.timeout
                )
                return {"output": text}
            return await asyncio.wait_for(
                asyncio.to_thread(self.runner.run, app, primitive, dict(params)), self.timeout
            )
        except asyncio.TimeoutError:
            raise VcaUnavailable(f"{primitive} on {target.describe()}: no result in {self.timeout}s") from None

    async def close(self) -> None:
        if self.owns_runner:
            self.runner.close()


def vca_driver_from_config(
    driver: str,
    *,
    nbi: NbiClient | None = None,
    timeout: float = 300.0,
    poll_interval: float = 2.0,
    charm_dir: Path | str | None = None,
    n2vc_connector: Any = None,
) -> VcaDriver:
    """The driver the ``vca`` config section asks for (``driver``, ``timeout``, ``poll_interval``, ``charm_dir``).

    ``nbi`` is the service's NBI client (driver ``nbi``); ``n2vc_connector`` an ``N2VCJujuConnector`` built by
    the host process with OSM's database and filesystem objects (driver ``n2vc``); ``charm_dir`` the charm to
    run in-process (driver ``local``).
    """
    if driver == "nbi":
        if nbi is None:
            raise ValueError("vca.driver nbi needs the NBI client")
        return NbiVcaDriver(nbi, poll_interval=poll_interval, timeout=timeout)
    if driver == "n2vc":
        if n2vc_connector is None:
            load_n2vc_connector_class()  # the clear ImportError when N2VC is absent
            raise ValueError("vca.driver n2vc needs an N2VCJujuConnector built with OSM's db and fs objects")
        return N2vcVcaDriver(n2vc_connector, total_timeout=timeout)
    if driver == "local":
        if charm_dir is None:
            raise ValueError("vca.driver local needs vca.charm_dir (the trust-proxy charm's directory)")
        from osm_trustmgr.evidence.charm_local import CharmRunner

        return LocalVcaDriver(CharmRunner(charm_dir), timeout=timeout, owns_runner=True)
    raise ValueError(f"unknown vca.driver {driver!r}: expected nbi, n2vc or local")
