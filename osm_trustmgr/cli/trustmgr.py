"""``osm-trustmgr``: the Trust Manager's own program (sandbox, offline evidence tools; later ``serve``)."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from osm_trustmgr import __version__
from osm_trustmgr.cli.admin import host_group, nsd_policy_group, policy_group, serve_cmd
from osm_trustmgr.cli.evidence import evidence
from osm_trustmgr.cli.output import OUTPUT_OPTION, emit
from osm_trustmgr.cli.vnf_admin import vnf_group


@click.group()
@click.version_option(__version__, prog_name="osm-trustmgr")
@click.option("--log-level", default="WARNING", show_default=True, help="DEBUG, INFO, WARNING, ERROR")
def main(log_level: str) -> None:
    """OSM Trust Manager: TPM 2.0 attestation of NFVI hosts and VNFs."""
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")


main.add_command(evidence)
main.add_command(serve_cmd)
main.add_command(host_group)
main.add_command(policy_group)
main.add_command(nsd_policy_group)
main.add_command(vnf_group)


@main.group("config")
def config_group() -> None:
    """Inspect the service configuration (YAML file + OSMTRUSTMGR_<SECTION>_<KEY> overrides)."""


@config_group.command("show")
@click.option("--config", "path", type=click.Path(path_type=Path, dir_okay=False), envvar="OSMTRUSTMGR_CONFIG")
@OUTPUT_OPTION
def config_show(path: Path | None, fmt: str) -> None:
    """Print the effective configuration with secrets masked; exit 2 naming every invalid key."""
    from osm_trustmgr.config import ConfigError, load_config

    try:
        config = load_config(path)
    except ConfigError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(2)
    emit(config.redacted(), fmt)


@main.command("sandbox")
@click.option("--tamper", is_flag=True, help="also run an unlisted binary and attest again")
@click.option("--no-secure-boot", is_flag=True, help="boot the simulated host with Secure Boot off")
@click.option("--vnf", is_flag=True, help="then attest a simulated VNF (sshd + swtpm) through the trust-proxy charm")
@click.option("--charm-dir", type=click.Path(path_type=Path, file_okay=False), help="the trust-proxy charm (--vnf)")
def sandbox_cmd(tamper: bool, no_secure_boot: bool, vnf: bool, charm_dir: Path | None) -> None:
    """Enroll and attest one swtpm-backed simulated host end to end (and with --vnf one VNF through its charm);
    print each AttestationResult."""
    from osm_trustmgr.sandbox.demo import sandbox

    with sandbox(secure_boot=not no_secure_boot) as box:
        click.echo(f"# enrolled host: AK {box.enrollment.identity.ak_name.hex()} ({box.enrollment.method})", err=True)
        _sandbox_rounds("host", box.attest, box.host.execute if tamper else None)
    if vnf:
        from osm_trustmgr.evidence.errors import SourceError, SourceUnreachable
        from osm_trustmgr.sandbox.vnf_demo import vnf_sandbox
        from osm_trustmgr.tpm.errors import EvidenceError

        try:
            with vnf_sandbox(charm_dir) as vbox:
                click.echo(f"# enrolled VNF through the charm: AK {vbox.enrollment.identity.ak_name.hex()}", err=True)
                _sandbox_rounds("VNF", vbox.attest, vbox.vnf.host.execute if tamper else None)
        except (FileNotFoundError, ImportError, SourceError, SourceUnreachable, EvidenceError) as e:
            click.echo(f"error: VNF sandbox: {e}", err=True)
            sys.exit(2)
    sys.exit(0)


def _sandbox_rounds(what: str, attest: Callable[[], Any], execute: Callable[[str, bytes], Any] | None) -> None:
    """One round (and, with ``execute``, an unlisted binary run and a second round), printed."""
    result = attest()
    emit(result.model_dump(mode="json"))
    click.echo(f"# {what}: LoA {result.loa} ({result.loa_name}); failures: {result.codes() or 'none'}", err=True)
    if execute is not None:
        execute("/usr/local/bin/cryptominer", b"not in the golden image")
        result = attest()
        emit(result.model_dump(mode="json"))
        click.echo(f"# {what} after tampering: LoA {result.loa}; failures: {result.codes()}", err=True)
