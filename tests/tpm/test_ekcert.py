"""EK certificate chains: real-EK oddities accepted, every rejection with its stable code."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding

from osm_trustmgr.failures import Failure
from osm_trustmgr.tpm.errors import EvidenceError
from osm_trustmgr.tpm.identity import MAX_CHAIN_DEPTH, load_ca_bundle, verify_ek_certificate
from osm_trustmgr.tpm.public import parse_public
from tests.tpm import pki
from tests.tpm.pki import NOW, YEAR

DER = serialization.Encoding.DER


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(DER)


def pem(*certs: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def fails(code: Failure, *args: object, **kwargs: object) -> EvidenceError:
    with pytest.raises(EvidenceError) as caught:
        verify_ek_certificate(*args, **kwargs)  # type: ignore[arg-type]
    assert caught.value.code is code, caught.value
    return caught.value


@dataclass(frozen=True)
class VendorPki:
    """Vendor root (ECC P-384) → intermediate (RSA) → EK certificate (RSA key, RSA-PSS signature)."""

    root: x509.Certificate
    root_key: pki.PrivateKey
    inter: x509.Certificate
    inter_key: pki.PrivateKey
    ek_key: pki.PrivateKey
    leaf: x509.Certificate


@pytest.fixture(scope="module")
def pki_chain() -> VendorPki:
    root_key = pki.ec_key(0, "secp384r1")
    root = pki.root_ca("Vendor EK Root CA", root_key)
    inter_key = pki.rsa_key(1)
    inter = pki.sub_ca("Vendor EK Intermediate CA", inter_key, root, root_key)
    ek_key = pki.rsa_key(2)
    leaf = pki.ek_cert(ek_key.public_key(), inter, inter_key, signing="pss")
    return VendorPki(root, root_key, inter, inter_key, ek_key, leaf)


def test_real_ek_oddities_are_accepted_and_described(pki_chain: VendorPki) -> None:
    root, inter, leaf, ek_key = pki_chain.root, pki_chain.inter, pki_chain.leaf, pki_chain.ek_key
    ek = parse_public(pki.ek_public(ek_key.public_key()))
    info = verify_ek_certificate(der(leaf), [root, inter], NOW, ek)
    assert info.subject == ""
    assert info.issuer == inter.subject.rfc4514_string()
    assert (info.manufacturer, info.model, info.version) == ("id:49465800", "SLB9670", "id:0007003F")
    assert info.serial == leaf.serial_number
    assert info.not_after == leaf.not_valid_after_utc
    assert info.fingerprint == leaf.fingerprint(hashes.SHA256()).hex()
    assert info.der == der(leaf)
    assert info.chain == (inter.subject.rfc4514_string(),)  # a configured intermediate is an anchor itself


def test_untrusted_intermediate_is_used_to_reach_the_root(pki_chain: VendorPki) -> None:
    root, inter, leaf = pki_chain.root, pki_chain.inter, pki_chain.leaf
    info = verify_ek_certificate(der(leaf), [root], NOW, intermediates=[inter])
    assert info.chain == (inter.subject.rfc4514_string(), root.subject.rfc4514_string())
    # PEM input may carry the intermediate after the EK certificate, as the agent sends a chain.
    assert verify_ek_certificate(pem(leaf, inter), [root], NOW).chain == info.chain


def test_missing_intermediate_is_untrusted(pki_chain: VendorPki) -> None:
    error = fails(Failure.EK_CERT_UNTRUSTED, der(pki_chain.leaf), [pki_chain.root], NOW)
    assert "Vendor EK Intermediate CA" in error.detail


def test_an_untrusted_intermediate_alone_is_not_an_anchor(pki_chain: VendorPki) -> None:
    other_root = pki.root_ca("Other Root", pki.ec_key(9))
    fails(Failure.EK_CERT_UNTRUSTED, der(pki_chain.leaf), [other_root], NOW, intermediates=[pki_chain.inter])


@pytest.mark.parametrize("signer", ["rsa-pkcs1", "rsa-pss", "ecdsa-p256", "ecdsa-p384"])
@pytest.mark.parametrize("ek_kind", ["rsa", "ecc"])
def test_signature_algorithms(signer: str, ek_kind: str) -> None:
    kind, _, detail = signer.partition("-")
    ca_key = pki.rsa_key(3) if kind == "rsa" else pki.ec_key(3, "secp384r1" if detail == "p384" else "secp256r1")
    ca = pki.root_ca("EK CA", ca_key, signing=detail)
    ek_key = pki.rsa_key(4) if ek_kind == "rsa" else pki.ec_key(4)
    leaf = pki.ek_cert(ek_key.public_key(), ca, ca_key, signing=detail)
    ek = parse_public(pki.ek_public(ek_key.public_key()))
    assert verify_ek_certificate(der(leaf), [ca], NOW, ek).chain == (ca.subject.rfc4514_string(),)


@pytest.mark.parametrize(("key_ids", "words"), [(True, "another key identifier"), (False, "does not verify")])
def test_wrong_issuer_with_the_same_name_is_untrusted(pki_chain: VendorPki, key_ids: bool, words: str) -> None:
    """An impostor root with the trusted root's name re-issues the intermediate: found by name, then rejected."""
    impostor_key = pki.ec_key(5, "secp384r1")
    impostor = pki.root_ca("Vendor EK Root CA", impostor_key)
    inter = pki.issue(
        pki.name("Vendor EK Intermediate CA"),
        pki_chain.inter_key.public_key(),
        impostor.subject,
        impostor_key,
        ca=True,
        key_ids=key_ids,
    )
    error = fails(Failure.EK_CERT_UNTRUSTED, der(pki_chain.leaf), [pki_chain.root], NOW, intermediates=[inter])
    assert words in error.detail


