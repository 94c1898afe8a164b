"""The TPM work inside the VNF: ``osm-trust-agent`` when the VNF has it, tpm2-tools 5.x otherwise.

Both paths return the agent's documents (DESIGN.md §7, osm_trustmgr/agent/evidence.py): identity
``{ek_public, ek_certificate, ak_public, ak_name}`` and quote ``{attest, signature, pcrs, uefi_log, ima_log,
ima_offset, ima_next_offset, boot_time, nonce, ak_public}``, binary values base64, so the Trust Manager
verifies a VNF exactly like a host.

The tpm2-tools path is one POSIX sh script per action, fed to ``sh -s`` on stdin; its arguments are values
the charm validated (hex, base64, digits, PCR lists), quoted anyway. The script answers ``name=base64`` lines.
There is no resource manager in front of swtpm or /dev/tpm0, so every transient object and session a tool
leaves loaded is flushed after it, and the script's temporary directory is removed on any exit.
"""

from __future__ import annotations

import base64
import json
import re
import shlex
from typing import Any, Protocol

from params import Selection, tools_selection

AK_HANDLE = "0x81010002"  # persistent, owner hierarchy: the AK is created once and reused by every later action
EK_CERT_INDEX = "0x01c00002"  # TCG EK Credential Profile: RSA 2048 EK certificate
_MAX_ERROR = 600  # characters of a failing command's stderr kept in the action's failure message

_PRELUDE = r"""
set -u
umask 077
export TSS2_LOG="${TSS2_LOG:-all+NONE}"
AK=__AK__
work=$(mktemp -d) || { echo "cannot create a temporary directory" >&2; exit 1; }
flush() { for kind in -t -l -s; do tpm2_flushcontext $kind >/dev/null 2>&1; done; }
cleanup() { flush; cd / && rm -rf "$work"; }
trap cleanup EXIT
trap 'exit 1' HUP INT TERM
cd "$work" || exit 1
fail() { echo "$*" >&2; exit 1; }
# tpm OUTFILE CMD...: run a TPM command, or fail with its last error lines.
tpm() {
  out=$1; shift
  "$@" >"$out" 2>err.txt || fail "$1 failed: $(grep -v '^WARN' err.txt | tail -n 3)"
}
# tool: the same, then flush what it left loaded (saved contexts such as ek.ctx stay usable).
tool() { tpm "$@"; flush; }
emit() { printf '%s=' "$1"; base64 <"$2" | tr -d '\n'; echo; }
command -v tpm2_quote >/dev/null 2>&1 || fail "neither osm-trust-agent nor tpm2-tools is installed in the VNF"
ek() { tool /dev/null tpm2_createek -c ek.ctx -G rsa -u ek.pub; }
ak() {
  if tpm2_readpublic -c "$AK" -o ak.pub -n ak.name -f tss >/dev/null 2>&1; then flush; return 0; fi
  flush
  ek
  tool /dev/null tpm2_createak -C ek.ctx -c ak.ctx -G ecc -g sha256 -s ecdsa -u ak.pub -n ak.name
  tool /dev/null tpm2_evictcontrol -C o -c ak.ctx "$AK"
}
""".replace("__AK__", AK_HANDLE)

_IDENTITY = r"""
ek
ak
emit ek_public ek.pub
emit ak_public ak.pub
emit ak_name ak.name
if tpm2_nvread __EKCERT__ -o ekcert.der >/dev/null 2>&1; then emit ek_certificate ekcert.der; fi
flush
""".replace("__EKCERT__", EK_CERT_INDEX)

_ACTIVATE = r"""
tpm2_readpublic -c "$AK" >/dev/null 2>&1 || fail "the VNF's TPM has no AK at $AK: run the identity action first"
flush
ek
printf '%s' "$1" | base64 -d >cred.bin || fail "credential is not base64"
# The EK's policy (TCG template L-1) is PolicySecret(endorsement): the session must outlive these three commands,
# so nothing is flushed until the script ends.
tpm /dev/null tpm2_startauthsession --policy-session -S session.ctx
tpm /dev/null tpm2_policysecret -S session.ctx -c e
tpm /dev/null tpm2_activatecredential -c "$AK" -C ek.ctx -i cred.bin -o secret.bin -P session:session.ctx
emit secret secret.bin
"""

