"""Validation of the charm's action parameters.

Juju checks params against the schema in charmcraft.yaml, but not everything that matters can be written
there (a hex nonce, a PCR selection, a YAML document naming the VNF), OSM's LCM passes every primitive
parameter as it got it from the descriptor (an integer may arrive as a decimal string), and ops.testing does
not apply the schema at all. So every action checks its own parameters here, and every value it accepts is
safe to hand to a remote shell: hex, base64 and digits only.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import yaml

BANKS = ("sha1", "sha256", "sha384", "sha512")
NUM_PCRS = 24
MAX_NONCE = 64  # bytes: TPM2B_DATA in a quote holds at most the largest digest
MAX_BLOB = 4096  # bytes: TPM2B_ID_OBJECT and TPM2B_ENCRYPTED_SECRET are far smaller

ALLOWED: Mapping[str, frozenset[str]] = {
    "verify-ssh-credentials": frozenset(),
    "identity": frozenset(),
    "activate": frozenset({"credential", "secret"}),
    "attest": frozenset({"nonce", "pcrs", "ima-offset", "trustmgr-url", "osm-params"}),
}


class ParamError(ValueError):
    """A parameter is missing, unknown or malformed; the message names it."""


Selection = dict[str, list[int]]
"""PCR selection: bank to sorted, unique PCR indexes, banks in the order given."""


@dataclass(frozen=True)
class ActivateParams:
    credential: bytes  # TPM2B_ID_OBJECT
    secret: bytes  # TPM2B_ENCRYPTED_SECRET


@dataclass(frozen=True)
class AttestParams:
    """Plain mode: ``nonce`` is set. Strict mode: ``trustmgr_url`` and ``vnf_id`` are, the nonce comes later."""

    nonce: bytes | None
    selection: Selection
    ima_offset: int
    trustmgr_url: str | None = None
    vnf_id: str | None = None


def check_known(action: str, params: Mapping[str, Any]) -> None:
    unknown = sorted(set(params) - ALLOWED[action])
    if unknown:
        raise ParamError(f"unknown parameter(s) for {action}: {', '.join(unknown)}")


def parse_nonce(value: Any) -> bytes:
    if not isinstance(value, str) or not re.fullmatch(r"(?:[0-9a-fA-F]{2})+", value):
        raise ParamError("nonce must be a hex string (an even number of hex digits)")
    nonce = bytes.fromhex(value)
    if len(nonce) > MAX_NONCE:
        raise ParamError(f"nonce is {len(nonce)} bytes; at most {MAX_NONCE}")
    return nonce


def parse_pcrs(value: Any) -> Selection:
    """``sha1:0,1+sha256:0-10`` (tpm2-tools syntax, plus ranges) → ``{"sha1": [0, 1], "sha256": [0, …, 10]}``."""
    if not isinstance(value, str) or not value:
        raise ParamError("pcrs must be a PCR selection such as sha256:0-10")
    selection: Selection = {}
    for part in value.split("+"):
        bank, sep, indexes = part.partition(":")
        if not sep or bank not in BANKS:
            raise ParamError(f"pcrs: {part!r} is not <bank>:<indexes> with a bank among {', '.join(BANKS)}")
        if bank in selection:
            raise ParamError(f"pcrs: bank {bank} is listed twice")
        chosen: set[int] = set()
        for item in indexes.split(","):
            m = re.fullmatch(r"(\d{1,2})(?:-(\d{1,2}))?", item)
            if not m:
                raise ParamError(f"pcrs: {item!r} in {bank} is not an index or a range like 0-10")
            first, last = int(m[1]), int(m[2] if m[2] is not None else m[1])
            if first > last or last >= NUM_PCRS:
                raise ParamError(f"pcrs: {item!r} in {bank} is outside 0-{NUM_PCRS - 1} or reversed")
            chosen.update(range(first, last + 1))
        selection[bank] = sorted(chosen)
    return selection


def tools_selection(selection: Selection) -> str:
    """The selection as tpm2-tools 5.4 takes it: explicit lists, since it has no ranges."""
    return "+".join(f"{bank}:{','.join(map(str, indexes))}" for bank, indexes in selection.items())


def parse_ima_offset(value: Any) -> int:
    # LCM forwards descriptor values untyped: "12" is as likely as 12. bool is an int in Python, not in YAML.
    if isinstance(value, bool):
        raise ParamError("ima-offset must be a non-negative integer")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str) and re.fullmatch(r"\d{1,18}", value.strip()):
        value = int(value.strip())
    if not isinstance(value, int) or value < 0:
        raise ParamError("ima-offset must be a non-negative integer")
    return value


def parse_b64(name: str, value: Any) -> bytes:
    if not isinstance(value, str) or not value:
        raise ParamError(f"{name} must be a non-empty base64 string")
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ParamError(f"{name} is not valid base64") from None
    if not data or len(data) > MAX_BLOB:
        raise ParamError(f"{name} must decode to 1 to {MAX_BLOB} bytes")
    return data


def parse_url(value: Any) -> str:
    if not isinstance(value, str) or any(c.isspace() for c in value):
        raise ParamError("trustmgr-url must be an http(s) URL")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise ParamError("trustmgr-url must be an http(s) URL like https://trustmgr:9998/osm/trust/v1")
    return value.rstrip("/")


def parse_vnf_id(value: Any) -> str:
    """The VNF record id from OSM's ``<OSM>`` parameters (a YAML dump of LCM's get_osm_params)."""
    if not isinstance(value, str) or not value.strip():
        raise ParamError("osm-params is required in strict mode (pass <OSM> from the descriptor)")
    try:
        doc = yaml.safe_load(value)
    except yaml.YAMLError as e:
        raise ParamError(f"osm-params is not YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(doc, Mapping):
        raise ParamError("osm-params must be a YAML mapping with vnf_id")
    vnf_id = doc.get("vnf_id")
    if not isinstance(vnf_id, str) or not vnf_id.strip():
        raise ParamError("osm-params has no vnf_id")
    return vnf_id.strip()


def activate_params(params: Mapping[str, Any]) -> ActivateParams:
    check_known("activate", params)
    for name in ("credential", "secret"):
        if name not in params:
            raise ParamError(f"{name} is required")
    return ActivateParams(parse_b64("credential", params["credential"]), parse_b64("secret", params["secret"]))


def attest_params(params: Mapping[str, Any]) -> AttestParams:
    """Plain mode needs a nonce; strict mode (a trustmgr-url) forbids one: the Trust Manager picks it."""
    check_known("attest", params)
    url = params.get("trustmgr-url") or None
    osm_params = params.get("osm-params") or None
    nonce = params.get("nonce")
    if url is None:
        if osm_params is not None:
            raise ParamError("osm-params is only used with trustmgr-url (strict mode)")
        if nonce is None or nonce == "":
            raise ParamError("nonce is required (or trustmgr-url for strict mode)")
        return AttestParams(
            parse_nonce(nonce),
            parse_pcrs(params.get("pcrs", "sha256:0-10")),
            parse_ima_offset(params.get("ima-offset", 0)),
        )
    if nonce not in (None, ""):
        raise ParamError("nonce must not be given with trustmgr-url: the Trust Manager issues it")
    # pcrs and ima-offset have schema defaults, so Juju always sends them; the challenge overrides both.
    selection = parse_pcrs(params.get("pcrs", "sha256:0-10"))
    offset = parse_ima_offset(params.get("ima-offset", 0))
    return AttestParams(None, selection, offset, parse_url(url), parse_vnf_id(osm_params))
