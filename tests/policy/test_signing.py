"""Signed trust policies: canonical encoding, Ed25519 / ECDSA P-256 signatures, and loading (shape first)."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
from collections.abc import Callable
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from osm_trustmgr.failures import Failure
from osm_trustmgr.policy.load import load_policy
from osm_trustmgr.policy.signing import (
    PrivateSignerKey,
    canonical_bytes,
    key_id,
    load_signer_keys,
    sign_policy,
    verify_policy_signature,
)
from osm_trustmgr.tpm.errors import EvidenceError

PEM = serialization.Encoding.PEM
SPKI = serialization.PublicFormat.SubjectPublicKeyInfo

PCR0 = hashlib.sha256(b"firmware v1").hexdigest()
PCR7 = hashlib.sha256(b"secure boot on").hexdigest()
PCR4 = hashlib.sha256(b"shim+grub+kernel").hexdigest()
DB = hashlib.sha256(b"db").hexdigest()
KERNEL = hashlib.sha256(b"vmlinuz").hexdigest()
OK_FILE = hashlib.sha256(b"ok").hexdigest()

# JSON spelling: PCR indices are string keys.
DOCUMENT: dict[str, Any] = {
    "id": "golden-2024.1",
    "version": 3,
    "description": "reference values — näive UTF-8 on purpose",
    "pcr_banks": ["sha256"],
    "platform": {
        "pcrs": {"sha256": {"0": [PCR0], "7": [PCR7]}},
        "secure_boot": "required",
        "db": [DB],
    },
    "os": {
        "pcrs": {"sha256": {"4": [PCR4]}},
        "boot_components": [KERNEL],
        "kernel_cmdline": [r"BOOT_IMAGE=/vmlinuz-\S+ root=\S+ ro quiet"],
    },
    "runtime": {"ima": {"allow": {"/usr/bin/ok": [f"sha256:{OK_FILE}"]}, "exclude": ["/tmp/"]}, "max_age": 600},
}

# The same policy as an operator writes it in YAML: PCR indices are int keys, other key order.
DOCUMENT_YAML = f"""
runtime:
  max_age: 600
  ima:
    exclude: [/tmp/]
    allow:
      /usr/bin/ok: ["sha256:{OK_FILE}"]
os:
  kernel_cmdline: ['BOOT_IMAGE=/vmlinuz-\\S+ root=\\S+ ro quiet']
  boot_components: [{KERNEL}]
  pcrs:
    sha256:
      4: [{PCR4}]
platform:
  db: [{DB}]
  secure_boot: required
  pcrs:
    sha256:
      7: [{PCR7}]
      0: [{PCR0}]
pcr_banks: [sha256]
description: "reference values — näive UTF-8 on purpose"
version: 3
id: golden-2024.1
"""


@pytest.fixture(scope="module")
def ed_key() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def other_key() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


@pytest.fixture(params=["ed25519", "ecdsa-p256-sha256"])
def signer(request: pytest.FixtureRequest, ed_key: Any, ec_key: Any) -> PrivateSignerKey:
    key: PrivateSignerKey = ed_key if request.param == "ed25519" else ec_key
    return key


def pem(key: Any) -> bytes:
    public = key.public_key() if hasattr(key, "public_key") else key
    data: bytes = public.public_bytes(PEM, SPKI)
    return data


def trusted(*keys: Any) -> dict[str, Any]:
    return load_signer_keys([pem(k) for k in keys])


def code_of(fn: Callable[[], object]) -> EvidenceError:
    with pytest.raises(EvidenceError) as err:
        fn()
    return err.value


def reorder(value: Any) -> Any:
    """The same document with every mapping's keys in reverse order."""
    if isinstance(value, dict):
        return {k: reorder(v) for k, v in reversed(list(value.items()))}
    if isinstance(value, list):
        return [reorder(v) for v in value]
    return value


