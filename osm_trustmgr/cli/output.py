"""Printing documents the way osmclient users expect: JSON (default) or YAML."""

from __future__ import annotations

import json
from typing import Any

import click
import yaml


def emit(document: Any, fmt: str = "json", *, compact: bool = False) -> None:
    if fmt == "yaml":
        click.echo(yaml.safe_dump(document, sort_keys=False, default_flow_style=False), nl=False)
    elif compact:
        click.echo(json.dumps(document, separators=(",", ":"), default=str))
    else:
        click.echo(json.dumps(document, indent=2, default=str))


OUTPUT_OPTION = click.option(
    "-o", "--output", "fmt", type=click.Choice(["json", "yaml"]), default="json", show_default=True
)
