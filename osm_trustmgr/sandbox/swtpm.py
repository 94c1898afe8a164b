"""swtpm processes: the TPM 2.0 of a simulated machine, for the sandbox fleet and the tests.

A :class:`Swtpm` runs one ``swtpm socket`` on loopback (a TCP port pair or a unix socket) with an absolute
state directory. Provisioning (``swtpm_setup``) gives it what a manufacturer gives a real TPM: an RSA 2048 EK
certificate (NV 0x01C00002), an ECC P-384 one (0x01C00016, swtpm_setup 0.7's choice) and, added here because
real TPMs ship it and swtpm_setup cannot, an ECC P-256 one (0x01C0000A). Certificates come from a
:class:`LocalCa`, a private swtpm-localca directory, so nothing touches /var/lib/swtpm-localca and every fleet
(or test) can have a CA of its own, trusted or not.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from osm_trustmgr.sandbox.servers import ManagedProcess

HOST = "127.0.0.1"
TPM2_STARTUP_CLEAR = bytes.fromhex("80010000000c000001440000")  # TPM_ST_NO_SESSIONS, TPM_CC_Startup, SU_CLEAR
_TPM_RC_INITIALIZE = 0x100  # Startup sent to a TPM that already ran it
# What swtpm_setup tells swtpm_localca about the TPM, so our extra certificate matches the others.
_TPM_DESCRIPTION = [
    "--tpm-spec-family", "2.0", "--tpm-spec-level", "0", "--tpm-spec-revision", "164",
    "--tpm-manufacturer", "id:00001014", "--tpm-model", "swtpm", "--tpm-version", "id:20191023",
]  # fmt: skip
# NV attributes swtpm_setup gives EK certificate indices: ppwrite|writedefine|ppread|ownerread|authread|
# no_da|platformcreate (TCG EK Credential Profile, "EK Certificate NV Index attributes").
_EK_CERT_NV_ATTRIBUTES = 0x42072001
_ECC_P256_EK_CERT_INDEX = 0x01C0000A
_NV_CHUNK = 512  # TPM2_NV_Write size every TPM accepts (TPM_PT_NV_BUFFER_MAX >= 512)


class SwtpmError(RuntimeError):
    """swtpm or one of its tools failed; the message carries their output."""


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise SwtpmError(f"{name} not found: install swtpm and swtpm-tools")
    return path


def _run(args: list[str], timeout: float = 60) -> str:
    result = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)
    if result.returncode != 0:
        raise SwtpmError(f"{Path(args[0]).name} failed ({result.returncode}): {result.stdout}{result.stderr}")
    return result.stdout


class LocalCa:
    """A private swtpm-localca: a root CA and an intermediate ("swtpm-localca") that signs EK certificates.

    The chain is ``root_cert`` → ``issuer_cert`` → EK certificate. ``setup_config`` is the swtpm_setup.conf
    that makes swtpm_setup certify through this directory. :meth:`ensure` writes the configuration and
    creates the keys; several swtpm_setup runs may share one CA (swtpm_localca locks its directory).
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory).resolve()
        self.root_cert = self.directory / "swtpm-localca-rootca-cert.pem"
        self.issuer_cert = self.directory / "issuercert.pem"
        self.setup_config = self.directory / "swtpm_setup.conf"
        self._localca_config = self.directory / "swtpm-localca.conf"
        self._localca_options = self.directory / "swtpm-localca.options"

    @property
    def certificates(self) -> list[x509.Certificate]:
        """Root and intermediate certificates, the trust anchors a verifier needs for this CA's EKs."""
        return [x509.load_pem_x509_certificate(p.read_bytes()) for p in (self.root_cert, self.issuer_cert)]

    def ensure(self) -> LocalCa:
        """Write the configuration and create the CA keys if this directory has none yet."""
        self.directory.mkdir(parents=True, exist_ok=True)
        d = self.directory
        self._write(
            self._localca_config,
            f"statedir = {d}\nsigningkey = {d}/signkey.pem\n"
            f"issuercert = {self.issuer_cert}\ncertserial = {d}/certserial\n",
        )
        self._write(
            self._localca_options,
            "--platform-manufacturer osm-trustmgr\n--platform-version 2.1\n--platform-model swtpm\n",
        )
        self._write(
            self.setup_config,
            f"create_certs_tool = {_tool('swtpm_localca')}\n"
            f"create_certs_tool_config = {self._localca_config}\n"
            f"create_certs_tool_options = {self._localca_options}\n",
        )
        if not self.issuer_cert.exists():
            # swtpm_localca creates its CA on the first certificate it signs: sign a throwaway key.
            self.certify_ek(ec.generate_private_key(ec.SECP256R1()).public_key())
        return self

    def certify_ek(self, public_key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey) -> bytes:
        """An EK certificate (DER) for ``public_key``, issued by this CA through swtpm_localca."""
        with tempfile.TemporaryDirectory(prefix="swtpm-localca-") as out:
            _run([
                _tool("swtpm_localca"), "--type", "ek", "--ek", _ek_argument(public_key), "--dir", out,
                "--tpm2", *_TPM_DESCRIPTION,
                "--configfile", str(self._localca_config), "--optsfile", str(self._localca_options),
            ])  # fmt: skip
            return (Path(out) / "ek.cert").read_bytes()

    @staticmethod
    def _write(path: Path, text: str) -> None:
        if not path.exists():
            path.write_text(text)


