"""Real components: swtpm processes, tpm2-pytss, tpm2-tools' tpm2_checkquote and ``cryptography`` as oracles."""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

tpm2_pytss = pytest.importorskip("tpm2_pytss")

from tpm2_pytss import TSS2_Exception  # noqa: E402
from tpm2_pytss.constants import TPM2_ST, TPMA_OBJECT  # noqa: E402
from tpm2_pytss.types import TPM2B_PUBLIC, TPMS_ATTEST, TPMT_SIGNATURE  # noqa: E402
from tpm2_pytss.utils import make_credential  # noqa: E402

from osm_trustmgr.agent.tpm import Ak, AkBlobs, TpmDevice, TpmError  # noqa: E402
from osm_trustmgr.sandbox import swtpm as swtpm_module  # noqa: E402
from osm_trustmgr.sandbox.swtpm import LocalCa, Swtpm  # noqa: E402

SELECTION = {"sha256": [0, 1, 2, 3, 7, 10, 16], "sha1": [0, 10]}
# tpm2_checkquote 5.4 cannot hash a raw PCR file of 8 or more digests ("Something wrong, trying to print but
# nothing more"), whatever the banks: its oracle gets 7, across two banks.
CHECKQUOTE_SELECTION = {"sha256": [0, 1, 7, 10, 16], "sha1": [0, 10]}
TPM_RH_ENDORSEMENT = (0x4000000B).to_bytes(4, "big")
SHA256_NAME_ALG = b"\x00\x0b"


def public_key(tpm2b_public: bytes) -> rsa.RSAPublicKey | ec.EllipticCurvePublicKey:
    public, _ = TPM2B_PUBLIC.unmarshal(tpm2b_public)
    key = serialization.load_der_public_key(public.publicArea.to_der())
    assert isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey)
    return key


def spki(key: object) -> bytes:
    assert isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey)
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def verify_quote(ak_public: bytes, attest: bytes, signature: bytes) -> None:
    """Check the quote signature with ``cryptography`` only; raises InvalidSignature."""
    key = public_key(ak_public)
    sig, _ = TPMT_SIGNATURE.unmarshal(signature)
    if isinstance(key, rsa.RSAPublicKey):
        key.verify(bytes(sig), attest, padding.PKCS1v15(), hashes.SHA256())
    else:  # bytes() of an ECDSA TPMT_SIGNATURE is the DER (r, s) that cryptography takes
        key.verify(bytes(sig), attest, ec.ECDSA(hashes.SHA256()))


def attest_of(quote_attest: bytes) -> TPMS_ATTEST:
    attest, used = TPMS_ATTEST.unmarshal(quote_attest)
    assert used == len(quote_attest)
    return attest


def assert_nothing_loaded(tpm: TpmDevice) -> None:
    assert tpm.transient_handles() == []
    assert tpm.loaded_sessions() == []


def process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


# -- swtpm process ------------------------------------------------------------------------------------


def test_swtpm_runs_on_loopback_and_stops_by_pid(swtpm: Swtpm) -> None:
    pid, port = swtpm.pid, swtpm.port
    assert pid is not None and port is not None
    assert process_exists(pid)
    assert swtpm.tcti == f"swtpm:host=127.0.0.1,port={port}"
    socket.create_connection(("127.0.0.1", port + 1)).close()  # control channel

    swtpm.stop()

    assert not swtpm.running
    assert not process_exists(pid)  # terminated and reaped, not a zombie
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


def test_swtpm_restart_is_a_power_cycle_that_keeps_the_tpm(swtpm: Swtpm) -> None:
    with TpmDevice(swtpm.tcti) as tpm:
        blobs, resets = tpm.create_ak("ecc").blobs, tpm.read_clock().reset_count
        tpm.pcr_extend(16, {"sha256": b"\x01" * 32})
    old_pid = swtpm.pid

    swtpm.stop()
    swtpm.start()

    assert swtpm.pid != old_pid
    with TpmDevice(swtpm.tcti) as tpm:
        assert tpm.load_ak(blobs).public == blobs.public  # same endorsement seed, same AK
        assert tpm.read_clock().reset_count == resets + 1
        assert tpm.pcr_read({"sha256": [16]})["sha256"][16] == bytes(32)


