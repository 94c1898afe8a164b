"""Charm action results → the agent's documents (osm_trustmgr/evidence/charm_results.py)."""

from __future__ import annotations

import base64
import json

import pytest
import yaml

from osm_trustmgr.evidence.charm_results import (
    action_output,
    identity_from_results,
    quote_document_from_results,
    secret_from_results,
)
from osm_trustmgr.evidence.document import parse_evidence_document
from osm_trustmgr.failures import Failure
from osm_trustmgr.sandbox.softtpm import SoftTpm
from osm_trustmgr.tpm.errors import EvidenceError
from osm_trustmgr.tpm.pcr import parse_selection_spec
from osm_trustmgr.tpm.public import parse_public
from osm_trustmgr.tpm.quote import verify_quote

SEL = parse_selection_spec("sha256:0,1,7")
NONCE = bytes(range(20))


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture(scope="module")
def tpm() -> SoftTpm:
    return SoftTpm()


def attest_results(tpm: SoftTpm, **extra: object) -> dict[str, object]:
    """What Juju returns for the charm's attest action: every value text."""
    q = tpm.quote(NONCE, SEL)
    pcrs = {bank: {str(i): v.hex() for i, v in values.items()} for bank, values in q["pcrs"].items()}  # type: ignore[attr-defined]
    return {
        "attest": b64(q["attest"]),  # type: ignore[arg-type]
        "signature": b64(q["signature"]),  # type: ignore[arg-type]
        "pcrs": json.dumps(pcrs),
        "ima-log": "10 aa ima-ng sha256:bb /bin/x\n",
        "ima-offset": "4",
        "ima-next-offset": "5",
        "boot-time": "1700000000",
        "nonce": NONCE.hex(),
        "ak-public": b64(tpm.ak_public),
        "return-code": "0",  # Juju adds its own keys; they are ignored
        **extra,
    }


def test_quote_document_is_the_agent_format_and_verifies(tpm: SoftTpm) -> None:
    doc = quote_document_from_results(attest_results(tpm))
    assert doc["ima_offset"] == 4 and doc["ima_next_offset"] == 5 and doc["boot_time"] == 1700000000
    assert isinstance(doc["pcrs"], dict) and set(doc["pcrs"]["sha256"]) == {"0", "1", "7"}
    assert doc["uefi_log"] is None and doc["ima_log"] == "10 aa ima-ng sha256:bb /bin/x\n"
    assert "return-code" not in doc and "ima-offset" not in doc
    parsed = parse_evidence_document(doc)
    assert parsed.nonce == NONCE and parsed.ak_public == tpm.ak_public and parsed.evidence.ima_offset == 4
    ev = parsed.evidence
    verified = verify_quote(ev.attest, ev.signature, parse_public(tpm.ak_public), NONCE, ev.pcrs,
                            expected_signer=tpm.ak_qualified_name, expected_selection=SEL)  # fmt: skip
    assert set(verified.pcrs()["sha256"]) == {0, 1, 7}


def test_pcrs_as_a_nested_mapping_and_ints_as_ints(tpm: SoftTpm) -> None:
    results = attest_results(tpm)
    nested = json.loads(str(results["pcrs"]))
    doc = quote_document_from_results({**results, "pcrs": nested, "ima-offset": 4, "boot-time": ""})
    assert doc["pcrs"] == nested and doc["ima_offset"] == 4 and doc["boot_time"] is None


def test_offset_defaults_to_the_one_asked_and_absent_logs_stay_absent(tpm: SoftTpm) -> None:
    results = {k: v for k, v in attest_results(tpm).items() if k not in ("ima-offset", "ima-log", "ima-next-offset")}
    doc = quote_document_from_results(results, ima_offset=9)
    assert doc["ima_offset"] == 9 and doc["ima_log"] is None and doc["ima_next_offset"] is None
    assert quote_document_from_results({**results, "ima-log": ""})["ima_log"] == ""  # no new measurements


def test_detailed_status_as_text(tpm: SoftTpm) -> None:
    results = attest_results(tpm)
    for text in (json.dumps(results), repr(results)):  # JSON, or a Python dict's repr (valid YAML)
        assert quote_document_from_results(text)["attest"] == results["attest"]
    identity = {"ek-public": b64(tpm.ek_public), "ak-public": b64(tpm.ak_public), "ak-name": "00"}
    presented = identity_from_results(yaml.safe_dump(identity))
    assert presented.ek_public == tpm.ek_public and presented.ak_public == tpm.ak_public
    assert presented.ek_certificate is None


def test_identity_and_secret() -> None:
    got = identity_from_results({"ek-public": b64(b"ek"), "ek-certificate": b64(b"cert"), "ak-public": b64(b"ak")})
    assert (got.ek_public, got.ek_certificate, got.ak_public) == (b"ek", b"cert", b"ak")
    assert identity_from_results({"ek-public": b64(b"ek"), "ek-certificate": "", "ak-public": b64(b"ak")}) \
        .ek_certificate is None  # fmt: skip
    assert secret_from_results({"secret": b64(b"s3cret")}) == b"s3cret"


@pytest.mark.parametrize(
    ("results", "needle"),
    [
        ({"ak-public": b64(b"ak")}, "'ek-public'"),
        ({"ek-public": "not base64!", "ak-public": b64(b"ak")}, "'ek-public' is not base64"),
        ({"ek-public": b64(b"ek"), "ak-public": b64(b"ak"), "ak-name": "xyz"}, "'ak-name' is not hex"),
        ({"ek-public": 7, "ak-public": b64(b"ak")}, "'ek-public' must be a string"),
        ("CONFIG OK", "not a YAML/JSON mapping"),
        (["a"], "must be a mapping"),
    ],
)
def test_malformed_identity(results: object, needle: str) -> None:
    with pytest.raises(EvidenceError) as info:
        identity_from_results(results)
    assert info.value.code is Failure.EVIDENCE_MALFORMED and needle in info.value.detail


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"attest": None}, "missing 'attest'"),
        ({"signature": "%%%"}, "'signature' is not base64"),
        ({"pcrs": "{not json"}, "'pcrs' is not JSON"),
        ({"pcrs": "[1]"}, "'pcrs' must be"),
        ({"pcrs": json.dumps({"sha256": {"0": "zz"}})}, "not hex"),
        ({"pcrs": json.dumps({"md5": {"0": "00"}})}, "unknown PCR bank"),
        ({"ima-offset": "-1"}, "'ima-offset' must be a non-negative integer"),
        ({"ima-next-offset": "1.5"}, "'ima-next-offset'"),
        ({"boot-time": True}, "'boot-time'"),
        ({"nonce": "xyz"}, "'nonce' is not hex"),
        ({"ima-log": 5}, "'ima-log' must be text"),
    ],
)
def test_malformed_quote(tpm: SoftTpm, change: dict[str, object], needle: str) -> None:
    results = {k: v for k, v in {**attest_results(tpm), **change}.items() if v is not None}
    with pytest.raises(EvidenceError) as info:
        quote_document_from_results(results)
    assert info.value.code is Failure.EVIDENCE_MALFORMED and needle in info.value.detail


def test_action_output_never_raises() -> None:
    assert action_output("CONFIG OK") == {"output": "CONFIG OK"}
    assert action_output(None) == {}
    assert action_output({1: "a"}) == {"1": "a"}
    assert action_output('{"secret": "YQ=="}') == {"secret": "YQ=="}
    assert action_output("[[[[") == {"output": "[[[["}
    assert action_output(42) == {"output": "42"}
