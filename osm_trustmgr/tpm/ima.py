"""Linux IMA measurement lists: parse, verify every template hash, replay to PCR 10.

Two formats come from securityfs (ima_fs.c):

* ASCII ``ascii_runtime_measurements`` (ima_ascii_measurements_show): one line per entry,
  ``PCR template-hash template-name field...``, fields separated by one space. The template hash
  is the SHA-1 one (``ascii_runtime_measurements_<algo>`` of newer kernels print the bank's hash:
  the size tells them apart). ``d-ng`` prints as ``<algo>:<hex>``, names as raw strings, ``sig`` and
  ``buf`` as hex; an empty field still gets its leading space.
* binary ``binary_runtime_measurements[_<algo>]`` (ima_measurements_show), in the host's byte
  order, read here as little-endian (x86, arm64; ``ima_canonical_fmt`` forces it elsewhere):
  ``u32 pcr, digest, u32 name_len, name, u32 data_len, data``. The legacy ``ima`` template has no
  ``data_len``, a bare 20-byte digest and ``u32 strlen + name`` without its NUL.

Every parsed entry has its template hash checked against the reconstructed template data, so the
entries returned are exactly what the kernel extended. Bad input raises :class:`EvidenceError` with
``IMA_MALFORMED`` or ``IMA_TEMPLATE_HASH`` naming the line (ASCII) or entry (binary), nothing else.
"""

from __future__ import annotations

import hashlib
import struct
from binascii import unhexlify
from collections.abc import Callable

from osm_trustmgr.failures import Failure
from osm_trustmgr.tpm.errors import EvidenceError
from osm_trustmgr.tpm.ima_replay import (
    BootAggregateForm,
    ImaCursor,
    boot_aggregate_digest,
    check_boot_aggregate,
    find_quoted_prefix,
    match_boot_aggregate,
    pcr10_digests,
    replay_ima,
)
from osm_trustmgr.tpm.ima_templates import (
    DIGEST_SIZES,
    IMA,
    IMA_BUF,
    IMA_NAME_LEN_MAX,
    IMA_NG,
    IMA_SIG,
    MAX_BUFFER,
    MAX_PATH,
    MAX_SIGNATURE,
    TEMPLATE_HASH_ALGS,
    ImaEntry,
    display_path,
    legacy_template_data,
)

__all__ = [
    "BootAggregateForm",
    "ImaCursor",
    "ImaEntry",
    "boot_aggregate_digest",
    "check_boot_aggregate",
    "find_quoted_prefix",
    "match_boot_aggregate",
    "parse_ima_ascii",
    "parse_ima_binary",
    "pcr10_digests",
    "replay_ima",
]

_U32 = struct.Struct("<I")
_u32 = _U32.pack
_PCR_INDEX = {str(i).encode(): i for i in range(24)}
_ALGS = {name.encode(): (name, size) for name, size in DIGEST_SIZES.items()}
_HASHERS: dict[int, Callable[[bytes], hashlib._Hash]] = {
    size: getattr(hashlib, name) for size, name in TEMPLATE_HASH_ALGS.items()
}
# Older kernels recorded a violation's d-ng digest as IMA_DIGEST_SIZE (20) zero bytes whatever the
# algorithm (ima_template_lib.c, ima_eventdigest_init_common); newer ones use the algorithm's size.
_LEGACY_VIOLATION_DIGEST = bytes(20)


class _Malformed(ValueError):
    """Internal: a field is malformed; converted to EvidenceError with the line/entry number."""