# --- signatures that verify --------------------------------------------------------------------


def test_signed_policy_loads(signer: PrivateSignerKey) -> None:
    signed = sign_policy(DOCUMENT, signer)
    expected_alg = "ed25519" if isinstance(signer, ed25519.Ed25519PrivateKey) else "ecdsa-p256-sha256"
    assert signed["signature"]["alg"] == expected_alg
    assert signed["signature"]["keyid"] == key_id(signer.public_key())
    assert "signature" not in DOCUMENT  # sign_policy returns a copy

    signers = trusted(signer)
    assert verify_policy_signature(signed, signers, required=True) == key_id(signer.public_key())
    policy = load_policy(signed, signers, require_signature=True)
    assert policy.id == "golden-2024.1" and policy.version == 3
    assert policy.platform is not None and policy.platform.pcrs == {"sha256": {0: [PCR0], 7: [PCR7]}}
    assert policy.signature is not None and policy.signature.alg == expected_alg


def test_signature_survives_a_json_round_trip(signer: PrivateSignerKey) -> None:
    signed = json.loads(json.dumps(sign_policy(DOCUMENT, signer)))
    assert load_policy(signed, trusted(signer), require_signature=True).id == DOCUMENT["id"]


def test_key_id_is_sha256_of_spki(ed_key: ed25519.Ed25519PrivateKey, ec_key: ec.EllipticCurvePrivateKey) -> None:
    for key in (ed_key, ec_key):
        der = key.public_key().public_bytes(serialization.Encoding.DER, SPKI)
        assert key_id(key.public_key()) == hashlib.sha256(der).hexdigest()
    assert set(trusted(ed_key, ec_key)) == {key_id(ed_key.public_key()), key_id(ec_key.public_key())}


# --- the canonical encoding ------------------------------------------------------------------


def test_canonical_bytes_exact_form() -> None:
    doc = {"b": 1, "a": {"z": [1, "é"], 0: None}, "signature": {"alg": "ed25519"}}
    assert canonical_bytes(doc) == '{"a":{"0":null,"z":[1,"é"]},"b":1}'.encode()


def test_canonical_encoding_ignores_key_order(signer: PrivateSignerKey) -> None:
    shuffled = reorder(DOCUMENT)
    assert list(shuffled) != list(DOCUMENT)
    assert canonical_bytes(shuffled) == canonical_bytes(DOCUMENT)
    signed = sign_policy(DOCUMENT, signer)
    assert load_policy(reorder(signed), trusted(signer), require_signature=True).id == DOCUMENT["id"]


def test_yaml_int_keys_sign_like_json_string_keys(signer: PrivateSignerKey) -> None:
    from_yaml = yaml.safe_load(DOCUMENT_YAML)
    assert 0 in from_yaml["platform"]["pcrs"]["sha256"]  # YAML really produced int keys
    assert canonical_bytes(from_yaml) == canonical_bytes(DOCUMENT)

    # signed as JSON, loaded from YAML
    signature = sign_policy(DOCUMENT, signer)["signature"]
    yaml_signed = yaml.safe_load(DOCUMENT_YAML + "signature: " + json.dumps(signature) + "\n")
    assert load_policy(yaml_signed, trusted(signer), require_signature=True).id == DOCUMENT["id"]

    # signed as YAML, loaded from JSON
    json_signed = json.loads(json.dumps({**DOCUMENT, "signature": sign_policy(from_yaml, signer)["signature"]}))
    assert load_policy(json_signed, trusted(signer), require_signature=True).id == DOCUMENT["id"]


# --- any change breaks the signature ---------------------------------------------------------


def _set_db(d: dict[str, Any]) -> None:
    d["platform"]["db"][0] = hashlib.sha256(b"other db").hexdigest()


def _set_pcr(d: dict[str, Any]) -> None:
    d["platform"]["pcrs"]["sha256"]["7"] = [hashlib.sha256(b"secure boot off").hexdigest()]


