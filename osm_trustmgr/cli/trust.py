"""``osm-trust``: the user CLI (osmclient look and feel). Trust queries arrive with the REST API."""

from __future__ import annotations

import click

from osm_trustmgr import __version__
from osm_trustmgr.cli.output import OUTPUT_OPTION, emit
from osm_trustmgr.failures import Failure
from osm_trustmgr.policy.result import LOA_NAMES


@click.group()
@click.version_option(__version__, prog_name="osm-trust")
def main() -> None:
    """OSM trust queries and administration."""


@main.command("loa-list")
@OUTPUT_OPTION
def loa_list(fmt: str) -> None:
    """The Levels of Assurance an NS can ask for (additionalParamsForNs.trust_loa)."""
    emit([{"loa": level, "name": name} for level, name in LOA_NAMES.items()], fmt)


@main.command("failure-codes")
@OUTPUT_OPTION
def failure_codes(fmt: str) -> None:
    """Every stable failure code a report can carry, with its meaning."""
    emit([{"code": f.value, "meaning": f.description} for f in Failure], fmt)
