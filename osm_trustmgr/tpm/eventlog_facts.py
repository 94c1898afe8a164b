"""Facts a trust policy needs from a UEFI event log: Secure Boot state and boot components.

These functions trust only what the log's digests bind: an event whose data is supposed to be
hashed into its digest (UEFI variables, separators, GRUB strings) is used only when it is, so a
log edited to claim "SecureBoot=1" while keeping the original digests yields a problem, not a
fact. Whether the digests themselves are genuine is decided by replaying against a quote.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from osm_trustmgr.tpm.algorithms import hash_by_name
from osm_trustmgr.tpm.errors import EvidenceError
from osm_trustmgr.tpm.eventlog_decode import ipl_kind, ipl_string
from osm_trustmgr.tpm.eventlog_types import Event, EventLog, EventType
from osm_trustmgr.tpm.eventlog_uefi import (
    EFI_CERT_SHA256,
    EFI_CERT_X509,
    UefiVariable,
    der_certificate,
    device_path_text,
    looks_utf16,
    parse_image_load,
    parse_signature_lists,
    parse_variable,
    text,
)

SECURE_BOOT_PCR = 7


def digest_covers(ev: Event, data: bytes) -> bool:
    """True when every digest in a bank we can hash is the hash of ``data`` (and one was checked)."""
    checked = False
    for bank, digest in ev.digests.items():
        alg = hash_by_name(bank)
        if alg is None:
            continue
        if alg.digest(data) != digest:
            return False
        checked = True
    return checked


@dataclass(frozen=True)
class VariableFact:
    """A Secure Boot variable as measured into PCR 7.

    ``data_sha256`` hashes the variable's value (comparable across banks and with the value read
    from efivarfs); ``event_sha256`` is the log's own SHA-256 digest of the whole UEFI_VARIABLE_DATA.
    """

    index: int
    name: str
    guid: str
    size: int
    data_sha256: str
    event_sha256: str | None


@dataclass(frozen=True)
class Authority:
    """An EV_EFI_VARIABLE_AUTHORITY event: the db entry (or shim's MOK/SBAT item) that verified an image."""

    index: int
    name: str
    data_sha256: str
    certificate_sha256: str | None
    after_separator: bool


@dataclass(frozen=True)
class SecureBootState:
    """Secure Boot as the PCR 7 events describe it; ``problems`` lists events that could not be used."""

    enabled: bool | None
    variables: dict[str, VariableFact]
    db_certificates: tuple[str, ...]
    db_hashes: tuple[str, ...]
    dbx_hashes: tuple[str, ...]
    authorities: tuple[Authority, ...]
    actions: tuple[str, ...]
    separator_seen: bool
    problems: tuple[str, ...]


class _SecureBootCollector:
    """Walks PCR 7 once; each event kind has a small handler."""

    def __init__(self) -> None:
        self.variables: dict[str, VariableFact] = {}
        self.values: dict[str, bytes] = {}
        self.authorities: list[Authority] = []
        self.actions: list[str] = []
        self.problems: list[str] = []
        self.separator_seen = False

    def event(self, ev: Event) -> None:
        if ev.type == EventType.EV_SEPARATOR:
            self.separator(ev)
        elif ev.type == EventType.EV_EFI_VARIABLE_DRIVER_CONFIG:
            self.variable(ev)
        elif ev.type == EventType.EV_EFI_VARIABLE_AUTHORITY:
            self.authority(ev)
        elif ev.type == EventType.EV_EFI_ACTION:
            # e.g. "UEFI Debug Mode", "DMA Protection Disabled": the policy decides what they mean.
            self.actions.append(text(ev.data))

    def separator(self, ev: Event) -> None:
        if self.separator_seen:
            self.problems.append(f"event {ev.index}: second EV_SEPARATOR in PCR 7")
        elif ev.data != bytes(4) or not digest_covers(ev, ev.data):
            self.problems.append(f"event {ev.index}: PCR 7 separator is not the normal zero separator")
        self.separator_seen = True

    def verified_variable(self, ev: Event) -> UefiVariable | None:
        try:
            var = parse_variable(ev.data)
        except EvidenceError as exc:
            self.problems.append(f"event {ev.index}: {exc.detail}")
            return None
        if not digest_covers(ev, ev.data):
            self.problems.append(f"event {ev.index}: digest of {var.name!r} does not match its data")
            return None
        return var

    def variable(self, ev: Event) -> None:
        var = self.verified_variable(ev)
        if var is None:
            return
        if self.separator_seen:
            self.problems.append(f"event {ev.index}: variable {var.name!r} measured after the separator")
            return
        if var.name in self.variables:
            self.problems.append(f"event {ev.index}: variable {var.name!r} measured twice")
            return
        sha256 = ev.digests.get("sha256")
        self.variables[var.name] = VariableFact(
            ev.index, var.name, var.guid, len(var.data), hashlib.sha256(var.data).hexdigest(),
            sha256.hex() if sha256 is not None else None,
        )  # fmt: skip
        self.values[var.name] = var.data

    def authority(self, ev: Event) -> None:
        var = self.verified_variable(ev)
        if var is None:
            return
        # EFI_SIGNATURE_DATA: owner GUID, then (for X.509 db entries) the DER certificate.
        der = der_certificate(var.data[16:])
        cert = hashlib.sha256(der).hexdigest() if der else None
        digest = hashlib.sha256(var.data).hexdigest()
        self.authorities.append(Authority(ev.index, var.name, digest, cert, self.separator_seen))

    def enabled(self) -> bool | None:
        if "SecureBoot" not in self.values:
            return None
        value = self.values["SecureBoot"]
        # PFP: an absent variable is measured with zero-length data; that means "not enabled".
        if value in (b"", b"\x00"):
            return False
        if value == b"\x01":
            return True
        self.problems.append(f"SecureBoot value {value.hex()} is neither 0 nor 1")
        return None

    def signatures(self, name: str, type_guid: str) -> tuple[str, ...]:
        value = self.values.get(name)
        if value is None:
            return ()
        try:
            lists = parse_signature_lists(value)
        except EvidenceError as exc:
            self.problems.append(f"{name}: {exc.detail}")
            return ()
        data = [sig for sl in lists if sl.type_guid == type_guid for _, sig in sl.entries]
        if type_guid == EFI_CERT_X509:
            return tuple(hashlib.sha256(der).hexdigest() for der in data)
        return tuple(sig.hex() for sig in data)


def secure_boot_state(log: EventLog) -> SecureBootState:
    """Secure Boot facts from PCR 7: the SecureBoot variable, PK/KEK/db/dbx, authorities, separator."""
    c = _SecureBootCollector()
    for ev in log.events:
        if ev.pcr == SECURE_BOOT_PCR:
            c.event(ev)
    enabled = c.enabled()
    return SecureBootState(
        enabled=enabled,
        variables=dict(c.variables),
        db_certificates=c.signatures("db", EFI_CERT_X509),
        db_hashes=c.signatures("db", EFI_CERT_SHA256),
        dbx_hashes=c.signatures("dbx", EFI_CERT_SHA256),
        authorities=tuple(c.authorities),
        actions=tuple(c.actions),
        separator_seen=c.separator_seen,
        problems=tuple(c.problems),
    )


@dataclass(frozen=True)
class BootComponent:
    """Something the boot chain measured after the firmware: an EFI application (PCR 4), a file
    GRUB loaded (PCR 9), or a GRUB command / kernel command line (PCR 8).

    ``verified`` says whether the digest is the hash of ``value`` (PCR 8 strings); it is None when
    the digest covers something not in the log (an image's Authenticode hash, a file's bytes).
    """

    index: int
    pcr: int
    kind: str
    digests: dict[str, str]
    path: str | None
    value: str | None
    verified: bool | None


def boot_components(log: EventLog) -> list[BootComponent]:
    """EFI applications in PCR 4 and GRUB's EV_IPL items in PCRs 8 and 9, in log order."""
    out = []
    for ev in log.events:
        if ev.pcr == 4 and ev.type == EventType.EV_EFI_BOOT_SERVICES_APPLICATION:
            out.append(_application(ev))
        elif ev.pcr in (8, 9) and ev.type == EventType.EV_IPL:
            out.append(_ipl_component(ev))
    return out


def kernel_cmdline(log: EventLog) -> str | None:
    """The last kernel command line GRUB measured into PCR 8 whose digest matches its text."""
    lines = [c.value for c in boot_components(log) if c.kind == "kernel_cmdline" and c.verified]
    return lines[-1] if lines else None


def _hex_digests(ev: Event) -> dict[str, str]:
    return {bank: d.hex() for bank, d in ev.digests.items()}


def _application(ev: Event) -> BootComponent:
    try:
        device_path = device_path_text(parse_image_load(ev.data).device_path)
    except EvidenceError:
        path = None
    else:
        # Firmware-internal applications have no file path, only Fv()/FvFile() GUIDs.
        path = device_path.file_path or device_path.text or None
    return BootComponent(ev.index, ev.pcr, "efi_application", _hex_digests(ev), path, None, None)


def _ipl_component(ev: Event) -> BootComponent:
    string = ipl_string(ev)
    kind, value = ipl_kind(ev.pcr, string)
    if kind == "file":
        return BootComponent(ev.index, ev.pcr, kind, _hex_digests(ev), value, None, None)
    return BootComponent(ev.index, ev.pcr, kind, _hex_digests(ev), None, value, _string_verified(ev, value))


def _string_verified(ev: Event, value: str) -> bool:
    """GRUB hashes the string after its prefix, without (newer) or with (older) the trailing NUL;
    systemd-boot hashes the whole (CHAR16) event data."""
    if looks_utf16(ev.data):
        return digest_covers(ev, ev.data)
    raw = value.encode()
    return any(digest_covers(ev, candidate) for candidate in (raw, raw + b"\x00", ev.data))