def _entry(
    pcr: int,
    stated: bytes,
    template: str,
    data: bytes,
    alg: bytes,
    digest: bytes,
    name: bytes,
    sig: bytes | None = None,
    buf: bytes | None = None,
) -> ImaEntry:
    """Check the decoded ``ima-*`` fields and build the entry (``name`` without its NUL)."""
    known = _ALGS.get(alg)
    if known is None:
        raise _Malformed(f"unknown hash algorithm {alg[:16]!r}")
    if len(digest) != known[1] and digest != _LEGACY_VIOLATION_DIGEST:
        raise _Malformed(f"{known[0]} digest of {len(digest)} bytes")
    if len(name) > MAX_PATH or b"\0" in name:
        raise _Malformed(f"file name of {len(name)} bytes is too long or contains NUL")
    if (sig is not None and len(sig) > MAX_SIGNATURE) or (buf is not None and len(buf) > MAX_BUFFER):
        raise _Malformed("signature or buffer field too long")
    path = name.decode("utf-8", "surrogateescape")
    return ImaEntry(pcr, stated, template, data, known[0], digest, path, sig or None, buf)


# ---------------------------------------------------------------------------------------------------
# ASCII


def _split_digest_ng(fields: bytes) -> tuple[bytes, bytes, bytes]:
    """``<algo>:<hex> rest`` -> (algo, digest, rest)."""
    digest_field, sep, rest = fields.partition(b" ")
    alg, colon, hex_digest = digest_field.partition(b":")
    if not sep or not colon:
        raise _Malformed("expected '<algo>:<hex digest> <name>'")
    return alg, unhexlify(hex_digest), rest


def _split_trailing_hex(rest: bytes, limit: int) -> tuple[bytes, bytes]:
    """``name[ <hex>]``: hex fields never contain spaces; file names did before kernels replaced
    spaces with '_' (ima_template_lib.c, ima_write_template_field_data)."""
    name, sep, hex_field = rest.rpartition(b" ")
    if not sep:  # the trailing space of an empty field was stripped
        return rest, b""
    if len(hex_field) > 2 * limit:
        raise _Malformed(f"hex field of {len(hex_field) // 2} bytes exceeds {limit}")
    return name, unhexlify(hex_field)


def _ng_data(alg: bytes, digest: bytes, name: bytes, *extra: bytes) -> bytes:
    """Binary template data from decoded fields: d-ng is ``<algo>:\\0<digest>``, n-ng keeps its NUL."""
    parts = [_u32(len(alg) + 2 + len(digest)), alg, b":\0", digest, _u32(len(name) + 1), name, b"\0"]
    for field in extra:
        parts += (_u32(len(field)), field)
    return b"".join(parts)


def _ascii_ng(pcr: int, stated: bytes, fields: bytes) -> ImaEntry:
    # The hot path of every log: _split_digest_ng and _ng_data inlined (a third faster).
    digest_field, sep, name = fields.partition(b" ")
    alg, colon, hex_digest = digest_field.partition(b":")
    if not sep or not colon:
        raise _Malformed("expected '<algo>:<hex digest> <name>'")
    digest = unhexlify(hex_digest)
    data = b"".join((_u32(len(alg) + 2 + len(digest)), alg, b":\0", digest, _u32(len(name) + 1), name, b"\0"))
    return _entry(pcr, stated, IMA_NG, data, alg, digest, name)


def _ascii_sig(pcr: int, stated: bytes, fields: bytes) -> ImaEntry:
    alg, digest, rest = _split_digest_ng(fields)
    name, sig = _split_trailing_hex(rest, MAX_SIGNATURE)
    return _entry(pcr, stated, IMA_SIG, _ng_data(alg, digest, name, sig), alg, digest, name, sig=sig)


def _ascii_buf(pcr: int, stated: bytes, fields: bytes) -> ImaEntry:
    alg, digest, rest = _split_digest_ng(fields)
    name, buf = _split_trailing_hex(rest, MAX_BUFFER)
    return _entry(pcr, stated, IMA_BUF, _ng_data(alg, digest, name, buf), alg, digest, name, buf=buf)


def _legacy_entry(pcr: int, stated: bytes, digest: bytes, name: bytes) -> ImaEntry:
    if len(digest) != 20 or len(name) > IMA_NAME_LEN_MAX or b"\0" in name:
        raise _Malformed("ima template needs a SHA-1 digest and a name of at most 255 bytes")
    path = name.decode("utf-8", "surrogateescape")
    return ImaEntry(pcr, stated, IMA, legacy_template_data(digest, name), "sha1", digest, path)


