"""``osm-trust-agent``: the agent on NFVI hosts (and inside VNFs). ``identity``, ``activate`` and ``quote`` print
JSON (the trust-proxy charm runs them over SSH); ``serve`` answers the same over HTTPS (DESIGN.md §7).

Inside a VNF the charm cannot pass paths, so the log and AK-file options also read OSMTRUSTAGENT_UEFI_LOG,
OSMTRUSTAGENT_IMA_LOG and OSMTRUSTAGENT_AK_FILE (the names ``serve`` already takes through its prefix)."""

from __future__ import annotations

import base64
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from osm_trustmgr import __version__
from osm_trustmgr.tpm.errors import EvidenceError
from osm_trustmgr.tpm.pcr import parse_selection_spec

if TYPE_CHECKING:
    from osm_trustmgr.agent.tpm import TpmDevice

DEFAULT_AK = Path("/var/lib/osm-trust-agent/ak.json")
UEFI_LOG_PATH = "/sys/kernel/security/tpm0/binary_bios_measurements"
IMA_LOG_PATH = "/sys/kernel/security/ima/ascii_runtime_measurements"

tcti_option = click.option("--tcti", envvar="TPM2TOOLS_TCTI", help="e.g. device:/dev/tpmrm0, swtpm:port=2321")
ak_option = click.option(
    "--ak-file",
    type=click.Path(path_type=Path),
    default=DEFAULT_AK,
    envvar="OSMTRUSTAGENT_AK_FILE",
    show_default=True,
    help="AK key blobs",
)


@contextmanager
def _device(tcti: str | None) -> Iterator[TpmDevice]:
    try:
        from osm_trustmgr.agent.tpm import TpmDevice

        with TpmDevice(tcti) as tpm:
            yield tpm
    except Exception as e:  # tpm2-tss raises many types; the operator needs the message, not a traceback
        click.echo(f"error: TPM ({tcti or 'default TCTI'}): {e}", err=True)
        sys.exit(1)


@click.group()
@click.version_option(__version__, prog_name="osm-trust-agent")
def main() -> None:
    """OSM Trust Manager agent: TPM 2.0 evidence of this host."""


@main.command()
@tcti_option
@ak_option
def identity(tcti: str | None, ak_file: Path) -> None:
    """EK public and certificate, AK public and name (the AK is created on first use)."""
    from osm_trustmgr.agent.evidence import identity_document, load_or_create_ak

    with _device(tcti) as tpm:
        click.echo(json.dumps(identity_document(tpm, load_or_create_ak(tpm, ak_file)), indent=2))


@main.command()
@tcti_option
@ak_option
@click.option("--nonce", required=True, help="hex, at most 64 bytes")
@click.option("--pcrs", default="sha256:0-10", show_default=True, help="selection, tpm2-tools syntax")
@click.option("--uefi-log", type=click.Path(path_type=Path), default=UEFI_LOG_PATH, envvar="OSMTRUSTAGENT_UEFI_LOG")
@click.option("--ima-log", type=click.Path(path_type=Path), default=IMA_LOG_PATH, envvar="OSMTRUSTAGENT_IMA_LOG")
@click.option("--ima-offset", type=click.IntRange(min=0), default=0)
def quote(
    tcti: str | None, ak_file: Path, nonce: str, pcrs: str, uefi_log: Path, ima_log: Path, ima_offset: int
) -> None:
    """A quote over PCRS with NONCE, plus the UEFI and IMA logs, as the agent's JSON evidence."""
    from osm_trustmgr.agent.evidence import load_or_create_ak, quote_document

    try:
        raw_nonce = bytes.fromhex(nonce)
        if not 0 < len(raw_nonce) <= 64:
            raise ValueError("nonce must be 1 to 64 bytes")
        selection = {s.bank.name: list(s.pcrs) for s in parse_selection_spec(pcrs)}
    except (ValueError, EvidenceError) as e:
        raise click.BadParameter(str(e)) from None
    os.environ.setdefault("TSS2_LOG", "all+NONE")
    with _device(tcti) as tpm:
        ak = load_or_create_ak(tpm, ak_file)
        doc = quote_document(tpm, ak, raw_nonce, selection, uefi_log=uefi_log, ima_log=ima_log, ima_offset=ima_offset)
        click.echo(json.dumps(doc, indent=2))


