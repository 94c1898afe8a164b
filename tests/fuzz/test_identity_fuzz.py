"""Identity checks on hostile bytes: EvidenceError is the only exception an agent's input can cause."""

from __future__ import annotations

import base64
import contextlib
from collections.abc import Callable
from datetime import timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from osm_trustmgr.tpm import der
from osm_trustmgr.tpm.errors import EvidenceError
from osm_trustmgr.tpm.identity import (
    Identity,
    check_same_identity,
    make_credential,
    parse_ek_public,
    verify_ek_certificate,
)
from osm_trustmgr.tpm.public import AK_REQUIRED, USER_WITH_AUTH, marshal_public, parse_public
from tests.tpm import pki
from tests.tpm.pki import NOW

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

ROOT_KEY = pki.ec_key(0)
ROOT = pki.root_ca("Fuzz Root", ROOT_KEY)
INTER_KEY = pki.rsa_key(1)
INTER = pki.sub_ca("Fuzz Intermediate", INTER_KEY, ROOT, ROOT_KEY)
EK_KEYS: dict[str, pki.PrivateKey] = {"rsa": pki.rsa_key(2), "ecc": pki.ec_key(1)}
LEAVES = {
    kind: pki.ek_cert(key.public_key(), INTER, INTER_KEY, signing="pss").public_bytes(serialization.Encoding.DER)
    for kind, key in EK_KEYS.items()
}
INTER_DER = INTER.public_bytes(serialization.Encoding.DER)
EK_PUBLICS = {kind: pki.ek_public(key.public_key()) for kind, key in EK_KEYS.items()}
AK_PUBLIC = marshal_public(pki.ec_key(2).public_key(), attributes=AK_REQUIRED | USER_WITH_AUTH)
AK_NAME = parse_public(AK_PUBLIC).name or b""
ENROLLED = Identity.from_publics(EK_PUBLICS["ecc"], AK_PUBLIC)
RSA_TBS = pki.issue(pki.name("EK"), EK_KEYS["rsa"].public_key(), ROOT.subject, ROOT_KEY).tbs_certificate_bytes


def only_evidence_errors(call: Callable[[], object]) -> None:
    """Run ``call``; success and EvidenceError are fine, any other exception fails the test."""
    with contextlib.suppress(EvidenceError):
        call()


@st.composite
def mutated(draw: st.DrawFn, original: bytes) -> bytes:
    """``original`` with a few bytes changed, cut short, or grown: close enough to get past the first checks.

    Half the changes hit the first 80 bytes, where DER headers, versions and serial numbers live.
    """
    data = bytearray(original)
    for _ in range(draw(st.integers(1, 4))):
        position = draw(st.integers(0, min(80, len(data)) - 1) | st.integers(0, len(data) - 1))
        data[position] = draw(st.integers(0, 255))
    ending = draw(st.sampled_from(["keep", "keep", "cut", "grow"]))  # mostly intact, to get deep
    if ending == "cut":
        return bytes(data[: draw(st.integers(0, len(data) - 1))])
    return bytes(data) + (draw(st.binary(min_size=1, max_size=8)) if ending == "grow" else b"")


def mutated_choice(options: dict[str, bytes]) -> st.SearchStrategy[bytes]:
    return st.sampled_from(sorted(options)).flatmap(lambda kind: mutated(options[kind]))


@FUZZ
@given(st.binary(max_size=600))
def test_ek_certificate_arbitrary_bytes(data: bytes) -> None:
    only_evidence_errors(lambda: verify_ek_certificate(data, [ROOT, INTER], NOW))


@FUZZ
@given(mutated_choice(LEAVES), st.sampled_from(sorted(EK_PUBLICS)), st.integers(-3650, 3650))
def test_ek_certificate_mutations(data: bytes, ek_kind: str, days: int) -> None:
    ek = parse_public(EK_PUBLICS[ek_kind])
    at = NOW + timedelta(days=days)
    only_evidence_errors(lambda: verify_ek_certificate(data, [ROOT], at, ek, intermediates=[INTER]))


# Mutated serial numbers can turn negative: cryptography loads them with a deprecation warning (for now).
@pytest.mark.filterwarnings("ignore:Parsed a serial number which wasn't positive")
@FUZZ
@given(mutated_choice(LEAVES) | st.sampled_from(list(LEAVES.values())), mutated(INTER_DER))
def test_ek_certificate_chain_from_the_agent(leaf: bytes, intermediate: bytes) -> None:
    """A PEM chain as an agent sends it, with a hostile intermediate; and the same as a parsed certificate."""
    pem = b"".join(
        b"-----BEGIN CERTIFICATE-----\n" + base64.encodebytes(block) + b"-----END CERTIFICATE-----\n"
        for block in (leaf, intermediate)
    )
    only_evidence_errors(lambda: verify_ek_certificate(pem, [ROOT], NOW))
    try:
        parsed = x509.load_der_x509_certificate(intermediate)
    except Exception:  # what cryptography refuses to load never reaches the verifier
        return
    only_evidence_errors(lambda: verify_ek_certificate(leaf, [ROOT], NOW, intermediates=[parsed]))
    only_evidence_errors(lambda: verify_ek_certificate(leaf, [parsed], NOW))


@FUZZ
@given(st.one_of(st.binary(max_size=400), mutated_choice(EK_PUBLICS)))
def test_ek_public_parsing(data: bytes) -> None:
    only_evidence_errors(lambda: parse_ek_public(data))


@FUZZ
@given(mutated_choice(EK_PUBLICS), st.one_of(st.just(AK_NAME), st.binary(max_size=70)), st.binary(max_size=70))
def test_make_credential_on_mutated_inputs(ek_bytes: bytes, ak_name: bytes, secret: bytes) -> None:
    def run() -> None:
        blob, encrypted = make_credential(parse_ek_public(ek_bytes), ak_name, secret)
        assert blob and encrypted

    only_evidence_errors(run)


@FUZZ
@given(
    st.one_of(st.binary(max_size=200), mutated_choice(EK_PUBLICS)),
    st.one_of(st.binary(max_size=200), mutated(AK_PUBLIC)),
    st.binary(max_size=60),
)
def test_identity_comparison_on_hostile_publics(ek_public: bytes, ak_public: bytes, name: bytes) -> None:
    presented = Identity(ek_public, None, ak_public, name, name)
    only_evidence_errors(lambda: check_same_identity(ENROLLED, presented))
    only_evidence_errors(lambda: Identity.from_publics(ek_public, ak_public))


@FUZZ
@given(st.one_of(st.binary(max_size=400), mutated(RSA_TBS)))
def test_der_walk_never_raises(data: bytes) -> None:
    key = der.rsa_key_from_tbs(data)
    assert key is None or key.key_size > 0
