"""The LCM half of the OSM simulator: what OSM's LCM does with ``ns``, ``nslcmops`` and ``pla`` messages.

Reproduced from osm/LCM v19 (github.com/seltonlucas/osm-capk, ``LCM/osm_lcm/``):

* ``lcm.py`` ``Lcm.kafka_read_callback``: ``ns``/instantiate|terminate|action start one task per operation
  (terminate first cancels every task of the NS); ``nslcmops``/cancel cancels the operation's tasks, waits for
  them, then sets ``operationState: FAILED_TEMP, isCancelPending: False`` and unsets ``cancelMode``;
  ``pla``/placement stores ``placement`` as ``nslcmops._admin.pla`` (``NsLcm.update_nsrs_with_pla_result``).
* ``ns.py`` ``NsLcm.instantiate``: BUILDING, ``_admin.nsState: INSTANTIATED`` early (nsrs and vnfrs), placement,
  deployment; its ``finally`` writes READY/COMPLETED or BROKEN/FAILED ("Operation was cancelled" when cancelled)
  and publishes ``ns``/instantiated ``{nsr_id, nslcmop_id, operationState, startTime, links, operationParams}``
  — so a cancelled instantiation announces FAILED, and only the cancel handler then turns the record FAILED_TEMP.
* ``NsLcm._do_placement``: with ``placement-engine: PLA`` write ``pla``/get_placement ``{nslcmopId}``, then
  sleep-and-poll ``_admin.pla`` every 5 s for 50 s; no answer → "Placement timeout for nslcmopId=…" (FAILED);
  an answer sets ``vnfrs.vim-account-id`` for each ``vnf[] {member-vnf-index, vimAccountId}`` it names.
* ``NsLcm.instantiate_N2VC``: once a VNF's execution environment is up, its day-1 ``initial-config-primitive``s
  run in ``seq`` order with parameters mapped from ``{OSM: get_osm_params(vnfr), **additionalParamsForVnf,
  rw_mgmt_ip}`` (``osmsim_vca``); the first failure fails that VNF's task and so the whole instantiation, whose
  ``detailed-status`` is ``_wait_for_tasks``'s "Deploying VCA <member>.: <step>. <exception>".
* ``NsLcm.terminate`` → ``ns``/terminated ``{nsr_id, nslcmop_id, operationState, autoremove}``, NOT_INSTANTIATED;
  ``NsLcm.action`` → parameters mapped like day-1 ones (instantiation params: ``additionalParamsForVnf``), the
  primitive run on the member's VCA, its output in ``detailed-status``, ``ns``/actioned ``{nsr_id, nslcmop_id,
  operationState}``. NBI's ``subscriptions.py`` deletes an autoremoved NS on a COMPLETED ``terminated``.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from osm_trustmgr.bus.base import Bus, Message

from .osmsim_docs import OsmDb
from .osmsim_vca import (
    DAY1_STAGE,
    ActionHandler,
    ActionRequest,
    ActionResult,
    Day1Failed,
    LcmException,
    day12,
    map_primitive_params,
    parse_yaml_strings,
    run_day1,
    vnf_config,
)

__all__ = ["ActionHandler", "ActionRequest", "ActionResult", "LcmSimulator"]

log = logging.getLogger("osm_trustmgr.sandbox.osmsim.lcm")


async def _default_action(request: ActionRequest) -> ActionResult:
    return "COMPLETED", {"output": f"{request.primitive} done"}


class _PlacementTimeout(Exception):
    pass


@dataclass
class LcmSimulator:
    db: OsmDb
    bus: Bus
    deploy_delay: float = 0.2
    terminate_delay: float = 0.1
    pla_poll_interval: float = 5.0  # NsLcm._do_placement: db_poll_interval
    pla_timeout: float = 50.0  # NsLcm._do_placement: db_poll_interval * 10
    action_handler: ActionHandler = _default_action
    deploy_errors: dict[str, str] = field(default_factory=dict)  # nsr_id -> why its deployment fails
    vdu_hosts: dict[tuple[str, str], Mapping[str, str]] = field(default_factory=dict)  # (nsr, member) -> vdu: host
    tasks: dict[tuple[str, str], asyncio.Task[None]] = field(default_factory=dict)
    stopping: bool = False  # stop(): cancelled tasks end silently (LCM going down announces nothing)

    # -- Lcm.kafka_read_callback -------------------------------------------------------------------------

    async def on_message(self, message: Message) -> None:
        topic, command, params = message.topic, message.key, message.value
        if topic == "ns" and command in ("instantiate", "terminate", "action", "heal"):
            nsr_id, op_id = params["nsInstanceId"], params["_id"]
            if await self.db.get_one("nslcmops", {"_id": op_id}) is None:
                log.info("ignoring ns/%s for unknown nslcmop %s", command, op_id)  # LCM: DbException, logged
                return
            if command == "terminate":
                for (ns, _), task in list(self.tasks.items()):
                    if ns == nsr_id:
                        task.cancel()
            work = {"instantiate": self.instantiate, "terminate": self.terminate, "action": self.action,
                    "heal": self.heal}[command]  # fmt: skip
            task = asyncio.create_task(work(nsr_id, op_id), name=f"lcm-{command}-{op_id}")
            self.tasks[(nsr_id, op_id)] = task
            task.add_done_callback(functools.partial(self._forget, (nsr_id, op_id)))
        elif topic == "nslcmops" and command == "cancel":
            await self._cancel(params["nsInstanceId"], params["_id"])
        elif topic == "pla" and command == "placement":
            placement = params.get("placement") or {}
            op_id = placement.get("nslcmopId")
            if op_id and not await self.db.set_one("nslcmops", op_id, {"_admin.pla": placement}):
                log.warning("Update failed for nslcmop_id=%s", op_id)

    def _forget(self, key: tuple[str, str], task: asyncio.Task[None]) -> None:
        if self.tasks.get(key) is task:
            del self.tasks[key]

    async def _cancel(self, nsr_id: str, op_id: str) -> None:
        task = self.tasks.get((nsr_id, op_id))
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await self.db.set_one(
            "nslcmops", op_id, {"operationState": "FAILED_TEMP", "isCancelPending": False}, unset=("cancelMode",)
        )

    async def stop(self) -> None:
        self.stopping = True
        tasks = list(self.tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- shared status writers (NsLcm._write_ns_status / _write_op_status) ---------------------------------

    async def _ns_status(self, nsr_id: str, state: str | None, operation: str, op_id: str | None, **other: Any) -> None:
        update: dict[str, Any] = {
            "_admin.nslcmop": op_id,
            "_admin.current-operation": op_id,
            "_admin.operation-type": operation if operation != "IDLE" else None,
            "currentOperation": operation,
            "currentOperationID": op_id,
            "errorDescription": other.pop("error_description", None),
            "errorDetail": other.pop("error_detail", None),
            **other,
        }
        if state:
            update["nsState"] = state
        await self.db.set_one("nsrs", nsr_id, update)

    async def _op_status(self, op_id: str, stage: str, state: str | None = None, **other: Any) -> None:
        update: dict[str, Any] = {"queuePosition": 0, "stage": stage, **other}
        if state is not None:
            update["operationState"] = state
            update["statusEnteredTime"] = time.time()
        await self.db.set_one("nslcmops", op_id, update)

    # -- NsLcm.instantiate -------------------------------------------------------------------------------

    async def instantiate(self, nsr_id: str, op_id: str) -> None:
        nslcmop: dict[str, Any] = {}
        error: str | None = None
        day1_failed = False
        try:
            await self.db.set_one("nslcmops", op_id, {"_admin.worker": "osmsim-lcm"})  # LcmTasks.lock_HA
            await self._ns_status(
                nsr_id,
                "BUILDING",
                "INSTANTIATING",
                op_id,
                **{"detailed-status": "creating", "operational-status": "init"},
            )
            await self._op_status(op_id, "Stage 1/5: preparation of the environment.")
            nslcmop = await self.db.get_one("nslcmops", {"_id": op_id}) or {}
            await self.db.set_one("nsrs", nsr_id, {"_admin.nsState": "INSTANTIATED", "_admin.deployed.VCA": []})
            await self.db.set_list("vnfrs", {"nsr-id-ref": nsr_id}, {"_admin.nsState": "INSTANTIATED"})
            await self._op_status(op_id, "Stage 2/5: deployment of KDUs, VMs and execution environments.")
            await self._placement(nslcmop)
            await asyncio.sleep(self.deploy_delay)
            if nsr_id in self.deploy_errors:
                raise RuntimeError(self.deploy_errors[nsr_id])
            vnfrs = await self.db.get_list("vnfrs", {"nsr-id-ref": nsr_id})  # as LCM read them: <OSM> has no IPs
            await self._deployed(nsr_id)
            await run_day1(self.db, self.action_handler, nsr_id, op_id, vnfrs, self._op_status)
        except asyncio.CancelledError:
            if self.stopping:
                raise
            error = "Operation was cancelled"
        except _PlacementTimeout:
            error = f"Placement timeout for nslcmopId={op_id}"
        except Day1Failed as exc:
            error, day1_failed = str(exc), True
        except Exception as exc:
            error = str(exc)
        state = "FAILED" if error else "COMPLETED"
        detail = "Done" if error is None else error
        stage = DAY1_STAGE if day1_failed else "Stage 2/5: deployment of KDUs, VMs and execution environments."
        await self._ns_status(
            nsr_id,
            "BROKEN" if error else "READY",
            "IDLE",
            None,
            error_description=f"Operation: INSTANTIATING.{op_id}, {stage}" if error else None,
            error_detail=error,
            **{
                "detailed-status": detail,
                "operational-status": "failed" if error and not day1_failed else "running",
                "config-status": "failed" if day1_failed else "configured",
            },
        )
        await self._op_status(
            op_id, "", state, errorMessage=f"{stage} Detail: {error}" if error else None, **{"detailed-status": detail}
        )
        nsr = await self.db.get_one("nsrs", {"_id": nsr_id}) or {}
        await self.bus.publish(
            "ns",
            "instantiated",
            {
                "nsr_id": nsr_id,
                "nslcmop_id": op_id,
                "operationState": state,
                "startTime": nslcmop.get("startTime"),
                "links": nslcmop.get("links"),
                "operationParams": {"nsInstanceId": nsr_id, "nsdId": nsr.get("nsd-id")},
            },
        )

    async def _placement(self, nslcmop: Mapping[str, Any]) -> None:
        """``NsLcm._do_placement``: ask PLA, poll ``_admin.pla``, apply the VIMs it chose."""
        if (nslcmop.get("operationParams") or {}).get("placement-engine") != "PLA":
            return
        op_id = nslcmop["_id"]
        await self.bus.publish("pla", "get_placement", {"nslcmopId": op_id})
        wait, result = self.pla_timeout, None
        while not result and wait >= 0:
            await asyncio.sleep(self.pla_poll_interval)
            wait -= self.pla_poll_interval
            current = await self.db.get_one("nslcmops", {"_id": op_id}) or {}
            result = (current.get("_admin") or {}).get("pla")
        if not result:
            raise _PlacementTimeout()
        vnfrs = {
            v["member-vnf-index-ref"]: v
            for v in await self.db.get_list("vnfrs", {"nsr-id-ref": nslcmop["nsInstanceId"]})
        }
        for item in result.get("vnf") or ():
            vnfr = vnfrs.get(item.get("member-vnf-index"))
            if item.get("vimAccountId") and vnfr:
                await self.db.set_one("vnfrs", vnfr["_id"], {"vim-account-id": item["vimAccountId"]})

    async def _deployed(self, nsr_id: str) -> None:
        """What RO and N2VC leave behind: VDU addresses and ``vim_info``, and a ready VCA per charmed VNF."""
        vca: list[dict[str, Any]] = []
        for index, vnfr in enumerate(await self.db.get_list("vnfrs", {"nsr-id-ref": nsr_id}), start=1):
            vim = vnfr.get("vim-account-id")
            vnfd = await self.db.get_one("vnfds", {"_id": vnfr["vnfd-id"]}) or {}
            hosts = self.vdu_hosts.get((nsr_id, vnfr["member-vnf-index-ref"]), {})
            vdur = []
            for count, vdu in enumerate(vnfr.get("vdur") or (), start=1):
                address, vim_id = f"10.0.{index}.{count + 9}", f"vm-{vdu['_id'][:8]}"
                details = {"id": vim_id, "status": "ACTIVE", "OS-EXT-SRV-ATTR:host": hosts.get(vdu["vdu-id-ref"])}
                vim_info = {
                    "vim_account_id": vim,
                    "vim_id": vim_id,
                    "vim_status": "ACTIVE",
                    "vim_name": vdu["vdu-name"],
                    "vim_details": yaml.safe_dump(details, default_flow_style=True),
                }
                name = f"{vnfr['member-vnf-index-ref']}-{vdu['vdu-id-ref']}-{vdu.get('count-index', 0)}"
                vdur.append(
                    {
                        **vdu,
                        "ip-address": address,
                        "vim-id": vim_id,
                        "status": "ACTIVE",
                        "name": name,
                        "vim_info": {f"vim:{vim}": vim_info},
                    }
                )
            update: dict[str, Any] = {"vdur": vdur, "ip-address": vdur[0]["ip-address"] if vdur else None}
            await self.db.set_one("vnfrs", vnfr["_id"], update)
            for config in day12(vnfd):
                for ee in config.get("execution-environment-list") or ():
                    if (ee.get("juju") or {}).get("charm"):
                        app = f"{vnfr['member-vnf-index-ref']}-{ee['juju']['charm']}"[:50]
                        vca.append({"member-vnf-index": vnfr["member-vnf-index-ref"], "vdu_id": None,
                                    "kdu_name": None, "vdu_count_index": 0, "vnfd_id": vnfd.get("id"),
                                    "ee_id": f"{nsr_id}.{app}.0", "application": app, "model": nsr_id,
                                    "type": "lxc_proxy_charm", "ee_descriptor_id": ee.get("id"),
                                    "charm_name": ee["juju"]["charm"], "detailed-status": "Ready!",
                                    "operational-status": "active", "config_sw_installed": True,
                                    "needed_terminate": True})  # fmt: skip
        await self.db.set_one("nsrs", nsr_id, {"_admin.deployed.VCA": vca, "configurationStatus": []})

    # -- NsLcm.terminate / NsLcm.action --------------------------------------------------------------------

    async def terminate(self, nsr_id: str, op_id: str) -> None:
        error: str | None = None
        nslcmop = await self.db.get_one("nslcmops", {"_id": op_id}) or {}
        try:
            await self._ns_status(nsr_id, "TERMINATING", "TERMINATING", op_id)
            await self._op_status(op_id, "Stage 1/3: Preparing task.")
            await asyncio.sleep(self.terminate_delay)
        except asyncio.CancelledError:
            if self.stopping:
                raise
            error = "Operation was cancelled"
        state = "FAILED" if error else "COMPLETED"
        extra: dict[str, Any] = {"detailed-status": error or "Done"}
        if not error:
            extra.update({"operational-status": "terminated", "_admin.nsState": "NOT_INSTANTIATED"})
        await self._ns_status(
            nsr_id, "BROKEN" if error else "NOT_INSTANTIATED", "IDLE", None, error_detail=error, **extra
        )
        await self._op_status(op_id, "", state, **{"detailed-status": error or "Done"})
        if not error:
            await self.db.set_list("vnfrs", {"nsr-id-ref": nsr_id}, {"_admin.nsState": "NOT_INSTANTIATED"})
        autoremove = bool((nslcmop.get("operationParams") or {}).get("autoremove", False))
        message = {"nsr_id": nsr_id, "nslcmop_id": op_id, "operationState": state, "autoremove": autoremove}
        await self.bus.publish("ns", "terminated", message)

    async def action(self, nsr_id: str, op_id: str) -> None:
        nslcmop = await self.db.get_one("nslcmops", {"_id": op_id}) or {}
        nsr = await self.db.get_one("nsrs", {"_id": nsr_id}) or {}
        params = dict(nslcmop.get("operationParams") or {})
        primitive_params = params.get("primitive_params") or "{}"
        given = json.loads(primitive_params) if isinstance(primitive_params, str) else dict(primitive_params)
        member, primitive = params.get("member_vnf_index"), str(params.get("primitive"))
        vnfr = await self.db.get_one("vnfrs", {"nsr-id-ref": nsr_id, "member-vnf-index-ref": member}) or {}
        vnfd = await self.db.get_one("vnfds", {"_id": vnfr.get("vnfd-id")}) or {}
        deployed: list[dict[str, Any]] = ((nsr.get("_admin") or {}).get("deployed") or {}).get("VCA") or []
        vca = next((v for v in deployed if v.get("member-vnf-index") == member), {})
        described = next((p for p in vnf_config(vnfd).get("config-primitive") or () if p["name"] == primitive), None)
        try:
            await self._ns_status(nsr_id, None, "RUNNING ACTION", op_id)
            mapped = given
            if described is not None:
                mapped = map_primitive_params(described, given, parse_yaml_strings(vnfr.get("additionalParamsForVnf")))
            request = ActionRequest(nsr_id, op_id, member, params.get("vdu_id"), primitive, mapped,
                                    vnfr_id=vnfr.get("_id"), ee_id=vca.get("ee_id"))  # fmt: skip
            state, output = await self.action_handler(request)
        except asyncio.CancelledError:
            if self.stopping:
                raise
            state, output = "FAILED", f"FAILED {primitive}: Operation was cancelled"
        except LcmException as exc:  # NsLcm.action maps parameters while its step is "Getting vnfd from database"
            state, output = "FAILED", f"FAILED Getting vnfd from database: {exc}"
        except Exception as exc:
            state, output = "FAILED", f"FAILED executing primitive {primitive}: {exc}"
        await self._ns_status(nsr_id, nsr.get("nsState"), "IDLE", None)
        error = output if state == "FAILED" else ""
        await self._op_status(op_id, "", state, errorMessage=error, **{"detailed-status": output})
        await self.bus.publish("ns", "actioned", {"nsr_id": nsr_id, "nslcmop_id": op_id, "operationState": state})

    async def heal(self, nsr_id: str, op_id: str) -> None:
        """``NsLcm.heal``: RO redeploys the VNFs named in ``healVnfData`` and, with ``run-day1``, their day-1
        primitives run again; then ``ns``/healed ``{nsr_id, nslcmop_id, operationState}``. Simulated: only the
        time it takes and the final state (no redeployment)."""
        error: str | None = None
        try:
            await self._ns_status(nsr_id, None, "HEALING", op_id)
            await self._op_status(op_id, "Healing")
            await asyncio.sleep(self.deploy_delay)
        except asyncio.CancelledError:
            if self.stopping:
                raise
            error = "Operation was cancelled"
        state = "FAILED" if error else "COMPLETED"
        await self._ns_status(nsr_id, None, "IDLE", None)
        await self._op_status(op_id, "", state, **{"detailed-status": error or "Done"})
        await self.bus.publish("ns", "healed", {"nsr_id": nsr_id, "nslcmop_id": op_id, "operationState": state})

    # -- NBI subscriptions.py: autoremove ------------------------------------------------------------------

    async def on_nbi_message(self, message: Message) -> None:
        params = message.value
        if message.topic != "ns" or message.key != "terminated" or not params.get("autoremove"):
            return
        if params.get("operationState") not in ("COMPLETED", "PARTIALLY_COMPLETED"):
            return
        nsr_id = params["nsr_id"]
        if await self.db.get_one("nsrs", {"_id": nsr_id}) is None:
            return
        await self.db.del_one("nsrs", nsr_id)
        await self.db.del_list("nslcmops", {"nsInstanceId": nsr_id})
        await self.db.del_list("vnfrs", {"nsr-id-ref": nsr_id})
        await self.bus.publish("ns", "deleted", {"_id": nsr_id})
