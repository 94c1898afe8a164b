"""Generate IMA measurement lists (tests, sandbox): entries with correct template hashes, both
securityfs renderings, and the PCR 10 extends per bank so a (software) TPM can be brought in line.

Rendering mirrors ima_fs.c (ima_ascii_measurements_show, ima_measurements_show); the template data
comes from :mod:`osm_trustmgr.tpm.ima_templates`, the same code the parsers check against.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils

from osm_trustmgr.tpm.algorithms import SHA1, HashAlg
from osm_trustmgr.tpm.ima_replay import BootAggregateForm, boot_aggregate_digest, pcr10_digests, replay_ima
from osm_trustmgr.tpm.ima_templates import (
    BOOT_AGGREGATE,
    DIGEST_SIZES,
    IMA,
    IMA_BUF,
    IMA_NAME_LEN_MAX,
    IMA_NG,
    IMA_PCR,
    IMA_SIG,
    TEMPLATES,
    ImaEntry,
    ImaSignatureV2,
    PrivateKey,
    crypto_hash,
    encode_signature_v2,
    ima_keyid,
    path_bytes,
    template_data,
)

_U32 = struct.Struct("<I")


def file_digest(digest_alg: str, content: bytes) -> bytes:
    """The file digest IMA records (kernel hash names: ``sha3-256`` is hashlib's ``sha3_256``)."""
    return hashlib.new(digest_alg.replace("-", "_"), content).digest()


@dataclass(frozen=True)
class ImaSigner:
    """Signs file digests like ``evmctl ima_sign`` (v2 header, keyid from the public key)."""

    private_key: PrivateKey
    keyid: int | None = None

    def sign(self, digest_alg: str, digest: bytes) -> bytes:
        algorithm = crypto_hash(digest_alg)
        if algorithm is None:
            raise ValueError(f"cannot sign {digest_alg} digests")
        prehashed = utils.Prehashed(algorithm)
        if isinstance(self.private_key, rsa.RSAPrivateKey):
            raw = self.private_key.sign(digest, padding.PKCS1v15(), prehashed)
        else:
            raw = self.private_key.sign(digest, ec.ECDSA(prehashed))
        keyid = self.keyid if self.keyid is not None else ima_keyid(self.private_key.public_key())
        return encode_signature_v2(ImaSignatureV2(digest_alg, keyid, raw))


def make_entry(
    template: str,
    path: str,
    digest: bytes,
    *,
    digest_alg: str = "sha256",
    signature: bytes | None = None,
    buf: bytes | None = None,
    template_hash: HashAlg = SHA1,
    violation: bool = False,
    pcr: int = IMA_PCR,
) -> ImaEntry:
    """One entry with its template data and template hash (zero for a violation)."""
    if template not in TEMPLATES:
        raise ValueError(f"unsupported template {template!r}")
    if template == IMA and (digest_alg != "sha1" or len(path_bytes(path)) > IMA_NAME_LEN_MAX):
        raise ValueError("the ima template records SHA-1 digests of names up to 255 bytes")
    data = template_data(template, digest_alg, digest, path_bytes(path), signature, buf)
    stated = bytes(template_hash.size) if violation else template_hash.digest(data)
    sig = (signature or None) if template == IMA_SIG else None
    return ImaEntry(pcr, stated, template, data, digest_alg, digest, path, sig, buf if template == IMA_BUF else None)


@dataclass
class ImaLogBuilder:
    """Accumulates entries like the kernel would for one boot.

    ``template_hash`` is the hash of the list being generated: SHA-1 for ``*_runtime_measurements``,
    the bank's for ``*_runtime_measurements_<algo>``.
    """

    template: str = IMA_NG
    digest_alg: str = "sha256"
    template_hash: HashAlg = SHA1
    entries: list[ImaEntry] = field(default_factory=list)

    def _add(self, entry: ImaEntry) -> ImaEntry:
        self.entries.append(entry)
        return entry

    def add_boot_aggregate(
        self, pcrs: Mapping[int, bytes], bank: HashAlg, form: BootAggregateForm | None = None
    ) -> ImaEntry:
        """The first entry: ``bank``'s PCRs 0-7 (SHA-1) or 0-9 (others) hashed, recorded with the
        log's template (ima_init.c, ima_add_boot_aggregate)."""
        if form is None:
            form = BootAggregateForm.PCRS_0_7 if bank.name == "sha1" else BootAggregateForm.PCRS_0_9
        digest = boot_aggregate_digest(pcrs, bank, form)
        template = IMA_NG if self.template == IMA_BUF else self.template
        return self._add(
            make_entry(template, BOOT_AGGREGATE, digest, digest_alg=bank.name, template_hash=self.template_hash)
        )

    def add_file(
        self,
        path: str,
        content: bytes | None = None,
        *,
        digest: bytes | None = None,
        digest_alg: str | None = None,
        template: str | None = None,
        signer: ImaSigner | None = None,
    ) -> ImaEntry:
        """A measured file, from its content or its digest; ``signer`` adds an ima-sig signature."""
        alg = digest_alg or ("sha1" if (template or self.template) == IMA else self.digest_alg)
        if digest is None:
            digest = file_digest(alg, content if content is not None else path.encode())
        template = template or (IMA_SIG if signer else self.template)
        signature = signer.sign(alg, digest) if signer else None
        entry = make_entry(
            template, path, digest, digest_alg=alg, signature=signature, template_hash=self.template_hash
        )
        return self._add(entry)

    def add_buffer(self, name: str, buf: bytes, *, digest_alg: str | None = None) -> ImaEntry:
        """An ``ima-buf`` measurement such as ``kexec-cmdline`` (ima_main.c, process_buffer_measurement)."""
        alg = digest_alg or self.digest_alg
        digest = file_digest(alg, buf)
        return self._add(make_entry(IMA_BUF, name, digest, digest_alg=alg, buf=buf, template_hash=self.template_hash))

    def add_violation(self, path: str, *, template: str | None = None) -> ImaEntry:
        """A ToMToU / open-writers violation: zero digest, zero template hash (ima_api.c, ima_add_violation)."""
        template = template or (IMA_NG if self.template == IMA_BUF else self.template)
        alg = "sha1" if template == IMA else self.digest_alg
        digest = bytes(DIGEST_SIZES[alg])
        entry = make_entry(template, path, digest, digest_alg=alg, template_hash=self.template_hash, violation=True)
        return self._add(entry)

    def pcr10_extends(self, bank: HashAlg) -> list[bytes]:
        """The digests to extend into ``bank``'s PCR 10, in order, to match this log."""
        return list(pcr10_digests(self.entries, bank))

    def pcr10(self, bank: HashAlg) -> bytes:
        return replay_ima(self.entries, bank)

    def ascii(self) -> str:
        return format_ima_ascii(self.entries)

    def binary(self) -> bytes:
        return format_ima_binary(self.entries)


def _ascii_line(entry: ImaEntry) -> str:
    head = f"{entry.pcr} {entry.template_hash.hex()} {entry.template_name}"
    if entry.template_name == IMA:
        return f"{head} {entry.file_digest.hex()} {entry.path}"
    line = f"{head} {entry.digest_alg}:{entry.file_digest.hex()} {entry.path}"
    if entry.template_name == IMA_SIG:
        line += " " + (entry.signature or b"").hex()  # an empty field still gets its space
    elif entry.template_name == IMA_BUF:
        line += " " + (entry.buf or b"").hex()
    return line


def format_ima_ascii(entries: Iterable[ImaEntry]) -> str:
    """``ascii_runtime_measurements`` text; non-UTF-8 path bytes stay surrogate escapes."""
    return "".join(_ascii_line(entry) + "\n" for entry in entries)


def _binary_record(entry: ImaEntry) -> bytes:
    name = entry.template_name.encode()
    head = _U32.pack(entry.pcr) + entry.template_hash + _U32.pack(len(name)) + name
    if entry.template_name == IMA:
        # Legacy layout: bare digest, then the name without its NUL (IMA_SHOW_BINARY_OLD_STRING_FMT).
        raw_name = path_bytes(entry.path)
        return head + entry.file_digest + _U32.pack(len(raw_name)) + raw_name
    return head + _U32.pack(len(entry.template_data)) + entry.template_data


def format_ima_binary(entries: Iterable[ImaEntry]) -> bytes:
    """``binary_runtime_measurements`` bytes (little-endian)."""
    return b"".join(map(_binary_record, entries))
