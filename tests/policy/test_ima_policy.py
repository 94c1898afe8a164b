"""IMA allow-list policy: digests, exclusions, v2 file signatures (RSA, ECDSA), buffers, violations."""

from __future__ import annotations

import datetime
import hashlib
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from osm_trustmgr.failures import Failure
from osm_trustmgr.policy.ima_policy import ImaPolicy, evaluate_ima
from osm_trustmgr.tpm.algorithms import SHA256
from osm_trustmgr.tpm.errors import EvidenceError
from osm_trustmgr.tpm.ima import parse_ima_ascii
from osm_trustmgr.tpm.ima_builder import ImaLogBuilder, ImaSigner, make_entry

PEM = serialization.Encoding.PEM
SPKI = serialization.PublicFormat.SubjectPublicKeyInfo


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(65537, 2048)


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(PEM, SPKI)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def codes(findings: list) -> list[tuple[Failure, str]]:  # type: ignore[type-arg]
    return [(f.code, f.path) for f in findings]


def signed_log(signer: ImaSigner) -> list:  # type: ignore[type-arg]
    log = ImaLogBuilder()
    log.add_file("/usr/bin/signed", b"signed content", signer=signer)
    return parse_ima_ascii(log.ascii())


def test_allowed_unknown_and_excluded_files() -> None:
    log = ImaLogBuilder()
    log.add_boot_aggregate({i: bytes(32) for i in range(10)}, SHA256)
    log.add_file("/usr/bin/ok", b"ok")
    log.add_file("/usr/bin/evil", b"evil")
    log.add_file("/tmp/build/a.out", b"anything")
    log.add_file("/usr/bin/ok", b"modified")
    entries = parse_ima_ascii(log.ascii())
    policy = ImaPolicy.build(allow={"/usr/bin/ok": [f"sha256:{sha256(b'ok')}"]}, exclude=["/tmp/"])
    findings = evaluate_ima(entries, policy)
    assert codes(findings) == [
        (Failure.IMA_UNKNOWN_DIGEST, "/usr/bin/evil"),
        (Failure.IMA_UNKNOWN_DIGEST, "/usr/bin/ok"),
    ]
    assert [f.index for f in findings] == [2, 4]
    assert (
        findings[0].detail == f"entry 2 (/usr/bin/evil): file digest sha256:{sha256(b'evil')} is not in the allow-list"
    )
    assert [f.index for f in evaluate_ima(entries[2:], policy, first_index=2)] == [2, 4]


def test_digest_matching_any_algorithm_and_form() -> None:
    log = ImaLogBuilder(digest_alg="sha1")
    log.add_file("/a", b"x")
    log.add_file("/b", b"y", digest_alg="sha512")
    entries = parse_ima_ascii(log.ascii())
    allow = {"/a": [hashlib.sha1(b"x").hexdigest().upper()], "/b": ["sha512:" + hashlib.sha512(b"y").hexdigest()]}
    assert evaluate_ima(entries, ImaPolicy.build(allow=allow)) == []
    assert len(evaluate_ima(entries, ImaPolicy.build(allow={"/b": allow["/a"]}))) == 2


@pytest.mark.parametrize("key_name", ["rsa_key", "ec_key"])
def test_valid_signature_by_a_trusted_key(request: pytest.FixtureRequest, key_name: str) -> None:
    key = request.getfixturevalue(key_name)
    entries = signed_log(ImaSigner(key))
    assert evaluate_ima(entries, ImaPolicy.build(keys=[pem(key)], accept_signatures=True)) == []
    # Not accepted unless the policy says so: then the digest must be allow-listed.
    assert codes(evaluate_ima(entries, ImaPolicy.build(keys=[pem(key)]))) == [
        (Failure.IMA_UNKNOWN_DIGEST, "/usr/bin/signed")
    ]


