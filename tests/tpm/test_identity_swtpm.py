"""Enrollment against a real TPM 2.0 (swtpm): EK certificates from swtpm_setup, and our pure-Python
MakeCredential activated by the TPM's own TPM2_ActivateCredential."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import TYPE_CHECKING

import pytest
from cryptography.hazmat.primitives import serialization

from osm_trustmgr.failures import Failure
from osm_trustmgr.tpm.errors import EvidenceError
from osm_trustmgr.tpm.identity import (
    Identity,
    check_activation,
    check_ak_attributes,
    make_credential,
    parse_ek_public,
    verify_ek_certificate,
)
from osm_trustmgr.tpm.public import TpmPublic, parse_public

if TYPE_CHECKING:
    from osm_trustmgr.agent.tpm import Ak, TpmDevice
    from osm_trustmgr.sandbox.swtpm import LocalCa

tpm2_pytss = pytest.importorskip("tpm2_pytss")

EK_KINDS = ["rsa", "ecc", "ecc384"]  # TCG templates L-1, L-2 (P-256) and H-3 (P-384, AES-256, SHA-384)


def now() -> datetime:
    return datetime.now(timezone.utc)


@pytest.fixture(scope="module")
def eks(module_tpm: TpmDevice) -> dict[str, TpmPublic]:
    return {kind: parse_ek_public(module_tpm.create_ek(kind).public) for kind in EK_KINDS}


@pytest.fixture(scope="module")
def aks(module_tpm: TpmDevice, module_aks: dict[str, Ak]) -> dict[str, Ak]:
    """An AK under each EK (ActivateCredential uses the AK's parent EK), and one with a SHA-384 Name."""
    return {
        "rsa": module_aks["ecc"],
        "ecc": module_tpm.create_ak("ecc", ek_alg="ecc"),
        "ecc384": module_tpm.create_ak("ecc", ek_alg="ecc384"),
        "sha384-name": module_tpm.create_ak("ecc", hash="sha384", ek_alg="rsa"),
    }


@pytest.fixture(scope="module")
def other_tpm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TpmDevice]:
    """A blank TPM of its own (fresh endorsement seed, so another EK), stopped by PID after the module."""
    from osm_trustmgr.agent.tpm import TpmDevice
    from osm_trustmgr.sandbox.swtpm import Swtpm

    process = Swtpm(tmp_path_factory.mktemp("other-tpm") / "state", provision=False)
    with process, TpmDevice(process.tcti) as device:
        yield device


# --- EK certificates ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", EK_KINDS)
def test_swtpm_ek_certificate_chains_to_its_ca(
    module_tpm: TpmDevice, eks: dict[str, TpmPublic], swtpm_ca: LocalCa, kind: str
) -> None:
    cert = module_tpm.read_ek_certificate(kind)
    assert cert is not None
    info = verify_ek_certificate(cert, swtpm_ca.certificates, now(), eks[kind])
    assert info.manufacturer == "id:00001014" and info.model == "swtpm"
    root, issuer = (c.subject.rfc4514_string() for c in swtpm_ca.certificates)
    assert info.chain == (issuer,)
    # Trusting only the root: the issuer certificate, sent along, is enough to build the chain.
    root_cert, issuer_cert = swtpm_ca.certificates
    assert verify_ek_certificate(cert, [root_cert], now(), intermediates=[issuer_cert]).chain == (issuer, root)


def test_swtpm_ek_certificate_key_is_the_tpm_ek(module_tpm: TpmDevice, eks: dict[str, TpmPublic]) -> None:
    from cryptography import x509

    spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    for kind in EK_KINDS:
        cert = module_tpm.read_ek_certificate(kind)
        assert cert is not None
        assert x509.load_der_x509_certificate(cert).public_key().public_bytes(*spki) == eks[kind].key.public_bytes(
            *spki
        )


def test_swtpm_ek_certificate_from_another_ca_is_untrusted(
    module_tpm: TpmDevice, eks: dict[str, TpmPublic], untrusted_ca: LocalCa
) -> None:
    cert = module_tpm.read_ek_certificate("rsa")
    assert cert is not None
    with pytest.raises(EvidenceError) as caught:
        verify_ek_certificate(cert, untrusted_ca.certificates, now(), eks["rsa"])
    assert caught.value.code is Failure.EK_CERT_UNTRUSTED


