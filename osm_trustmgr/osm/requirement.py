"""The Level of Assurance an NS operation requires (DESIGN.md §3 "Descriptors", §4, §5 "Gate"). Pure.

NBI rejects unknown descriptor fields, so the LoA travels in the instantiation parameters, which NBI passes
through untouched into the nslcmop (``osm_nbi/validation.py`` ``ns_instantiate``: ``additionalParamsForNs`` is
any object; ``additional_params_for_vnf`` items carry ``additionalParams``; NBI
``NsrTopic._format_additional_params`` only insists that the keys match ``^[a-zA-Z_][a-zA-Z0-9_]*$``):

* ``additionalParamsForNs``: ``trust_loa`` (the whole NS), ``trust_host_loa`` (NFVI hosts), ``trust_vnf_loa``
  (every VNF);
* ``additionalParamsForVnf[member-vnf-index].additionalParams``: ``trust_loa`` / ``trust_vnf_loa`` (that VNF),
  ``trust_host_loa`` (raises the NS-wide host requirement: hosts are gated per VIM account, before placement);
* a Trust Manager policy bound to the NSD (``trust_nsd_policies``).

The stricter value wins in every scope. Hosts are asked for ``min(N, 4)`` (LoA 5 is a property of a VNF bound
to a host, DESIGN.md §4). Values come from user YAML/JSON, so integers and integer strings ("4") are accepted;
anything else (bools, floats, words, out of 0..5) is an error naming the key: a mistyped security requirement
must not silently become "none".
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from pydantic import BaseModel, ConfigDict, Field

from osm_trustmgr.osm.messages import NsOperation

__all__ = ["HOST_LOA_MAX", "LOA_MAX", "Requirement", "RequirementError", "parse_loa", "required_loa"]

LOA_MAX = 5
HOST_LOA_MAX = 4
_INTEGER_TEXT = re.compile(r"[+-]?[0-9]{1,6}")


class RequirementError(ValueError):
    """An LoA parameter that is not an integer in 0..5; ``key`` says where it was given."""

    def __init__(self, reason: str, key: str) -> None:
        super().__init__(reason)
        self.reason, self.key = reason, key


class Requirement(BaseModel):
    """What an NS operation requires. ``vnf`` holds every member the operation or the caller named;
    ``vnf_default`` applies to members not listed (use ``for_vnf``)."""

    model_config = ConfigDict(frozen=True)

    ns: int = Field(0, ge=0, le=LOA_MAX, description="NS-wide LoA: trust_loa joined with the NSD policy")
    host: int = Field(0, ge=0, le=HOST_LOA_MAX, description="LoA every NFVI host of the target VIMs needs")
    vnf: dict[str, int] = Field(default_factory=dict, description="member-vnf-index → LoA that VNF needs")
    vnf_default: int = Field(0, ge=0, le=LOA_MAX, description="LoA of a VNF not listed in vnf")
    sources: list[str] = Field(default_factory=list, description="every parameter that contributed, key=value")

    @property
    def required(self) -> bool:
        """False when nothing asks for trust (the gate records ``not_required``)."""
        return bool(self.ns or self.host or self.vnf_default or any(self.vnf.values()))

    def for_vnf(self, member_vnf_index: str) -> int:
        return self.vnf.get(member_vnf_index, self.vnf_default)


def parse_loa(value: object, key: str) -> int:
    """An LoA given as an int or an integer string; ``RequirementError`` naming ``key`` otherwise."""
    if isinstance(value, str) and _INTEGER_TEXT.fullmatch(value):
        number = int(value)
    elif isinstance(value, int) and not isinstance(value, bool):  # bool is an int subclass: refuse True
        number = value
    else:
        shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
        raise RequirementError(f"{key} must be an integer 0..{LOA_MAX}, not {shown}", key)
    if not 0 <= number <= LOA_MAX:
        raise RequirementError(f"{key} is {number}, outside 0..{LOA_MAX}", key)
    return number


class _Collector:
    """Reads LoA parameters and remembers where each came from."""

    def __init__(self) -> None:
        self.sources: list[str] = []

    def get(self, params: Mapping[str, object], name: str, where: str) -> int:
        if name not in params:
            return 0
        key = f"{where}.{name}"
        loa = parse_loa(params[name], key)
        self.sources.append(f"{key}={loa}")
        return loa


def required_loa(op: NsOperation, nsd_policy_loa: int | None, members: Iterable[str] = ()) -> Requirement:
    """The requirement of ``op`` joined with the NSD-bound policy's LoA (``None``: no policy).

    ``members`` adds VNFs the caller knows of (e.g. ``vnfrs.member-vnf-index-ref``) to ``Requirement.vnf``;
    members named in ``vnf[]`` or ``additionalParamsForVnf`` are always listed.
    """
    found = _Collector()
    policy = 0
    if nsd_policy_loa is not None:
        policy = parse_loa(nsd_policy_loa, "nsd_policy")
        found.sources.append(f"nsd_policy={policy}")
    ns_params = op.params.additional_params_ns
    ns = max(found.get(ns_params, "trust_loa", "additionalParamsForNs"), policy)
    host = max(ns, found.get(ns_params, "trust_host_loa", "additionalParamsForNs"))
    vnf_default = max(ns, found.get(ns_params, "trust_vnf_loa", "additionalParamsForNs"))

    vnf: dict[str, int] = {}
    for index, params in op.params.additional_params_vnf.items():
        where = f"additionalParamsForVnf[{index}]"
        own = max(found.get(params, "trust_loa", where), found.get(params, "trust_vnf_loa", where))
        vnf[index] = max(vnf_default, own)
        host = max(host, found.get(params, "trust_host_loa", where))
    for index in [*members, *(v.member_vnf_index for v in op.params.vnfs)]:
        vnf.setdefault(index, vnf_default)
    return Requirement(ns=ns, host=min(host, HOST_LOA_MAX), vnf=vnf, vnf_default=vnf_default, sources=found.sources)
