"""The trust-proxy charm's action results (charms/trust-proxy/charmcraft.yaml) as the agent's documents.

Juju keys are lowercase with hyphens and every value comes back as a string (``"ima-offset": "0"``); nested
results come back nested (Juju re-nests ``action-set a.b=c``). OSM's LCM stores what N2VC returns — the action's
results dict, or ``"CONFIG OK"`` for the ``config`` primitive — as the nslcmop's ``detailed-status``
(osm/LCM v19 ``osm_lcm/ns.py`` ``NsLcm.action``; ``osm_lcm/n2vc/n2vc_juju_conn.py``
``N2VCJujuConnector.exec_primitive`` → ``libjuju.execute_action`` → ``model.get_action_output``), which a
reader may also meet as YAML/JSON text. These functions turn that into what the HTTPS agent returns
(DESIGN.md §7), so a VNF's evidence goes through the same parser as a host's
(:func:`osm_trustmgr.evidence.document.parse_evidence_document`).

Pure functions: bad results raise ``EvidenceError(evidence.malformed)`` and nothing else.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping
from typing import Any

import yaml

from osm_trustmgr.enrollment import PresentedIdentity
from osm_trustmgr.evidence.document import MAX_FIELD, parse_evidence_document
from osm_trustmgr.failures import Failure
from osm_trustmgr.tpm.errors import EvidenceError

__all__ = ["action_output", "identity_from_results", "quote_document_from_results", "secret_from_results"]

_DIGITS = re.compile(r"^\s*[0-9]{1,19}\s*$")
_YAML_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _malformed(detail: str) -> EvidenceError:
    return EvidenceError(Failure.EVIDENCE_MALFORMED, f"charm results: {detail}")


def _load_text(text: str) -> Any:
    """JSON, else YAML (Python's repr of a dict of strings is valid YAML); None when neither parses."""
    if len(text) > MAX_FIELD:
        return None
    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        return yaml.load(text, Loader=_YAML_LOADER)  # CSafeLoader or SafeLoader
    except Exception:  # YAMLError, and ValueError/OverflowError/RecursionError from odd scalars or nesting
        return None


def action_output(value: Any) -> dict[str, Any]:
    """An action's output as a results dict; never raises.

    A mapping is the results (keys made strings); text holding a mapping (``detailed-status`` stored as
    YAML/JSON) is parsed; any other text, like N2VC's ``"CONFIG OK"``, becomes ``{"output": text}``.
    """
    if isinstance(value, Mapping):
        return {str(k): v for k, v in value.items()}
    if value is None:
        return {}
    if isinstance(value, str):
        loaded = _load_text(value)
        if isinstance(loaded, Mapping):
            return {str(k): v for k, v in loaded.items()}
        return {"output": value}
    return {"output": str(value)}


def _results(results: Any) -> dict[str, Any]:
    if isinstance(results, str):
        results = _load_text(results)
        if not isinstance(results, Mapping):
            raise _malformed("results text is not a YAML/JSON mapping")
    if not isinstance(results, Mapping):
        raise _malformed("results must be a mapping (or its YAML/JSON text)")
    return {str(k): v for k, v in results.items()}


def _text(results: Mapping[str, Any], key: str, *, required: bool) -> str | None:
    value = results.get(key)
    if value is None or value == "":
        if required:
            raise _malformed(f"missing {key!r}")
        return None
    if not isinstance(value, str) or len(value) > MAX_FIELD:
        raise _malformed(f"{key!r} must be a string")
    return value


def _b64(results: Mapping[str, Any], key: str, *, required: bool) -> str | None:
    value = _text(results, key, required=required)
    if value is not None:
        try:
            base64.b64decode(value, validate=True)
        except ValueError:
            raise _malformed(f"{key!r} is not base64") from None
    return value


def _bytes(results: Mapping[str, Any], key: str) -> bytes:
    value = _b64(results, key, required=True)
    assert value is not None
    return base64.b64decode(value, validate=True)


def _hex(results: Mapping[str, Any], key: str) -> str | None:
    value = _text(results, key, required=False)
    if value is not None:
        try:
            bytes.fromhex(value)
        except ValueError:
            raise _malformed(f"{key!r} is not hex") from None
    return value


def _int(results: Mapping[str, Any], key: str, default: int | None) -> int | None:
    value = results.get(key)
    if value is None or value == "":
        return default
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**63:
        return value
    if isinstance(value, str) and _DIGITS.match(value):
        return int(value)
    raise _malformed(f"{key!r} must be a non-negative integer")


def _pcrs(results: Mapping[str, Any]) -> dict[str, Any]:
    value = results.get("pcrs")
    if isinstance(value, str):
        if len(value) > MAX_FIELD:
            raise _malformed("'pcrs' is too long")
        try:
            value = json.loads(value)
        except (ValueError, RecursionError):
            raise _malformed("'pcrs' is not JSON") from None
    if not isinstance(value, Mapping):
        raise _malformed("'pcrs' must be {bank: {index: hex}} (JSON text or a mapping)")
    out: dict[str, Any] = {}
    for bank, values in value.items():
        if not isinstance(values, Mapping):
            raise _malformed(f"'pcrs' bank {bank!r} must map PCR indexes to hex")
        out[str(bank)] = {str(index): digest for index, digest in values.items()}
    return out


def identity_from_results(results: Any) -> PresentedIdentity:
    """``identity`` → EK public (+ certificate when the TPM has one) and AK public; ``ak-name`` checked as hex."""
    r = _results(results)
    cert = _b64(r, "ek-certificate", required=False)
    _hex(r, "ak-name")
    return PresentedIdentity(
        ek_public=_bytes(r, "ek-public"),
        ek_certificate=base64.b64decode(cert, validate=True) if cert is not None else None,
        ak_public=_bytes(r, "ak-public"),
    )


def secret_from_results(results: Any) -> bytes:
    """``activate`` → the secret ActivateCredential returned."""
    return _bytes(_results(results), "secret")


def quote_document_from_results(results: Any, *, ima_offset: int = 0) -> dict[str, Any]:
    """``attest`` → the agent's ``GET /v1/quote`` document (underscore keys, ints, ``pcrs`` as a dict).

    ``ima_offset`` is the offset asked for, used when the charm does not echo ``ima-offset``. The document is
    checked with :func:`~osm_trustmgr.evidence.document.parse_evidence_document` before it is returned.
    """
    r = _results(results)
    doc: dict[str, Any] = {
        "attest": _b64(r, "attest", required=True),
        "signature": _b64(r, "signature", required=True),
        "pcrs": _pcrs(r),
        "uefi_log": _b64(r, "uefi-log", required=False),
        "ima_log": None,
        "ima_offset": _int(r, "ima-offset", ima_offset),
        "ima_next_offset": _int(r, "ima-next-offset", None),
        "boot_time": _int(r, "boot-time", None),
        "nonce": _hex(r, "nonce"),
        "ak_public": _b64(r, "ak-public", required=False),
    }
    ima = r.get("ima-log")
    if ima is not None:
        if not isinstance(ima, str) or len(ima) > MAX_FIELD:
            raise _malformed("'ima-log' must be text")
        doc["ima_log"] = ima  # "" is meaningful: no new measurements since ima-offset
    parse_evidence_document(doc)
    return doc