def test_forged_signature_without_key_identifiers_is_untrusted(pki_chain: VendorPki) -> None:
    """No AKI to steer the search: the signature alone must reject the forger."""
    forger = pki.rsa_key(6)
    leaf = pki.issue(x509.Name([]), pki.rsa_key(2).public_key(), pki_chain.inter.subject, forger, key_ids=False)
    error = fails(Failure.EK_CERT_UNTRUSTED, der(leaf), [pki_chain.root, pki_chain.inter], NOW)
    assert "does not verify" in error.detail


def test_unrelated_issuer_is_untrusted(pki_chain: VendorPki) -> None:
    error = fails(Failure.EK_CERT_UNTRUSTED, der(pki_chain.leaf), [pki.root_ca("Somebody Else", pki.ec_key(7))], NOW)
    assert "no CA certificate is named" in error.detail


def test_same_name_ca_is_chosen_by_signature() -> None:
    """Two CAs share a name (a rekeyed vendor CA); the right one is found with or without key identifiers."""
    old_key, new_key = pki.ec_key(10), pki.ec_key(11)
    old, new = pki.root_ca("Rekeyed CA", old_key), pki.root_ca("Rekeyed CA", new_key)
    for key_ids in (True, False):
        leaf = pki.issue(x509.Name([]), pki.ec_key(12).public_key(), new.subject, new_key, key_ids=key_ids)
        assert verify_ek_certificate(der(leaf), [old, new], NOW).chain == (new.subject.rfc4514_string(),)


def test_issuer_names_match_despite_case_spacing_and_string_type() -> None:
    ca_key = pki.ec_key(13)
    ca = pki.root_ca("Vendor  EK CA", ca_key)
    issuer = x509.Name(
        [
            x509.NameAttribute(
                x509.NameOID.ORGANIZATION_NAME, "EXAMPLE TPM VENDOR", x509.name._ASN1Type.PrintableString
            ),
            x509.NameAttribute(x509.NameOID.COMMON_NAME, "vendor ek ca", x509.name._ASN1Type.PrintableString),
        ]
    )
    leaf = pki.issue(x509.Name([]), pki.ec_key(14).public_key(), issuer, ca_key)
    assert verify_ek_certificate(der(leaf), [ca], NOW).chain == (ca.subject.rfc4514_string(),)