def _ek_argument(key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey) -> str:
    """The ``--ek`` value swtpm_localca takes: the RSA modulus in hex, or ``x=…,y=…,id=curve`` for ECC."""
    if isinstance(key, rsa.RSAPublicKey):
        return f"{key.public_numbers().n:x}"
    numbers, size = key.public_numbers(), (key.curve.key_size + 7) // 8
    return f"x={numbers.x:0{2 * size}x},y={numbers.y:0{2 * size}x},id={key.curve.name}"


def _add_ecc_p256_ek_certificate(tcti: str, ca: LocalCa) -> None:
    """Certify the TCG L-2 (NIST P-256) EK of a fresh TPM and store the certificate at its NV index.

    Done with platform authorization, which is empty on swtpm because no firmware has set it.
    """
    from tpm2_pytss import ESAPI
    from tpm2_pytss.constants import ESYS_TR, TPM2_ALG, TPMA_NV
    from tpm2_pytss.types import TPM2B_NV_PUBLIC, TPMS_NV_PUBLIC
    from tpm2_pytss.utils import NoSuchIndex, create_ek_template

    def no_nv_index(index: int) -> bytes:  # a fresh TPM has no L-2 template or nonce to honour
        raise NoSuchIndex(index)

    os.environ.setdefault("TSS2_LOG", "all+NONE")
    with ESAPI(tcti) as esapi:
        _, template = create_ek_template("EK-ECC256", no_nv_index)
        handle, public, *_ = esapi.create_primary(None, template, ESYS_TR.ENDORSEMENT)
        esapi.flush_context(handle)
        key = serialization.load_der_public_key(public.publicArea.to_der())
        assert isinstance(key, ec.EllipticCurvePublicKey)
        certificate = ca.certify_ek(key)
        nv_public = TPMS_NV_PUBLIC(
            nvIndex=_ECC_P256_EK_CERT_INDEX,
            nameAlg=TPM2_ALG.SHA256,
            attributes=TPMA_NV(_EK_CERT_NV_ATTRIBUTES),
            dataSize=len(certificate),
        )
        index = esapi.nv_define_space(None, TPM2B_NV_PUBLIC(nvPublic=nv_public), ESYS_TR.PLATFORM)
        try:
            for offset in range(0, len(certificate), _NV_CHUNK):
                chunk = certificate[offset : offset + _NV_CHUNK]
                esapi.nv_write(index, chunk, offset, auth_handle=ESYS_TR.PLATFORM)
        finally:
            esapi.tr_close(index)


def _free_port_pair() -> int:
    """A loopback port P with P+1 also free right now (swtpm's data and control ports)."""
    for _ in range(100):
        with socket.socket() as first, socket.socket() as second:
            first.bind((HOST, 0))
            port = int(first.getsockname()[1])
            if port >= 65535:
                continue
            try:
                second.bind((HOST, port + 1))
            except OSError:
                continue
            return port
    raise SwtpmError("no free loopback port pair")