def test_swtpm_unix_socket_transport(tmp_path: Path, swtpm_state_template: Path) -> None:
    shutil.copytree(swtpm_state_template, tmp_path / "state")
    with Swtpm(tmp_path / "state", provision=False, transport="unix") as process:
        assert process.tcti == f"swtpm:path={process.socket_path}"
        with TpmDevice(process.tcti) as tpm:
            tpm.pcr_extend(16, {"sha256": b"\x01" * 32})
            process.reboot()
            assert tpm.pcr_read({"sha256": [16]})["sha256"][16] == bytes(32)
        process.stop()
        process.start()  # the stale socket files from the first run do not get in the way
        with TpmDevice(process.tcti) as tpm:
            assert tpm.read_ek_certificate("rsa") is not None


def test_swtpm_retries_when_its_port_is_taken(
    tmp_path: Path, swtpm_state_template: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copytree(swtpm_state_template, tmp_path / "state")
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1] - 1  # swtpm's control port P+1 is the squatter's
        real = swtpm_module._free_port_pair
        ports = iter([taken])
        monkeypatch.setattr(swtpm_module, "_free_port_pair", lambda: next(ports, None) or real())

        with Swtpm(tmp_path / "state", provision=False) as process:
            assert process.port != taken
            with TpmDevice(process.tcti) as tpm:
                assert tpm.read_clock().reset_count >= 0


def test_swtpm_provisions_fresh_state_with_a_private_ca(tmp_path: Path) -> None:
    ca = LocalCa(tmp_path / "ca")
    with Swtpm(tmp_path / "state", ca=ca) as process, TpmDevice(process.tcti) as tpm:
        assert (tmp_path / "state" / "tpm2-00.permall").is_file()
        for alg in ("rsa", "ecc", "ecc384"):
            der = tpm.read_ek_certificate(alg)
            assert der is not None
            x509.load_der_x509_certificate(der).verify_directly_issued_by(ca.certificates[1])


# -- endorsement key ----------------------------------------------------------------------------------


@pytest.mark.parametrize("alg", ["rsa", "ecc", "ecc384"])
def test_ek_certificate_matches_the_created_ek(tpm: TpmDevice, alg: str) -> None:
    der = tpm.read_ek_certificate(alg)
    assert der is not None
    certificate = x509.load_der_x509_certificate(der)
    ek = tpm.create_ek(alg)

    assert spki(certificate.public_key()) == spki(public_key(ek.public))
    assert tpm.create_ek(alg) == ek  # derived from the endorsement seed: the same key every time
    assert_nothing_loaded(tpm)


@pytest.mark.parametrize("alg", ["rsa", "ecc", "ecc384"])
def test_ek_certificate_chains_to_the_local_ca_only(
    tpm: TpmDevice, swtpm_ca: LocalCa, untrusted_ca: LocalCa, alg: str
) -> None:
    der = tpm.read_ek_certificate(alg)
    assert der is not None
    certificate = x509.load_der_x509_certificate(der)
    root, issuer = swtpm_ca.certificates

    certificate.verify_directly_issued_by(issuer)
    issuer.verify_directly_issued_by(root)
    with pytest.raises(InvalidSignature):  # same subject names, other keys
        certificate.verify_directly_issued_by(untrusted_ca.certificates[1])


def test_absent_ek_certificate_reads_as_none(tmp_path: Path) -> None:
    with Swtpm(tmp_path / "state", provision=False) as process, TpmDevice(process.tcti) as tpm:
        assert tpm.read_ek_certificate("rsa") is None
        assert tpm.create_ek("rsa").public  # the template works without a certificate


def test_unknown_algorithms_are_rejected(tpm: TpmDevice) -> None:
    with pytest.raises(ValueError, match="EK type"):
        tpm.create_ek("dsa")
    with pytest.raises(ValueError, match="AK algorithm"):
        tpm.create_ak("dsa")


# -- attestation key ----------------------------------------------------------------------------------


