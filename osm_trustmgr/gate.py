"""The NS gate (DESIGN.md §5): one decision per NS instantiation, made once, acted on once.

``ns``/``instantiate`` → the LoA the NS requires → the trust of the NFVI hosts of its VIM accounts → a
decision (``accept``, ``reject``, ``not_required``) recorded in ``trust_gates`` before anything is done about
it, published on ``trust``/``gate``, then the actions of ``gate.mode``:

- ``enforce``: NBI cancel (FORCEFUL), then terminate when ``gate.terminate_on_reject``;
- ``placement``: for operations with ``placement-engine: PLA``, answer ``pla``/``placement`` with trusted VIM
  accounts; no trusted VIM → no answer, cancel;
- ``audit``: record and publish only.

When the NS also requires its VNFs to be attested (and a VNF gate is configured), an accepted gate stays open
with a ``vnfs`` action: once LCM reports the instantiation COMPLETED, the VNF gate attests every VNF through
its trust-proxy charm; a VNF below its LoA turns the decision into ``reject``, published again (``stage:
vnfs``), and in enforce mode the NS is terminated.

Every step is written to the gate document as it completes, so a redelivered message finds the decision
made, and a restarted Trust Manager resumes exactly the steps not yet done.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import datetime
from typing import Any

from osm_trustmgr.gate_rules import GateMode, GateSettings, choose_vims, gate_message, planned_actions
from osm_trustmgr.host_check import VimTrust, check_vims
from osm_trustmgr.hosts import HostAttestor, Publisher, utcnow
from osm_trustmgr.osm.messages import (
    NsOperation,
    NsOperationResult,
    OperationCancel,
    OsmEvent,
    PlacementRequest,
    parse_osm_message,
    placement_answer,
)
from osm_trustmgr.osm.nbi import NbiClient, NbiError, NbiUnreachable, OperationNotCancellable
from osm_trustmgr.osm.records import OsmRecords
from osm_trustmgr.osm.requirement import Requirement, RequirementError, required_loa
from osm_trustmgr.store.gates import GateStore
from osm_trustmgr.vnf_gate import VnfGate

__all__ = ["GateMode", "GateSettings", "NsGate"]

log = logging.getLogger(__name__)


class NsGate:
    def __init__(
        self,
        gates: GateStore,
        records: OsmRecords,
        nbi: NbiClient,
        hosts: HostAttestor,
        publisher: Publisher,
        settings: GateSettings,
        *,
        vnf_gate: VnfGate | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.gates, self.records, self.nbi, self.hosts = gates, records, nbi, hosts
        self.vnf_gate = vnf_gate
        self.publisher, self.settings, self._clock = publisher, settings, clock
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}  # gate id -> (lock, users)
        self._background: set[asyncio.Task[None]] = set()

    async def aclose(self) -> None:
        """Stop VNF stages in progress (at shutdown); their gates stay unfinished and are resumed at start."""
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)

    @contextlib.asynccontextmanager
    async def _exclusive(self, gate_id: str) -> AsyncIterator[None]:
        """One handler per gate at a time: the consumer and ``resume()`` (run concurrently by the service) may
        meet on an unfinished gate, and both would publish its decision and run its actions."""
        lock, users = self._locks.get(gate_id, (asyncio.Lock(), 0))
        self._locks[gate_id] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[gate_id]
            if users == 1:
                del self._locks[gate_id]
            else:
                self._locks[gate_id] = (lock, users - 1)

    async def handle(self, event: OsmEvent) -> None:
        gate_id = getattr(event, "nslcmop_id", None)
        if gate_id is None:
            return
        async with self._exclusive(gate_id):
            await self._handle(event)

    async def _handle(self, event: OsmEvent) -> None:
        if isinstance(event, NsOperation) and event.operation == "instantiate":
            await self.on_instantiate(event)
        elif isinstance(event, PlacementRequest):
            await self.on_placement_request(event.nslcmop_id)
        elif isinstance(event, OperationCancel):
            await self.gates.update(event.nslcmop_id, {"osm_cancelled": True})
        elif isinstance(event, NsOperationResult) and event.final:
            if event.operation == "terminate" and event.operation_state == "COMPLETED" and self.vnf_gate:
                await self.vnf_gate.attestor.retire(event.nsr_id)
            if event.operation == "heal" and self.vnf_gate:
                await self.vnf_gate.attestor.healed(event.nslcmop_id, event.operation_state)
            await self.on_operation_result(event)

    async def reject_unreadable(self, nslcmop_id: str, nsr_id: str | None, reason: str) -> None:
        """An ``ns``/``instantiate`` we cannot read is not let through ungated: cancel it (enforce mode)."""
        async with self._exclusive(nslcmop_id):
            await self._reject_unreadable(nslcmop_id, nsr_id, reason)

    async def _reject_unreadable(self, nslcmop_id: str, nsr_id: str | None, reason: str) -> None:
        now = self._clock()
        doc, created = await self.gates.claim({
            "_id": nslcmop_id, "nsr_id": nsr_id, "status": "decided", "mode": self.settings.mode,
            "decision": "reject", "reasons": [f"unreadable instantiate message: {reason}"], "created_at": now,
            "actions": {"cancel": "todo"} if self.settings.mode != "audit" else {}, "achieved_loa": 0,
        })  # fmt: skip
        if not created and doc.get("status") == "done":
            return
        log.warning("gate %s: unreadable instantiate (%s): rejected", nslcmop_id, reason)
        if not doc.get("published"):
            await self.publisher.publish("trust", "gate", gate_message(doc))
            doc = await self._step(nslcmop_id, {"published": True})
        if doc.get("actions", {}).get("cancel") == "todo" and not await self._run_action(
            nslcmop_id, nsr_id, "cancel", None
        ):
            return
        await self._step(nslcmop_id, {"status": "done", "done_at": self._clock()})

    async def resume(self) -> int:
        """Finish the gates a previous run left unfinished; returns how many."""
        unfinished = await self.gates.unfinished()
        for doc in unfinished:
            if "message" not in doc:
                if doc.get("decision") == "reject":  # an unreadable instantiate: only its cancel can be pending
                    await self.reject_unreadable(doc["_id"], doc.get("nsr_id"), "; ".join(doc.get("reasons", [])))
                continue  # a placement request whose instantiate has not arrived yet
            log.info("gate %s: resuming from status %s", doc["_id"], doc.get("status"))
            event = parse_osm_message("ns", "instantiate", json.loads(doc["message"]))
            assert isinstance(event, NsOperation)
            async with self._exclusive(event.nslcmop_id):
                await self.on_instantiate(event)
        return len(unfinished)

    # -- the decision --------------------------------------------------------------------------------

    async def on_instantiate(self, op: NsOperation) -> None:
        now = self._clock()
        doc, created = await self.gates.claim({
            "_id": op.nslcmop_id, "nsr_id": op.nsr_id, "nsd_id": op.params.nsd_id, "status": "received",
            "mode": self.settings.mode, "message": json.dumps(op.raw, default=str), "created_at": now,
            "projects_read": op.projects_read,
        })  # fmt: skip
        if not created and doc.get("status") == "done":
            log.info("gate %s: already decided (%s); message not acted on again", op.nslcmop_id, doc.get("decision"))
            return
        if doc.get("status") in (None, "received"):
            doc = await self._decide(op, doc)
        if not doc.get("published"):
            await self.publisher.publish("trust", "gate", gate_message(doc))
            if "todo" not in doc.get("actions", {}).values():  # nothing to do: published and done at once
                await self.gates.set(op.nslcmop_id, {"published": True, "status": "done", "done_at": self._clock()})
                return
            doc = await self._step(op.nslcmop_id, {"published": True})
        await self._act(op, doc)

    async def _decide(self, op: NsOperation, claimed: dict[str, Any]) -> dict[str, Any]:
        vnfrs = await self.records.constituent_vnfrs(op.nsr_id)
        members = [v.member_vnf_index for v in vnfrs]
        try:
            requirement = required_loa(op, await self.gates.nsd_policy_loa(op.params.nsd_id), members)
        except RequirementError as e:
            reasons = [f"invalid trust requirement: {e}"]
            return await self._record_decision(claimed, op, "reject", None, 0, reasons, None)
        if not requirement.required:
            return await self._record_decision(claimed, op, "not_required", requirement, 0, [], None)
        vims = await self.records.vim_accounts_of(op.nsr_id, op, vnfrs)
        candidates = sorted(set(op.params.valid_vim_accounts or []) | set(vims)) if self._placement(op) else vims
        trust = await check_vims(
            self.hosts, candidates, requirement.host,
            max_age=self.settings.max_age, timeout=self.settings.timeout, now=self._clock(),
        )  # fmt: skip
        if self._placement(op):
            chosen = choose_vims(op, trust, candidates, members)
            accepted = chosen is not None
            reasons = (
                [] if accepted else ["no trusted VIM account among the candidates", *trust.all_reasons(candidates)]
            )
            target = sorted(set(chosen.values())) if chosen else candidates
            return await self._record_decision(claimed, op, "accept" if accepted else "reject", requirement,
                                               trust.achieved(target), reasons, trust, placement=chosen)  # fmt: skip
        ok = requirement.host == 0 or all(trust.trusted(v) for v in vims)
        return await self._record_decision(
            claimed, op, "accept" if ok else "reject", requirement, trust.achieved(vims) if vims else 0,
            [] if ok else trust.all_reasons(vims) or ["the NS targets no VIM account"], trust,
        )  # fmt: skip

    def _placement(self, op: NsOperation) -> bool:
        return self.settings.mode == "placement" and (op.params.placement_engine or "").upper() == "PLA"

    async def _record_decision(
        self,
        claimed: dict[str, Any],
        op: NsOperation,
        decision: str,
        requirement: Requirement | None,
        achieved: int,
        reasons: list[str],
        trust: VimTrust | None,
        *,
        placement: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        vnfs = requirement is not None and (any(requirement.vnf.values()) or requirement.vnf_default > 0)
        if vnfs and self.vnf_gate is None and decision == "accept":
            log.warning("gate %s: the NS requires VNF trust but no VNF gate is configured (vca.driver)", op.nslcmop_id)
        actions = planned_actions(self.settings, decision, self._placement(op), vnfs and self.vnf_gate is not None)
        log.log(
            logging.WARNING if decision == "reject" else logging.INFO,
            "gate %s (NS %s): %s; required host LoA %s, achieved %s; actions %s; %s",
            op.nslcmop_id, op.nsr_id, decision, requirement.host if requirement else "?", achieved,
            ",".join(actions) or "none", "; ".join(reasons) or "no failures",
        )  # fmt: skip
        changes = {
            "status": "decided",
            "decision": decision,
            "required_loa": requirement.ns if requirement else None,
            "required_host_loa": requirement.host if requirement else None,
            "required_vnf_loa": dict(requirement.vnf) if requirement else {},
            "required_vnf_default": requirement.vnf_default if requirement else 0,
            "achieved_loa": achieved,
            "reasons": reasons,
            "hosts": [h.__dict__ for hs in (trust.hosts.values() if trust else []) for h in hs],
            "actions": {a: "todo" for a in actions},
            "placement": dict(placement) if placement else None,
            "decided_at": self._clock(),
        }
        # one write, no read back: the decision is what was claimed plus these changes (``_act`` re-reads the
        # document before any action, e.g. for an OSM cancel that came meanwhile)
        if not await self.gates.set(op.nslcmop_id, changes):
            raise RuntimeError(f"gate {op.nslcmop_id} vanished while it was being decided")
        return {**claimed, **changes}

    # -- acting on it --------------------------------------------------------------------------------

    async def _act(self, op: NsOperation, doc: dict[str, Any]) -> None:
        actions: dict[str, str] = dict(doc.get("actions", {}))
        if doc.get("osm_cancelled") and actions.get("cancel") == "todo":
            # someone cancelled in OSM before the gate did: nothing to cancel, but a terminate still follows
            actions["cancel"] = "not needed: already cancelled in OSM"
            await self._step(op.nslcmop_id, {"actions.cancel": actions["cancel"]})
        if actions.get("placement") == "todo" and not doc.get("placement_requested"):
            return  # answered when LCM asks (pla/get_placement); the gate stays open until then
        if doc.get("vnf_stage") == "decided":
            doc = await self._publish_vnf_stage(doc)
        for action in ("placement", "cancel", "vnfs", "terminate"):
            if actions.get(action) != "todo":
                continue
            if action in ("vnfs", "terminate") and not doc.get("lcm_state"):
                # LCM may deploy even after a cancel (one that reaches it before the instantiate task starts is
                # lost), and NBI refuses to terminate an NS LCM has not started: terminate once LCM reports the
                # operation finished (ns/instantiated), whatever its state. VNFs are attested once deployed.
                return
            if action == "vnfs":
                doc = await self._run_vnf_gate(op, doc)
                actions = dict(doc.get("actions", {}))
                continue
            if not await self._run_action(op.nslcmop_id, op.nsr_id, action, doc.get("placement"), _project(op)):
                return  # later actions wait: terminate only after the cancel went through
        await self.gates.set(op.nslcmop_id, {"status": "done", "done_at": self._clock()})

    async def _run_vnf_gate(self, op: NsOperation, doc: dict[str, Any]) -> dict[str, Any]:
        """Attest the VNFs of a deployed NS; a reject adds the terminate action (enforce mode)."""
        assert self.vnf_gate is not None
        if doc.get("lcm_state") != "COMPLETED":
            return await self._step(op.nslcmop_id, {"actions.vnfs": f"not needed: instantiation {doc['lcm_state']}"})
        exempt = await self.gates.nsd_policy_exemptions(doc.get("nsd_id"))
        result = await self.vnf_gate.check(
            op.nsr_id, op.nslcmop_id, doc.get("required_vnf_loa") or {}, doc.get("required_vnf_default") or 0,
            exempt_vnfds=exempt,
        )  # fmt: skip
        changes: dict[str, Any] = {
            "actions.vnfs": "done", "vnfs": result.documents(), "vnf_stage": "decided",
            "achieved_vnf_loa": result.achieved_loa,
        }  # fmt: skip
        if not result.accepted:
            changes.update(decision="reject", reasons=[*doc.get("reasons", []), *result.reasons])
            if self.settings.mode != "audit" and self.settings.terminate_on_reject:
                changes["actions.terminate"] = "todo"
        log.log(
            logging.INFO if result.accepted else logging.WARNING,
            "gate %s (NS %s): VNFs %s; %s",
            op.nslcmop_id,
            op.nsr_id,
            "accepted" if result.accepted else "rejected",
            "; ".join(result.reasons) or "no failures",
        )
        return await self._publish_vnf_stage(await self._step(op.nslcmop_id, changes))

    async def _publish_vnf_stage(self, doc: dict[str, Any]) -> dict[str, Any]:
        await self.publisher.publish("trust", "gate", {**gate_message(doc), "stage": "vnfs", "vnfs": doc["vnfs"]})
        return await self._step(doc["_id"], {"vnf_stage": "published"})

    async def _run_action(
        self,
        nslcmop_id: str,
        nsr_id: str | None,
        action: str,
        placement: Mapping[str, str] | None,
        project: str | None = None,
    ) -> bool:
        """Run one action and record its result; False when it must be tried again later."""
        try:
            if action == "placement":
                await self.publisher.publish("pla", "placement", placement_answer(nslcmop_id, placement or {}))
            elif action == "cancel":
                # NBI only lets the admin act in the NS's project with ?ADMIN=<project> (as_project)
                await self.nbi.cancel_operation(nslcmop_id, "FORCEFUL", as_project=project)
            elif action == "terminate" and nsr_id:
                await self.nbi.terminate_ns(nsr_id, as_project=project)
            result = "done"
        except OperationNotCancellable as e:
            result = f"not needed: {e}"
        except (NbiUnreachable, NbiError) as e:
            if isinstance(e, NbiError) and e.status < 500:
                result = f"failed: {e}"  # NBI refused: trying again would not change its answer
                log.error("gate %s: %s failed: %s", nslcmop_id, action, e)
            else:
                # NBI down or failing: left "todo", the gate stays unfinished and resume() tries again
                log.error("gate %s: %s postponed, NBI unavailable: %s", nslcmop_id, action, e)
                return False
        except ValueError as e:
            result = f"failed: {e}"
            log.error("gate %s: %s failed: %s", nslcmop_id, action, e)
        await self._step(nslcmop_id, {f"actions.{action}": result})
        log.info("gate %s: %s %s", nslcmop_id, action, result)
        return True

    async def on_operation_result(self, result: NsOperationResult) -> None:
        """LCM finished the operation: a rejected NS can be terminated now (NBI refuses it before)."""
        doc = await self.gates.update(result.nslcmop_id, {"lcm_state": result.operation_state})
        if doc is not None and doc.get("status") == "decided" and "message" in doc:
            event = parse_osm_message("ns", "instantiate", json.loads(doc["message"]))
            assert isinstance(event, NsOperation)
            if doc.get("actions", {}).get("vnfs") == "todo" and doc.get("lcm_state") == "COMPLETED":
                # charm actions take seconds to minutes: not on the consumer's path, which serves every other gate
                # (lcm_state is recorded: a crash meanwhile leaves the gate to resume())
                task = asyncio.create_task(self._act_later(event), name=f"vnf-gate-{event.nslcmop_id}")
                self._background.add(task)
                task.add_done_callback(self._background.discard)
                return
            await self._act(event, doc)

    async def _act_later(self, op: NsOperation) -> None:
        try:
            async with self._exclusive(op.nslcmop_id):
                doc = await self.gates.get(op.nslcmop_id)  # re-read: resume() may have finished it meanwhile
                if doc is not None and doc.get("status") == "decided":
                    await self._act(op, doc)
        except Exception:
            log.exception("gate %s: the VNF stage failed; it is resumed later", op.nslcmop_id)

    async def on_placement_request(self, nslcmop_id: str) -> None:
        doc = await self.gates.mark(nslcmop_id, {"placement_requested": True})
        if doc.get("status") != "decided":
            return  # the instantiate has not been decided yet: the answer follows the decision
        event = parse_osm_message("ns", "instantiate", json.loads(doc["message"]))
        assert isinstance(event, NsOperation)
        await self._act(event, doc)

    async def _step(self, gate_id: str, changes: Mapping[str, Any]) -> dict[str, Any]:
        doc = await self.gates.update(gate_id, changes)
        assert doc is not None
        return doc


def _project(op: NsOperation) -> str | None:
    """The project the NS belongs to (NBI's _admin.projects_read[0]), to act in it as admin."""
    return op.projects_read[0] if op.projects_read else None
