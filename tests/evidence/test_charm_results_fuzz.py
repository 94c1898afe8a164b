"""Property tests: whatever a charm (or a tampered detailed-status) returns, the result parsers raise only
EvidenceError, and a valid attest result survives any stringification Juju or OSM applies."""

from __future__ import annotations

import base64
import contextlib
import json
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from osm_trustmgr.evidence.charm_results import (
    action_output,
    identity_from_results,
    quote_document_from_results,
    secret_from_results,
)
from osm_trustmgr.evidence.document import parse_evidence_document
from osm_trustmgr.sandbox.softtpm import SoftTpm
from osm_trustmgr.tpm.errors import EvidenceError
from osm_trustmgr.tpm.pcr import parse_selection_spec

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
TPM = SoftTpm()
NONCE = b"\x05" * 16
Q = TPM.quote(NONCE, parse_selection_spec("sha256:0-3"))
VALID: dict[str, Any] = {
    "attest": base64.b64encode(Q["attest"]).decode(),  # type: ignore[arg-type]
    "signature": base64.b64encode(Q["signature"]).decode(),  # type: ignore[arg-type]
    "pcrs": json.dumps({b: {str(i): v.hex() for i, v in vals.items()} for b, vals in Q["pcrs"].items()}),  # type: ignore[attr-defined]
    "ima-log": "",
    "ima-offset": "0",
    "ima-next-offset": "0",
    "boot-time": "1",
    "nonce": NONCE.hex(),
    "ak-public": base64.b64encode(TPM.ak_public).decode(),
    "ek-public": base64.b64encode(TPM.ek_public).decode(),
    "secret": "YWJj",
}
PARSERS: list[Callable[[Any], Any]] = [identity_from_results, secret_from_results, quote_document_from_results]
KEYS = st.sampled_from([*VALID, "ek-certificate", "uefi-log", "ak-name", "output"]) | st.text(max_size=8)
SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40) | st.binary(max_size=20)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=8,
)


def only_evidence_errors(data: Any) -> None:
    for parse in PARSERS:
        with contextlib.suppress(EvidenceError):
            parse(data)
    assert isinstance(action_output(data), dict)


@FUZZ
@given(st.dictionaries(KEYS, VALUES, max_size=12))
def test_arbitrary_results(results: dict[str, Any]) -> None:
    only_evidence_errors(results)


@FUZZ
@given(st.dictionaries(st.sampled_from(list(VALID)), VALUES, max_size=4))
def test_valid_results_with_fields_replaced(changes: dict[str, Any]) -> None:
    only_evidence_errors({**VALID, **changes})


@FUZZ
@given(st.text(max_size=300) | st.sampled_from([json.dumps(VALID)[:n] for n in range(0, 600, 7)]))
def test_arbitrary_text(text: str) -> None:
    only_evidence_errors(text)


@FUZZ
@given(st.sampled_from(["json", "repr", "nested"]))
def test_valid_results_survive_their_text_forms(form: str) -> None:
    results = dict(VALID)
    if form == "nested":
        results["pcrs"] = json.loads(results["pcrs"])
    text_or_dict = json.dumps(results) if form == "json" else repr(results) if form == "repr" else results
    doc = quote_document_from_results(text_or_dict)
    assert parse_evidence_document(doc).nonce == NONCE
