"""Property tests: quote, signature, key, evidence-document and policy parsers raise only EvidenceError,
and the whole verifier returns a verdict (never an exception) for any mutation of valid evidence."""

from __future__ import annotations

import contextlib
from datetime import datetime, timezone

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from osm_trustmgr.evidence.document import evidence_to_document, parse_evidence_document
from osm_trustmgr.policy.evaluate import Evidence, IdentityClaim, Request, evaluate
from osm_trustmgr.policy.load import load_policy
from osm_trustmgr.policy.model import TrustPolicy
from osm_trustmgr.sandbox.softtpm import SoftTpm
from osm_trustmgr.tpm.errors import EvidenceError
from osm_trustmgr.tpm.pcr import parse_selection_spec
from osm_trustmgr.tpm.public import load_public, parse_public
from osm_trustmgr.tpm.quote import parse_attest, parse_signature

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SEL = parse_selection_spec("sha256:0-10")
SOFT = {alg: SoftTpm(ak_alg=alg) for alg in ("ecc", "rsa")}
NONCE = b"\x07" * 20
QUOTES = {alg: t.quote(NONCE, SEL) for alg, t in SOFT.items()}
POLICY = TrustPolicy.model_validate({"id": "fuzz", "runtime": {"ima": {"allow": {"/bin/sh": ["ab" * 32]}}}})


def _only_evidence_errors(fn, data) -> None:  # type: ignore[no-untyped-def]
    with contextlib.suppress(EvidenceError):
        fn(data)


@st.composite
def mutated(draw: st.DrawFn, base: bytes) -> bytes:
    data = bytearray(base)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "cut", "insert", "set"]))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "cut":
            del data[pos : pos + draw(st.integers(1, 8))]
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif data:
            data[pos] = draw(st.sampled_from([0x00, 0xFF, 0x7F, 0x80]))
    return bytes(data)


@FUZZ
@given(st.one_of(st.binary(max_size=300), mutated(QUOTES["ecc"]["attest"]), mutated(QUOTES["rsa"]["attest"])))
def test_parse_attest(data: bytes) -> None:
    _only_evidence_errors(parse_attest, data)


@FUZZ
@given(st.one_of(st.binary(max_size=600), mutated(QUOTES["ecc"]["signature"]), mutated(QUOTES["rsa"]["signature"])))
def test_parse_signature(data: bytes) -> None:
    _only_evidence_errors(parse_signature, data)


@FUZZ
@given(st.one_of(st.binary(max_size=400), mutated(SOFT["ecc"].ak_public), mutated(SOFT["rsa"].ek_public)))
def test_parse_public(data: bytes) -> None:
    _only_evidence_errors(parse_public, data)
    _only_evidence_errors(load_public, data)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)


@FUZZ
@given(json_values, st.dictionaries(st.sampled_from(["attest", "signature", "pcrs", "nonce", "ima_offset",
                                                     "ak_public", "uefi_log", "ima_log"]), json_values))  # fmt: skip
def test_evidence_document(doc: object, fields: dict[str, object]) -> None:
    _only_evidence_errors(parse_evidence_document, doc)
    base = evidence_to_document(Evidence(b"a", b"b", {"sha256": {0: bytes(32)}}), nonce=b"n")
    _only_evidence_errors(parse_evidence_document, {**base, **fields})


@FUZZ
@given(json_values)
def test_policy_documents(doc: object) -> None:
    _only_evidence_errors(lambda d: load_policy(d, {}, require_signature=False), doc)


@FUZZ
@given(st.sampled_from(["ecc", "rsa"]), st.data())
def test_verifier_always_returns_a_verdict(alg: str, data: st.DataObject) -> None:
    q = QUOTES[alg]
    attest = data.draw(st.one_of(st.just(q["attest"]), mutated(q["attest"])))
    signature = data.draw(st.one_of(st.just(q["signature"]), mutated(q["signature"])))
    ima = data.draw(st.one_of(st.none(), st.binary(max_size=200), st.text(max_size=200).map(str.encode)))
    uefi = data.draw(st.one_of(st.none(), st.binary(max_size=200)))
    evidence = Evidence(attest, signature, q["pcrs"], uefi, ima)  # type: ignore[arg-type]
    ak = parse_public(SOFT[alg].ak_public)
    result = evaluate(
        evidence,
        IdentityClaim(ak, "pinned_ak", SOFT[alg].ak_qualified_name),
        Request(NONCE, SEL),
        entity="fuzz",
        now=datetime.now(timezone.utc),
        policy=POLICY,
    )
    intact = attest == q["attest"] and signature == q["signature"]
    assert (result.loa >= 1) == intact
    assert result.loa <= 4