@pytest.mark.parametrize(
    ("which", "not_before", "not_after", "words"),
    [
        ("leaf", NOW - 3 * YEAR, NOW - YEAR, "expired"),
        ("leaf", NOW + YEAR, NOW + 3 * YEAR, "not valid before"),
        ("inter", NOW - 3 * YEAR, NOW - YEAR, "expired"),
        ("root", NOW - 3 * YEAR, NOW - YEAR, "expired"),
        ("root", NOW + YEAR, NOW + 3 * YEAR, "not valid before"),
    ],
)
def test_outside_validity(which: str, not_before: datetime, not_after: datetime, words: str) -> None:
    period = {"not_before": not_before, "not_after": not_after}
    root_key, inter_key = pki.ec_key(20), pki.ec_key(21)
    root = pki.root_ca("Root", root_key, **(period if which == "root" else {}))
    inter = pki.sub_ca("Intermediate", inter_key, root, root_key, **(period if which == "inter" else {}))
    leaf = pki.ek_cert(pki.ec_key(22).public_key(), inter, inter_key, **(period if which == "leaf" else {}))
    error = fails(Failure.EK_CERT_EXPIRED, der(leaf), [root], NOW, intermediates=[inter])
    assert words in error.detail
    valid_at = not_before + (not_after - not_before) / 2
    assert verify_ek_certificate(der(leaf), [root], valid_at, intermediates=[inter]).der == der(leaf)


def test_renewed_ca_wins_over_its_expired_predecessor() -> None:
    key = pki.ec_key(23)
    expired = pki.root_ca("Renewed CA", key, not_before=NOW - 5 * YEAR, not_after=NOW - YEAR)
    renewed = pki.root_ca("Renewed CA", key)
    leaf = pki.ek_cert(pki.ec_key(24).public_key(), renewed, key)
    assert verify_ek_certificate(der(leaf), [expired, renewed], NOW).der == der(leaf)
    fails(Failure.EK_CERT_EXPIRED, der(leaf), [expired], NOW)


def test_self_signed_leaf() -> None:
    key = pki.ec_key(25)
    subject = pki.name("My Own EK")
    leaf = pki.issue(subject, key.public_key(), subject, key, extensions=pki.tcg_oddities())
    fails(Failure.EK_CERT_SELF_SIGNED, der(leaf), [leaf], NOW)


@pytest.mark.parametrize(
    "garbage",
    [
        b"",
        b"\x00" * 64,
        b"\x30\x03\x02\x01",
        b"\x30\x82\xff\xff" + bytes(10),
        b"-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n",
        random.Random(0).randbytes(300),
    ],
)
def test_garbage_is_malformed(garbage: bytes, pki_chain: VendorPki) -> None:
    fails(Failure.EK_CERT_MALFORMED, garbage, [pki_chain.root], NOW)


def test_truncated_certificate_is_malformed(pki_chain: VendorPki) -> None:
    fails(Failure.EK_CERT_MALFORMED, der(pki_chain.leaf)[:-1], [pki_chain.root], NOW)


@pytest.mark.parametrize("padding_byte", [b"\x00", b"\xff"])
def test_nv_padding_is_tolerated(padding_byte: bytes, pki_chain: VendorPki) -> None:
    raw = der(pki_chain.leaf)
    info = verify_ek_certificate(raw + padding_byte * 700, [pki_chain.root, pki_chain.inter], NOW)
    assert info.der == raw


def test_trailing_data_that_is_not_padding_is_malformed(pki_chain: VendorPki) -> None:
    error = fails(Failure.EK_CERT_MALFORMED, der(pki_chain.leaf) + b"\x00\x00\x01", [pki_chain.root], NOW)
    assert "not NV padding" in error.detail


