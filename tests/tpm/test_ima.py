"""IMA measurement lists: real logs, tampering, replay per bank, boot_aggregate, both formats, bad input.

Expected values come from `reference_entry` below, a second, deliberately plain rendering of the kernel's
rules (ima_template_lib.c / ima_crypto.c), and from hashlib folds written out in the tests.
"""

from __future__ import annotations

import hashlib
import os
import struct
from pathlib import Path

import pytest

from osm_trustmgr.failures import Failure
from osm_trustmgr.tpm.algorithms import SHA1, SHA256
from osm_trustmgr.tpm.errors import EvidenceError
from osm_trustmgr.tpm.ima import (
    BootAggregateForm,
    ImaCursor,
    check_boot_aggregate,
    find_quoted_prefix,
    match_boot_aggregate,
    parse_ima_ascii,
    parse_ima_binary,
    replay_ima,
)
from osm_trustmgr.tpm.ima_builder import ImaLogBuilder, format_ima_ascii, format_ima_binary, make_entry

REAL_LOG = "ima-ascii-runtime-measurements.txt"
SMALL_SHA256_LOG = "ima-log-sha256-small.txt"


def reference_entry(line: str) -> tuple[bytes, bytes]:
    """(stated template hash, template data) of one ASCII line, following the kernel's layout."""
    _pcr, stated, template, rest = line.split(" ", 3)
    if template == "ima":
        digest, name = rest.split(" ", 1)
        return bytes.fromhex(stated), bytes.fromhex(digest) + name.encode().ljust(256, b"\0")
    digest_field, rest = rest.split(" ", 1)
    alg, hex_digest = digest_field.split(":")
    fields = [alg.encode() + b":\0" + bytes.fromhex(hex_digest)]
    if template == "ima-ng":
        fields.append(rest.encode("utf-8", "surrogateescape") + b"\0")
    else:
        name, extra = rest.rsplit(" ", 1)
        fields += [name.encode("utf-8", "surrogateescape") + b"\0", bytes.fromhex(extra)]
    return bytes.fromhex(stated), b"".join(struct.pack("<I", len(f)) + f for f in fields)


def fold(hash_name: str, digests: list[bytes]) -> bytes:
    value = bytes(hashlib.new(hash_name).digest_size)
    for digest in digests:
        value = hashlib.new(hash_name, value + digest).digest()
    return value


def sample_log(template_hash=SHA1) -> ImaLogBuilder:  # type: ignore[no-untyped-def]
    """Every template, a violation, a path with a space and one with non-UTF-8 bytes."""
    log = ImaLogBuilder(template_hash=template_hash)
    log.add_boot_aggregate({i: bytes([i]) * 32 for i in range(10)}, SHA256)
    log.add_file("/usr/bin/bash", b"#!bash")
    log.add_file("/usr/lib/old name.so", b"old", template="ima")
    log.add_file("/usr/sbin/unsigned", b"u", template="ima-sig")
    log.add_buffer("kexec-cmdline", b"root=/dev/vda1 ro")
    log.add_violation("/var/log/messages")
    log.add_file("/opt/caf\udce9 bar", b"latin-1 name")
    log.add_file("/etc/sha1", b"x", digest_alg="sha1")
    return log


@pytest.fixture
def real_text(realdata: Path) -> str:
    return (realdata / REAL_LOG).read_text()


# (a) real logs -------------------------------------------------------------------------------------------------


def test_real_log_every_template_hash_verified(real_text: str) -> None:
    entries = parse_ima_ascii(real_text)
    lines = real_text.splitlines()
    assert len(entries) == len(lines) == 826
    assert {e.template_name for e in entries} == {"ima-ng"}
    for entry, line in zip(entries, lines, strict=True):
        stated, data = reference_entry(line)
        assert hashlib.sha1(data).digest() == stated  # the kernel's own hash: the layout is right
        assert (entry.template_hash, entry.template_data) == (stated, data)
    assert entries[1].path == "/init" and entries[1].digest_alg == "sha1"


def test_real_sha256_log(realdata: Path) -> None:
    text = (realdata / SMALL_SHA256_LOG).read_text()
    entries = parse_ima_ascii(text.encode())
    assert [e.path for e in entries] == ["boot_aggregate", "/data"]
    assert {e.digest_alg for e in entries} == {"sha256"} and {len(e.template_hash) for e in entries} == {20}
    for entry, line in zip(entries, text.splitlines(), strict=True):
        assert hashlib.sha1(reference_entry(line)[1]).digest() == entry.template_hash


def test_real_log_boot_aggregate_is_zero(real_text: str) -> None:
    # The machine had no TPM when IMA started (ima_init.c records zeros): nothing can match it.
    first = parse_ima_ascii(real_text)[0]
    assert first.path == "boot_aggregate" and first.file_digest == bytes(20)
    assert not check_boot_aggregate(first, {i: bytes(20) for i in range(10)}, SHA1)