def _add_allowed_pcr_value(d: dict[str, Any]) -> None:
    d["os"]["pcrs"]["sha256"]["4"].append(hashlib.sha256(b"evil kernel").hexdigest())


def _add_pcr(d: dict[str, Any]) -> None:
    d["platform"]["pcrs"]["sha256"]["1"] = [PCR0]


def _add_ima_path(d: dict[str, Any]) -> None:
    d["runtime"]["ima"]["allow"]["/usr/local/bin/cryptominer"] = [f"sha256:{OK_FILE}"]


def _add_exclude(d: dict[str, Any]) -> None:
    d["runtime"]["ima"]["exclude"].append("/usr/local/")


def _add_default_key(d: dict[str, Any]) -> None:
    d["runtime"]["ima"]["accept_signatures"] = True  # the default: still not what was signed


def _relax_secure_boot(d: dict[str, Any]) -> None:
    d["platform"]["secure_boot"] = "optional"


def _drop_os(d: dict[str, Any]) -> None:
    del d["os"]


def _cmdline(d: dict[str, Any]) -> None:
    d["os"]["kernel_cmdline"] = [".*"]


def _version(d: dict[str, Any]) -> None:
    d["version"] = 4


TAMPERS = [
    _set_db,
    _set_pcr,
    _add_allowed_pcr_value,
    _add_pcr,
    _add_ima_path,
    _add_exclude,
    _add_default_key,
    _relax_secure_boot,
    _drop_os,
    _cmdline,
    _version,
]


@pytest.mark.parametrize("tamper", TAMPERS, ids=lambda f: f.__name__.strip("_"))
def test_any_change_to_a_signed_policy_is_refused(signer: PrivateSignerKey, tamper: Callable[..., None]) -> None:
    signed = sign_policy(DOCUMENT, signer)
    tampered = copy.deepcopy(signed)
    tamper(tampered)
    assert tampered != signed
    signers = trusted(signer)
    assert load_policy(signed, signers, require_signature=True)  # the untampered one loads
    for required in (True, False):  # a bad signature is never downgraded to "unsigned, accepted"
        err = code_of(lambda r=required: load_policy(tampered, signers, require_signature=r))
        assert err.code is Failure.POLICY_SIGNATURE, err


def test_untrusted_signer_is_refused(signer: PrivateSignerKey, other_key: ed25519.Ed25519PrivateKey) -> None:
    signed = sign_policy(DOCUMENT, signer)
    for signers in ({}, trusted(other_key)):
        for required in (True, False):
            err = code_of(lambda s=signers, r=required: load_policy(signed, s, require_signature=r))
            assert err.code is Failure.POLICY_SIGNATURE
            assert key_id(signer.public_key()) in err.detail


def test_keyid_of_a_trusted_key_on_another_signers_signature(
    ed_key: ed25519.Ed25519PrivateKey, other_key: ed25519.Ed25519PrivateKey
) -> None:
    forged = sign_policy(DOCUMENT, other_key)
    forged["signature"]["keyid"] = key_id(ed_key.public_key())
    err = code_of(lambda: load_policy(forged, trusted(ed_key), require_signature=True))
    assert err.code is Failure.POLICY_SIGNATURE


@pytest.mark.parametrize("value", ["not base64!", "ZmFrZQ==é", base64.b64encode(b"\x00" * 64).decode(), ""])
def test_bad_signature_value(signer: PrivateSignerKey, value: str) -> None:
    signed = sign_policy(DOCUMENT, signer)
    signed["signature"]["value"] = value
    err = code_of(lambda: load_policy(signed, trusted(signer), require_signature=True))
    assert err.code is Failure.POLICY_SIGNATURE


