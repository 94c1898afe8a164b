"""``osm-trustmgr vnf list|show|attest|reenroll|reports``: the VNFs attested through their trust-proxy charm."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from osm_trustmgr.cli.admin import CONFIG_OPTION, _found, _run, report_rows
from osm_trustmgr.cli.output import OUTPUT_OPTION, emit


@click.group("vnf")
def vnf_group() -> None:
    """VNFs: trust through the trust-proxy charm (docs/vnf.md)."""


@vnf_group.command("list")
@CONFIG_OPTION
@click.option("--ns", "nsr_id", help="only the VNFs of this NS instance")
@OUTPUT_OPTION
def vnf_list(config_path: Path | None, nsr_id: str | None, fmt: str) -> None:
    vnfs = _run(config_path, lambda s: s.vnfs.vnfs.list_vnfs(nsr_id))
    rows = [
        {"id": v.id, "nsr_id": v.nsr_id, "member": v.member_vnf_index, "state": v.state, "loa": v.loa,
         "required_loa": v.required_loa, "monitored": v.monitored, "attested_at": v.attested_at, "reason": v.reason}
        for v in vnfs
    ]  # fmt: skip
    emit(rows, fmt)


@vnf_group.command("show")
@CONFIG_OPTION
@click.argument("vnfr_id")
@OUTPUT_OPTION
def vnf_show(config_path: Path | None, vnfr_id: str, fmt: str) -> None:
    vnf = _found(_run(config_path, lambda s: s.vnfs.vnfs.get(vnfr_id)), f"VNF {vnfr_id!r} is not tracked")
    emit(vnf.model_dump(mode="json"), fmt)


@vnf_group.command("attest")
@CONFIG_OPTION
@click.argument("vnfr_id")
@OUTPUT_OPTION
def vnf_attest(config_path: Path | None, vnfr_id: str, fmt: str) -> None:
    """Attest VNFR_ID now through its charm (vca.driver); print the report. Exit 1 below its required LoA."""
    outcome = _run(config_path, lambda s: s.vnfs.attest(vnfr_id))
    emit(outcome.result.model_dump(mode="json") if outcome.result else {"state": outcome.vnf.state}, fmt)
    sys.exit(0 if outcome.result and outcome.vnf.loa >= max(outcome.vnf.required_loa, 1) else 1)


@vnf_group.command("reenroll")
@CONFIG_OPTION
@click.argument("vnfr_id")
def vnf_reenroll(config_path: Path | None, vnfr_id: str) -> None:
    """Accept a new vTPM identity for VNFR_ID; it is enrolled at its next attestation."""
    _run(config_path, lambda s: s.vnfs.reenroll(vnfr_id))


@vnf_group.command("reports")
@CONFIG_OPTION
@click.argument("vnfr_id")
@click.option("--limit", type=click.IntRange(1, 1000), default=20, show_default=True)
@OUTPUT_OPTION
def vnf_reports(config_path: Path | None, vnfr_id: str, limit: int, fmt: str) -> None:
    """Attestation history of VNFR_ID, newest first."""
    from osm_trustmgr.vnfs import vnf_entity

    emit(report_rows(_run(config_path, lambda s: s.store.reports_for(vnf_entity(vnfr_id), limit))), fmt)