def test_key_mismatch(pki_chain: VendorPki) -> None:
    other = parse_public(pki.ek_public(pki.rsa_key(8).public_key()))
    fails(Failure.EK_KEY_MISMATCH, der(pki_chain.leaf), [pki_chain.root, pki_chain.inter], NOW, other)


def test_ecc_key_mismatch_same_curve() -> None:
    ca_key = pki.ec_key(26)
    ca = pki.root_ca("ECC CA", ca_key)
    leaf = pki.ek_cert(pki.ec_key(27).public_key(), ca, ca_key)
    fails(Failure.EK_KEY_MISMATCH, der(leaf), [ca], NOW, parse_public(pki.ek_public(pki.ec_key(28).public_key())))


def _tampered(old: bytes, new: bytes) -> tuple[bytes, x509.Certificate]:
    """An EK certificate whose TBS bytes ``old`` become ``new`` (same length), validly re-signed by its CA.

    Real TPM vendors' CAs have signed certificates that X.509 libraries choke on; these stand in for them.
    """
    ca_key = pki.rsa_key(3)
    ca = pki.root_ca("Odd Vendor CA", ca_key)
    plain = pki.ek_cert(pki.rsa_key(2).public_key(), ca, ca_key)  # PKCS#1 v1.5: same-length signature
    tbs = plain.tbs_certificate_bytes.replace(old, new, 1)
    assert tbs != plain.tbs_certificate_bytes and len(tbs) == len(plain.tbs_certificate_bytes)
    signature = ca_key.sign(tbs, padding.PKCS1v15(), hashes.SHA256())
    return der(plain).replace(plain.tbs_certificate_bytes, tbs).replace(plain.signature, signature), ca


def test_rsaes_oaep_subject_key_is_read() -> None:
    """Some vendors label EK keys id-RSAES-OAEP, which X.509 libraries refuse to load."""
    oaep, ca = _tampered(bytes.fromhex("06092a864886f70d010101"), bytes.fromhex("06092a864886f70d010107"))
    with pytest.raises(Exception):  # noqa: B017 - whatever cryptography raises, it cannot load this key
        x509.load_der_x509_certificate(oaep).public_key()
    ek = parse_public(pki.ek_public(pki.rsa_key(2).public_key()))
    assert verify_ek_certificate(oaep, [ca], NOW, ek).der == oaep
    fails(Failure.EK_KEY_MISMATCH, oaep, [ca], NOW, parse_public(pki.ek_public(pki.rsa_key(8).public_key())))


def test_undecodable_leaf_extensions_only_lose_the_tpm_description() -> None:
    """Two subjectKeyIdentifiers (the AKI's OID rewritten): the chain still verifies, the SAN is not read."""
    duplicate, ca = _tampered(bytes.fromhex("0603551d23"), bytes.fromhex("0603551d0e"))
    info = verify_ek_certificate(duplicate, [ca], NOW)
    assert (info.manufacturer, info.model, info.version) == (None, None, None)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (bytes.fromhex("a003020102"), bytes.fromhex("a00302012f")),  # X.509 version 48
        (bytes.fromhex("0603550403" + "0c"), bytes.fromhex("0603550403" + "03")),  # issuer CN as a BIT STRING
    ],
    ids=["version", "bitstring-name"],
)
def test_certificates_cryptography_cannot_decode_are_malformed(old: bytes, new: bytes) -> None:
    odd, ca = _tampered(old, new)
    fails(Failure.EK_CERT_MALFORMED, odd, [ca], NOW)


@pytest.mark.parametrize(
    ("ca", "key_cert_sign", "words"), [(False, True, "is not a CA"), (True, False, "may not sign certificates")]
)
def test_issuer_must_be_a_ca(ca: bool, key_cert_sign: bool, words: str) -> None:
    root_key, issuer_key = pki.ec_key(30), pki.ec_key(31)
    root = pki.root_ca("Root", root_key)
    issuer = pki.issue(
        pki.name("Not A CA"), issuer_key.public_key(), root.subject, root_key, ca=ca, key_cert_sign=key_cert_sign
    )
    leaf = pki.ek_cert(pki.ec_key(32).public_key(), issuer, issuer_key)
    error = fails(Failure.EK_CERT_UNTRUSTED, der(leaf), [root], NOW, intermediates=[issuer])
    assert words in error.detail


