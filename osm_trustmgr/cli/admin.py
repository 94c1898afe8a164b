"""Administration commands of ``osm-trustmgr`` (service configuration from --config / env, like ``serve``).

``host add|list|show|delete|attest|reenroll|reports``, ``policy put|show`` (and ``vnf ...``, vnf_admin.py) work on
the Trust Manager's database directly; they are what an operator runs inside the Trust Manager's pod.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import click
import yaml
from pydantic import ValidationError

from osm_trustmgr.cli.output import OUTPUT_OPTION, emit
from osm_trustmgr.config import Config, ConfigError, load_config
from osm_trustmgr.tpm.errors import EvidenceError

T = TypeVar("T")
CONFIG_OPTION = click.option(
    "--config", "config_path", type=click.Path(path_type=Path, dir_okay=False), envvar="OSMTRUSTMGR_CONFIG"
)


def _config(path: Path | None) -> Config:
    try:
        return load_config(path)
    except ConfigError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(2)


def _run(config_path: Path | None, action: Callable[[Any], Awaitable[T]]) -> T:
    """Run ``action(service)`` with the service's store connected; clear errors, exit 1, no tracebacks."""
    from osm_trustmgr.service import StartupError, TrustService

    async def main() -> T:
        service = TrustService.from_config(_config(config_path))
        await service.store.create_indexes()
        await service.bus.start()
        try:
            return await action(service)
        finally:
            await service.bus.stop()
            await service.vca.close()
            await service.hosts.close()
            await service.nbi.aclose()
            await service.store.close()

    try:
        return asyncio.run(main())
    except (StartupError, EvidenceError, ValidationError, ValueError, KeyError) as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(1)


def _found(value: T | None, message: str) -> T:
    if value is None:
        click.echo(f"error: {message}", err=True)
        sys.exit(1)
    return value


@click.command("serve")
@CONFIG_OPTION
def serve_cmd(config_path: Path | None) -> None:
    """Run the Trust Manager: host monitor, trust events on Kafka (more services join in later releases)."""
    from osm_trustmgr.service import StartupError, serve

    try:
        serve(_config(config_path))
    except StartupError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(2)


@click.group("host")
def host_group() -> None:
    """NFVI hosts: inventory, enrollment and attestation."""


@host_group.command("add")
@CONFIG_OPTION
@click.argument("host_id")
@click.option("--vim-account", required=True, help="OSM VIM account id the host belongs to")
@click.option("--agent-url", required=True, help="https://host:9443")
@click.option("--ca-file", help="CA that signed the agent's TLS certificate")
@click.option("--client-cert", help="client certificate presented to the agent")
@click.option("--client-key")
@click.option("--policy", "policy_id", help="trust policy id")
@click.option("--pinned-ek", type=click.Path(path_type=Path, dir_okay=False), help="EK TPM2B_PUBLIC to pin")
def host_add(
    config_path: Path | None,
    host_id: str,
    vim_account: str,
    agent_url: str,
    ca_file: str | None,
    client_cert: str | None,
    client_key: str | None,
    policy_id: str | None,
    pinned_ek: Path | None,
) -> None:
    """Register HOST_ID (enrollment happens at its first attestation)."""
    from osm_trustmgr.store.records import AgentEndpoint, HostSpec

    spec = HostSpec(
        id=host_id,
        vim_account_id=vim_account,
        agent=AgentEndpoint(url=agent_url, ca_file=ca_file, client_cert=client_cert, client_key=client_key),
        policy_id=policy_id,
        pinned_ek=pinned_ek.read_bytes() if pinned_ek else None,
    )
    record = _run(config_path, lambda s: s.hosts.register(spec))
    emit(record.model_dump(mode="json", exclude={"pinned_ek"}))


@host_group.command("update")
@CONFIG_OPTION
@click.argument("host_id")
@click.option("--vim-account", help="new OSM VIM account id")
@click.option("--agent-url", help="new agent URL")
@click.option("--policy", "policy_id", help="new trust policy id")
def host_update(
    config_path: Path | None, host_id: str, vim_account: str | None, agent_url: str | None, policy_id: str | None
) -> None:
    """Change HOST_ID's VIM account, agent URL or policy (its TPM identity stays enrolled)."""
    from osm_trustmgr.store.records import HostSpec

    async def update(s: Any) -> Any:
        host = _found(await s.store.get_host(host_id), f"host {host_id!r} is not registered")
        spec = host.model_dump(include=set(HostSpec.model_fields))
        if vim_account:
            spec["vim_account_id"] = vim_account
        if agent_url:
            spec["agent"]["url"] = agent_url
        if policy_id:
            spec["policy_id"] = policy_id
        checked = HostSpec.model_validate(spec)  # the same rules as at registration
        return await s.store.update_host_spec(host_id, checked.model_dump(exclude={"id"}))

    record = _run(config_path, update)
    emit(record.model_dump(mode="json", exclude={"pinned_ek"}))