_QUOTE = r"""
ak
printf '%s' "$1" | base64 -d >nonce.bin || fail "nonce is not base64"
tool quote.yaml tpm2_quote -c "$AK" -l "$2" -q nonce.bin -m attest.bin -s sig.bin -o pcrs.bin -g sha256
emit attest attest.bin
emit signature sig.bin
emit quote quote.yaml
emit ak_public ak.pub
# sysfs files report size 0, so they are copied with cat before anything measures their length.
uefi=${OSMTRUSTAGENT_UEFI_LOG:-/sys/kernel/security/tpm0/binary_bios_measurements}
if [ -r "$uefi" ] && cat "$uefi" >uefi.bin; then emit uefi_log uefi.bin; fi
ima=${OSMTRUSTAGENT_IMA_LOG:-/sys/kernel/security/ima/ascii_runtime_measurements}
if [ -r "$ima" ] && cat "$ima" >ima.txt; then
  echo "ima_lines=$(awk 'END { print NR }' ima.txt)"
  tail -n "+$(($3 + 1))" ima.txt >ima_new.txt
  emit ima_log ima_new.txt
fi
echo "boot_time=$(awk '$1 == "btime" { print $2 }' /proc/stat)"
"""


class Runner(Protocol):
    def run(self, command: str, stdin: bytes | None = None) -> tuple[int, bytes, bytes]: ...