def _receive(channel: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = channel.recv(size - len(data))
        if not chunk:
            raise SwtpmError(f"swtpm closed the connection after {len(data)} of {size} bytes")
        data += chunk
    return data


class Swtpm(ManagedProcess):
    """One swtpm process. ``with Swtpm() as tpm: TpmDevice(tpm.tcti)`` gives a fresh, provisioned TPM.

    ``state_dir`` defaults to a temporary directory removed with this object. When ``provision`` is true
    and the state directory holds no TPM yet, :meth:`start` runs swtpm_setup first with certificates from
    ``ca`` (a private CA in a temporary directory if none is given). ``pcr_banks`` are the active banks.
    """

    def __init__(
        self,
        state_dir: str | os.PathLike[str] | None = None,
        *,
        ca: LocalCa | None = None,
        provision: bool = True,
        transport: Literal["tcp", "unix"] = "tcp",
        pcr_banks: tuple[str, ...] = ("sha1", "sha256"),
        stop_timeout: float = 5.0,
    ) -> None:
        if transport not in ("tcp", "unix"):
            raise ValueError(f"transport must be 'tcp' or 'unix', not {transport!r}")
        self._scratch = tempfile.TemporaryDirectory(prefix="swtpm-")  # sockets, logs; short for AF_UNIX
        scratch = Path(self._scratch.name)
        self.state_dir = Path(state_dir).resolve() if state_dir else scratch / "state"
        if ca is None and provision:
            ca = LocalCa(scratch / "ca")
        self.ca = ca
        self.provision = provision
        self.transport = transport
        self.pcr_banks = pcr_banks
        super().__init__(stop_timeout)
        self.port: int | None = None  # data port; the control port is port + 1
        self.socket_path = scratch / "swtpm.sock"  # unix transport; control socket is <path>.ctrl
        self._log_path = scratch / "swtpm.log"

    # -- life cycle -----------------------------------------------------------------------------

    @property
    def tcti(self) -> str:
        """The TCTI configuration string for tpm2-tss (``TpmDevice(tcti)``, ``TPM2TOOLS_TCTI``)."""
        if self.transport == "unix":
            return f"swtpm:path={self.socket_path}"
        if self.port is None:
            raise SwtpmError("swtpm is not started")
        return f"swtpm:host={HOST},port={self.port}"

    def start(self, attempts: int = 5) -> Swtpm:
        if self.running:
            return self
        self.stop()  # reap a process that died on its own
        fresh = self.provision and not (self.state_dir / "tpm2-00.permall").exists()
        if fresh:
            self._setup()
        self.state_dir.mkdir(parents=True, exist_ok=True)  # without provisioning: a blank TPM
        for attempt in range(attempts):
            if self._launch():
                break
            if self.transport == "unix" or attempt == attempts - 1:  # unix sockets never collide
                raise SwtpmError(f"swtpm did not start: {self._log_tail()}")
        if fresh:
            assert self.ca is not None
            _add_ecc_p256_ek_certificate(self.tcti, self.ca)
        return self

    def close(self) -> None:
        """Stop and remove the temporary directories this object created."""
        self.stop()
        self._scratch.cleanup()

    def __enter__(self) -> Swtpm:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def reboot(self) -> None:
        """Reset the TPM as a machine reboot does: PCRs back to zero, ``resetCount`` + 1.

        CMD_INIT on the control channel resets the TPM; the firmware's TPM2_Startup(CLEAR) is sent next.
        """
        if not self.running:
            raise SwtpmError("swtpm is not running")
        if self.transport == "unix":
            control = ["--unix", f"{self.socket_path}.ctrl"]
        else:
            control = ["--tcp", f"{HOST}:{self._require_port() + 1}"]
        _run([_tool("swtpm_ioctl"), *control, "-i"], timeout=10)
        response = self._send(TPM2_STARTUP_CLEAR)
        rc = int.from_bytes(response[6:10], "big")
        if rc not in (0, _TPM_RC_INITIALIZE):
            raise SwtpmError(f"TPM2_Startup(CLEAR) after reset failed: 0x{rc:x}")

    # -- internals ------------------------------------------------------------------------------

    def _setup(self) -> None:
        assert self.ca is not None  # provision implies a CA
        self.ca.ensure()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        _run([
            _tool("swtpm_setup"), "--tpm2", "--tpmstate", str(self.state_dir),
            "--create-ek-cert", "--create-platform-cert", "--config", str(self.ca.setup_config),
            "--pcr-banks", ",".join(self.pcr_banks),
        ])  # fmt: skip

    def _launch(self) -> bool:
        """Start swtpm once; False when it exited during start-up (a port was taken meanwhile)."""
        if self.transport == "unix":
            server = f"type=unixio,path={self.socket_path}"
            ctrl = f"type=unixio,path={self.socket_path}.ctrl"
        else:
            self.port = _free_port_pair()
            server = f"type=tcp,port={self.port},bindaddr={HOST}"
            ctrl = f"type=tcp,port={self.port + 1},bindaddr={HOST}"
        args = [
            _tool("swtpm"), "socket", "--tpm2", "--server", server, "--ctrl", ctrl,
            "--tpmstate", f"dir={self.state_dir}", "--flags", "not-need-init,startup-clear",
        ]  # fmt: skip
        with self._log_path.open("ab") as log:
            process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        self._adopt(process)
        deadline = time.monotonic() + 10
        while process.poll() is None and time.monotonic() < deadline:
            if self._listening():
                return True
            time.sleep(0.002)
        self.stop()
        return False

    def _listening(self) -> bool:
        if self.transport == "unix":
            endpoints: list[tuple[socket.AddressFamily, str | tuple[str, int]]] = [
                (socket.AF_UNIX, str(self.socket_path)),
                (socket.AF_UNIX, f"{self.socket_path}.ctrl"),
            ]
        else:
            port = self._require_port()
            endpoints = [(socket.AF_INET, (HOST, port)), (socket.AF_INET, (HOST, port + 1))]
        for family, address in endpoints:
            with socket.socket(family, socket.SOCK_STREAM) as probe:
                try:
                    probe.connect(address)
                except OSError:
                    return False
        # Another process could own a port we probed: only our live swtpm counts as started.
        return self.running

    def _send(self, command: bytes) -> bytes:
        """One raw TPM command over the data channel (swtpm's socket speaks the bare TPM protocol)."""
        if self.transport == "unix":
            channel = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            channel.connect(str(self.socket_path))
        else:
            channel = socket.create_connection((HOST, self._require_port()))
        with channel:
            channel.settimeout(10)
            channel.sendall(command)
            header = _receive(channel, 10)  # tag, responseSize, responseCode
            return header + _receive(channel, int.from_bytes(header[2:6], "big") - len(header))

    def _require_port(self) -> int:
        if self.port is None:
            raise SwtpmError("swtpm is not started")
        return self.port

    def _log_tail(self) -> str:
        try:
            return self._log_path.read_text(errors="replace")[-2000:] or "(no output)"
        except OSError:
            return "(no log)"
