"""Quotes from a real TPM (swtpm) verify; a tamper corpus fails with the right stable code.

Verdicts are cross-checked with tpm2-tools' ``tpm2_checkquote`` (an independent implementation).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from osm_trustmgr.failures import Failure
from osm_trustmgr.sandbox.softtpm import SoftTpm
from osm_trustmgr.tpm.errors import EvidenceError
from osm_trustmgr.tpm.pcr import parse_selection_spec
from osm_trustmgr.tpm.public import ak_qualified_name, parse_public
from osm_trustmgr.tpm.quote import Quote, check_counters, marshal_attest, parse_attest, verify_quote

NONCE = bytes.fromhex("00112233445566778899aabbccddeeff01020304")
SPECS = {"sha256": "sha256:0,1,2,3,4,5,6,7,10", "sha1": "sha1:0,7,10", "both": "sha1:0-3+sha256:0-10"}


def _selection_map(spec: str) -> dict[str, list[int]]:
    return {s.bank.name: list(s.pcrs) for s in parse_selection_spec(spec)}


@pytest.fixture(scope="module")
def quotes(module_tpm, module_aks):  # type: ignore[no-untyped-def]
    """One real quote per (AK algorithm, PCR selection)."""
    out = {}
    for alg, ak in module_aks.items():
        for name, spec in SPECS.items():
            out[alg, name] = (ak, spec, module_tpm.quote(ak, NONCE, _selection_map(spec)))
    return out


def _verify(key, spec, q, **overrides):  # type: ignore[no-untyped-def]
    args = {
        "attest": q.attest,
        "signature": q.signature,
        "ak": parse_public(key.public),
        "nonce": NONCE,
        "pcrs": q.pcrs,
        "expected_signer": key.qualified_name,
        "expected_selection": parse_selection_spec(spec),
    }
    args.update(overrides)
    return verify_quote(**args)


def _code(fn) -> Failure:  # type: ignore[no-untyped-def]
    with pytest.raises(EvidenceError) as err:
        fn()
    return err.value.code


@pytest.mark.parametrize("alg", ["rsa", "ecc"])
@pytest.mark.parametrize("selection", sorted(SPECS))
def test_real_quote_verifies(quotes, alg, selection) -> None:  # type: ignore[no-untyped-def]
    ak, spec, q = quotes[alg, selection]
    verified = _verify(ak, spec, q)
    assert verified.signer_checked
    assert verified.quote.extra_data == NONCE
    assert {b: sorted(v) for b, v in verified.pcrs().items()} == _selection_map(spec)


def test_qualified_name_matches_tpm(module_tpm, module_aks) -> None:  # type: ignore[no-untyped-def]
    """Our pure-Python qualified Name equals the one the TPM reports (and signs into quotes)."""
    ek = parse_public(module_tpm.create_ek("rsa").public)
    for ak in module_aks.values():
        assert ak_qualified_name(ek, parse_public(ak.public)) == ak.qualified_name


@pytest.mark.parametrize("alg", ["rsa", "ecc"])
def test_every_attest_bit_flip_fails(quotes, alg) -> None:  # type: ignore[no-untyped-def]
    ak, spec, q = quotes[alg, "sha256"]
    for bit in range(len(q.attest) * 8):
        tampered = bytearray(q.attest)
        tampered[bit // 8] ^= 1 << (bit % 8)
        code = _code(lambda t=bytes(tampered): _verify(ak, spec, q, attest=t))
        assert code is Failure.SIGNATURE_INVALID, f"bit {bit}: {code}"


@pytest.mark.parametrize("alg", ["rsa", "ecc"])
def test_every_signature_bit_flip_fails(quotes, alg) -> None:  # type: ignore[no-untyped-def]
    ak, spec, q = quotes[alg, "sha256"]
    allowed = {Failure.SIGNATURE_INVALID, Failure.SIGNATURE_MALFORMED, Failure.SIGNATURE_SCHEME}
    for bit in range(len(q.signature) * 8):
        tampered = bytearray(q.signature)
        tampered[bit // 8] ^= 1 << (bit % 8)
        code = _code(lambda t=bytes(tampered): _verify(ak, spec, q, signature=t))
        assert code in allowed, f"bit {bit}: {code}"


def test_wrong_or_replayed_nonce(module_tpm, quotes) -> None:  # type: ignore[no-untyped-def]
    ak, spec, q = quotes["ecc", "sha256"]
    assert _code(lambda: _verify(ak, spec, q, nonce=bytes(20))) is Failure.NONCE_MISMATCH
    # A replay: yesterday's valid quote presented for today's challenge.
    fresh = bytes.fromhex("ff" * 20)
    assert _code(lambda: _verify(ak, spec, q, nonce=fresh)) is Failure.NONCE_MISMATCH
    assert _code(lambda: _verify(ak, spec, q, nonce=NONCE[:-1])) is Failure.NONCE_MISMATCH


def test_another_ak(quotes) -> None:  # type: ignore[no-untyped-def]
    ak_rsa, spec, q = quotes["rsa", "sha256"]
    ak_ecc, _, _ = quotes["ecc", "sha256"]
    # verified with the other AK's key: the signature cannot match
    code = _code(lambda: _verify(ak_rsa, spec, q, ak=parse_public(ak_ecc.public)))
    assert code in {Failure.SIGNATURE_SCHEME, Failure.SIGNATURE_INVALID}
    # right key, but the enrolled identity is another AK: the signer check catches it
    assert _code(lambda: _verify(ak_rsa, spec, q, expected_signer=ak_ecc.qualified_name)) is Failure.SIGNER_MISMATCH


def test_other_tpm_same_key_type_rejected(module_tpm, quotes) -> None:  # type: ignore[no-untyped-def]
    ak, spec, q = quotes["ecc", "sha256"]
    other = module_tpm.create_ak("ecc")
    assert _code(lambda: _verify(ak, spec, q, ak=parse_public(other.public))) is Failure.SIGNATURE_INVALID


def test_pcr_value_mismatch_and_missing(quotes) -> None:  # type: ignore[no-untyped-def]
    ak, spec, q = quotes["rsa", "both"]
    forged = {b: dict(v) for b, v in q.pcrs.items()}
    forged["sha256"][10] = bytes([1]) * 32
    assert _code(lambda: _verify(ak, spec, q, pcrs=forged)) is Failure.PCR_DIGEST
    missing = {b: dict(v) for b, v in q.pcrs.items()}
    del missing["sha1"][3]
    assert _code(lambda: _verify(ak, spec, q, pcrs=missing)) is Failure.PCR_DIGEST
    short = {b: dict(v) for b, v in q.pcrs.items()}
    short["sha256"][0] = short["sha256"][0][:-1]
    assert _code(lambda: _verify(ak, spec, q, pcrs=short)) is Failure.PCR_DIGEST


def test_selection_mismatch(quotes) -> None:  # type: ignore[no-untyped-def]
    ak, spec, q = quotes["ecc", "sha256"]
    other = parse_selection_spec("sha256:0-11")
    assert _code(lambda: _verify(ak, spec, q, expected_selection=other)) is Failure.PCR_SELECTION
    other_bank = parse_selection_spec("sha1:0,1,2,3,4,5,6,7,10")
    assert _code(lambda: _verify(ak, spec, q, expected_selection=other_bank)) is Failure.PCR_SELECTION


def test_truncated_and_trailing_attest_are_malformed(quotes) -> None:  # type: ignore[no-untyped-def]
    _, _, q = quotes["ecc", "sha256"]
    for cut in range(len(q.attest)):
        assert _code(lambda c=cut: parse_attest(q.attest[:c])) in {
            Failure.QUOTE_MALFORMED,
            Failure.QUOTE_MAGIC,
            Failure.QUOTE_TYPE,
        }
    assert _code(lambda: parse_attest(q.attest + b"\x00")) is Failure.QUOTE_MALFORMED


def test_validly_signed_but_not_a_quote() -> None:
    """A non-restricted key could sign anything; structure checks must then still reject it."""
    soft = SoftTpm(ak_alg="ecc")
    sel = parse_selection_spec("sha256:0-7")
    good = parse_attest(soft.quote(NONCE, sel)["attest"])  # type: ignore[arg-type]
    ak = parse_public(soft.ak_public)
    raw = marshal_attest(good)
    cases = {
        Failure.QUOTE_MAGIC: b"\xff\x54\x43\x48" + raw[4:],
        Failure.QUOTE_TYPE: raw[:4] + b"\x80\x17" + raw[6:],
        Failure.QUOTE_MALFORMED: raw[:-3],
    }
    for expected, attest in cases.items():
        sig = soft.sign(attest)
        code = _code(lambda a=attest, s=sig: verify_quote(a, s, ak, NONCE, soft.read(sel)))
        assert code is expected
    trailing = raw + b"\x00\x00"
    assert _code(lambda: verify_quote(trailing, soft.sign(trailing), ak, NONCE, soft.read(sel))) is (
        Failure.QUOTE_MALFORMED
    )


def test_reboot_detected_and_rollback_refused(swtpm, tpm) -> None:  # type: ignore[no-untyped-def]
    ak = tpm.create_ak("ecc")
    sel = {"sha256": [0, 10]}
    before = parse_attest(tpm.quote(ak, NONCE, sel).attest).clock_info
    again = parse_attest(tpm.quote(ak, NONCE, sel).attest).clock_info
    assert check_counters(before, again) is False
    swtpm.reboot()
    after_q = tpm.quote(ak, NONCE, sel)
    after = parse_attest(after_q.attest).clock_info
    assert after.reset_count == before.reset_count + 1
    assert after_q.pcrs["sha256"][10] == bytes(32)
    assert check_counters(again, after) is True
    assert _code(lambda: check_counters(after, before)) is Failure.CLOCK_ROLLBACK
    earlier_clock = Quote(b"", b"", again, 0, (), b"").clock_info._replace(clock=again.clock - 1)
    assert _code(lambda: check_counters(again, earlier_clock)) is Failure.CLOCK_ROLLBACK


# -- cross-check with tpm2_checkquote ---------------------------------------------------------------------


def _checkquote(tmp: Path, ak_pem: bytes, attest: bytes, signature: bytes, nonce: bytes, hash_name: str) -> bool:
    for name, data in (("ak.pem", ak_pem), ("msg", attest), ("sig", signature)):
        (tmp / name).write_bytes(data)
    result = subprocess.run(
        ["tpm2_checkquote", "-u", str(tmp / "ak.pem"), "-m", str(tmp / "msg"), "-s", str(tmp / "sig"),
         "-g", hash_name, "-q", nonce.hex()],
        capture_output=True,
        timeout=30,
        check=False,
    )  # fmt: skip
    return result.returncode == 0


@pytest.mark.skipif(shutil.which("tpm2_checkquote") is None, reason="tpm2-tools not installed")
@pytest.mark.parametrize("alg", ["rsa", "ecc"])
def test_verdicts_agree_with_tpm2_checkquote(quotes, alg, tmp_path) -> None:  # type: ignore[no-untyped-def]
    ak, spec, q = quotes[alg, "sha256"]
    pem = parse_public(ak.public).key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    cases = [("valid", q.attest, q.signature, NONCE)]
    for bit in (0, 37, 8 * 40 + 3, len(q.attest) * 8 - 1):
        flipped = bytearray(q.attest)
        flipped[bit // 8] ^= 1 << (bit % 8)
        cases.append((f"attest bit {bit}", bytes(flipped), q.signature, NONCE))
    flipped_sig = bytearray(q.signature)
    flipped_sig[-5] ^= 0x10
    cases.append(("signature", q.attest, bytes(flipped_sig), NONCE))
    cases.append(("nonce", q.attest, q.signature, bytes(20)))
    for label, attest, signature, nonce in cases:
        ours = True
        try:
            _verify(ak, spec, q, attest=attest, signature=signature, nonce=nonce, expected_signer=None)
        except EvidenceError:
            ours = False
        theirs = _checkquote(tmp_path, pem, attest, signature, nonce, "sha256")
        assert ours == theirs, label
        assert ours == (label == "valid")
