"""``osm-trustmgr evidence …``: parse and judge evidence files offline."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import NoReturn

import click

from osm_trustmgr.cli.output import OUTPUT_OPTION, emit
from osm_trustmgr.cli.verify import EXIT_UNUSABLE, Unusable, read_policy, verify_cmd
from osm_trustmgr.tpm.errors import EvidenceError
from osm_trustmgr.tpm.eventlog import parse_eventlog, replay, to_dict


@click.group()
def evidence() -> None:
    """Inspect and verify TPM evidence files."""


evidence.add_command(verify_cmd)


def _fail(message: str) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(EXIT_UNUSABLE)


@evidence.command("eventlog")
@click.argument("path", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@OUTPUT_OPTION
def eventlog_cmd(path: Path, fmt: str) -> None:
    """Events of a UEFI event log and the PCR values it replays to."""
    try:
        log = parse_eventlog(path.read_bytes())
    except EvidenceError as e:
        _fail(f"{path}: {e}")
    emit(to_dict(log, replay(log)), fmt)


@evidence.command("ima")
@click.argument("path", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.option("--policy", type=click.Path(path_type=Path, dir_okay=False), help="trust policy with runtime.ima")
@OUTPUT_OPTION
def ima_cmd(path: Path, policy: Path | None, fmt: str) -> None:
    """Entries of an IMA log (ascii or binary), policy violations, and the replayed PCR 10."""
    from osm_trustmgr.cli.ima_report import ima_report

    rules = None
    if policy is not None:
        try:
            trust = read_policy(policy, (), require_signature=False)  # an inspection tool: unsigned is fine
        except Unusable as e:
            _fail(str(e))
        rules = trust.runtime.ima.compiled() if trust.runtime else None
    try:
        report = ima_report(path.read_bytes(), rules)
    except EvidenceError as e:
        _fail(f"{path}: {e}")
    emit(report, fmt)