def _ascii_legacy(pcr: int, stated: bytes, fields: bytes) -> ImaEntry:
    hex_digest, sep, name = fields.partition(b" ")
    if not sep:
        raise _Malformed("expected '<sha1 hex> <name>'")
    return _legacy_entry(pcr, stated, unhexlify(hex_digest), name)


_ASCII_TEMPLATES: dict[bytes, Callable[[int, bytes, bytes], ImaEntry]] = {
    IMA_NG.encode(): _ascii_ng,
    IMA_SIG.encode(): _ascii_sig,
    IMA_BUF.encode(): _ascii_buf,
    IMA.encode(): _ascii_legacy,
}


def parse_ima_ascii(text: str | bytes, start_line: int = 0) -> list[ImaEntry]:
    """Parse an ASCII measurement list, skipping its first ``start_line`` lines (already verified).

    Errors name 1-based line numbers of ``text``. Lines end with ``\\n`` only, as the kernel writes.
    """
    try:
        data = text.encode("utf-8", "surrogateescape") if isinstance(text, str) else bytes(text)
    except UnicodeEncodeError:
        raise EvidenceError(Failure.IMA_MALFORMED, "IMA log text is not encodable as UTF-8") from None
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    if not 0 <= start_line <= len(lines):
        raise EvidenceError(Failure.IMA_MALFORMED, f"log has {len(lines)} lines, cannot resume at {start_line}")
    entries: list[ImaEntry] = []
    append = entries.append
    templates, pcrs, hashers = _ASCII_TEMPLATES, _PCR_INDEX, _HASHERS
    for number, line in enumerate(lines[start_line:], start_line + 1):
        try:
            pcr_field, hash_field, template, fields = line.split(b" ", 3)
            pcr = pcrs[pcr_field]
            stated = unhexlify(hash_field)
            hasher = hashers[len(stated)]
            entry = templates[template](pcr, stated, fields)
        except (ValueError, KeyError) as exc:
            raise _ascii_error(number, line, exc) from None
        if hasher(entry.template_data).digest() != stated and any(stated):
            raise _hash_mismatch(f"line {number}", entry)
        append(entry)
    return entries


def _ascii_error(number: int, line: bytes, exc: Exception) -> EvidenceError:
    """Explain which part of a line is wrong (only runs on the error path)."""
    parts = line.split(b" ", 3)
    if isinstance(exc, _Malformed):
        why = str(exc)
    elif len(parts) < 4:
        why = "expected 'PCR template-hash template-name fields...'"
    elif parts[0] not in _PCR_INDEX:
        why = f"bad PCR index {parts[0][:8]!r}"
    elif parts[2] not in _ASCII_TEMPLATES:
        why = f"unsupported template {parts[2][:32]!r}"
    elif not _is_template_hash(parts[1]):
        why = f"template hash {parts[1][:16]!r}... is not hex of a SHA-1/SHA-2 digest"
    else:
        why = f"bad field ({exc})"
    return EvidenceError(Failure.IMA_MALFORMED, f"line {number}: {why}")


def _is_template_hash(field: bytes) -> bool:
    try:
        return len(unhexlify(field)) in _HASHERS
    except ValueError:
        return False


def _hash_mismatch(where: str, entry: ImaEntry) -> EvidenceError:
    stated = entry.template_hash.hex()
    why = f"template hash {stated} is not the hash of its template data"
    return EvidenceError(Failure.IMA_TEMPLATE_HASH, f"{where} ({display_path(entry.path)}): {why}")


# ---------------------------------------------------------------------------------------------------
# Binary


# Template -> (name, field count); "ima" has its own layout.
_BINARY_TEMPLATES = {IMA_NG.encode(): (IMA_NG, 2), IMA_SIG.encode(): (IMA_SIG, 3), IMA_BUF.encode(): (IMA_BUF, 3)}
_unpack_u32 = _U32.unpack_from