class TpmCommandError(Exception):
    """A TPM command in the VNF failed or answered something unexpected."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def parse_fields(stdout: bytes) -> dict[str, str]:
    fields = {}
    for line in stdout.decode(errors="replace").splitlines():
        name, sep, value = line.partition("=")
        if sep and re.fullmatch(r"[a-z_]+", name):
            fields[name] = value.strip()
    return fields


def parse_quote_pcrs(quote_yaml: str, selection: Selection) -> dict[str, dict[str, str]]:
    """PCR values from ``tpm2_quote`` output (``pcrs:`` / ``  sha256:`` / ``    0 : 0xAB…``).

    Parsed as text: a YAML loader would read ``0x…`` as an integer and drop leading zeros.
    """
    pcrs: dict[str, dict[str, str]] = {}
    bank = None
    in_pcrs = False
    for line in quote_yaml.splitlines():
        if line.startswith("pcrs:"):
            in_pcrs = True
        elif in_pcrs and (m := re.fullmatch(r"  (\w+):\s*", line)):
            bank = pcrs.setdefault(m[1], {})
        elif in_pcrs and bank is not None and (m := re.fullmatch(r"    (\d+)\s*:\s*0x([0-9a-fA-F]+)\s*", line)):
            bank[str(int(m[1]))] = m[2].lower()
        elif not line.startswith(" "):
            in_pcrs = False
    wanted = {b: {str(i) for i in indexes} for b, indexes in selection.items()}
    if {b: set(v) for b, v in pcrs.items()} != wanted:
        raise TpmCommandError(f"tpm2_quote returned PCRs {sorted(pcrs)} not matching the selection {wanted}")
    return {b: dict(sorted(v.items(), key=lambda kv: int(kv[0]))) for b, v in pcrs.items()}


class VnfTpm:
    """The VNF's TPM, reached through ``runner`` (an SSH connection)."""

    def __init__(self, runner: Runner) -> None:
        self._runner = runner
        self._agent: bool | None = None

    @property
    def has_agent(self) -> bool:
        if self._agent is None:
            rc, _, _ = self._runner.run("command -v osm-trust-agent >/dev/null 2>&1")
            self._agent = rc == 0
        return self._agent

    def identity(self) -> dict[str, Any]:
        if self.has_agent:
            return self._agent_json("identity")
        f = self._script(_IDENTITY)
        return {
            "ek_public": self._field(f, "ek_public"),
            "ek_certificate": _b64(_trim_der(base64.b64decode(f["ek_certificate"]))) if "ek_certificate" in f else None,
            "ak_public": self._field(f, "ak_public"),
            "ak_name": base64.b64decode(self._field(f, "ak_name")).hex(),
        }

    def activate(self, credential: bytes, secret: bytes) -> bytes:
        if self.has_agent:
            doc = self._agent_json("activate", "--credential", _b64(credential), "--secret", _b64(secret))
        else:
            # tpm2_activatecredential -i takes tpm2_makecredential's file: magic, version 1, then both TPM2Bs.
            blob = bytes.fromhex("badcc0de00000001") + credential + secret
            doc = self._script(_ACTIVATE, _b64(blob))
        return base64.b64decode(self._field(doc, "secret"))

    def quote(self, nonce: bytes, selection: Selection, ima_offset: int) -> dict[str, Any]:
        pcrs = tools_selection(selection)
        if self.has_agent:
            return self._agent_json("quote", "--nonce", nonce.hex(), "--pcrs", pcrs, "--ima-offset", str(ima_offset))
        f = self._script(_QUOTE, _b64(nonce), pcrs, str(ima_offset))
        quote_text = base64.b64decode(self._field(f, "quote")).decode(errors="replace")
        has_ima = "ima_lines" in f
        boot_time = f.get("boot_time", "")
        return {
            "attest": self._field(f, "attest"),
            "signature": self._field(f, "signature"),
            "pcrs": parse_quote_pcrs(quote_text, selection),
            "uefi_log": f.get("uefi_log"),
            # Undecodable bytes of file names survive as surrogate escapes, as in the agent (see _read_ima).
            "ima_log": base64.b64decode(f["ima_log"]).decode("utf-8", "surrogateescape") if has_ima else None,
            "ima_offset": ima_offset,
            "ima_next_offset": int(f["ima_lines"]) if has_ima else ima_offset,
            "boot_time": int(boot_time) if boot_time.isdigit() else None,
            "nonce": nonce.hex(),
            "ak_public": self._field(f, "ak_public"),
        }

    def _agent_json(self, *args: str) -> dict[str, Any]:
        command = shlex.join(["osm-trust-agent", *args])
        rc, out, err = self._runner.run(command)
        if rc != 0:
            raise TpmCommandError(f"osm-trust-agent {args[0]} failed ({rc}): {_tail(err)}")
        try:
            doc = json.loads(out)
        except ValueError:
            raise TpmCommandError(f"osm-trust-agent {args[0]} printed no JSON: {_tail(out)}") from None
        if not isinstance(doc, dict):
            raise TpmCommandError(f"osm-trust-agent {args[0]} printed {type(doc).__name__}, not an object")
        return doc

    def _script(self, body: str, *args: str) -> dict[str, str]:
        rc, out, err = self._runner.run(shlex.join(["sh", "-s", "--", *args]), (_PRELUDE + body).encode())
        if rc != 0:
            raise TpmCommandError(f"TPM command in the VNF failed ({rc}): {_tail(err)}")
        return parse_fields(out)

    @staticmethod
    def _field(fields: dict[str, Any], name: str) -> str:
        value = fields.get(name)
        if not isinstance(value, str) or not value:
            raise TpmCommandError(f"the VNF's TPM answer has no {name}")
        return value


def _tail(data: bytes) -> str:
    text = data.decode(errors="replace").strip()
    return (text[-_MAX_ERROR:] if len(text) > _MAX_ERROR else text) or "(no output)"


def _trim_der(data: bytes) -> bytes:
    """Cut the NV padding some TPMs leave after a DER certificate (as the agent does)."""
    if len(data) < 4 or data[0] != 0x30 or data[1] & 0x80 == 0:
        return data
    header = 2 + (data[1] & 0x7F)
    return data[: header + int.from_bytes(data[2:header], "big")]