@host_group.command("list")
@CONFIG_OPTION
@click.option("--vim-account", help="only the hosts of this VIM account")
@OUTPUT_OPTION
def host_list(config_path: Path | None, vim_account: str | None, fmt: str) -> None:
    hosts = _run(config_path, lambda s: s.store.list_hosts(vim_account))
    rows = [
        {"id": h.id, "vim_account_id": h.vim_account_id, "state": h.state, "loa": h.loa,
         "attested_at": h.attested_at, "reason": h.reason}
        for h in hosts
    ]  # fmt: skip
    emit(rows, fmt)


@host_group.command("show")
@CONFIG_OPTION
@click.argument("host_id")
@OUTPUT_OPTION
def host_show(config_path: Path | None, host_id: str, fmt: str) -> None:
    host = _found(_run(config_path, lambda s: s.store.get_host(host_id)), f"host {host_id!r} is not registered")
    emit(host.model_dump(mode="json", exclude={"pinned_ek"}), fmt)


@host_group.command("delete")
@CONFIG_OPTION
@click.argument("host_id")
def host_delete(config_path: Path | None, host_id: str) -> None:
    _found(_run(config_path, lambda s: s.store.delete_host(host_id)) or None, f"host {host_id!r} is not registered")


@host_group.command("attest")
@CONFIG_OPTION
@click.argument("host_id")
@OUTPUT_OPTION
def host_attest(config_path: Path | None, host_id: str, fmt: str) -> None:
    """Attest HOST_ID now (enrolling it first if needed); print the report. Exit 1 below LoA 1."""
    outcome = _run(config_path, lambda s: s.hosts.attest(host_id))
    emit(outcome.result.model_dump(mode="json") if outcome.result else {"state": outcome.host.state}, fmt)
    sys.exit(0 if outcome.host.loa >= 1 else 1)


@host_group.command("reenroll")
@CONFIG_OPTION
@click.argument("host_id")
def host_reenroll(config_path: Path | None, host_id: str) -> None:
    """Accept a new TPM identity for HOST_ID (after a hardware change); it is enrolled at the next round."""
    _run(config_path, lambda s: s.hosts.reenroll(host_id))


@host_group.command("reports")
@CONFIG_OPTION
@click.argument("host_id")
@click.option("--limit", type=click.IntRange(1, 1000), default=20, show_default=True)
@OUTPUT_OPTION
def host_reports(config_path: Path | None, host_id: str, limit: int, fmt: str) -> None:
    """Attestation history of HOST_ID, newest first."""
    from osm_trustmgr.hosts import entity_of

    emit(report_rows(_run(config_path, lambda s: s.store.reports_for(entity_of(host_id), limit))), fmt)


def report_rows(reports: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Reports as listed: the claims (large, for ``--output json`` of one report) left out."""
    return [{k: v for k, v in r.items() if k != "claims"} for r in reports]


@click.group("nsd-policy")
def nsd_policy_group() -> None:
    """LoA bound to an NSD: every NS of it needs at least that LoA (the stricter of this and its params)."""


@nsd_policy_group.command("set")
@CONFIG_OPTION
@click.argument("nsd_id")
@click.argument("loa", type=click.IntRange(0, 5))
@click.option("--exempt-vnfd", "exempt", multiple=True, help="a VNFD whose VNFs need no trust-proxy charm (repeat)")
def nsd_policy_set(config_path: Path | None, nsd_id: str, loa: int, exempt: tuple[str, ...]) -> None:
    from osm_trustmgr.hosts import utcnow

    _run(config_path, lambda s: s.gate.gates.set_nsd_policy(nsd_id, loa, utcnow(), exempt))
    click.echo(f"NSD {nsd_id}: LoA {loa} required" + (f"; exempt VNFDs: {', '.join(exempt)}" if exempt else ""))


@nsd_policy_group.command("show")
@CONFIG_OPTION
@click.argument("nsd_id")
def nsd_policy_show(config_path: Path | None, nsd_id: str) -> None:
    loa = _found(_run(config_path, lambda s: s.gate.gates.nsd_policy_loa(nsd_id)), f"no policy for NSD {nsd_id!r}")
    click.echo(str(loa))


@click.group("policy")
def policy_group() -> None:
    """Trust policies (reference values), checked against the configured signers before they are stored."""


@policy_group.command("put")
@CONFIG_OPTION
@click.argument("path", type=click.Path(path_type=Path, dir_okay=False, exists=True))
def policy_put(config_path: Path | None, path: Path) -> None:
    from osm_trustmgr.hosts import utcnow

    document = yaml.safe_load(path.read_text())
    policy = _run(config_path, lambda s: s.policies.put(document, utcnow()))
    click.echo(f"stored policy {policy.id} (version {policy.version})")


@policy_group.command("show")
@CONFIG_OPTION
@click.argument("policy_id")
@OUTPUT_OPTION
def policy_show(config_path: Path | None, policy_id: str, fmt: str) -> None:
    document = _run(config_path, lambda s: s.store.get_policy_document(policy_id))
    emit(_found(document, f"policy {policy_id!r} is not stored"), fmt)
