"""The NBI half of the OSM simulator: the NS operations NBI validates, stores and announces.

Each method names the NBI code it reproduces (osm/NBI v19, github.com/seltonlucas/osm-capk ``NBI/osm_nbi/``).
Error texts and HTTP codes are NBI's, so a client sees what it would see in OSM. Accounts and tokens are
``osmsim_auth``, the REST layer ``osmsim_http``, LCM's reactions ``osmsim_lcm``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from osm_trustmgr.bus.base import Bus, BusError

from .osmsim_auth import NbiAuth, NbiHttpError, Session, not_found
from .osmsim_docs import OsmDb, ParamError, format_on_new, new_id, nslcmop_document, nsr_document, vnfr_document

__all__ = ["NbiEngine"]

ONGOING = ("STARTING", "PROCESSING", "ROLLING_BACK")  # NsLcmOpTopic.cancel


def _check_body(
    body: Mapping[str, Any], schema: Mapping[str, type | tuple[type, ...]], required: Sequence[str]
) -> None:
    """validation.py ``validate_input`` for the flat schemas used here (types, required, no extras) → 422."""
    for key in required:
        if key not in body:
            raise NbiHttpError(HTTPStatus.UNPROCESSABLE_ENTITY, f"Format error  ''{key}' is a required property' ")
    for key, value in body.items():
        if key not in schema:
            raise NbiHttpError(
                HTTPStatus.UNPROCESSABLE_ENTITY,
                f"Format error  'Additional properties are not allowed ('{key}' was unexpected)' ",
            )
        expected = schema[key]
        if not isinstance(value, expected) or (isinstance(value, bool) and expected is int):
            raise NbiHttpError(HTTPStatus.UNPROCESSABLE_ENTITY, f"Format error at '{key}' '{value!r} is not valid' ")


# validation.py ns_terminate / ns_action (member_vnf_index etc. are name_schema strings)
_TERMINATE = {"lcmOperationType": str, "nsInstanceId": str, "autoremove": bool, "timeout_ns_terminate": int,
              "skip_terminate_primitives": bool, "netsliceInstanceId": str}  # fmt: skip
_ACTION = {"lcmOperationType": str, "nsInstanceId": str, "member_vnf_index": str, "vnf_member_index": str,
           "vdu_id": str, "vdu_count_index": int, "kdu_name": str, "primitive": str, "timeout_ns_action": int,
           "primitive_params": dict}  # fmt: skip
_HEAL = {"lcmOperationType": str, "nsInstanceId": str, "timeout_ns_heal": int, "healVnfData": list}


def _check_heal_items(items: list[Any]) -> None:
    """validation.py ``ns_heal``: ``healVnfData[] {vnfInstanceId (id), cause (description: no quotes, <= 255),
    additionalParams {run-day1 bool, vdu[]}}``, nothing else."""
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("vnfInstanceId"), str):
            raise NbiHttpError(HTTPStatus.UNPROCESSABLE_ENTITY, "Format error at 'healVnfData' 'vnfInstanceId'")
        if set(item) - {"vnfInstanceId", "cause", "additionalParams"}:
            raise NbiHttpError(HTTPStatus.UNPROCESSABLE_ENTITY, "Format error at 'healVnfData': additional properties")
        cause = item.get("cause")
        if cause is not None and (not isinstance(cause, str) or len(cause) > 255 or re.search("['\"]", cause)):
            raise NbiHttpError(HTTPStatus.UNPROCESSABLE_ENTITY, "Format error at 'healVnfData' 'cause'")


@dataclass
class NbiEngine:
    """NBI's engine (``engine.py`` ``Engine``) for NS instances and their operations, over the database and bus."""

    db: OsmDb
    bus: Bus
    auth: NbiAuth

    # -- NS instances and operations (instance_topics.py NsrTopic.new, NsLcmOpTopic.new/cancel) ------------

    async def _publish_or_rollback(
        self, topic: str, key: str, value: Mapping[str, Any], created: list[tuple[str, str]]
    ) -> None:
        """``msg.write``; a bus failure is NBI's MsgException (503), after which ``Server.default`` rolls back."""
        try:
            await self.bus.publish(topic, key, value)
        except BusError as exc:
            for table, _id in reversed(created):
                await self.db.del_one(table, _id)
            raise NbiHttpError(HTTPStatus.SERVICE_UNAVAILABLE, f"Error writing {topic}/{key}: {exc}") from None

    async def new_ns_instance(self, session: Session, request: Mapping[str, Any]) -> tuple[str, str]:
        """POST ``ns_instances_content``: nsr + vnfrs (``NsrTopic.new``), then the instantiate nslcmop."""
        nsd_filter = {**session.read_filter(), "_id": request["nsdId"]}
        nsd = await self.db.get_one("nsds", nsd_filter)
        if nsd is None:
            raise not_found("nsds", nsd_filter)
        nsr_id = new_id()
        try:
            nsr = nsr_document(nsr_id, nsd, request)
            format_on_new(nsr, session.project_ids)
            nsr["_admin"]["nsState"] = "NOT_INSTANTIATED"  # NsrTopic.format_on_new
            vnfrs = []
            for profile in nsd["df"][0].get("vnf-profile", ()):
                vnfd = await self.db.get_one("vnfds", {**session.read_filter(), "id": profile["vnfd-id"]})
                if vnfd is None:
                    raise not_found("vnfds", {"id": profile["vnfd-id"]})
                vnfr = format_on_new(vnfr_document(nsr_id, profile["id"], vnfd, request), session.project_ids)
                vnfr["_admin"]["nsState"] = "NOT_INSTANTIATED"
                vnfrs.append(vnfr)
                nsr["constituent-vnfr-ref"].append(vnfr["_id"])
                if vnfd["_id"] not in nsr["vnfd-id"]:
                    nsr["vnfd-id"].append(vnfd["_id"])
        except ParamError as exc:
            raise NbiHttpError(HTTPStatus.BAD_REQUEST, str(exc)) from None
        await self.db.create("nsrs", nsr)
        for vnfr in vnfrs:
            await self.db.create("vnfrs", vnfr)
        indata = {**request, "lcmOperationType": "instantiate", "nsInstanceId": nsr_id}
        try:
            op_id, _ = await self.new_operation(session, nsr_id, "instantiate", indata)
        except NbiHttpError:
            await self.db.del_one("nsrs", nsr_id)
            await self.db.del_list("vnfrs", {"nsr-id-ref": nsr_id})
            raise
        assert op_id is not None
        return nsr_id, op_id

    async def new_operation(
        self, session: Session, nsr_id: str, operation: str, body: Mapping[str, Any]
    ) -> tuple[str | None, str | None]:
        """``NsLcmOpTopic.new``: checks, the nslcmop in PROCESSING, then ``ns``/<operation> with it as value."""
        indata = {**body, "lcmOperationType": operation, "nsInstanceId": nsr_id}
        if operation == "terminate":
            _check_body(indata, _TERMINATE, ())
        elif operation == "action":
            _check_body(indata, _ACTION, ("primitive", "primitive_params"))
        elif operation == "heal":
            _check_body(indata, _HEAL, ("healVnfData",))
            _check_heal_items(indata["healVnfData"])
        q_filter = {**session.write_filter(), "_id": nsr_id}
        nsr = await self.db.get_one("nsrs", q_filter)
        if nsr is None:
            raise not_found("nsrs", q_filter)
        if nsr["_admin"].get("nsState", "NOT_INSTANTIATED") == "NOT_INSTANTIATED":
            if operation == "terminate" and indata.get("autoremove"):
                return None, None  # nothing deployed: NBI answers {id: null} and creates no operation
            if operation != "instantiate":
                raise NbiHttpError(
                    HTTPStatus.CONFLICT,
                    f"ns_instance '{nsr_id}' cannot be '{operation}' because it is not instantiated",
                )
        elif operation == "instantiate":
            raise NbiHttpError(
                HTTPStatus.CONFLICT,
                f"ns_instance '{nsr_id}' cannot be 'instantiate' because it is already instantiated",
            )
        if operation == "action":
            await self._check_action(nsr, indata)
            indata["primitive_params"] = json.dumps(indata["primitive_params"])  # LCM json.loads it back
        elif indata.get("additionalParamsForVnf"):
            indata["additionalParamsForVnf"] = json.dumps(indata["additionalParamsForVnf"])
        if operation == "instantiate":
            await self._update_vnfrs(session, nsr_id, indata)
        nslcmop = format_on_new(nslcmop_document(nsr_id, operation, indata), session.project_ids)
        if indata.get("placement-engine"):
            vims = await self.db.get_list(
                "vim_accounts", {**session.read_filter(), "_admin.operationalState": "ENABLED"}
            )
            nslcmop["operationParams"]["validVimAccounts"] = [vim["_id"] for vim in vims]
        await self.db.create("nslcmops", nslcmop)
        await self._publish_or_rollback("ns", operation, nslcmop, [("nslcmops", nslcmop["_id"])])
        return nslcmop["_id"], nsr.get("name")

    async def _update_vnfrs(self, session: Session, nsr_id: str, indata: Mapping[str, Any]) -> None:
        """``NsLcmOpTopic._update_vnfrs``: each vnfr gets its VIM (``vnf[].vimAccountId`` or the NS default)."""
        for vnfr in await self.db.get_list("vnfrs", {"nsr-id-ref": nsr_id}):
            vim_id = indata["vimAccountId"]
            for item in indata.get("vnf") or ():
                if item.get("member-vnf-index") == vnfr["member-vnf-index-ref"] and item.get("vimAccountId"):
                    vim_id = item["vimAccountId"]
            vim_filter = {**session.read_filter(), "_id": vim_id}
            vim = await self.db.get_one("vim_accounts", vim_filter)
            if vim is None:
                raise not_found("vim_accounts", vim_filter)
            update: dict[str, Any] = {"vim-account-id": vim_id}
            if vim.get("vca"):
                update["vca-id"] = vim["vca"]
            await self.db.set_one("vnfrs", vnfr["_id"], update)

    async def _check_action(self, nsr: Mapping[str, Any], indata: dict[str, Any]) -> None:
        """``NsLcmOpTopic._check_action_ns_operation`` for VNF primitives (VNFD ``config-primitive``)."""
        if indata.get("vnf_member_index"):
            indata["member_vnf_index"] = indata.pop("vnf_member_index")  # backward compatibility
        member = indata.get("member_vnf_index")
        if not member:
            raise NbiHttpError(
                HTTPStatus.BAD_REQUEST, f"Invalid primitive '{indata['primitive']}' is not present at vnfd/nsd"
            )
        vnfr = await self.db.get_one("vnfrs", {"nsr-id-ref": nsr["_id"], "member-vnf-index-ref": member})
        if vnfr is None:
            raise NbiHttpError(
                HTTPStatus.BAD_REQUEST,
                f"Invalid parameter member_vnf_index='{member}' is not one of the nsd:constituent-vnfd",
            )
        vnfd = await self.db.get_one("vnfds", {"_id": vnfr["vnfd-id"]}) or {}
        configs = vnfd.get("df", [{}])[0].get("lcm-operations-configuration", {})
        configs = configs.get("operate-vnf-op-config", {}).get("day1-2", [])
        wanted = indata.get("vdu_id") or vnfd.get("id")
        if indata.get("vdu_id") and not any(v.get("id") == indata["vdu_id"] for v in vnfd.get("vdu", ())):
            raise NbiHttpError(
                HTTPStatus.BAD_REQUEST, f"Invalid parameter vdu_id='{indata['vdu_id']}' not present at vnfd:vdu:id"
            )
        config: Mapping[str, Any] = next((c for c in configs if c.get("id") == wanted), {})
        for primitive in config.get("config-primitive") or ():
            if primitive["name"] != indata["primitive"]:
                continue
            given = dict(indata.get("primitive_params") or {})
            for param in primitive.get("parameter") or ():
                if param["name"] in given:
                    del given[param["name"]]
                elif "default-value" not in param:
                    raise NbiHttpError(
                        HTTPStatus.BAD_REQUEST,
                        f"Needed parameter {param['name']} not provided for primitive '{indata['primitive']}'",
                    )
            if given:
                raise NbiHttpError(
                    HTTPStatus.BAD_REQUEST,
                    f"parameter/s '{list(given)}' not present at vnfd /nsd for primitive '{indata['primitive']}'",
                )
            return
        raise NbiHttpError(
            HTTPStatus.BAD_REQUEST, f"Invalid primitive '{indata['primitive']}' is not present at vnfd/nsd"
        )

    async def cancel(self, session: Session, op_id: str, body: Any) -> None:
        """``NsLcmOpTopic.cancel``: an ongoing operation only (else 409); marks it, writes ``nslcmops``/cancel."""
        if not isinstance(body, Mapping):
            body = {}
        _check_body(body, {"cancelMode": str, "nsLcmOpOccId": str}, ("cancelMode",))
        if body["cancelMode"] not in ("GRACEFUL", "FORCEFUL"):
            raise NbiHttpError(
                HTTPStatus.UNPROCESSABLE_ENTITY,
                f"Format error at 'cancelMode' ''{body['cancelMode']}' is not one of ['GRACEFUL', 'FORCEFUL']' ",
            )
        q_filter = {**session.write_filter(), "_id": op_id}
        nslcmop = await self.db.get_one("nslcmops", q_filter)
        if nslcmop is None:
            raise not_found("nslcmops", q_filter)
        if nslcmop.get("operationState") not in ONGOING:
            raise NbiHttpError(HTTPStatus.CONFLICT, "Operation is not in STARTING, PROCESSING or ROLLING_BACK state")
        await self.db.set_one("nslcmops", op_id, {"isCancelPending": True, "cancelMode": body["cancelMode"]})
        message = {"_id": op_id, "nsInstanceId": nslcmop["nsInstanceId"], "cancelMode": body["cancelMode"]}
        await self._publish_or_rollback("nslcmops", "cancel", message, [])

    async def show_nslcmop(self, session: Session, op_id: str) -> dict[str, Any]:
        q_filter = {**session.read_filter(), "_id": op_id}
        doc = await self.db.get_one("nslcmops", q_filter)
        if doc is None:
            raise not_found("nslcmops", q_filter)
        return doc
