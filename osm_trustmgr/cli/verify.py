"""``osm-trustmgr evidence verify``: judge agent-format evidence offline (exit 0 reached, 1 not, 2 unusable)."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import click
import yaml

from osm_trustmgr.cli.output import emit
from osm_trustmgr.evidence.document import parse_evidence_document
from osm_trustmgr.policy.evaluate import IdentityClaim, Request, evaluate
from osm_trustmgr.policy.load import load_policy
from osm_trustmgr.policy.model import TrustPolicy
from osm_trustmgr.policy.result import AttestationResult
from osm_trustmgr.policy.signing import load_signer_keys
from osm_trustmgr.tpm.errors import EvidenceError
from osm_trustmgr.tpm.public import TpmPublic, ak_qualified_name, load_public, parse_public

EXIT_REACHED, EXIT_NOT_REACHED, EXIT_UNUSABLE = 0, 1, 2


class Unusable(Exception):
    """Input the verifier cannot judge at all (as opposed to evidence judged and found wanting)."""


def read_policy(path: Path, signer_files: tuple[Path, ...], require_signature: bool) -> TrustPolicy:
    try:
        document = yaml.safe_load(path.read_text())
        signers = load_signer_keys([p.read_bytes() for p in signer_files])
        return load_policy(document, signers, require_signature=require_signature)
    except (OSError, yaml.YAMLError, ValueError) as e:
        raise Unusable(f"policy {path}: {e}") from None


def _identity(doc_ak: bytes | None, pinned_ak: TpmPublic | None, ek: TpmPublic | None) -> IdentityClaim:
    if pinned_ak is not None:
        if ek is not None and pinned_ak.name is None:
            click.echo("warning: --ek needs the AK as TPM2B_PUBLIC, not PEM: quote signer not checked", err=True)
        qn = ak_qualified_name(ek, pinned_ak) if ek is not None and pinned_ak.name else None
        return IdentityClaim(pinned_ak, "pinned_ak", qn)
    if doc_ak is None:
        raise Unusable("no AK: pass --ak or put ak_public in the evidence")
    try:
        ak = load_public(doc_ak)
    except EvidenceError as e:
        raise Unusable(str(e)) from None
    # The evidence's own AK is self-asserted: the quote is checked with it, but identity stays unproven.
    return IdentityClaim(ak, "none", ak_qualified_name(ek, ak) if ek is not None and ak.name else None)


def verify_document(
    doc: Any, *, policy: TrustPolicy | None, pinned_ak: TpmPublic | None, ek: TpmPublic | None, nonce: bytes | None
) -> AttestationResult:
    try:
        parsed = parse_evidence_document(doc)
    except EvidenceError as e:
        raise Unusable(str(e)) from None
    expected = nonce if nonce is not None else parsed.nonce
    if expected is None:
        raise Unusable("no nonce: pass --nonce or put nonce in the evidence")
    return evaluate(
        parsed.evidence,
        _identity(parsed.ak_public, pinned_ak, ek),
        Request(expected),
        entity=str(doc.get("entity", "offline")),
        now=datetime.now(timezone.utc),
        policy=policy,
    )


def _config_signers(path: Path, signers: tuple[Path, ...], required: bool) -> tuple[tuple[Path, ...], bool]:
    from osm_trustmgr.config import ConfigError, load_config

    try:
        section = load_config(path).policy
    except ConfigError as e:
        raise Unusable(f"config {path}: {e}") from None
    return (*section.signers, *signers), required or section.require_signature


def _read_key(path: Path | None, what: str) -> TpmPublic | None:
    if path is None:
        return None
    try:
        data = path.read_bytes()
        return load_public(data) if what == "ak" else parse_public(data)
    except (OSError, EvidenceError) as e:
        raise Unusable(f"--{what} {path}: {e}") from None


def _records(evidence: Path | None, batch: Path | None) -> Iterator[tuple[int, Any]]:
    if evidence is not None:
        try:
            yield 1, json.loads(evidence.read_text())
        except (OSError, ValueError) as e:
            raise Unusable(f"{evidence}: {e}") from None
    if batch is not None:
        try:
            with batch.open() as f:
                for n, line in enumerate(f, 1):
                    if line.strip():
                        try:
                            yield n, json.loads(line)
                        except ValueError as e:
                            yield n, Unusable(f"line {n}: not JSON: {e}")
        except (OSError, UnicodeDecodeError) as e:
            raise Unusable(f"{batch}: {e}") from None


@click.command("verify")
@click.option("--evidence", "evidence", type=click.Path(path_type=Path, dir_okay=False), help="evidence JSON")
@click.option("--batch", type=click.Path(path_type=Path, dir_okay=False), help="JSON lines, one evidence each")
@click.option("--policy", type=click.Path(path_type=Path, dir_okay=False), help="trust policy YAML/JSON")
@click.option("--ak", type=click.Path(path_type=Path, dir_okay=False), help="pinned AK: PEM or TPM2B_PUBLIC")
@click.option("--ek", type=click.Path(path_type=Path, dir_okay=False), help="EK TPM2B_PUBLIC: check quote signer")
@click.option("--nonce", help="expected nonce (hex); default: the evidence's nonce")
@click.option("--min-loa", type=click.IntRange(0, 5), default=1, show_default=True)
@click.option("--signer", "signers", multiple=True, type=click.Path(path_type=Path), help="trusted policy signer")
@click.option("--require-signed-policy", is_flag=True, help="refuse unsigned policies")
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path, dir_okay=False),
    envvar="OSMTRUSTMGR_CONFIG",
    help="service config: its policy.signers are trusted and policy.require_signature applies",
)
def verify_cmd(
    evidence: Path | None,
    batch: Path | None,
    policy: Path | None,
    ak: Path | None,
    ek: Path | None,
    nonce: str | None,
    min_loa: int,
    signers: tuple[Path, ...],
    require_signed_policy: bool,
    config_path: Path | None,
) -> None:
    """Print the AttestationResult as JSON (one line per record with --batch)."""
    if (evidence is None) == (batch is None):
        raise click.UsageError("give exactly one of --evidence or --batch")
    try:
        if config_path is not None:
            signers, require_signed_policy = _config_signers(config_path, signers, require_signed_policy)
        trust_policy = read_policy(policy, signers, require_signed_policy) if policy else None
        pinned, ek_pub = _read_key(ak, "ak"), _read_key(ek, "ek")
        expected = bytes.fromhex(nonce) if nonce is not None else None
    except ValueError:
        click.echo("error: --nonce is not hex", err=True)
        sys.exit(EXIT_UNUSABLE)
    except Unusable as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(EXIT_UNUSABLE)
    worst = EXIT_REACHED
    try:
        for n, doc in _records(evidence, batch):
            try:
                if isinstance(doc, Unusable):
                    raise doc
                result = verify_document(doc, policy=trust_policy, pinned_ak=pinned, ek=ek_pub, nonce=expected)
            except Unusable as e:
                emit({"record": n, "error": str(e)}, compact=batch is not None)
                worst = EXIT_UNUSABLE
                continue
            emit(result.model_dump(mode="json"), compact=batch is not None)
            if result.loa < min_loa:
                worst = max(worst, EXIT_NOT_REACHED)
    except Unusable as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(EXIT_UNUSABLE)
    sys.exit(worst)
