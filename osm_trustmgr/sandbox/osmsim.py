"""A faithful OSM simulator for tests and the sandbox: NBI (REST), LCM and the NBI/LCM side of PLA.

It speaks OSM's contract to whoever is under test: OSM's MongoDB collections (``nsrs``, ``vnfrs``,
``nslcmops``, ``nsds``, ``vnfds``, ``vim_accounts``, ``tokens``, ``projects``) in the given database, OSM's
Kafka topics and encoding through a ``Bus`` (``KafkaBus`` on Tansu or ``LocalBus``), and NBI's REST API on
127.0.0.1 (HTTP, or HTTPS with a test CA). ``osmsim_nbi``, ``osmsim_http`` and ``osmsim_lcm`` name the OSM code
each behaviour reproduces. The caller owns the bus (started before, stopped after); ``stop()`` ends everything
the simulator started: its consumers, LCM tasks, the HTTP server and the database client.

    async with OsmSimulator.start(uri, "osm", bus) as sim:
        vim = await sim.add_vim_account("vim-a")
        ns = await sim.create_ns("ns1", vim)          # NBI: nsr/vnfrs/nslcmop + ns/instantiate
        await sim.wait_operation(ns.nslcmop_id)       # LCM: COMPLETED + ns/instantiated
"""

from __future__ import annotations

import asyncio
import copy
import logging
import socket
import time
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn
from pymongo import AsyncMongoClient

from osm_trustmgr.api.server import EmbeddedServer
from osm_trustmgr.bus.base import Bus, Message

from .osmsim_auth import NbiAuth, Session, SimUser
from .osmsim_docs import OsmDb, VnfSpec, descriptors_for, format_on_new, new_id
from .osmsim_http import Fault, NbiCall, nbi_app
from .osmsim_lcm import ActionHandler, ActionRequest, ActionResult, LcmSimulator
from .osmsim_nbi import NbiEngine
from .osmsim_vca import charm_action_handler
from .servers import HOST
from .tls import TestCa

__all__ = [
    "ActionRequest",
    "ActionResult",
    "Fault",
    "NbiCall",
    "NsInstance",
    "OsmSimulator",
    "SimUser",
    "VnfSpec",
    "charm_action_handler",
]

log = logging.getLogger("osm_trustmgr.sandbox.osmsim")

FINAL_STATES = ("COMPLETED", "PARTIALLY_COMPLETED", "FAILED", "FAILED_TEMP")


@dataclass(frozen=True)
class NsInstance:
    nsr_id: str
    nslcmop_id: str
    nsd_id: str
    vnfr_ids: dict[str, str]  # member-vnf-index -> vnfr _id