def test_issuer_without_basic_constraints_is_accepted() -> None:
    """v1-style CA certificates carry no extensions; RFC 5280 allows them as trust anchors."""
    key = pki.ec_key(33)
    ca = pki.issue(pki.name("Legacy CA"), key.public_key(), pki.name("Legacy CA"), key, key_ids=False)
    leaf = pki.ek_cert(pki.ec_key(34).public_key(), ca, key)
    assert verify_ek_certificate(der(leaf), [ca], NOW).chain == (ca.subject.rfc4514_string(),)


def test_path_length_constraint() -> None:
    root_key, inter_key = pki.ec_key(35), pki.ec_key(36)
    root = pki.root_ca("Root", root_key, path_length=0)
    inter = pki.sub_ca("Intermediate", inter_key, root, root_key)
    leaf = pki.ek_cert(pki.ec_key(37).public_key(), inter, inter_key)
    error = fails(Failure.EK_CERT_UNTRUSTED, der(leaf), [root], NOW, intermediates=[inter])
    assert "allows 0 intermediate CAs" in error.detail


def _ladder(length: int) -> tuple[x509.Certificate, list[x509.Certificate], x509.Certificate]:
    """root → ``length`` intermediates → EK certificate."""
    keys = [pki.ec_key(100 + i) for i in range(length + 1)]
    chain = [pki.root_ca("Ladder 0", keys[0])]
    for i in range(1, length + 1):
        chain.append(pki.sub_ca(f"Ladder {i}", keys[i], chain[-1], keys[i - 1]))
    return chain[0], chain[1:], pki.ek_cert(pki.ec_key(99).public_key(), chain[-1], keys[-1])


def test_chain_depth_is_bounded() -> None:
    root, inters, leaf = _ladder(MAX_CHAIN_DEPTH - 1)
    assert len(verify_ek_certificate(der(leaf), [root], NOW, intermediates=inters).chain) == MAX_CHAIN_DEPTH
    root, inters, leaf = _ladder(MAX_CHAIN_DEPTH)
    error = fails(Failure.EK_CERT_UNTRUSTED, der(leaf), [root], NOW, intermediates=inters)
    assert f"longer than {MAX_CHAIN_DEPTH}" in error.detail


def test_issuer_loop_terminates() -> None:
    a_key, b_key = pki.ec_key(40), pki.ec_key(41)
    a_name, b_name = pki.name("Loop A"), pki.name("Loop B")
    a = pki.issue(a_name, a_key.public_key(), b_name, b_key, ca=True)  # A issued by B
    b = pki.issue(b_name, b_key.public_key(), a_name, a_key, ca=True)  # B issued by A
    leaf = pki.ek_cert(pki.ec_key(42).public_key(), a, a_key)
    error = fails(
        Failure.EK_CERT_UNTRUSTED, der(leaf), [pki.root_ca("Unrelated", pki.ec_key(43))], NOW, intermediates=[a, b]
    )
    assert "loop" in error.detail


def test_naive_time_is_a_programming_error(pki_chain: VendorPki) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        verify_ek_certificate(der(pki_chain.leaf), [pki_chain.root], datetime(2026, 1, 1))


def test_load_ca_bundle(pki_chain: VendorPki) -> None:
    root, inter = pki_chain.root, pki_chain.inter
    assert load_ca_bundle(pem(root, inter)) == [root, inter]
    assert load_ca_bundle(der(root)) == [root]
    for broken in (b"", b"-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n", b"\x30\x00"):
        with pytest.raises(ValueError, match="EK CA bundle"):
            load_ca_bundle(broken)