def test_real_log_resume_and_binary_round_trip(real_text: str) -> None:
    entries = parse_ima_ascii(real_text)
    assert parse_ima_ascii(real_text, start_line=500) == entries[500:]
    assert parse_ima_ascii(real_text, start_line=826) == []
    assert parse_ima_binary(format_ima_binary(entries)) == entries
    assert format_ima_ascii(entries) == real_text


# (b) tampering --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["digest", "path"])
def test_edited_line_is_a_template_hash_mismatch(real_text: str, field: str) -> None:
    lines = real_text.splitlines(keepends=True)
    pcr, stated, template, digest, path = lines[99].split()
    if field == "digest":
        digest = digest[:-1] + ("0" if digest[-1] != "0" else "1")
    else:
        path = path + "x"
    lines[99] = f"{pcr} {stated} {template} {digest} {path}\n"
    with pytest.raises(EvidenceError) as err:
        parse_ima_ascii("".join(lines))
    assert err.value.code is Failure.IMA_TEMPLATE_HASH
    assert "line 100 " in err.value.detail and path in err.value.detail


def test_edited_binary_entry_is_a_template_hash_mismatch() -> None:
    log = sample_log()
    data = bytearray(log.binary())
    at = data.index(b"/usr/bin/bash")
    data[at + 5] ^= 0x20  # "/usr/Bin/bash"
    with pytest.raises(EvidenceError) as err:
        parse_ima_binary(bytes(data))
    assert err.value.code is Failure.IMA_TEMPLATE_HASH and "entry 2 (/usr/Bin/bash)" in err.value.detail


# (c) replay -------------------------------------------------------------------------------------------------------


def expected_pcr10(text: str) -> dict[str, bytes]:
    """PCR 10 per bank from the ASCII text alone: violations extend 0xFF.., others the bank's hash."""
    sha1, sha256 = [], []
    for line in text.splitlines():
        stated, data = reference_entry(line)
        violation = not any(stated)
        sha1.append(b"\xff" * 20 if violation else hashlib.sha1(data).digest())
        sha256.append(b"\xff" * 32 if violation else hashlib.sha256(data).digest())
    return {"sha1": fold("sha1", sha1), "sha256": fold("sha256", sha256)}


@pytest.mark.parametrize("template_hash", [SHA1, SHA256], ids=["sha1-list", "sha256-list"])
def test_replay_matches_independent_fold(template_hash) -> None:  # type: ignore[no-untyped-def]
    text = sample_log(template_hash).ascii()
    entries = parse_ima_ascii(text)
    expected = expected_pcr10(text)
    assert replay_ima(entries, SHA1) == expected["sha1"]
    assert replay_ima(entries, SHA256) == expected["sha256"]


def test_resume_with_carried_state_equals_full_replay() -> None:
    text = sample_log().ascii()
    entries = parse_ima_ascii(text)
    for cut in range(len(entries) + 1):
        cursor = ImaCursor.start([SHA1, SHA256]).advance(entries[:cut])
        resumed = cursor.advance(parse_ima_ascii(text, start_line=cursor.offset))
        assert resumed.offset == len(entries)
        assert resumed.pcr10 == expected_pcr10(text)
        assert replay_ima(entries[cut:], SHA256, cursor.pcr10["sha256"]) == expected_pcr10(text)["sha256"]


def test_quoted_prefix_when_the_log_grew_after_the_quote() -> None:
    entries = parse_ima_ascii(sample_log().ascii())
    quoted = fold("sha256", [hashlib.sha256(e.template_data).digest() for e in entries[:3]])
    assert find_quoted_prefix(entries, SHA256, quoted) == 3
    assert find_quoted_prefix(entries, SHA256, bytes(32)) == 0
    assert find_quoted_prefix(entries, SHA256, b"\x01" * 32) is None
    start = replay_ima(entries[:2], SHA1)
    assert find_quoted_prefix(entries[2:], SHA1, replay_ima(entries, SHA1), start) == len(entries) - 2


def test_legacy_kernels_pad_the_sha1_template_hash() -> None:
    entries = parse_ima_ascii(sample_log().ascii())
    padded = [(e.template_hash if any(e.template_hash) else b"\xff" * 20) + bytes(12) for e in entries]
    assert replay_ima(entries, SHA256, legacy_sha1_padding=True) == fold("sha256", padded)


def test_entries_for_other_pcrs_are_not_replayed() -> None:
    entries = parse_ima_ascii(sample_log().ascii())
    other = make_entry("ima-ng", "/bin/true", bytes(range(32)), pcr=11)
    mixed = [*entries[:2], other, *entries[2:]]
    assert replay_ima(mixed, SHA1) == replay_ima(entries, SHA1)
    assert find_quoted_prefix(mixed, SHA1, replay_ima(entries[:3], SHA1)) == 4


