"""osm-trust-agent's identity and quote against a real swtpm, judged by osm-trustmgr evidence verify."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=60, check=False)


def test_identity_quote_verify_round_trip(swtpm, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    ak_file = tmp_path / "agent" / "ak.json"
    ident = _run(str(BIN / "osm-trust-agent"), "identity", "--tcti", swtpm.tcti, "--ak-file", str(ak_file))
    assert ident.returncode == 0, ident.stderr
    identity = json.loads(ident.stdout)
    assert identity["ek_certificate"] and ak_file.exists()
    assert oct(ak_file.stat().st_mode & 0o777) == "0o600"

    ima = tmp_path / "ima.txt"
    ima.write_text("10 " + "00" * 20 + " ima-ng sha256:" + "00" * 32 + " /first\n")
    nonce = "a1" * 20
    q = _run(
        str(BIN / "osm-trust-agent"), "quote", "--tcti", swtpm.tcti, "--ak-file", str(ak_file), "--nonce", nonce,
        "--pcrs", "sha256:0-10+sha1:0", "--ima-log", str(ima), "--ima-offset", "0",
        "--uefi-log", str(tmp_path / "absent"),
    )  # fmt: skip
    assert q.returncode == 0, q.stderr
    doc = json.loads(q.stdout)
    assert doc["ak_public"] == identity["ak_public"]  # the AK was reloaded from its blobs, not recreated
    assert doc["ima_next_offset"] == 1 and doc["uefi_log"] is None
    assert sorted(doc["pcrs"]) == ["sha1", "sha256"] and len(doc["pcrs"]["sha256"]) == 11

    evidence = tmp_path / "evidence.json"
    evidence.write_text(json.dumps(doc))
    ak_pub = tmp_path / "ak.tpm2b"
    ak_pub.write_bytes(base64.b64decode(identity["ak_public"]))
    ek_pub = tmp_path / "ek.tpm2b"
    ek_pub.write_bytes(base64.b64decode(identity["ek_public"]))
    verdict = _run(
        str(BIN / "osm-trustmgr"), "evidence", "verify", "--evidence", str(evidence), "--ak", str(ak_pub),
        "--ek", str(ek_pub), "--nonce", nonce,
    )  # fmt: skip
    assert verdict.returncode == 0, verdict.stdout + verdict.stderr
    result = json.loads(verdict.stdout)
    assert result["loa"] == 1 and result["claims"]["quote"]["signer_checked"] is True


def test_bad_requests_are_refused_clearly(swtpm, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    agent = str(BIN / "osm-trust-agent")
    ak = str(tmp_path / "ak.json")
    for nonce, pcrs in (("zz", "sha256:0"), ("aa" * 65, "sha256:0"), ("aa", "md5:0"), ("aa", "sha256:24")):
        r = _run(agent, "quote", "--tcti", swtpm.tcti, "--ak-file", ak, "--nonce", nonce, "--pcrs", pcrs)
        assert r.returncode == 2, (nonce, pcrs, r.stderr)
        assert "Invalid value" in r.stderr
    down = _run(agent, "identity", "--tcti", "swtpm:host=127.0.0.1,port=1", "--ak-file", ak)
    assert down.returncode == 1 and "error: TPM" in down.stderr


def _identity(agent: str, tcti: str, ak_file: Path) -> dict[str, str]:
    ident = _run(agent, "identity", "--tcti", tcti, "--ak-file", str(ak_file))
    assert ident.returncode == 0, ident.stderr
    return json.loads(ident.stdout)  # type: ignore[no-any-return]


def test_activate_returns_the_secret_only_for_its_ak(swtpm, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from osm_trustmgr.tpm.credential import make_credential
    from osm_trustmgr.tpm.identity import parse_ek_public
    from osm_trustmgr.tpm.public import parse_public

    agent, ak_file = str(BIN / "osm-trust-agent"), tmp_path / "ak.json"
    identity = _identity(agent, swtpm.tcti, ak_file)
    ek = parse_ek_public(base64.b64decode(identity["ek_public"]))
    ak_name = parse_public(base64.b64decode(identity["ak_public"])).name
    assert ak_name is not None and ak_name.hex() == identity["ak_name"]

    def activate(name: bytes, secret: bytes, ak: Path = ak_file) -> subprocess.CompletedProcess[str]:
        blob, encrypted = make_credential(ek, name, secret)
        credential, encrypted_secret = base64.b64encode(blob).decode(), base64.b64encode(encrypted).decode()
        return _run(agent, "activate", "--tcti", swtpm.tcti, "--ak-file", str(ak),
                    "--credential", credential, "--secret", encrypted_secret)  # fmt: skip

    ok = activate(ak_name, b"s" * 32)
    assert ok.returncode == 0, ok.stderr
    assert base64.b64decode(json.loads(ok.stdout)["secret"]) == b"s" * 32

    other = activate(b"\x00\x0b" + bytes(32), b"t" * 32)  # a credential bound to another key's name
    assert other.returncode == 1 and "integrity check failed" in other.stderr

    missing = activate(ak_name, b"s" * 32, ak=tmp_path / "absent.json")
    assert missing.returncode == 2 and "run `osm-trust-agent identity` first" in missing.stderr
    assert not (tmp_path / "absent.json").exists()  # activation never creates an AK


def test_activate_refuses_bad_base64(tmp_path: Path) -> None:
    agent = str(BIN / "osm-trust-agent")
    r = _run(agent, "activate", "--ak-file", str(tmp_path / "ak.json"), "--credential", "%%%", "--secret", "AAAA")
    assert r.returncode == 2 and "--credential" in r.stderr and "not valid base64" in r.stderr


def test_paths_from_the_environment(swtpm, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Inside a VNF the charm cannot pass paths: OSMTRUSTAGENT_AK_FILE/UEFI_LOG/IMA_LOG set them."""
    import os

    ak_file, uefi, ima = tmp_path / "state" / "ak.json", tmp_path / "uefi.bin", tmp_path / "ima.txt"
    uefi.write_bytes(b"\x00" * 32)
    ima.write_text(
        "10 "
        + "00" * 20
        + " ima-ng sha256:"
        + "00" * 32
        + " /a\n"
        + "10 "
        + "11" * 20
        + " ima-ng sha256:"
        + "11" * 32
        + " /b\n"
    )
    env = {**os.environ, "TPM2TOOLS_TCTI": swtpm.tcti, "OSMTRUSTAGENT_AK_FILE": str(ak_file),
           "OSMTRUSTAGENT_UEFI_LOG": str(uefi), "OSMTRUSTAGENT_IMA_LOG": str(ima)}  # fmt: skip
    agent = str(BIN / "osm-trust-agent")
    ident = subprocess.run([agent, "identity"], capture_output=True, text=True, timeout=60, env=env, check=False)
    assert ident.returncode == 0, ident.stderr
    assert ak_file.exists()
    q = subprocess.run([agent, "quote", "--nonce", "ab" * 8, "--ima-offset", "1"], capture_output=True, text=True,
                       timeout=60, env=env, check=False)  # fmt: skip
    assert q.returncode == 0, q.stderr
    doc = json.loads(q.stdout)
    assert doc["ak_public"] == json.loads(ident.stdout)["ak_public"]
    assert base64.b64decode(doc["uefi_log"]) == b"\x00" * 32
    assert doc["ima_log"].endswith(" /b\n") and doc["ima_next_offset"] == 2
