"""Typed parsing of the OSM Kafka messages the Trust Manager reads (DESIGN.md §3), and the one it writes.

Checked against OSM's source (v19 snapshot of osm/NBI and osm/LCM in github.com/seltonlucas/osm-capk @35936ae0,
``NBI/`` and ``LCM/``; osm/PLA in github.com/TCSOSM-20/PLA @de4f7820; osm/POL in github.com/TCSOSM-20/POL):

* NBI ``osm_nbi/instance_topics.py`` ``NsLcmOpTopic.new`` writes ``ns``/<operation> for instantiate, terminate,
  action, scale, heal, update, migrate; the key is ``indata["lcmOperationType"]`` and the value is the whole
  nslcmop document built by ``NsLcmOpTopic._create_nslcmop`` plus ``BaseTopic.format_on_new``'s ``_admin``.
  ``operationParams`` is the validated request (``osm_nbi/validation.py`` ``ns_instantiate``), including
  ``lcmOperationType`` and ``nsInstanceId``; ``additionalParamsForVnf`` is replaced by ``json.dumps`` of its list
  (LCM ``osm_lcm/ns.py`` ``NsLcm.instantiate`` ``json.loads`` it back); ``validVimAccounts`` is added by NBI itself
  (``NsLcmOpTopic._get_enabled_vims``: every ENABLED VIM account the requesting project can read) only when
  ``placement-engine`` is set.
* POL (``osm_policy_module/common/lcm_client.py`` ``LcmClient.scale``) writes ``ns``/``scale`` with an nslcmop of
  its own that has no ``_admin``: ``projects_read`` is therefore optional.
* LCM ``osm_lcm/ns.py`` (``instantiate``, ``terminate``, ``action``, ``update``, ``scale``, ``migrate``, ``heal``)
  writes ``ns``/<past tense> ``{nsr_id, nslcmop_id, operationState, …}``; ``osm_lcm/lcm.py``
  ``Lcm.kafka_read_callback`` lists these keys as its own notifications.
* NBI ``NsLcmOpTopic.cancel`` writes ``nslcmops``/``cancel`` ``{_id, nsInstanceId, cancelMode}``.
* LCM ``NsLcm._do_placement`` writes ``pla``/``get_placement`` ``{nslcmopId}``; PLA ``osm_pla/server/server.py``
  ``Server.get_placement`` answers ``pla``/``placement`` ``{placement: {vnf: [...], nslcmopId}}`` (``vnf`` is ``[]``
  on a PLA error and ``[{}]`` when its model is unsatisfiable: ``MznPlacementConductor._run_placement_model``).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypeVar, get_args

from pydantic import (
    AfterValidator,
    AliasPath,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    StrictBool,
    StrictStr,
    ValidationError,
    field_validator,
    model_validator,
)

__all__ = [
    "FINAL_STATES",
    "MAX_ID_BYTES",
    "OPERATIONS",
    "RESULT_KEYS",
    "Ignored",
    "NsOperation",
    "NsOperationResult",
    "OperationCancel",
    "OperationParams",
    "OsmEvent",
    "OsmMessageError",
    "PlacementAnswer",
    "PlacementRequest",
    "PlacementVnf",
    "VnfParams",
    "normalise_vnf_params",
    "parse_osm_message",
    "placement_answer",
]

MAX_ID_BYTES = 1024  # OSM ids are UUIDs and names of at most 255 characters (validation.py name_schema)

Operation = Literal["instantiate", "terminate", "action", "scale", "heal", "update", "migrate"]
OPERATIONS: frozenset[str] = frozenset(get_args(Operation))

# LCM's notification key → the operation it ends. ``update`` ends as updated, vnf_terminated or policy_updated
# (ns.py NsLcm.update ``change_type``); lcm.py also lists verticalscaled.
RESULT_KEYS: Mapping[str, str] = {
    "instantiated": "instantiate",
    "terminated": "terminate",
    "actioned": "action",
    "scaled": "scale",
    "healed": "heal",
    "updated": "update",
    "vnf_terminated": "update",
    "policy_updated": "update",
    "migrated": "migrate",
    "verticalscaled": "verticalscale",
}
# The nslcmop states (NBI _create_nslcmop comment, validation.py subscription operationStates). LCM's Kafka
# notifications carry COMPLETED or FAILED; FAILED_TEMP is what lcm.py writes to the nslcmop on a cancel.
OperationState = Literal[
    "PROCESSING", "COMPLETED", "PARTIALLY_COMPLETED", "FAILED", "FAILED_TEMP", "ROLLING_BACK", "ROLLED_BACK"
]
FINAL_STATES: frozenset[str] = frozenset({"COMPLETED", "PARTIALLY_COMPLETED", "FAILED", "FAILED_TEMP"})

# Well-formed keys we do not act on: NsrTopic (topic_msg "ns") via BaseTopic.delete/edit, NsrTopic.show's
# vca_status_refresh, lcm.py's debugging command; create/created are BaseTopic.new's (NsrTopic.new sends none).
_NS_IGNORED: Mapping[str, str] = {
    "create": "NS record created",
    "created": "NS record created",
    "delete": "NS record deleted",
    "deleted": "NS record deleted",
    "edited": "NS record edited",
    "vca_status_refresh": "VCA status refresh requested by NBI",
    "show": "LCM debugging command",
}


class OsmMessageError(ValueError):
    """A message on a contract topic that OSM would not have written; the caller logs it and skips it.

    ``nslcmop_id``/``nsr_id`` are set when they could still be read, so a caller may fail closed (e.g. cancel
    an instantiation whose parameters cannot be understood) instead of letting it through ungated.
    """

    def __init__(self, reason: str, *, nslcmop_id: str | None = None, nsr_id: str | None = None) -> None:
        super().__init__(reason)
        self.reason, self.nslcmop_id, self.nsr_id = reason, nslcmop_id, nsr_id


def _check_id(value: str) -> str:
    if not value:
        raise ValueError("must not be empty")
    if len(value.encode("utf-8", "surrogatepass")) > MAX_ID_BYTES:
        raise ValueError(f"longer than {MAX_ID_BYTES} bytes")
    return value


Id = Annotated[StrictStr, AfterValidator(_check_id)]
"""An identifier or name we use (in queries, records, logs): a non-empty string of at most 1 KiB."""


class _Osm(BaseModel):
    # strict: no coercion (a YAML int is not an id); only OSM's key names (aliases) are read; extra keys are
    # ignored: OSM adds fields in every release
    model_config = ConfigDict(strict=True, frozen=True, extra="ignore")


class VnfParams(_Osm):
    """``operationParams.vnf[]`` (validation.py ``vnf_schema``): per-VNF VIM account (NBI
    ``NsLcmOpTopic._update_vnfrs`` copies it into ``vnfrs.vim-account-id``)."""

    member_vnf_index: Id = Field(alias="member-vnf-index")
    vim_account_id: Id | None = Field(None, alias="vimAccountId")


class OperationParams(_Osm):
    """``operationParams`` of an nslcmop (validation.py ``ns_instantiate`` and the other operation schemas).
    Keys we do not model stay readable in ``model_extra``."""

    model_config = ConfigDict(extra="allow")

    ns_name: Id | None = Field(None, alias="nsName")
    nsd_id: Id | None = Field(None, alias="nsdId")
    vim_account_id: Id | None = Field(None, alias="vimAccountId")
    vnfs: list[VnfParams] = Field(default_factory=list, alias="vnf")
    additional_params_ns: dict[str, Any] = Field(default_factory=dict, alias="additionalParamsForNs")
    additional_params_vnf: dict[str, dict[str, Any]] = Field(default_factory=dict, alias="additionalParamsForVnf")
    placement_engine: Id | None = Field(None, alias="placement-engine")
    valid_vim_accounts: list[Id] | None = Field(None, alias="validVimAccounts")

    @field_validator("vnfs", mode="before")
    @classmethod
    def _no_vnfs(cls, value: object) -> object:
        return [] if value is None else value

    @field_validator("additional_params_ns", mode="before")
    @classmethod
    def _no_ns_params(cls, value: object) -> object:
        return {} if value is None else value  # nsrs show ``additionalParamsForNs: null`` when none were given

    @field_validator("additional_params_vnf", mode="before")
    @classmethod
    def _per_vnf(cls, value: object) -> dict[str, dict[str, Any]]:
        return normalise_vnf_params(value)


def normalise_vnf_params(value: object) -> dict[str, dict[str, Any]]:
    """``additionalParamsForVnf`` as ``{member-vnf-index: additionalParams}``.

    NBI (``NsLcmOpTopic.new``) stores it as a JSON string of the list the user gave; older nslcmops (and the
    records of LCM's test fixtures) hold the list itself: ``[{member-vnf-index, additionalParams, …}]``
    (validation.py ``additional_params_for_vnf``). A member listed twice is ambiguous (NBI's
    ``_format_additional_params`` silently takes the first), so it is refused.
    """
    if value is None or value == "":
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except (ValueError, RecursionError) as exc:
            raise ValueError(f"not valid JSON: {exc}") from None
    if not isinstance(value, list):
        raise ValueError(f"must be a list (or its JSON text), not {type(value).__name__}")
    result: dict[str, dict[str, Any]] = {}
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            raise ValueError(f"item {i} is not a mapping")
        index = item.get("member-vnf-index")
        if not isinstance(index, str):
            raise ValueError(f"item {i}: member-vnf-index must be a string")
        _check_id(index)
        if index in result:
            raise ValueError(f"member-vnf-index {index!r} listed twice")
        params = item.get("additionalParams")
        if params is None:
            params = {}
        if not isinstance(params, dict):
            raise ValueError(f"item {i}: additionalParams must be a mapping")
        result[index] = params
    return result


class NsOperation(_Osm):
    """An nslcmop as NBI publishes it on ``ns``/<operation> (see the module docstring for the sources)."""

    nslcmop_id: Id = Field(alias="_id")
    nsr_id: Id = Field(alias="nsInstanceId")
    operation: Operation = Field(alias="lcmOperationType")
    operation_state: StrictStr | None = Field(None, alias="operationState")
    params: OperationParams = Field(alias="operationParams")
    projects_read: list[Id] = Field(default_factory=list, validation_alias=AliasPath("_admin", "projects_read"))
    automatic: StrictBool = Field(False, alias="isAutomaticInvocation")  # True when POL scales
    _raw: dict[str, Any] = PrivateAttr(default_factory=dict)

    @field_validator("params", mode="before")
    @classmethod
    def _no_params(cls, value: object) -> object:
        return {} if value is None else value

    @model_validator(mode="after")
    def _instantiate_needs_targets(self) -> NsOperation:
        # NBI's ns_instantiate schema requires nsName, nsdId, vimAccountId; the gate needs the last two
        if self.operation == "instantiate" and (self.params.nsd_id is None or self.params.vim_account_id is None):
            raise ValueError("instantiate without operationParams.nsdId and vimAccountId")
        return self

    @property
    def raw(self) -> dict[str, Any]:
        """The message value as received (a private copy), e.g. to store it and parse it again later."""
        return self._raw


class NsOperationResult(_Osm):
    """LCM's notification that an operation ended (or changed state): ``ns``/instantiated, terminated, …"""

    event: StrictStr
    nsr_id: Id
    nslcmop_id: Id
    operation_state: OperationState = Field(alias="operationState")
    vnf_member_index: Id | None = None  # only on vnf_terminated / policy_updated (ns.py NsLcm.update)

    @property
    def operation(self) -> str:
        return RESULT_KEYS[self.event]

    @property
    def final(self) -> bool:
        return self.operation_state in FINAL_STATES


class OperationCancel(_Osm):
    """``nslcmops``/``cancel`` (NBI ``NsLcmOpTopic.cancel``); LCM then sets the nslcmop to FAILED_TEMP."""

    nslcmop_id: Id = Field(alias="_id")
    nsr_id: Id = Field(alias="nsInstanceId")
    cancel_mode: Literal["GRACEFUL", "FORCEFUL"] = Field(alias="cancelMode")  # validation.py nslcmop_cancel


class PlacementRequest(_Osm):
    """``pla``/``get_placement`` (LCM ``NsLcm._do_placement``), sent when ``placement-engine`` is ``PLA``."""

    nslcmop_id: Id = Field(alias="nslcmopId")


class PlacementVnf(_Osm):
    """One entry of a placement; PLA's ``{}`` (unsatisfiable) has neither field."""

    member_vnf_index: Id | None = Field(None, alias="member-vnf-index")
    vim_account_id: Id | None = Field(None, alias="vimAccountId")


class PlacementAnswer(_Osm):
    """``pla``/``placement``: LCM ``update_nsrs_with_pla_result`` stores ``placement`` in ``nslcmops._admin.pla``,
    and ``_do_placement`` moves every listed member's ``vnfrs.vim-account-id``; members not listed keep the VIM
    account NBI set."""

    nslcmop_id: Id = Field(validation_alias=AliasPath("placement", "nslcmopId"))
    vnf: list[PlacementVnf] = Field(validation_alias=AliasPath("placement", "vnf"))

    @property
    def vnf_vims(self) -> dict[str, str]:
        return {v.member_vnf_index: v.vim_account_id for v in self.vnf if v.member_vnf_index and v.vim_account_id}


@dataclass(frozen=True)
class Ignored:
    """A well-formed message the Trust Manager does not act on."""

    topic: str
    key: str
    reason: str


OsmEvent = NsOperation | NsOperationResult | OperationCancel | PlacementRequest | PlacementAnswer | Ignored

_M = TypeVar("_M", bound=BaseModel)


def _validate(model: type[_M], value: Mapping[str, Any], where: str) -> _M:
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        first = errors[0]
        loc = ".".join(str(part) for part in first["loc"]) or "value"
        more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
        msg = first["msg"].removeprefix("Value error, ")
        raise OsmMessageError(f"{where}: {loc}: {msg}{more}", **_ids(value)) from None


def _ids(value: Mapping[str, Any]) -> dict[str, str | None]:
    """The nslcmop/nsr ids of a rejected message, when they are themselves well-formed."""

    def good(v: object) -> str | None:
        return v if isinstance(v, str) and v and len(v.encode("utf-8", "surrogatepass")) <= MAX_ID_BYTES else None

    return {
        "nslcmop_id": good(value.get("_id", value.get("nslcmop_id"))),
        "nsr_id": good(value.get("nsInstanceId", value.get("nsr_id"))),
    }


def _parse_ns(key: str, value: dict[str, Any]) -> OsmEvent:
    where = f"ns/{key}"
    if key in OPERATIONS:
        op = _validate(NsOperation, value, where)
        if op.operation != key:  # NBI writes the message under lcmOperationType itself
            raise OsmMessageError(f"{where}: lcmOperationType is {op.operation!r}", **_ids(value))
        op._raw = copy.deepcopy(value)
        return op
    if key in RESULT_KEYS:
        return _validate(NsOperationResult, {**value, "event": key}, where)
    if key in _NS_IGNORED:
        return Ignored("ns", key, _NS_IGNORED[key])
    return Ignored("ns", key, "key not in the OSM contract (newer OSM release?)")


def _parse_nslcmops(key: str, value: dict[str, Any]) -> OsmEvent:
    if key == "cancel":
        return _validate(OperationCancel, value, "nslcmops/cancel")
    return Ignored("nslcmops", key, "key not in the OSM contract (newer OSM release?)")


def _parse_pla(key: str, value: dict[str, Any]) -> OsmEvent:
    if key == "get_placement":
        return _validate(PlacementRequest, value, "pla/get_placement")
    if key == "placement":
        return _validate(PlacementAnswer, value, "pla/placement")
    return Ignored("pla", key, "key not in the OSM contract (newer OSM release?)")


_PARSERS: Mapping[str, Callable[[str, dict[str, Any]], OsmEvent]] = {
    "ns": _parse_ns,
    "nslcmops": _parse_nslcmops,
    "pla": _parse_pla,
}


def parse_osm_message(topic: str, key: str, value: dict[str, Any]) -> OsmEvent:
    """The event a decoded message (``bus.codec.decode``) stands for.

    Unknown keys and topics are ``Ignored`` rather than errors: OSM adds keys across releases (LCM learnt
    ``verticalscaled`` late), and treating them as malformed would turn every upgrade into log noise.
    Raises ``OsmMessageError`` for a known key whose value OSM would not have written.
    """
    if not isinstance(value, dict):
        raise OsmMessageError(f"{topic}/{key}: value is not a mapping but {type(value).__name__}")
    parser = _PARSERS.get(topic)
    if parser is None:
        return Ignored(topic, key, "topic not in the OSM contract")
    return parser(key, value)


def placement_answer(nslcmop_id: str, vnf_vims: Mapping[str, str]) -> dict[str, Any]:
    """The ``pla``/``placement`` value, shaped as PLA's ``Server.get_placement`` writes it.

    An empty placement is refused: LCM takes any answer as final and keeps the VIM accounts NBI chose for the
    members not listed, so "no trusted VIM" must be expressed by not answering (and cancelling), never by ``[]``.
    """
    _check_id(nslcmop_id)
    if not vnf_vims:
        raise ValueError("empty placement: LCM would deploy on the VIM accounts NBI chose; send no answer instead")
    vnf = []
    for index, vim in vnf_vims.items():
        vnf.append({"vimAccountId": _check_id(vim), "member-vnf-index": _check_id(index)})
    return {"placement": {"vnf": vnf, "nslcmopId": nslcmop_id}}