def test_truncated_signature_value(signer: PrivateSignerKey) -> None:
    signed = sign_policy(DOCUMENT, signer)
    raw = base64.b64decode(signed["signature"]["value"])
    signed["signature"]["value"] = base64.b64encode(raw[:-1]).decode()
    assert code_of(lambda: load_policy(signed, trusted(signer), require_signature=True)).code is (
        Failure.POLICY_SIGNATURE
    )


def test_signature_member_not_an_object(ed_key: ed25519.Ed25519PrivateKey) -> None:
    doc = {**DOCUMENT, "signature": "deadbeef"}
    assert code_of(lambda: verify_policy_signature(doc, trusted(ed_key), required=True)).code is (
        Failure.POLICY_SIGNATURE
    )
    # through load_policy the shape check comes first
    err = code_of(lambda: load_policy(doc, trusted(ed_key), require_signature=True))
    assert err.code is Failure.POLICY_MALFORMED and "signature" in err.detail


@pytest.mark.parametrize(
    ("signed_with", "label"),
    [("ecdsa", "ed25519"), ("ed25519", "ecdsa-p256-sha256")],
    ids=["ecdsa-as-ed", "ed-as-ecdsa"],
)
def test_alg_label_must_fit_the_key(
    ed_key: ed25519.Ed25519PrivateKey, ec_key: ec.EllipticCurvePrivateKey, signed_with: str, label: str
) -> None:
    key = ec_key if signed_with == "ecdsa" else ed_key
    signed = sign_policy(DOCUMENT, key)
    signed["signature"]["alg"] = label
    err = code_of(lambda: load_policy(signed, trusted(key), require_signature=True))
    assert err.code is Failure.POLICY_SIGNATURE
    assert label in err.detail


# --- unsigned policies ---------------------------------------------------------------------


def test_unsigned_policy_refused_when_required(ed_key: ed25519.Ed25519PrivateKey) -> None:
    for signers in ({}, trusted(ed_key)):
        err = code_of(lambda s=signers: load_policy(DOCUMENT, s, require_signature=True))
        assert err.code is Failure.POLICY_UNSIGNED


def test_unsigned_policy_accepted_when_not_required(ed_key: ed25519.Ed25519PrivateKey) -> None:
    assert verify_policy_signature(DOCUMENT, {}, required=False) is None
    policy = load_policy(DOCUMENT, trusted(ed_key), require_signature=False)
    assert policy.signature is None
    assert policy.runtime is not None and policy.runtime.max_age == 600


# --- malformed documents -------------------------------------------------------------------


def _with(path: str, value: Any) -> dict[str, Any]:
    """DOCUMENT with the member at dotted ``path`` set to ``value``."""
    doc = copy.deepcopy(DOCUMENT)
    *parents, last = path.split(".")
    node = doc
    for part in parents:
        node = node[part]
    node[last] = value
    return doc


MALFORMED = {
    "unknown-top-level-key": (_with("trust_loa", 4), ["trust_loa"]),
    "unknown-nested-key": (_with("platform.secureboot", "required"), ["platform.secureboot"]),
    "sha1-length-in-sha256-bank": (_with("platform.pcrs.sha256.0", ["ab" * 20]), ["platform.pcrs", "sha256:0"]),
    "sha256-length-in-sha1-bank": (
        _with("platform.pcrs", {"sha1": {"0": ["ab" * 32]}}),
        ["platform.pcrs", "sha1:0"],
    ),
    "os-pcr-too-long": (_with("os.pcrs.sha256.4", ["ab" * 48]), ["os.pcrs", "sha256:4"]),
    "uppercase-hex": (_with("platform.db", ["AB" * 32]), ["platform.db"]),
    "pcr-index-out-of-range": (_with("platform.pcrs.sha256.24", [PCR0]), ["platform.pcrs", "24"]),
    "unknown-bank-in-pcrs": (_with("platform.pcrs", {"sha3": {"0": [PCR0]}}), ["platform.pcrs", "sha3"]),
    "unknown-bank-in-pcr_banks": (_with("pcr_banks", ["sha256", "md5"]), ["pcr_banks", "md5"]),
    "bad-exclude-regex": (_with("runtime.ima.exclude", ["/tmp/(unclosed"]), ["exclude"]),
    "ima-digest-wrong-length": (
        _with("runtime.ima.allow", {"/usr/bin/ok": ["sha256:abcd"]}),
        ["allow-list", "sha256:abcd"],
    ),
    "ima-digest-not-hex": (
        _with("runtime.ima.allow", {"/usr/bin/ok": ["sha1:" + "zz" * 20]}),
        ["allow-list", "sha1:zz"],
    ),
    "ima-digest-all-zero": (
        _with("runtime.ima.allow", {"/usr/bin/ok": ["sha256:" + "00" * 32]}),
        ["allow-list", "sha256:0000"],
    ),
    "bad-signature-alg": (
        _with("signature", {"alg": "rsa-pss", "keyid": "0" * 64, "value": ""}),
        ["signature.alg"],
    ),
    "bad-max-age": (_with("runtime.max_age", 0), ["runtime.max_age"]),
    "bad-id": (_with("id", "has spaces"), ["id"]),
}