class OsmSimulator:
    """Use ``async with OsmSimulator.start(...) as sim`` (or ``sim = await OsmSimulator.start(...)`` + ``stop``)."""

    def __init__(self, client: AsyncMongoClient[dict[str, Any]], db_name: str, bus: Bus, **options: Any) -> None:
        self.client, self.bus = client, bus
        self.db = OsmDb(client[db_name])
        users = options.get("users") or [SimUser("admin", "admin")]
        self.users = {u.username: u for u in users}
        self.auth = NbiAuth(self.db, self.users, token_ttl=options["token_ttl"], token_delay=options["token_delay"])
        self.nbi = NbiEngine(self.db, bus, self.auth)
        self.lcm = LcmSimulator(
            self.db,
            bus,
            deploy_delay=options["lcm_delay"],
            terminate_delay=options["lcm_delay"] / 2
            if options["terminate_delay"] is None
            else options["terminate_delay"],
            pla_poll_interval=options["pla_poll_interval"],
            pla_timeout=options["pla_timeout"],
        )
        if options.get("action_handler"):
            self.lcm.action_handler = options["action_handler"]
        self.calls: list[NbiCall] = []
        self.faults: list[Fault] = []
        self.nbi_url = ""
        self.ca_path: Path | None = None
        self._tls_dir: Path | None = options.get("tls_dir")
        self._groups = (options["lcm_group"], options["nbi_group"])
        self._tasks: list[asyncio.Task[None]] = []
        self._server: EmbeddedServer | None = None
        self._server_task: asyncio.Task[None] | None = None
        self._socket: socket.socket | None = None
        self._stopped = False

    @classmethod
    def start(
        cls,
        db_uri: str,
        db_name: str,
        bus: Bus,
        *,
        users: Sequence[SimUser] = (),
        lcm_delay: float = 0.2,
        terminate_delay: float | None = None,
        pla_timeout: float = 50.0,
        pla_poll_interval: float = 5.0,
        token_ttl: float = 3600.0,
        token_delay: float = 1.0,
        tls_dir: Path | None = None,
        action_handler: ActionHandler | None = None,
        lcm_group: str = "lcm-server",
        nbi_group: str = "nbi-server",
    ) -> _Starting:
        """Start NBI (REST on 127.0.0.1), LCM and NBI's bus readers; ``tls_dir`` → HTTPS with a test CA there.

        ``lcm_delay`` is how long a deployment takes (``terminate_delay``: a termination, default half of it);
        ``pla_poll_interval``/``pla_timeout`` are LCM's 5 s / 50 s wait for a placement answer.
        ``action_handler`` is the VCA: it runs day-2 NS actions and the VNFs' day-1 primitives (e.g.
        ``charm_action_handler(CharmRunner(charm_dir))`` for a real charm); by default every primitive succeeds.
        """
        options = dict(locals())
        for key in ("cls", "db_uri", "db_name", "bus"):
            options.pop(key)
        return _Starting(cls, db_uri, db_name, bus, options)

    async def _start(self) -> None:
        await self.auth.setup()
        lcm_group, nbi_group = self._groups
        self._tasks.append(
            asyncio.create_task(self.bus.run_consumer(["ns", "nslcmops", "pla"], self._lcm, group_id=lcm_group))
        )
        self._tasks.append(asyncio.create_task(self.bus.run_consumer(["ns"], self._nbi_reader, group_id=nbi_group)))
        await self._serve_http()

    async def _serve_http(self) -> None:
        tls: dict[str, Any] = {}
        if self._tls_dir is not None:
            ca = TestCa(self._tls_dir)
            cert, key = ca.issue("osm-nbi")
            tls, self.ca_path = {"ssl_certfile": str(cert), "ssl_keyfile": str(key)}, ca.ca_path
        app = nbi_app(self.auth, self.nbi, self.calls, self.faults)
        # our own listening socket: no window between picking a free port and binding it
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((HOST, 0))
        sock.listen(128)
        port = int(sock.getsockname()[1])
        config = uvicorn.Config(app, host=HOST, port=port, log_level="warning", lifespan="off", access_log=False, **tls)
        server = EmbeddedServer(config)
        self._server, self._server_task = server, asyncio.create_task(server.serve(sockets=[sock]))
        self._socket = sock
        while not server.started:
            if self._server_task.done():
                raise RuntimeError("the NBI simulator's HTTP server did not start")
            await asyncio.sleep(0.01)
        self.nbi_url = f"{'https' if tls else 'http'}://{HOST}:{port}/osm"

    async def _lcm(self, message: Message) -> None:
        try:
            await self.lcm.on_message(message)
        except Exception:  # LCM logs a bad message and goes on reading
            log.exception("LCM simulator failed on %s key %s", message.coordinates, message.key)

    async def _nbi_reader(self, message: Message) -> None:
        try:
            await self.lcm.on_nbi_message(message)
        except Exception:
            log.exception("NBI simulator failed on %s key %s", message.coordinates, message.key)

    async def stop(self) -> None:
        """Stop LCM tasks, consumers and the HTTP server, close the database client. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        await self.lcm.stop()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None and self._server_task is not None:
            self._server.should_exit = True  # graceful: open connections are closed, then serve() returns
            try:
                await asyncio.wait_for(self._server_task, 5.0)
            except (asyncio.TimeoutError, Exception):
                self._server_task.cancel()
                await asyncio.gather(self._server_task, return_exceptions=True)
        if self._socket is not None:
            self._socket.close()
        await self.client.close()

    # -- scenario helpers ----------------------------------------------------------------------------------

    def session(self, project: str = "admin") -> Session:
        return Session("admin", (self.auth.project_id(project),), project == "admin")

    async def add_vim_account(
        self, name: str, *, project: str = "admin", vim_type: str = "openstack", vca: str | None = None
    ) -> str:
        """A VIM account as NBI stores it once LCM has ENABLED it (``VimAccountTopic``)."""
        doc: dict[str, Any] = {
            "_id": new_id(),
            "name": name,
            "vim_type": vim_type,
            "vim_url": f"http://{name}.invalid:5000/v3",
            "vim_tenant_name": "osm",
            "vim_user": "osm",
            "schema_version": "1.11",
            "schema_type": "1.0",
        }
        if vca:
            doc["vca"] = vca
        format_on_new(doc, [self.auth.project_id(project)])
        doc["_admin"].update({"operationalState": "ENABLED", "detailed-status": "Done"})
        await self.db.create("vim_accounts", doc)
        return str(doc["_id"])

    async def onboard(self, vnfs: Sequence[VnfSpec], *, nsd_ref: str | None = None, project: str = "admin") -> str:
        """NSD and VNFDs onboarded and enabled (``DescriptorTopic``); returns the NSD's ``_id``."""
        nsd, vnfds = descriptors_for(nsd_ref or f"trust-ns-{new_id()[:8]}", vnfs)
        projects = [self.auth.project_id(project)]
        state = {"onboardingState": "ONBOARDED", "operationalState": "ENABLED", "usageState": "NOT_IN_USE"}
        for vnfd in vnfds:
            if await self.db.get_one("vnfds", {"id": vnfd["id"]}) is None:
                format_on_new(vnfd, projects)["_admin"].update(state)
                await self.db.create("vnfds", vnfd)
        format_on_new(nsd, projects)["_admin"].update(state)
        await self.db.create("nsds", nsd)
        return str(nsd["_id"])

    async def onboard_descriptors(
        self, nsd: Mapping[str, Any], vnfds: Sequence[Mapping[str, Any]], *, project: str = "admin"
    ) -> str:
        """Descriptors as written in a package (``descriptors/``: the content under ``vnfd:`` / ``nsd: {nsd: [..]}``)
        onboarded and enabled, as ``onboard`` does for generated ones; returns the NSD's ``_id``."""
        projects = [self.auth.project_id(project)]
        state = {"onboardingState": "ONBOARDED", "operationalState": "ENABLED", "usageState": "NOT_IN_USE"}
        for vnfd in vnfds:
            if await self.db.get_one("vnfds", {"id": vnfd["id"]}) is None:
                doc = copy.deepcopy(dict(vnfd))
                format_on_new(doc, projects)["_admin"].update(state)
                await self.db.create("vnfds", doc)
        doc = copy.deepcopy(dict(nsd))
        format_on_new(doc, projects)["_admin"].update(state)
        await self.db.create("nsds", doc)
        return str(doc["_id"])

    async def create_ns(
        self,
        name: str,
        vim_account_id: str,
        *,
        vnfs: Sequence[VnfSpec] = (VnfSpec("1"),),
        nsd_id: str | None = None,
        project: str = "admin",
        additional_params_for_ns: Mapping[str, Any] | None = None,
        additional_params_for_vnf: Mapping[str, Mapping[str, Any]] | None = None,
        placement_engine: str | None = None,
        extra_params: Mapping[str, Any] | None = None,
        deploy_error: str | None = None,
    ) -> NsInstance:
        """``osm ns-create``: NBI's POST ``ns_instances_content`` (nsr, vnfrs, nslcmop, ``ns``/instantiate).

        ``deploy_error`` makes LCM's deployment fail with that text (e.g. a day-1 primitive that failed).
        """
        nsd_id = nsd_id or await self.onboard(vnfs, project=project)
        request: dict[str, Any] = {
            "nsName": name,
            "nsdId": nsd_id,
            "nsDescription": name,
            "vimAccountId": vim_account_id,
        }
        per_vnf = [
            {"member-vnf-index": v.member_index, "vimAccountId": v.vim_account_id} for v in vnfs if v.vim_account_id
        ]
        if per_vnf:
            request["vnf"] = per_vnf
        if additional_params_for_ns is not None:
            request["additionalParamsForNs"] = dict(additional_params_for_ns)
        if additional_params_for_vnf:
            request["additionalParamsForVnf"] = [
                {"member-vnf-index": member, "additionalParams": dict(params)}
                for member, params in additional_params_for_vnf.items()
            ]
        if placement_engine:
            request["placement-engine"] = placement_engine
        request.update(extra_params or {})
        session = self.session(project)
        nsr_id, op_id = await self.nbi.new_ns_instance(session, request)
        if deploy_error:
            self.lcm.deploy_errors[nsr_id] = deploy_error
        for spec in vnfs:
            if spec.hosts:
                self.lcm.vdu_hosts[(nsr_id, spec.member_index)] = spec.hosts
        vnfrs = await self.db.get_list("vnfrs", {"nsr-id-ref": nsr_id})
        return NsInstance(nsr_id, op_id, nsd_id, {v["member-vnf-index-ref"]: v["_id"] for v in vnfrs})

    def add_fault(
        self, path: str, status: int | None = 503, *, count: int = 1, method: str | None = None, delay: float = 0.0
    ) -> Fault:
        """Make the next ``count`` NBI requests matching ``path`` (regex) answer ``status`` (None: only delay)."""
        fault = Fault(path, status, count, method, delay)
        self.faults.append(fault)
        return fault

    async def expire_token(self, token: str) -> None:
        await self.db.set_one("tokens", token, {"expires": time.time() - 1})

    async def wait_operation(
        self, op_id: str, states: Sequence[str] = FINAL_STATES, timeout: float = 10.0
    ) -> dict[str, Any]:
        """Poll the nslcmop until its ``operationState`` is one of ``states``; its document."""
        deadline = time.monotonic() + timeout
        while True:
            doc = await self.db.get_one("nslcmops", {"_id": op_id})
            if doc is not None and doc.get("operationState") in states:
                return doc
            if time.monotonic() > deadline:
                state = doc.get("operationState") if doc else "missing"
                raise TimeoutError(f"nslcmop {op_id} still {state} after {timeout}s")
            await asyncio.sleep(0.02)


class _Starting:
    """``OsmSimulator.start(...)``: awaitable, or an async context manager that stops the simulator."""

    def __init__(self, cls: type[OsmSimulator], uri: str, name: str, bus: Bus, options: dict[str, Any]) -> None:
        self._args = (cls, uri, name, bus, options)
        self._sim: OsmSimulator | None = None

    async def _run(self) -> OsmSimulator:
        cls, uri, name, bus, options = self._args
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri, serverSelectionTimeoutMS=10000)
        sim = cls(client, name, bus, **options)
        try:
            await sim._start()
        except BaseException:
            await sim.stop()
            raise
        return sim

    def __await__(self) -> Generator[Any, None, OsmSimulator]:
        return self._run().__await__()

    async def __aenter__(self) -> OsmSimulator:
        self._sim = await self._run()
        return self._sim

    async def __aexit__(self, *exc: object) -> None:
        if self._sim is not None:
            await self._sim.stop()
