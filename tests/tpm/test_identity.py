"""Identity records: names derived like the TPM does, changes detected, AK attributes enforced."""

from __future__ import annotations

import pytest

from osm_trustmgr.failures import Failure
from osm_trustmgr.tpm.errors import EvidenceError
from osm_trustmgr.tpm.identity import Identity, check_ak_attributes, check_same_identity, parse_ek_public
from osm_trustmgr.tpm.public import (
    AK_REQUIRED,
    DECRYPT,
    FIXED_TPM,
    USER_WITH_AUTH,
    ak_qualified_name,
    marshal_public,
    parse_public,
)
from tests.tpm import pki


def _identity(ek_index: int = 60, ak_index: int = 61, cert: bytes | None = None) -> Identity:
    ek = pki.ek_public(pki.ec_key(ek_index).public_key())
    ak = marshal_public(pki.ec_key(ak_index).public_key(), attributes=AK_REQUIRED | USER_WITH_AUTH)
    return Identity.from_publics(ek, ak, cert)


def test_identity_names() -> None:
    identity = _identity()
    ek, ak = parse_ek_public(identity.ek_public), parse_public(identity.ak_public)
    assert identity.ak_name == ak.name
    assert identity.ak_qualified_name == ak_qualified_name(ek, ak)
    assert identity.ak_qualified_name != identity.ak_name


def test_same_identity_passes_even_with_another_encoding_or_certificate() -> None:
    enrolled = _identity()
    check_same_identity(enrolled, enrolled)
    bare_tpmt = Identity(
        enrolled.ek_public[2:], b"reissued", enrolled.ak_public[2:], enrolled.ak_name, enrolled.ak_qualified_name
    )
    check_same_identity(enrolled, bare_tpmt)


@pytest.mark.parametrize("change", ["ek", "ak", "ak_name", "qualified_name"])
def test_changed_identity(change: str) -> None:
    enrolled = _identity()
    presented = {
        "ek": _identity(ek_index=62),
        "ak": _identity(ak_index=63),
        "ak_name": Identity(
            enrolled.ek_public, None, enrolled.ak_public, b"\x00\x0b" + bytes(32), enrolled.ak_qualified_name
        ),
        "qualified_name": Identity(
            enrolled.ek_public, None, enrolled.ak_public, enrolled.ak_name, b"\x00\x0b" + bytes(32)
        ),
    }[change]
    with pytest.raises(EvidenceError) as caught:
        check_same_identity(enrolled, presented)
    assert caught.value.code is Failure.IDENTITY_CHANGED
    assert caught.value.detail.startswith("EK changed" if change == "ek" else "AK changed")


def test_unparsable_ek_public_is_ek_malformed() -> None:
    with pytest.raises(EvidenceError) as caught:
        parse_ek_public(b"\x00\x01\x00")
    assert caught.value.code is Failure.EK_MALFORMED


def test_ak_attributes() -> None:
    key = pki.ec_key(64).public_key()
    check_ak_attributes(parse_public(marshal_public(key, attributes=AK_REQUIRED | USER_WITH_AUTH)))
    for attributes, words in [
        (AK_REQUIRED & ~FIXED_TPM, "missing fixedTPM"),
        (AK_REQUIRED | DECRYPT, "decrypt set"),
        (USER_WITH_AUTH, "missing fixedTPM, fixedParent, sensitiveDataOrigin, restricted, sign"),
    ]:
        with pytest.raises(EvidenceError) as caught:
            check_ak_attributes(parse_public(marshal_public(key, attributes=attributes)))
        assert caught.value.code is Failure.AK_ATTRIBUTES
        assert words in caught.value.detail
