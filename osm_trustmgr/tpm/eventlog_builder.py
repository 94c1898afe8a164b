"""Build valid TCG PC Client event logs: for tests, and for a sandbox that extends the same
digests into a software TPM so that a generated log and a real quote agree.

Items say what was measured (:class:`LogItem`); helpers produce the events real firmware, shim and
GRUB write, with the digest each of them really computes (e.g. GRUB hashes a command without its
"grub_cmd: " prefix, so that digest is explicit). :func:`build_eventlog` returns the log bytes and
the ``(pcr, {bank: digest})`` extends a caller replays into a TPM.
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from osm_trustmgr.tpm.algorithms import ALG_SM3_256, DIGEST_SIZES, HASHES_BY_NAME, hash_by_name
from osm_trustmgr.tpm.eventlog_types import EventType
from osm_trustmgr.tpm.eventlog_uefi import EFI_CERT_SHA256, EFI_CERT_X509, EFI_GLOBAL_VARIABLE
from osm_trustmgr.tpm.eventlog_uefi import EFI_IMAGE_SECURITY_DATABASE as IMAGE_SECURITY_DATABASE

DEFAULT_BANKS = ("sha1", "sha256")
_ALG_IDS = {**{h.name: h.alg_id for h in HASHES_BY_NAME.values()}, "sm3_256": ALG_SM3_256}
_SECURE_BOOT_DATABASES = {"PK": EFI_GLOBAL_VARIABLE, "KEK": EFI_GLOBAL_VARIABLE}
OWNER_TEST = "6e2d4f1c-5a3b-4c7d-8e9f-0a1b2c3d4e5f"


@dataclass(frozen=True)
class LogItem:
    """One event to write. ``banks`` limits the digests written (None: every bank of the log);
    ``digests`` gives explicit digests; other banks get the bank hash of ``data`` (zeros for
    EV_NO_ACTION, which PFP requires)."""

    pcr: int
    event_type: int
    data: bytes
    banks: tuple[str, ...] | None = None
    digests: Mapping[str, bytes] = field(default_factory=dict)


@dataclass(frozen=True)
class BuiltLog:
    """Log bytes plus the extends, in order, that make a TPM's PCRs match the log."""

    data: bytes
    extends: tuple[tuple[int, dict[str, bytes]], ...]


def build_eventlog(items: Iterable[LogItem], banks: Sequence[str] = DEFAULT_BANKS) -> BuiltLog:
    """A crypto-agile log: Spec ID event for ``banks``, then one TCG_PCR_EVENT2 per item."""
    out = [spec_id_event(banks)]
    extends = []
    for item in items:
        digests = _digests(item, item.banks or tuple(banks))
        values = b"".join(struct.pack("<H", _ALG_IDS[b]) + d for b, d in digests.items())
        header = struct.pack("<III", item.pcr, item.event_type, len(digests))
        out.append(header + values + struct.pack("<I", len(item.data)) + item.data)
        if item.event_type != EventType.EV_NO_ACTION:
            extends.append((item.pcr, digests))
    return BuiltLog(b"".join(out), tuple(extends))


def build_legacy_eventlog(items: Iterable[LogItem]) -> BuiltLog:
    """A TPM 1.2-style SHA-1 log (TCG_PCClientPCREvent only, no Spec ID event)."""
    out = []
    extends = []
    for item in items:
        digests = _digests(item, ("sha1",))
        out.append(_legacy_event(item.pcr, item.event_type, digests["sha1"], item.data))
        if item.event_type != EventType.EV_NO_ACTION:
            extends.append((item.pcr, digests))
    return BuiltLog(b"".join(out), tuple(extends))


def spec_id_event(banks: Sequence[str], vendor_info: bytes = b"") -> bytes:
    """The first event of a crypto-agile log: Spec ID Event03, PFP 2.0 errata 0, UINT64 uintn."""
    sizes = b"".join(struct.pack("<HH", _ALG_IDS[b], DIGEST_SIZES[_ALG_IDS[b]]) for b in banks)
    body = (
        b"Spec ID Event03\x00"
        + struct.pack("<IBBBBI", 0, 0, 2, 0, 2, len(banks))
        + sizes
        + bytes([len(vendor_info)])
        + vendor_info
    )
    return _legacy_event(0, EventType.EV_NO_ACTION, bytes(20), body)