@pytest.mark.parametrize("alg", ["rsa", "ecc"])
def test_ak_is_a_restricted_signing_key_under_the_ek(
    module_tpm: TpmDevice, module_aks: dict[str, Ak], alg: str
) -> None:
    ak = module_aks[alg]
    public, _ = TPM2B_PUBLIC.unmarshal(ak.public)
    attributes = public.publicArea.objectAttributes
    for flag in ("FIXEDTPM", "FIXEDPARENT", "SENSITIVEDATAORIGIN", "USERWITHAUTH", "RESTRICTED", "SIGN_ENCRYPT"):
        assert attributes & getattr(TPMA_OBJECT, flag), flag
    assert not attributes & TPMA_OBJECT.DECRYPT
    key = public_key(ak.public)
    assert isinstance(key, rsa.RSAPublicKey if alg == "rsa" else ec.EllipticCurvePublicKey)

    # name = nameAlg || H(TPMT_PUBLIC); qualified name chains through the EK to the endorsement hierarchy
    assert ak.name == SHA256_NAME_ALG + hashlib.sha256(ak.public[2:]).digest()
    ek = module_tpm.create_ek("rsa")
    ek_qualified = SHA256_NAME_ALG + hashlib.sha256(TPM_RH_ENDORSEMENT + ek.name).digest()
    assert ak.qualified_name == SHA256_NAME_ALG + hashlib.sha256(ek_qualified + ak.name).digest()
    assert_nothing_loaded(module_tpm)


def test_ak_under_the_high_range_ecc_ek(tpm: TpmDevice) -> None:
    ak = tpm.create_ak("ecc", ek_alg="ecc384")
    quote = tpm.quote(ak, b"n" * 32, {"sha256": [0]})
    verify_quote(ak.public, quote.attest, quote.signature)
    assert attest_of(quote.attest).qualifiedSigner.marshal()[2:] == ak.qualified_name
    assert_nothing_loaded(tpm)


# -- quotes -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("alg", ["rsa", "ecc"])
def test_quote_round_trip(module_tpm: TpmDevice, module_aks: dict[str, Ak], alg: str) -> None:
    ak, nonce = module_aks[alg], os.urandom(32)
    quote = module_tpm.quote(ak, nonce, SELECTION)

    verify_quote(ak.public, quote.attest, quote.signature)
    attest = attest_of(quote.attest)
    assert attest.magic == 0xFF544347 and attest.type == TPM2_ST.ATTEST_QUOTE
    assert bytes(attest.extraData) == nonce
    assert attest.qualifiedSigner.marshal()[2:] == ak.qualified_name
    assert {bank: sorted(values) for bank, values in quote.pcrs.items()} == SELECTION
    composite = b"".join(quote.pcrs[bank][i] for bank in ("sha256", "sha1") for i in SELECTION[bank])
    assert bytes(attest.attested.quote.pcrDigest) == hashlib.sha256(composite).digest()
    with pytest.raises(InvalidSignature):
        verify_quote(ak.public, quote.attest[:-1] + bytes([quote.attest[-1] ^ 1]), quote.signature)
    assert_nothing_loaded(module_tpm)


def run_checkquote(directory: Path, ak: Ak, attest: bytes, signature: bytes, nonce: bytes, pcrs: bytes) -> int:
    public, _ = TPM2B_PUBLIC.unmarshal(ak.public)
    files = {"ak.pem": public.publicArea.to_pem(), "msg": attest, "sig": signature, "pcrs": pcrs}
    for name, data in files.items():
        (directory / name).write_bytes(data)
    spec = "+".join(f"{bank}:{','.join(map(str, idx))}" for bank, idx in CHECKQUOTE_SELECTION.items())
    args = ["tpm2_checkquote", "-u", "ak.pem", "-m", "msg", "-s", "sig", "-f", "pcrs", "-l", spec]
    result = subprocess.run([*args, "-g", "sha256", "-q", nonce.hex()], cwd=directory, capture_output=True, timeout=30)
    return result.returncode