@pytest.mark.parametrize(("doc", "fields"), list(MALFORMED.values()), ids=list(MALFORMED))
def test_malformed_policy_names_the_field(doc: dict[str, Any], fields: list[str]) -> None:
    err = code_of(lambda: load_policy(doc, {}, require_signature=False))
    assert err.code is Failure.POLICY_MALFORMED
    for field in fields:
        assert field in err.detail, err.detail


def test_bad_kernel_cmdline_regex_is_malformed() -> None:
    err = code_of(lambda: load_policy(_with("os.kernel_cmdline", ["root=(unclosed"]), {}, require_signature=False))
    assert err.code is Failure.POLICY_MALFORMED
    assert "os.kernel_cmdline" in err.detail


@pytest.mark.parametrize("doc", [None, [], ["id", "x"], "id: x", 42], ids=repr)
def test_non_mapping_policy(doc: Any) -> None:
    err = code_of(lambda: load_policy(doc, {}, require_signature=False))
    assert err.code is Failure.POLICY_MALFORMED
    assert "mapping" in err.detail


def test_malformed_is_reported_before_the_signature(ed_key: ed25519.Ed25519PrivateKey) -> None:
    signed = sign_policy(_with("platform.pcrs.sha256.0", ["ab" * 20]), ed_key)
    err = code_of(lambda: load_policy(signed, trusted(ed_key), require_signature=True))
    assert err.code is Failure.POLICY_MALFORMED


# --- signer keys ---------------------------------------------------------------------------


def test_load_signer_keys_accepts_ed25519_and_p256(
    ed_key: ed25519.Ed25519PrivateKey, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    keys = load_signer_keys([pem(ed_key), pem(ec_key)])
    assert isinstance(keys[key_id(ed_key.public_key())], ed25519.Ed25519PublicKey)
    assert isinstance(keys[key_id(ec_key.public_key())], ec.EllipticCurvePublicKey)
    assert load_signer_keys([]) == {}


@pytest.mark.parametrize(
    "make",
    [
        lambda: rsa.generate_private_key(65537, 2048),
        lambda: ec.generate_private_key(ec.SECP384R1()),
        lambda: ec.generate_private_key(ec.SECP256K1()),
    ],
    ids=["rsa2048", "p384", "secp256k1"],
)
def test_load_signer_keys_refuses_other_keys(make: Callable[[], Any], ed_key: ed25519.Ed25519PrivateKey) -> None:
    with pytest.raises(ValueError, match="Ed25519 or ECDSA P-256"):
        load_signer_keys([pem(ed_key), pem(make())])


def test_load_signer_keys_refuses_garbage() -> None:
    with pytest.raises(ValueError):
        load_signer_keys([b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"])