def test_keyid_is_the_tail_of_sha1_of_the_public_key(rsa_key: rsa.RSAPrivateKey) -> None:
    # evmctl calc_keyid_v2: SHA-1 over the SubjectPublicKeyInfo BIT STRING contents (after the unused-bits
    # byte). A 2048-bit RSA SPKI has a 24-byte prefix: SEQUENCE, AlgorithmIdentifier, BIT STRING header.
    spki = rsa_key.public_key().public_bytes(serialization.Encoding.DER, SPKI)
    assert spki[19:24] == b"\x03\x82\x01\x0f\x00"
    signature = signed_log(ImaSigner(rsa_key))[0].signature
    assert signature is not None
    assert signature[:3] == b"\x03\x02\x04"  # EVM_IMA_XATTR_DIGSIG, version 2, HASH_ALGO_SHA256
    assert signature[3:7] == hashlib.sha1(spki[24:]).digest()[-4:]
    assert int.from_bytes(signature[7:9], "big") == len(signature) - 9 == 256


def test_certificate_subject_key_identifier(ec_key: ec.EllipticCurvePrivateKey) -> None:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ima signer")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(ec_key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectKeyIdentifier(bytes(16) + b"\xca\xfe\xf0\x0d"), critical=False)
        .sign(ec_key, hashes.SHA256())
    )
    entries = signed_log(ImaSigner(ec_key, keyid=0xCAFEF00D))
    for encoded in (cert.public_bytes(PEM), cert.public_bytes(serialization.Encoding.DER)):
        assert evaluate_ima(entries, ImaPolicy.build(keys=[encoded], accept_signatures=True)) == []


def test_signature_with_a_wrong_key(rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey) -> None:
    policy = ImaPolicy.build(keys=[pem(rsa_key)], accept_signatures=True)
    untrusted = evaluate_ima(signed_log(ImaSigner(ec_key)), policy)
    assert codes(untrusted) == [(Failure.IMA_SIGNATURE, "/usr/bin/signed")] and "not trusted" in untrusted[0].detail
    # Another key claiming the trusted key's id.
    trusted_id = ImaSigner(rsa_key).sign("sha256", bytes(32))[3:7]
    impostor = ImaSigner(rsa.generate_private_key(65537, 2048), keyid=int.from_bytes(trusted_id, "big"))
    forged = evaluate_ima(signed_log(impostor), policy)
    assert codes(forged) == [(Failure.IMA_SIGNATURE, "/usr/bin/signed")] and "does not verify" in forged[0].detail


@pytest.mark.parametrize("key_name", ["rsa_key", "ec_key"])
def test_signature_over_other_data(request: pytest.FixtureRequest, key_name: str) -> None:
    key = request.getfixturevalue(key_name)
    other = ImaSigner(key).sign("sha256", hashlib.sha256(b"the file that was signed").digest())
    log = ImaLogBuilder()
    log.add_file("/usr/bin/swapped", b"another file", template="ima-sig")
    entry = log.entries[0]
    swapped = make_entry("ima-sig", entry.path, entry.file_digest, signature=other)
    findings = evaluate_ima([swapped], ImaPolicy.build(keys=[pem(key)], accept_signatures=True))
    assert codes(findings) == [(Failure.IMA_SIGNATURE, "/usr/bin/swapped")]


def test_malformed_or_foreign_signatures(rsa_key: rsa.RSAPrivateKey) -> None:
    policy = ImaPolicy.build(keys=[pem(rsa_key)], accept_signatures=True)
    good = ImaSigner(rsa_key).sign("sha256", hashlib.sha256(b"x").digest())
    for blob in (
        b"\x03",
        b"\x05\x02" + good[2:],
        good[:2] + b"\x63" + good[3:],
        good + b"\0",
        b"\x03\x02\x02" + good[3:],
    ):
        entry = make_entry("ima-sig", "/x", hashlib.sha256(b"x").digest(), signature=blob)
        assert codes(evaluate_ima([entry], policy)) == [(Failure.IMA_SIGNATURE, "/x")], blob[:3]