@pytest.mark.skipif(shutil.which("tpm2_checkquote") is None, reason="tpm2-tools not installed")
@pytest.mark.parametrize("alg", ["rsa", "ecc"])
def test_tpm2_checkquote_accepts_quotes_and_rejects_tampering(
    tmp_path: Path, module_tpm: TpmDevice, module_aks: dict[str, Ak], alg: str
) -> None:
    ak, nonce = module_aks[alg], os.urandom(20)
    quote = module_tpm.quote(ak, nonce, CHECKQUOTE_SELECTION)
    # PCR file without selection: the digests concatenated in selection order, interpreted with -l
    pcrs = b"".join(quote.pcrs[bank][i] for bank, indices in CHECKQUOTE_SELECTION.items() for i in indices)

    assert run_checkquote(tmp_path, ak, quote.attest, quote.signature, nonce, pcrs) == 0
    tampered = bytearray(quote.attest)
    tampered[-40] ^= 0xFF
    assert run_checkquote(tmp_path, ak, bytes(tampered), quote.signature, nonce, pcrs) != 0
    assert run_checkquote(tmp_path, ak, quote.attest, quote.signature, os.urandom(20), pcrs) != 0
    assert run_checkquote(tmp_path, ak, quote.attest, quote.signature, nonce, b"\x55" + pcrs[1:]) != 0


def test_quote_rejects_an_oversized_nonce(module_tpm: TpmDevice, module_aks: dict[str, Ak]) -> None:
    with pytest.raises(ValueError, match="nonce"):
        module_tpm.quote(module_aks["ecc"], bytes(65), SELECTION)


def test_pcr_extend_changes_the_quoted_pcr(tpm: TpmDevice) -> None:
    ak = tpm.create_ak("ecc")
    before = tpm.quote(ak, b"1", {"sha256": [16], "sha1": [16]}).pcrs
    measurement = {"sha256": hashlib.sha256(b"m").digest(), "sha1": hashlib.sha1(b"m").digest()}

    tpm.pcr_extend(16, measurement)

    after = tpm.quote(ak, b"2", {"sha256": [16], "sha1": [16]})
    for bank, digest in measurement.items():
        expected = hashlib.new(bank, before[bank][16] + digest).digest()
        assert after.pcrs[bank][16] == expected
    composite = after.pcrs["sha256"][16] + after.pcrs["sha1"][16]
    assert bytes(attest_of(after.attest).attested.quote.pcrDigest) == hashlib.sha256(composite).digest()


def test_quote_is_retaken_when_an_extend_races_it(tpm: TpmDevice, monkeypatch: pytest.MonkeyPatch) -> None:
    ak, measurement = tpm.create_ak("ecc"), hashlib.sha256(b"racing").digest()
    read_pcrs = tpm.pcr_read
    reads: list[dict[str, list[int]]] = []

    def extend_then_read(selection: dict[str, list[int]]) -> dict[str, dict[int, bytes]]:
        if not reads:  # the first quote is already taken: its PCR values are now stale
            tpm.pcr_extend(16, {"sha256": measurement})
        reads.append(selection)
        return read_pcrs(selection)

    monkeypatch.setattr(tpm, "pcr_read", extend_then_read)
    quote = tpm.quote(ak, b"race", {"sha256": [16]})

    assert len(reads) == 2
    assert quote.pcrs["sha256"][16] == hashlib.sha256(bytes(32) + measurement).digest()
    assert bytes(attest_of(quote.attest).attested.quote.pcrDigest) == hashlib.sha256(quote.pcrs["sha256"][16]).digest()
    assert_nothing_loaded(tpm)


def test_pcr_read_returns_more_than_eight_pcrs_per_bank(tpm: TpmDevice) -> None:
    values = tpm.pcr_read({"sha256": range(24), "sha1": range(24)})
    assert sorted(values["sha256"]) == list(range(24)) and sorted(values["sha1"]) == list(range(24))
    assert all(len(v) == 32 for v in values["sha256"].values())
    with pytest.raises(ValueError, match="out of range"):
        tpm.pcr_read({"sha256": [24]})