def _binary_ng(pcr: int, stated: bytes, template: tuple[str, int], data: bytes) -> ImaEntry:
    """Template data of ``ima-*`` templates: exactly 2 or 3 fields of ``u32 len || bytes``.

    Lengths are not checked one by one: one running past the end makes the next unpack fail
    (struct.error) or the final position differ from the end.
    """
    name, count = template
    (size,) = _unpack_u32(data, 0)
    dng, pos = data[4 : 4 + size], 4 + size
    (size,) = _unpack_u32(data, pos)
    nng, pos = data[pos + 4 : pos + 4 + size], pos + 4 + size
    extra = None
    if count == 3:
        (size,) = _unpack_u32(data, pos)
        extra, pos = data[pos + 4 : pos + 4 + size], pos + 4 + size
    if pos != len(data):
        raise _Malformed(f"template fields take {pos} bytes of {len(data)}")
    alg, sep, digest = dng.partition(b":\0")
    if not sep or nng[-1:] != b"\0":
        raise _Malformed("d-ng field without '<algo>:' or n-ng field without NUL")
    if name == IMA_SIG:
        return _entry(pcr, stated, name, data, alg, digest, nng[:-1], sig=extra)
    return _entry(pcr, stated, name, data, alg, digest, nng[:-1], buf=extra)


def _binary_entry(data: bytes, pos: int, hash_size: int) -> tuple[ImaEntry, int]:
    """One record at ``pos``; returns it and the position after it. Reading a u32 past the end
    raises struct.error, reported as truncation; short byte strings are caught by position."""
    (pcr,) = _unpack_u32(data, pos)
    stated = data[pos + 4 : pos + 4 + hash_size]
    (name_len,) = _unpack_u32(data, pos + 4 + hash_size)
    pos += 8 + hash_size
    if pcr >= len(_PCR_INDEX) or name_len > IMA_NAME_LEN_MAX:
        raise _Malformed(f"PCR index {pcr} or template name length {name_len} out of range")
    raw_name = data[pos : pos + name_len]
    pos += name_len
    if raw_name == b"ima":
        # IMA_SHOW_BINARY_NO_FIELD_LEN digest, then IMA_SHOW_BINARY_OLD_STRING_FMT name (no NUL).
        digest = data[pos : pos + 20]
        (size,) = _unpack_u32(data, pos + 20)
        name = data[pos + 24 : pos + 24 + size]
        pos += 24 + size
        if pos > len(data):
            raise _Malformed("truncated ima template record")
        return _legacy_entry(pcr, stated, digest, name), pos
    template = _BINARY_TEMPLATES.get(raw_name)
    if template is None:
        raise _Malformed(f"unsupported template {raw_name[:32]!r}")
    (size,) = _unpack_u32(data, pos)
    body = data[pos + 4 : pos + 4 + size]
    pos += 4 + size
    if pos > len(data):
        raise _Malformed(f"template data of {size} bytes runs past the end")
    return _binary_ng(pcr, stated, template, body), pos


def parse_ima_binary(data: bytes, template_hash_size: int = 20) -> list[ImaEntry]:
    """Parse a binary measurement list whose template hashes have ``template_hash_size`` bytes
    (20 for ``binary_runtime_measurements``, 32 for ``binary_runtime_measurements_sha256``)."""
    hasher = _HASHERS.get(template_hash_size)
    if hasher is None:
        raise EvidenceError(Failure.IMA_MALFORMED, f"unsupported template hash size {template_hash_size}")
    data = bytes(data)
    entries: list[ImaEntry] = []
    append = entries.append
    pos, end = 0, len(data)
    while pos < end:
        try:
            entry, pos = _binary_entry(data, pos, template_hash_size)
        except struct.error:
            raise EvidenceError(Failure.IMA_MALFORMED, f"entry {len(entries) + 1}: truncated") from None
        except ValueError as exc:
            raise EvidenceError(Failure.IMA_MALFORMED, f"entry {len(entries) + 1}: {exc}") from None
        if hasher(entry.template_data).digest() != entry.template_hash and any(entry.template_hash):
            raise _hash_mismatch(f"entry {len(entries) + 1}", entry)
        append(entry)
    return entries