def test_pkcs1_rsa_public_key(rsa_key: rsa.RSAPrivateKey) -> None:
    pkcs1 = rsa_key.public_key().public_bytes(PEM, serialization.PublicFormat.PKCS1)
    assert pkcs1.startswith(b"-----BEGIN RSA PUBLIC KEY")
    assert evaluate_ima(signed_log(ImaSigner(rsa_key)), ImaPolicy.build(keys=[pkcs1], accept_signatures=True)) == []


def test_only_the_first_boot_aggregate_is_left_to_the_pcr_check() -> None:
    log = ImaLogBuilder()
    log.add_boot_aggregate({i: bytes(32) for i in range(10)}, SHA256)
    log.add_file("boot_aggregate", b"a file whose path could not be resolved")
    findings = evaluate_ima(parse_ima_ascii(log.ascii()), ImaPolicy.build())
    assert [(f.code, f.index) for f in findings] == [(Failure.IMA_UNKNOWN_DIGEST, 1)]


def test_buffers_are_allowed_by_name_only() -> None:
    log = ImaLogBuilder()
    log.add_buffer("kexec-cmdline", b"root=/dev/vda1 ro")
    log.add_buffer("kexec-cmdline", b"root=/dev/vda1 init=/bin/sh")
    entries = parse_ima_ascii(log.ascii())
    allow = {"kexec-cmdline": [sha256(b"root=/dev/vda1 ro")]}
    findings = evaluate_ima(entries, ImaPolicy.build(allow=allow, exclude=["kexec"]))
    assert codes(findings) == [(Failure.IMA_UNKNOWN_DIGEST, "kexec-cmdline")] and "buffer" in findings[0].detail
    assert findings[0].index == 1


def test_violations_are_reported_even_on_excluded_paths() -> None:
    log = ImaLogBuilder()
    log.add_violation("/var/log/messages")
    entries = parse_ima_ascii(log.ascii())
    assert codes(evaluate_ima(entries, ImaPolicy.build(exclude=["/var/log/"]))) == [
        (Failure.IMA_VIOLATION, "/var/log/messages")
    ]
    assert evaluate_ima(entries, ImaPolicy.build(ignore_violations=True)) == []


def test_real_log_against_its_own_allow_list(realdata: Path) -> None:
    entries = parse_ima_ascii((realdata / "ima-ascii-runtime-measurements.txt").read_bytes())
    allow: dict[str, list[str]] = {}
    for e in entries[1:]:
        allow.setdefault(e.path, []).append(e.file_digest.hex())
    assert evaluate_ima(entries, ImaPolicy.build(allow=allow)) == []
    del allow["/bin/sh"]
    findings = evaluate_ima(entries, ImaPolicy.build(allow=allow))
    assert {f.path for f in findings} == {"/bin/sh"} and findings[0].index == 2


@pytest.mark.parametrize(
    "kwargs",
    [
        {"allow": {"/a": ["xyz"]}},
        {"allow": {"/a": ["sha256:" + "ab" * 20]}},
        {"allow": {"/a": ["00" * 32]}},
        {"allow": {"/a": [""]}},
        {"exclude": ["(unclosed"]},
        {"keys": [b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"]},
        {"keys": ["not a key"]},
    ],
)
def test_invalid_policy_values(kwargs: dict) -> None:  # type: ignore[type-arg]
    with pytest.raises(EvidenceError) as err:
        ImaPolicy.build(**kwargs)
    assert err.value.code is Failure.POLICY_MALFORMED


def test_bad_allow_list_digest_names_the_path() -> None:
    for bad in ("abcd", "sha256:" + "ab" * 20, "zz" * 32):
        with pytest.raises(EvidenceError) as err:
            ImaPolicy.build(allow={"/usr/bin/bash": ["ab" * 32, bad]})
        assert err.value.code is Failure.POLICY_MALFORMED
        assert "/usr/bin/bash" in err.value.detail and "runtime.ima.allow" in err.value.detail