def _legacy_event(pcr: int, event_type: int, sha1: bytes, data: bytes) -> bytes:
    return struct.pack("<II", pcr, event_type) + sha1 + struct.pack("<I", len(data)) + data


def _digests(item: LogItem, banks: Sequence[str]) -> dict[str, bytes]:
    out = {}
    for bank in banks:
        if bank in item.digests:
            out[bank] = item.digests[bank]
        elif item.event_type == EventType.EV_NO_ACTION:
            out[bank] = bytes(DIGEST_SIZES[_ALG_IDS[bank]])
        else:
            alg = hash_by_name(bank)
            if alg is None:
                raise ValueError(f"bank {bank} needs an explicit digest")
            out[bank] = alg.digest(item.data)
    return out


def _hashed(content: bytes, banks: Sequence[str] = tuple(HASHES_BY_NAME)) -> dict[str, bytes]:
    """Digests of something not in the log (a firmware volume, an image, a file) in every bank."""
    return {b: HASHES_BY_NAME[b].digest(content) for b in banks}


# --- typical events -------------------------------------------------------------------------


def startup_locality(locality: int) -> LogItem:
    return LogItem(0, EventType.EV_NO_ACTION, b"StartupLocality\x00" + bytes([locality]))


def crtm_version(version: str) -> LogItem:
    return LogItem(0, EventType.EV_S_CRTM_VERSION, _char16(version))


def firmware_blob(base: int, content: bytes) -> LogItem:
    data = struct.pack("<QQ", base, len(content))
    return LogItem(0, EventType.EV_EFI_PLATFORM_FIRMWARE_BLOB, data, digests=_hashed(content))


def uefi_variable_data(vendor_guid: str, name: str, value: bytes) -> bytes:
    """UEFI_VARIABLE_DATA: GUID, UINT64 name length in CHAR16, UINT64 data length, name, data."""
    encoded = name.encode("utf-16-le")
    return _guid(vendor_guid) + struct.pack("<QQ", len(name), len(value)) + encoded + value


def variable(
    name: str,
    value: bytes,
    vendor_guid: str = EFI_GLOBAL_VARIABLE,
    pcr: int = 7,
    event_type: int = EventType.EV_EFI_VARIABLE_DRIVER_CONFIG,
) -> LogItem:
    """A variable event whose digest covers the whole UEFI_VARIABLE_DATA (PFP)."""
    return LogItem(pcr, event_type, uefi_variable_data(vendor_guid, name, value))


def boot_variable(name: str, value: bytes) -> LogItem:
    """EV_EFI_VARIABLE_BOOT in PCR 1. EDK2-derived firmware (all our real logs) hash only the
    variable's value for this event type, not the whole UEFI_VARIABLE_DATA; we do the same."""
    data = uefi_variable_data(EFI_GLOBAL_VARIABLE, name, value)
    return LogItem(1, EventType.EV_EFI_VARIABLE_BOOT, data, digests=_hashed(value))


def secure_boot(enabled: bool) -> LogItem:
    return variable("SecureBoot", b"\x01" if enabled else b"\x00")


def signature_list(type_guid: str, entries: Sequence[bytes], owner: str = OWNER_TEST) -> bytes:
    """One EFI_SIGNATURE_LIST of equal-size entries, each prefixed by its owner GUID."""
    if not entries or len({len(e) for e in entries}) != 1:
        raise ValueError("a signature list needs entries of one size")
    size = 16 + len(entries[0])
    header = _guid(type_guid) + struct.pack("<III", 28 + size * len(entries), 0, size)
    return header + b"".join(_guid(owner) + e for e in entries)


def x509_list(certificates: Iterable[bytes], owner: str = OWNER_TEST) -> bytes:
    """EFI_SIGNATURE_LISTs of X.509 certificates (one list per certificate, as firmware does)."""
    return b"".join(signature_list(EFI_CERT_X509, [der], owner) for der in certificates)


def sha256_list(hashes: Sequence[bytes], owner: str = OWNER_TEST) -> bytes:
    return signature_list(EFI_CERT_SHA256, hashes, owner)


def secure_boot_database(name: str, value: bytes) -> LogItem:
    """PK, KEK (EFI global variables) or db, dbx (image security database) in PCR 7."""
    return variable(name, value, _SECURE_BOOT_DATABASES.get(name, IMAGE_SECURITY_DATABASE))