def test_swtpm_ek_certificate_for_another_ek_is_a_mismatch(
    module_tpm: TpmDevice, eks: dict[str, TpmPublic], swtpm_ca: LocalCa
) -> None:
    cert = module_tpm.read_ek_certificate("ecc")
    assert cert is not None
    with pytest.raises(EvidenceError) as caught:
        verify_ek_certificate(cert, swtpm_ca.certificates, now(), eks["ecc384"])
    assert caught.value.code is Failure.EK_KEY_MISMATCH


# --- MakeCredential / ActivateCredential ----------------------------------------------------------------------


@pytest.mark.parametrize("kind", EK_KINDS)
def test_tpm_activates_our_credential(
    module_tpm: TpmDevice, eks: dict[str, TpmPublic], aks: dict[str, Ak], kind: str
) -> None:
    ak, ek = aks[kind], eks[kind]
    check_ak_attributes(parse_public(ak.public))
    assert ek.name_alg is not None
    secret = os.urandom(ek.name_alg.size)
    blob, encrypted = make_credential(ek, ak.name, secret)
    assert check_activation(secret, module_tpm.activate_credential(ak, blob, encrypted))


def test_tpm_activates_for_an_ak_with_a_sha384_name(
    module_tpm: TpmDevice, eks: dict[str, TpmPublic], aks: dict[str, Ak]
) -> None:
    ak = aks["sha384-name"]
    assert len(ak.name) == 2 + 48
    secret = os.urandom(32)
    assert module_tpm.activate_credential(ak, *make_credential(eks["rsa"], ak.name, secret)) == secret


@pytest.mark.parametrize("kind", ["rsa", "ecc"])
def test_tpm_refuses_a_credential_for_another_ak(
    module_tpm: TpmDevice, eks: dict[str, TpmPublic], aks: dict[str, Ak], kind: str
) -> None:
    other_name = aks["sha384-name"].name if kind == "rsa" else aks["rsa"].name
    blob, encrypted = make_credential(eks[kind], other_name, os.urandom(32))
    with pytest.raises(tpm2_pytss.TSS2_Exception, match="integrity"):
        module_tpm.activate_credential(aks[kind], blob, encrypted)


@pytest.mark.parametrize("kind", ["rsa", "ecc"])
def test_tpm_refuses_a_credential_for_another_tpms_ek(
    module_tpm: TpmDevice, other_tpm: TpmDevice, aks: dict[str, Ak], kind: str
) -> None:
    other_ek = parse_ek_public(other_tpm.create_ek(kind).public)
    blob, encrypted = make_credential(other_ek, aks[kind].name, os.urandom(32))
    with pytest.raises(tpm2_pytss.TSS2_Exception):
        module_tpm.activate_credential(aks[kind], blob, encrypted)


@pytest.mark.parametrize("kind", ["rsa", "ecc"])
@pytest.mark.parametrize("part", ["blob", "secret"])
def test_tpm_refuses_a_tampered_credential(
    module_tpm: TpmDevice, eks: dict[str, TpmPublic], aks: dict[str, Ak], kind: str, part: str
) -> None:
    blob, encrypted = make_credential(eks[kind], aks[kind].name, os.urandom(32))
    if part == "blob":
        blob = blob[:-1] + bytes([blob[-1] ^ 0x01])  # last byte of encIdentity
    else:
        encrypted = encrypted[:10] + bytes([encrypted[10] ^ 0x01]) + encrypted[11:]
    with pytest.raises(tpm2_pytss.TSS2_Exception):
        module_tpm.activate_credential(aks[kind], blob, encrypted)


@pytest.mark.parametrize("kind", EK_KINDS)
def test_tpm_make_credential_matches_ours(
    module_tpm: TpmDevice, eks: dict[str, TpmPublic], aks: dict[str, Ak], kind: str
) -> None:
    """The TPM's own TPM2_MakeCredential and ours have the same shape and unwrap to the same secret."""
    ak, ek = aks[kind], eks[kind]
    ek_public = module_tpm.create_ek(kind).public
    secret = os.urandom(32)
    theirs = module_tpm.make_credential_on_tpm(ek_public, ak.name, secret)
    ours = make_credential(ek, ak.name, secret)
    assert [len(part) for part in ours] == [len(part) for part in theirs]
    assert module_tpm.activate_credential(ak, *theirs) == module_tpm.activate_credential(ak, *ours) == secret


def test_enrolled_identity_matches_the_tpm_names(module_tpm: TpmDevice, aks: dict[str, Ak]) -> None:
    """Identity derives the AK Name and qualified Name exactly as the TPM reports them."""
    ak = aks["rsa"]
    identity = Identity.from_publics(module_tpm.create_ek("rsa").public, ak.public)
    assert (identity.ak_name, identity.ak_qualified_name) == (ak.name, ak.qualified_name)
