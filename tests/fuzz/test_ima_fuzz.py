"""Property tests: IMA parsers, replay and policy evaluation fail only with EvidenceError, and round-trip."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings
from hypothesis import strategies as st

from osm_trustmgr.policy.ima_policy import ImaPolicy, evaluate_ima
from osm_trustmgr.tpm.algorithms import SHA1, SHA256
from osm_trustmgr.tpm.errors import EvidenceError
from osm_trustmgr.tpm.ima import ImaEntry, parse_ima_ascii, parse_ima_binary, replay_ima
from osm_trustmgr.tpm.ima_builder import ImaLogBuilder, ImaSigner, format_ima_ascii, make_entry
from tests.conftest import REALDATA

FUZZ = settings(max_examples=300, deadline=None)
KEY = ec.generate_private_key(ec.SECP256R1())


def _sample() -> ImaLogBuilder:
    log = ImaLogBuilder()
    log.add_boot_aggregate({i: bytes(32) for i in range(10)}, SHA256)
    log.add_file("/usr/bin/a", b"a")
    log.add_file("/usr/bin/b", b"b", template="ima")
    log.add_file("/usr/bin/c", b"c", signer=ImaSigner(KEY))
    log.add_buffer("kexec-cmdline", b"ro quiet")
    log.add_violation("/var/log/x")
    return log


SAMPLE = _sample()
BINARY = SAMPLE.binary()
ASCII = SAMPLE.ascii().encode()
REAL_LOG = REALDATA / "ima-ascii-runtime-measurements.txt"
REAL_LINES = REAL_LOG.read_bytes().splitlines(keepends=True) if REAL_LOG.is_file() else []
POLICY = ImaPolicy.build(
    allow={"/usr/bin/a": [e.file_digest.hex() for e in SAMPLE.entries if not e.is_violation]},
    exclude=["/usr/lib/"],
    keys=[KEY.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)],
    accept_signatures=True,
)
TOKENS = [b" ", b"\n", b"10", b"ima-ng", b"ima-sig", b"ima-buf", b"ima", b"sha1:", b"sha256:", b"00" * 20, b"ab" * 32]
EDITS = st.lists(st.tuples(st.integers(0, 10**6), st.sampled_from("fdi"), st.integers(0, 255)), min_size=1, max_size=4)


def mutate(data: bytes, edits: list[tuple[int, str, int]]) -> bytes:
    """Flip, delete or insert bytes at positions taken modulo the length."""
    out = bytearray(data)
    for pos, kind, value in edits:
        at = pos % (len(out) or 1)
        if kind == "f" and out:
            out[at] ^= value or 1
        elif kind == "d" and out:
            del out[at]
        else:
            out.insert(at, value)
    return bytes(out)


def survives(parse: Callable[[bytes], list[ImaEntry]], data: bytes) -> None:
    """Parse; on success the entries must replay and evaluate without any exception."""
    try:
        entries = parse(data)
    except EvidenceError:
        return
    replay_ima(entries, SHA1)
    replay_ima(entries, SHA256)
    evaluate_ima(entries, POLICY)


@FUZZ
@given(st.binary(max_size=1000))
def test_arbitrary_bytes(data: bytes) -> None:
    survives(parse_ima_binary, data)
    survives(parse_ima_ascii, data)


@FUZZ
@given(st.text(max_size=300))
def test_arbitrary_text(text: str) -> None:
    survives(lambda _: parse_ima_ascii(text), b"")


@FUZZ
@given(st.lists(st.sampled_from(TOKENS), max_size=40))
def test_token_soup(tokens: list[bytes]) -> None:
    survives(parse_ima_ascii, b"".join(tokens))


@FUZZ
@given(EDITS)
def test_mutated_generated_logs(edits: list[tuple[int, str, int]]) -> None:
    survives(parse_ima_binary, mutate(BINARY, edits))
    survives(parse_ima_ascii, mutate(ASCII, edits))


@FUZZ
@given(st.integers(0, 800), EDITS)
def test_mutated_real_log(start: int, edits: list[tuple[int, str, int]]) -> None:
    if not REAL_LINES:
        pytest.skip(f"real evidence not available at {REALDATA}")
    survives(parse_ima_ascii, mutate(b"".join(REAL_LINES[start : start + 25]), edits))


@FUZZ
@given(st.binary(max_size=600))
def test_arbitrary_signature_fields(signature: bytes) -> None:
    entry = make_entry("ima-sig", "/usr/bin/x", bytes(range(32)), signature=signature)
    findings = evaluate_ima(parse_ima_ascii(format_ima_ascii([entry])), POLICY)
    assert len(findings) == 1


PATHS = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\n\0"), max_size=40)


@FUZZ
@given(PATHS, st.sampled_from(["ima-ng", "ima-sig", "ima-buf"]), st.binary(max_size=20))
def test_any_name_round_trips(path: str, template: str, extra: bytes) -> None:
    entry = make_entry(template, path, bytes(32), signature=extra, buf=extra)
    assert parse_ima_ascii(format_ima_ascii([entry])) == [entry]
