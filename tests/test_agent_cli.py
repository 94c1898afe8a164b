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