def authority(certificate: bytes, owner: str = OWNER_TEST) -> LogItem:
    """EV_EFI_VARIABLE_AUTHORITY: the db certificate that verified an image (EFI_SIGNATURE_DATA)."""
    data = uefi_variable_data(IMAGE_SECURITY_DATABASE, "db", _guid(owner) + certificate)
    return LogItem(7, EventType.EV_EFI_VARIABLE_AUTHORITY, data)


def separator(pcr: int, error: bool = False) -> LogItem:
    return LogItem(pcr, EventType.EV_SEPARATOR, struct.pack("<I", 1 if error else 0))


def efi_action(pcr: int, action: str) -> LogItem:
    return LogItem(pcr, EventType.EV_EFI_ACTION, action.encode())


def boot_application(path: str, image: bytes, pcr: int = 4) -> LogItem:
    """EV_EFI_BOOT_SERVICES_APPLICATION loaded from a file path. Real firmware hashes the PE
    image's Authenticode digest; the builder hashes ``image`` as a stand-in."""
    node = _char16(path)
    device_path = struct.pack("<BBH", 4, 4, 4 + len(node)) + node + b"\x7f\xff\x04\x00"
    data = struct.pack("<QQQQ", 0x7E000000, len(image), 0, len(device_path)) + device_path
    return LogItem(pcr, EventType.EV_EFI_BOOT_SERVICES_APPLICATION, data, digests=_hashed(image))


def grub_command(command: str) -> LogItem:
    """GRUB measures each command into PCR 8, hashing it without the prefix and the NUL."""
    return _grub_string("grub_cmd: ", command)


def grub_kernel_cmdline(cmdline: str) -> LogItem:
    return _grub_string("kernel_cmdline: ", cmdline)


def grub_file(path: str, content: bytes) -> LogItem:
    """GRUB measures each file it reads into PCR 9; the event data is only its path."""
    return LogItem(9, EventType.EV_IPL, path.encode() + b"\x00", digests=_hashed(content))


def _grub_string(prefix: str, value: str) -> LogItem:
    raw = value.encode()
    return LogItem(8, EventType.EV_IPL, prefix.encode() + raw + b"\x00", digests=_hashed(raw))


def typical_boot(
    *,
    secure_boot_enabled: bool = True,
    db: Sequence[bytes] = (),
    dbx: Sequence[bytes] = (b"\x11" * 32,),
    cmdline: str = "(hd0,gpt2)/vmlinuz root=/dev/vda2 ro quiet",
    kernel: bytes = b"kernel image",
) -> list[LogItem]:
    """A plausible UEFI + shim + GRUB boot: firmware in PCR 0, Secure Boot in 7, separators in
    0-7, shim and GRUB in 4, GRUB's commands in 8 and files in 9, ExitBootServices in 5."""
    items = [crtm_version("osm-trustmgr test firmware 1.0"), firmware_blob(0xFF000000, b"firmware volume")]
    items += [secure_boot(secure_boot_enabled), secure_boot_database("PK", x509_list(db[:1]))]
    items += [secure_boot_database("KEK", x509_list(db[:1])), secure_boot_database("db", x509_list(db))]
    items += [secure_boot_database("dbx", sha256_list(list(dbx))), separator(7)]
    items += [boot_variable("BootOrder", b"\x01\x00"), efi_action(4, "Calling EFI Application from Boot Option")]
    items += [separator(pcr) for pcr in (0, 1, 2, 3, 4, 5, 6)]
    items += [boot_application("\\EFI\\BOOT\\BOOTX64.EFI", b"shim image")]
    items += [authority(der) for der in db[:1]]
    items += [boot_application("\\EFI\\osm\\grubx64.efi", b"grub image")]
    items += [grub_file("(hd0,gpt1)/EFI/osm/grub.cfg", b"configfile"), grub_command("set timeout=5")]
    items += [grub_command(f"linux {cmdline}"), grub_file(cmdline.split(" ", 1)[0], kernel)]
    items += [grub_kernel_cmdline(cmdline), grub_file("(hd0,gpt2)/initramfs.img", b"initrd")]
    items += [efi_action(5, "Exit Boot Services Invocation"), efi_action(5, "Exit Boot Services Returned with Success")]
    return items


def _char16(value: str) -> bytes:
    return (value + "\x00").encode("utf-16-le")


def _guid(value: str) -> bytes:
    return uuid.UUID(value).bytes_le