def test_reboot_zeroes_pcrs_and_increments_reset_count(swtpm: Swtpm, tpm: TpmDevice) -> None:
    ak = tpm.create_ak("ecc")
    tpm.pcr_extend(10, {"sha256": hashlib.sha256(b"kernel").digest()})
    before = tpm.quote(ak, b"before", {"sha256": [0, 10]})
    assert before.pcrs["sha256"][10] != bytes(32)

    swtpm.reboot()

    after = tpm.quote(ak, b"after", {"sha256": [0, 10]})  # the AK blobs survive the reboot
    assert after.pcrs["sha256"] == {0: bytes(32), 10: bytes(32)}
    reset_before = attest_of(before.attest).clockInfo.resetCount
    assert attest_of(after.attest).clockInfo.resetCount == reset_before + 1
    assert tpm.read_clock().reset_count == reset_before + 1
    verify_quote(ak.public, after.attest, after.signature)


# -- credential activation ----------------------------------------------------------------------------


@pytest.mark.parametrize("ek_alg", ["rsa", "ecc", "ecc384"])
def test_activate_credential_returns_the_secret(tpm: TpmDevice, ek_alg: str) -> None:
    ak = tpm.create_ak("ecc", ek_alg=ek_alg)
    ek = tpm.create_ek(ek_alg)
    secret = os.urandom(32)

    blob, encrypted = tpm.make_credential_on_tpm(ek.public, ak.name, secret)
    assert tpm.activate_credential(ak, blob, encrypted) == secret

    # tpm2-pytss' software MakeCredential: what a verifier does without a TPM
    ek_public, _ = TPM2B_PUBLIC.unmarshal(ek.public)
    soft_blob, soft_encrypted = make_credential(ek_public, secret, ak.name)
    assert tpm.activate_credential(ak, soft_blob.marshal(), soft_encrypted.marshal()) == secret
    assert_nothing_loaded(tpm)


def test_activate_credential_fails_for_another_key_and_leaks_nothing(tpm: TpmDevice) -> None:
    ak, other = tpm.create_ak("ecc"), tpm.create_ak("ecc")
    blob, encrypted = tpm.make_credential_on_tpm(tpm.create_ek("rsa").public, other.name, b"s" * 16)

    with pytest.raises(TSS2_Exception):
        tpm.activate_credential(ak, blob, encrypted)
    assert_nothing_loaded(tpm)
    with pytest.raises(ValueError, match="trailing"):
        tpm.activate_credential(ak, blob + b"\x00", encrypted)


# -- AK persistence -----------------------------------------------------------------------------------


def test_ak_blobs_reload_after_reopening_the_device(swtpm: Swtpm) -> None:
    with TpmDevice(swtpm.tcti) as tpm:
        ak = tpm.create_ak("rsa")
        stored = ak.blobs.to_dict()

    with TpmDevice(swtpm.tcti) as tpm:
        reloaded = tpm.load_ak(AkBlobs.from_dict(stored))
        quote = tpm.quote(reloaded, b"restart", {"sha256": [0]})
        assert_nothing_loaded(tpm)

    assert (reloaded.name, reloaded.qualified_name) == (ak.name, ak.qualified_name)
    verify_quote(ak.public, quote.attest, quote.signature)


def test_persistent_ak_quotes_without_the_ek_and_can_be_evicted(tpm: TpmDevice) -> None:
    handle = 0x81010100
    ak = tpm.persist_ak(tpm.create_ak("ecc"), handle)
    try:
        quote = tpm.quote(ak, b"p", {"sha256": [0]})
        verify_quote(ak.public, quote.attest, quote.signature)
        assert attest_of(quote.attest).qualifiedSigner.marshal()[2:] == ak.qualified_name
        assert_nothing_loaded(tpm)
        impostor = tpm.create_ak("ecc")
        with pytest.raises(TpmError, match="another key"):
            tpm.quote(Ak(impostor.blobs, impostor.name, impostor.qualified_name, handle), b"p", {"sha256": [0]})
    finally:
        tpm.evict(handle)
    with pytest.raises(TSS2_Exception):
        tpm.quote(ak, b"p", {"sha256": [0]})