def _b64_option(name: str, value: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except ValueError:  # binascii.Error, or non-ASCII text
        raise click.BadParameter("not valid base64", param_hint=name) from None


@main.command()
@tcti_option
@ak_option
@click.option("--credential", required=True, help="TPM2B_ID_OBJECT from MakeCredential, base64")
@click.option("--secret", required=True, help="TPM2B_ENCRYPTED_SECRET from MakeCredential, base64")
def activate(tcti: str | None, ak_file: Path, credential: str, secret: str) -> None:
    """TPM2_ActivateCredential with the EK and the AK: prints the recovered secret (base64) for enrollment."""
    from osm_trustmgr.agent.evidence import load_or_create_ak

    blob, encrypted = _b64_option("--credential", credential), _b64_option("--secret", secret)
    # A credential is bound to the name of the AK the verifier saw in ``identity``: a fresh AK could never
    # activate it, so a missing AK file is an error here rather than a reason to create one.
    if not ak_file.exists():
        raise click.UsageError(f"no AK at {ak_file}: run `osm-trust-agent identity` first")
    os.environ.setdefault("TSS2_LOG", "all+NONE")
    with _device(tcti) as tpm:
        recovered = tpm.activate_credential(load_or_create_ak(tpm, ak_file), blob, encrypted)
        click.echo(json.dumps({"secret": base64.b64encode(recovered).decode()}))


_INSECURE_WARNING = (
    "INSECURE: --insecure-http serves TPM evidence and credential activation over plain HTTP, unauthenticated "
    "and unencrypted. Use --cert/--key (and --client-ca) anywhere but a test bench."
)


def _tls_options(cert: Path | None, key: Path | None, client_ca: Path | None, insecure_http: bool) -> dict[str, Any]:
    """uvicorn's TLS arguments; plain HTTP only when asked for explicitly, never by a forgotten option."""
    import ssl

    if insecure_http:
        if cert or key or client_ca:
            raise click.UsageError("--insecure-http cannot be combined with --cert, --key or --client-ca")
        return {}
    if not (cert and key):
        raise click.UsageError("--cert and --key are required (or --insecure-http for plain HTTP, never in production)")
    options: dict[str, Any] = {"ssl_certfile": str(cert), "ssl_keyfile": str(key)}
    if client_ca:
        # Mutual TLS: the handshake fails for a client without a certificate chaining to this CA.
        options.update(ssl_ca_certs=str(client_ca), ssl_cert_reqs=ssl.CERT_REQUIRED)
    return options


_file = click.Path(exists=True, dir_okay=False, path_type=Path)


@main.command(context_settings={"auto_envvar_prefix": "OSMTRUSTAGENT", "show_default": True})
@click.option("--tcti", envvar=["OSMTRUSTAGENT_TCTI", "TPM2TOOLS_TCTI"], help="e.g. device:/dev/tpmrm0")
@click.option("--ak-file", type=click.Path(dir_okay=False, path_type=Path), default=DEFAULT_AK, help="AK key blobs")
@click.option("--ak-alg", type=click.Choice(["ecc", "rsa"]), default="ecc", help="type of a newly created AK")
@click.option("--ek-alg", type=click.Choice(["rsa", "ecc", "ecc384"]), default="rsa", help="the AK's parent EK")
@click.option("--uefi-log", type=click.Path(path_type=Path), default=UEFI_LOG_PATH)
@click.option("--ima-log", type=click.Path(path_type=Path), default=IMA_LOG_PATH)
@click.option("--banks", default="sha1,sha256", help="PCR banks verifiers may ask for, comma-separated")
@click.option("--host", default="0.0.0.0", help="address to listen on")
@click.option("--port", type=click.IntRange(1, 65535), default=9443)
@click.option("--cert", type=_file, help="TLS server certificate (PEM, chain allowed)")
@click.option("--key", type=_file, help="TLS server private key (PEM)")
@click.option("--client-ca", type=_file, help="require client certificates issued by this CA (PEM)")
@click.option("--insecure-http", is_flag=True, help="serve plain HTTP without --cert/--key (tests only)")
@click.option(
    "--log-level", type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False), default="info"
)
def serve(
    tcti: str | None, ak_file: Path, ak_alg: str, ek_alg: str, uefi_log: Path, ima_log: Path, banks: str,
    host: str, port: int, cert: Path | None, key: Path | None, client_ca: Path | None, insecure_http: bool,
    log_level: str,
) -> None:  # fmt: skip
    """Serve identity, credential activation and quotes over HTTPS (every option also as OSMTRUSTAGENT_<OPTION>)."""
    import logging

    import uvicorn
    from pydantic import ValidationError

    from osm_trustmgr.agent.server import AgentSettings, create_app

    tls = _tls_options(cert, key, client_ca, insecure_http)
    try:
        settings = AgentSettings.model_validate(
            {"tcti": tcti, "ak_file": ak_file, "ak_alg": ak_alg, "ek_alg": ek_alg, "uefi_log": uefi_log,
             "ima_log": ima_log, "banks": [b.strip() for b in banks.split(",") if b.strip()]}
        )  # fmt: skip
    except ValidationError as e:
        raise click.BadParameter("; ".join(err["msg"] for err in e.errors()), param_hint="--banks") from None
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if insecure_http:
        logging.getLogger("osm_trustmgr.agent").warning(_INSECURE_WARNING)
    # log_config=None: uvicorn's loggers propagate to ours; the app logs one line per request itself.
    # Verifiers keep connections alive between rounds; on shutdown they get 2 s, not an indefinite wait.
    uvicorn.run(
        create_app(settings), host=host, port=port, log_config=None, log_level=log_level.lower(),
        access_log=False, server_header=False, timeout_graceful_shutdown=2, **tls,
    )  # fmt: skip