def test_start_value_of_the_wrong_size() -> None:
    with pytest.raises(EvidenceError) as err:
        replay_ima([], SHA256, bytes(20))
    assert err.value.code is Failure.IMA_REPLAY


# (d) boot_aggregate ----------------------------------------------------------------------------------------------


@pytest.fixture
def pcrs() -> dict[str, dict[int, bytes]]:
    return {"sha1": {i: os.urandom(20) for i in range(24)}, "sha256": {i: os.urandom(32) for i in range(24)}}


def test_boot_aggregate_sha256_covers_pcrs_0_to_9(pcrs: dict[str, dict[int, bytes]]) -> None:
    log = ImaLogBuilder()
    entry = log.add_boot_aggregate(pcrs["sha256"], SHA256)
    assert entry.file_digest == hashlib.sha256(b"".join(pcrs["sha256"][i] for i in range(10))).digest()
    assert match_boot_aggregate(entry, pcrs["sha256"], SHA256) is BootAggregateForm.PCRS_0_9
    assert check_boot_aggregate(parse_ima_ascii(log.ascii())[0], pcrs["sha256"], SHA256)
    assert not check_boot_aggregate(entry, {**pcrs["sha256"], 9: bytes(32)}, SHA256)
    assert not check_boot_aggregate(entry, pcrs["sha1"], SHA1)  # the entry says which bank
    assert not check_boot_aggregate(entry, {i: pcrs["sha256"][i] for i in range(8)}, SHA256)


def test_boot_aggregate_sha1_covers_pcrs_0_to_7(pcrs: dict[str, dict[int, bytes]]) -> None:
    entry = ImaLogBuilder().add_boot_aggregate(pcrs["sha1"], SHA1)
    assert entry.file_digest == hashlib.sha1(b"".join(pcrs["sha1"][i] for i in range(8))).digest()
    assert check_boot_aggregate(entry, {**pcrs["sha1"], 8: bytes(20), 9: bytes(20)}, SHA1)
    assert not check_boot_aggregate(entry, {**pcrs["sha1"], 7: bytes(20)}, SHA1)


def test_boot_aggregate_of_a_kernel_without_pcrs_8_9(pcrs: dict[str, dict[int, bytes]]) -> None:
    entry = ImaLogBuilder().add_boot_aggregate(pcrs["sha256"], SHA256, BootAggregateForm.PCRS_0_7)
    assert entry.file_digest == hashlib.sha256(b"".join(pcrs["sha256"][i] for i in range(8))).digest()
    assert match_boot_aggregate(entry, pcrs["sha256"], SHA256) is BootAggregateForm.PCRS_0_7


# (e) formats and templates ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("template_hash", [SHA1, SHA256], ids=["sha1-list", "sha256-list"])
def test_ascii_and_binary_are_the_same_log(template_hash) -> None:  # type: ignore[no-untyped-def]
    log = sample_log(template_hash)
    from_ascii = parse_ima_ascii(log.ascii())
    assert parse_ima_binary(log.binary(), template_hash.size) == from_ascii == log.entries
    assert {e.template_name for e in from_ascii} == {"ima", "ima-ng", "ima-sig", "ima-buf"}
    for entry, line in zip(from_ascii, log.ascii().splitlines(), strict=True):
        stated, data = reference_entry(line)
        assert entry.template_data == data
        assert stated == (bytes(template_hash.size) if entry.is_violation else template_hash.digest(data))


def test_binary_layout_written_out() -> None:
    digest = bytes(range(32))
    ng = make_entry("ima-ng", "/a", digest)
    data = struct.pack("<I", 8 + 32) + b"sha256:\0" + digest + struct.pack("<I", 3) + b"/a\0"
    record = struct.pack("<I", 10) + hashlib.sha1(data).digest() + struct.pack("<I", 6) + b"ima-ng"
    assert format_ima_binary([ng]) == record + struct.pack("<I", len(data)) + data
    legacy = make_entry("ima", "/b", digest[:20], digest_alg="sha1")
    stated = hashlib.sha1(digest[:20] + b"/b" + bytes(254)).digest()  # name zero-padded to 256 bytes
    record = struct.pack("<I", 10) + stated + struct.pack("<I", 3) + b"ima" + digest[:20] + struct.pack("<I", 2) + b"/b"
    assert format_ima_binary([legacy]) == record
    assert parse_ima_binary(record) == [legacy]


def test_template_fields_decoded() -> None:
    entries = parse_ima_ascii(sample_log().ascii())
    by_path = {e.path: e for e in entries}
    assert by_path["kexec-cmdline"].buf == b"root=/dev/vda1 ro"
    assert by_path["/usr/sbin/unsigned"].signature is None
    assert by_path["/usr/lib/old name.so"].template_name == "ima"
    assert by_path["/opt/caf\udce9 bar"].file_digest == hashlib.sha256(b"latin-1 name").digest()
    assert by_path["/etc/sha1"].file_digest == hashlib.sha1(b"x").digest()
    assert [e.path for e in entries if e.is_violation] == ["/var/log/messages"]


