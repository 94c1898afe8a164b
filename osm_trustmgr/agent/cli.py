"""``osm-trust-agent``: the agent on NFVI hosts (and inside VNFs). ``identity`` and ``quote`` print JSON."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import click

from osm_trustmgr import __version__
from osm_trustmgr.tpm.errors import EvidenceError
from osm_trustmgr.tpm.pcr import parse_selection_spec

if TYPE_CHECKING:
    from osm_trustmgr.agent.tpm import TpmDevice

DEFAULT_AK = Path("/var/lib/osm-trust-agent/ak.json")

tcti_option = click.option("--tcti", envvar="TPM2TOOLS_TCTI", help="e.g. device:/dev/tpmrm0, swtpm:port=2321")
ak_option = click.option(
    "--ak-file", type=click.Path(path_type=Path), default=DEFAULT_AK, show_default=True, help="AK key blobs"
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
@click.option(
    "--uefi-log", type=click.Path(path_type=Path), default="/sys/kernel/security/tpm0/binary_bios_measurements"
)
@click.option(
    "--ima-log", type=click.Path(path_type=Path), default="/sys/kernel/security/ima/ascii_runtime_measurements"
)
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