def test_stripped_trailing_space_of_an_empty_signature() -> None:
    line = sample_log().ascii().splitlines()[3]
    assert line.endswith("/usr/sbin/unsigned ")
    assert parse_ima_ascii(line.rstrip() + "\n") == parse_ima_ascii(line + "\n")


# (g) malformed input -----------------------------------------------------------------------------------------------

GOOD = format_ima_ascii([make_entry("ima-ng", "/bin/x", bytes(range(32)))]).rstrip("\n")


@pytest.mark.parametrize(
    "line",
    [
        "",
        "10",
        "10 " + "ab" * 20,
        "10 " + "ab" * 20 + " ima-ng",
        "10 " + "zz" * 20 + " ima-ng sha256:" + "cd" * 32 + " /bin/x",
        "10 " + "ab" * 19 + "a ima-ng sha256:" + "cd" * 32 + " /bin/x",
        "10 " + "ab" * 21 + " ima-ng sha256:" + "cd" * 32 + " /bin/x",
        "10 " + "ab" * 20 + " ima-foo sha256:" + "cd" * 32 + " /bin/x",
        "24 " + "ab" * 20 + " ima-ng sha256:" + "cd" * 32 + " /bin/x",
        "x " + "ab" * 20 + " ima-ng sha256:" + "cd" * 32 + " /bin/x",
        "10 " + "ab" * 20 + " ima-ng sha256:" + "cd" * 31 + " /bin/x",
        "10 " + "ab" * 20 + " ima-ng sha256:" + "cg" * 32 + " /bin/x",
        "10 " + "ab" * 20 + " ima-ng md6:" + "cd" * 32 + " /bin/x",
        "10 " + "ab" * 20 + " ima-ng " + "cd" * 32 + " /bin/x",
        "10 " + "ab" * 20 + " ima-sig sha256:" + "cd" * 32 + " /bin/x 0",
        "10 " + "ab" * 20 + " ima " + "cd" * 32 + " /bin/x",
        "10 " + "ab" * 20 + " ima " + "cd" * 20 + " " + "x" * 256,
    ],
)
def test_malformed_ascii_lines(line: str) -> None:
    with pytest.raises(EvidenceError) as err:
        parse_ima_ascii(f"{GOOD}\n{line}\n")
    assert err.value.code is Failure.IMA_MALFORMED and "line 2:" in err.value.detail


def test_malformed_ascii_documents() -> None:
    for text in ("\ud800\n", f"{GOOD}\n\n{GOOD}\n"):
        with pytest.raises(EvidenceError) as err:
            parse_ima_ascii(text)
        assert err.value.code is Failure.IMA_MALFORMED
    with pytest.raises(EvidenceError, match="cannot resume"):
        parse_ima_ascii(GOOD + "\n", start_line=2)


def test_every_truncation_of_a_binary_log_is_malformed() -> None:
    data = sample_log().binary()
    for end in range(1, len(data)):
        try:
            entries = parse_ima_binary(data[:end])
        except EvidenceError as err:
            assert err.code is Failure.IMA_MALFORMED, (end, err)
        else:  # cut exactly between records
            assert format_ima_binary(entries) == data[:end]


@pytest.mark.parametrize(
    "edit",
    [
        lambda r: r[:24] + struct.pack("<I", 0xFFFFFFFF) + r[28:],  # template name length
        lambda r: r[:34] + struct.pack("<I", 0xFFFFFFFF) + r[38:],  # template data length
        lambda r: r[:38] + struct.pack("<I", 0xFFFFFFF0) + r[42:],  # d-ng field length
        lambda r: r[:34] + struct.pack("<I", len(r) - 37) + r[38:] + b"\0",  # bytes after the last field
        lambda r: r[:28] + b"ima-nX" + r[34:],  # unknown template
        lambda r: struct.pack("<I", 99) + r[4:],  # PCR index
        lambda r: r[:-1] + b"x",  # n-ng without its NUL
    ],
)
def test_malformed_binary_records(edit) -> None:  # type: ignore[no-untyped-def]
    record = format_ima_binary([make_entry("ima-ng", "/a", bytes(range(32)))])
    with pytest.raises(EvidenceError) as err:
        parse_ima_binary(edit(record))
    assert err.value.code is Failure.IMA_MALFORMED and "entry 1" in err.value.detail


def test_unsupported_template_hash_size() -> None:
    with pytest.raises(EvidenceError) as err:
        parse_ima_binary(b"", template_hash_size=21)
    assert err.value.code is Failure.IMA_MALFORMED
