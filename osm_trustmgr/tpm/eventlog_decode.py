"""Typed, JSON-friendly decoding of event data, and the JSON report of a whole log.

Decoding is for people and for the fact extractors; it never raises. Event data is only as
trustworthy as the replay that covers it, and for most event types the digest is not a hash of
the data at all (a boot application's digest is its Authenticode hash), so nothing here verifies.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from typing import Any

from cryptography import x509

from osm_trustmgr.tpm.errors import EvidenceError
from osm_trustmgr.tpm.eventlog_types import Event, EventLog, EventType, LeReader, bank_name
from osm_trustmgr.tpm.eventlog_uefi import (
    EFI_CERT_X509,
    GUID_NAMES,
    der_certificate,
    device_path_text,
    guid,
    is_printable,
    looks_utf16,
    parse_image_load,
    parse_load_option,
    parse_signature_lists,
    parse_variable,
    read_guid,
    text,
    utf16,
)
from osm_trustmgr.tpm.pcr import PcrBanks

Decoded = dict[str, Any]

SIGNATURE_DATABASES = frozenset({"PK", "KEK", "db", "dbx", "dbt", "dbr", "MokList", "MokListX"})
_BOOT_OPTION = re.compile(r"Boot[0-9A-Fa-f]{4}")
# GRUB prefixes its PCR 8 strings with the kind of string: "grub_cmd: ", "kernel_cmdline: ",
# "module_cmdline: "; older Red Hat builds wrote "grub_kernel_cmdline " without the colon.
_IPL_PREFIX = re.compile(r"(grub_cmd|kernel_cmdline|module_cmdline|grub_kernel_cmdline):? ")


def decode_event(ev: Event) -> Decoded:
    """Describe an event's data; on undecodable data the result has an ``error`` field."""
    decoder = _DECODERS.get(ev.type, _generic)
    try:
        return decoder(ev)
    except EvidenceError as exc:
        return {"error": exc.detail, "data": ev.data.hex()}


def ipl_string(ev: Event) -> str:
    """The text of an EV_IPL event: GRUB writes ASCII, systemd-boot and shim may write CHAR16."""
    return utf16(ev.data) if looks_utf16(ev.data) else text(ev.data)


def ipl_kind(pcr: int, string: str) -> tuple[str, str]:
    """Classify an EV_IPL string: (kind, value), e.g. ("kernel_cmdline", "(hd0,gpt2)/vmlinuz ...")."""
    match = _IPL_PREFIX.match(string)
    if match:
        kind = "kernel_cmdline" if match[1] == "grub_kernel_cmdline" else match[1]
        return kind, string[match.end() :]
    return ("file" if pcr == 9 else "string"), string


def certificate_info(der: bytes) -> Decoded:
    """SHA-256 fingerprint (always) and subject (when the DER parses) of a certificate."""
    out: Decoded = {"sha256": hashlib.sha256(der).hexdigest()}
    try:
        out["subject"] = x509.load_der_x509_certificate(der).subject.rfc4514_string()
    except ValueError as exc:
        out["certificate_error"] = str(exc)
    return out


def to_dict(log: EventLog, replayed: PcrBanks) -> Decoded:
    """JSON-able report: every event decoded, and the replayed PCRs as ``{bank: {"0": hex}}``."""
    return {
        "spec_version": log.spec_version,
        "banks": list(log.banks),
        "warnings": list(log.warnings),
        "events": [
            {
                "index": ev.index,
                "pcr": ev.pcr,
                "type": ev.type,
                "type_name": ev.type_name,
                "digests": {bank: d.hex() for bank, d in ev.digests.items()},
                "size": len(ev.data),
                "event": decode_event(ev),
            }
            for ev in log.events
        ],
        "pcrs": {
            bank: {str(pcr): value.hex() for pcr, value in sorted(values.items())} for bank, values in replayed.items()
        },
    }


def _generic(ev: Event) -> Decoded:
    out: Decoded = {"data": ev.data.hex()}
    string = utf16(ev.data) if looks_utf16(ev.data) else text(ev.data)
    if is_printable(string):
        out["string"] = string
    return out


def _string(ev: Event) -> Decoded:
    return {"string": text(ev.data)}


def _separator(ev: Event) -> Decoded:
    if len(ev.data) != 4:
        return {"data": ev.data.hex(), "error_separator": True}
    value = int.from_bytes(ev.data, "little")
    # PFP: 0 marks the normal end of pre-boot measurements, 1 an error; anything else is abnormal.
    return {"value": f"0x{value:08x}", "error_separator": value != 0}


def _variable(ev: Event) -> Decoded:
    var = parse_variable(ev.data)
    out: Decoded = {
        "variable_guid": var.guid,
        "unicode_name": var.name,
        "data_length": len(var.data),
    }
    if var.guid in GUID_NAMES:
        out["variable_guid_name"] = GUID_NAMES[var.guid]
    if var.trailing:
        out["trailing_bytes"] = var.trailing
    if ev.type == EventType.EV_EFI_VARIABLE_AUTHORITY:
        out.update(_authority_value(var.data))
    else:
        out.update(_variable_value(var.name, var.data))
    return out


def _variable_value(name: str, data: bytes) -> Decoded:
    if name in ("SecureBoot", "SetupMode", "AuditMode", "DeployedMode") and len(data) <= 1:
        value = data[0] if data else None
        out: Decoded = {"value": value}
        if name == "SecureBoot":
            out["secure_boot"] = value == 1
        return out
    if name in SIGNATURE_DATABASES:
        return _signature_database(data)
    if name == "BootOrder" and len(data) % 2 == 0:
        return {"boot_order": [f"Boot{int.from_bytes(data[i : i + 2], 'little'):04X}" for i in range(0, len(data), 2)]}
    if _BOOT_OPTION.fullmatch(name):
        return _boot_option(data)
    return {"data": data.hex()}


def _signature_database(data: bytes) -> Decoded:
    try:
        lists = parse_signature_lists(data)
    except EvidenceError as exc:
        return {"data": data.hex(), "signature_list_error": exc.detail}
    rendered = []
    for sl in lists:
        entries = []
        for owner, sig in sl.entries:
            entry: Decoded = {"owner": owner}
            entry.update(certificate_info(sig) if sl.type_guid == EFI_CERT_X509 else {"data": sig.hex()})
            entries.append(entry)
        rendered.append({"type": GUID_NAMES.get(sl.type_guid, sl.type_guid), "entries": entries})
    return {"signature_lists": rendered}


def _authority_value(data: bytes) -> Decoded:
    """EV_EFI_VARIABLE_AUTHORITY holds the EFI_SIGNATURE_DATA (owner + certificate) that verified an
    image; shim also logs its own SbatLevel/MokListTrusted values through this event type."""
    if der_certificate(data[16:]):
        return {"signature_owner": guid(data[:16]), "certificate": certificate_info(data[16:])}
    string = text(data)
    return {"string": string} if is_printable(string) else {"data": data.hex()}


def _boot_option(data: bytes) -> Decoded:
    option = parse_load_option(data)
    path = device_path_text(option.device_path)
    return {
        "attributes": option.attributes,
        "description": option.description,
        "device_path": path.text,
        "optional_data": option.optional_data.hex(),
    }


def _image_load(ev: Event) -> Decoded:
    image = parse_image_load(ev.data)
    path = device_path_text(image.device_path)
    return {
        "image_location": image.location,
        "image_length": image.length,
        "link_time_address": image.link_time_address,
        "device_path": image.device_path.hex(),
        "device_path_text": path.text,
        "file_path": path.file_path,
    }


def _ipl(ev: Event) -> Decoded:
    string = ipl_string(ev)
    kind, value = ipl_kind(ev.pcr, string)
    return {"string": string, "kind": kind, "value": value}


def _crtm_version(ev: Event) -> Decoded:
    if looks_utf16(ev.data):
        return {"string": utf16(ev.data)}
    string = text(ev.data)
    if is_printable(string):
        return {"string": string}
    if len(ev.data) == 16:
        return {"guid": guid(ev.data)}
    return {"data": ev.data.hex()}


def _string_or_blob(ev: Event) -> Decoded:
    """EV_POST_CODE and EV_S_CRTM_CONTENTS hold either a UEFI_PLATFORM_FIRMWARE_BLOB or a string
    (e.g. "ACPI DATA", or Intel Boot Guard's "Boot Guard Measured S-CRTM")."""
    string = text(ev.data)
    if len(ev.data) == 16 and not is_printable(string):
        return _blob(ev)
    return {"string": string}


def _blob(ev: Event) -> Decoded:
    r = LeReader(ev.data)
    return {"blob_base": r.u64("BlobBase"), "blob_length": r.u64("BlobLength")}


def _blob2(ev: Event) -> Decoded:
    r = LeReader(ev.data)
    description = text(r.take(r.u8("BlobDescriptionSize"), "BlobDescription"))
    return {"description": description, "blob_base": r.u64("BlobBase"), "blob_length": r.u64("BlobLength")}


def _handoff_tables(ev: Event, described: bool = False) -> Decoded:
    r = LeReader(ev.data)
    out: Decoded = {}
    if described:
        out["description"] = text(r.take(r.u8("TableDescriptionSize"), "TableDescription"))
    count = r.u64("NumberOfTables")
    if count * 24 > r.remaining:
        raise r.fail(f"NumberOfTables {count} exceeds the event data")
    tables = []
    for _ in range(count):
        vendor = read_guid(r, "VendorGuid")
        tables.append({"guid": vendor, "name": GUID_NAMES.get(vendor), "address": r.u64("VendorTable")})
    out["tables"] = tables
    return out


def _gpt(ev: Event) -> Decoded:
    r = LeReader(ev.data)
    header = LeReader(r.take(92, "EFI_PARTITION_TABLE_HEADER"))
    if header.take(8) != b"EFI PART":
        raise r.fail("GPT header signature is not 'EFI PART'")
    header.take(48)  # revision, header size/CRC, reserved, LBAs
    disk = read_guid(header, "DiskGUID")
    header.take(12)  # PartitionEntryLBA, NumberOfPartitionEntries
    entry_size = header.u32("SizeOfPartitionEntry")
    count = r.u64("NumberOfPartitions")
    if entry_size < 128 or count * entry_size > r.remaining:
        raise r.fail(f"{count} GPT entries of {entry_size} bytes do not fit the event data")
    partitions = []
    for _ in range(count):
        entry = LeReader(r.take(entry_size, "GPT entry"))
        type_guid, unique = read_guid(entry), read_guid(entry)
        first, last, attributes = entry.u64(), entry.u64(), entry.u64()
        name = utf16(entry.take(72))
        partitions.append(
            {"type": type_guid, "guid": unique, "first_lba": first, "last_lba": last,
             "attributes": attributes, "name": name}
        )  # fmt: skip
    return {"disk_guid": disk, "partitions": partitions}


def _no_action(ev: Event) -> Decoded:
    data = ev.data
    if data.startswith(b"Spec ID Event03\x00"):
        return _spec_id(data)
    if len(data) == 17 and data.startswith(b"StartupLocality\x00"):
        return {"signature": "StartupLocality", "startup_locality": data[16]}
    return {"signature": text(data[:16]), "data": data.hex()}


def _spec_id(data: bytes) -> Decoded:
    r = LeReader(data)
    r.take(16)
    platform_class = r.u32()
    minor, major, errata, uintn_size = r.take(4)
    count = r.u32()
    if count * 4 > r.remaining:
        raise r.fail(f"numberOfAlgorithms {count} exceeds the event data")
    algorithms = [{"algorithm": bank_name(r.u16()), "digest_size": r.u16()} for _ in range(count)]
    vendor = r.take(r.u8("vendorInfoSize"), "vendorInfo")
    return {
        "signature": "Spec ID Event03",
        "platform_class": platform_class,
        "spec_version": f"{major}.{minor}.{errata}",
        "uintn_size": uintn_size,
        "algorithms": algorithms,
        "vendor_info": vendor.hex(),
    }


def _event_tag(ev: Event) -> Decoded:
    r = LeReader(ev.data)
    tags = []
    while r.remaining:
        tag_id = r.u32("taggedEventID")
        tags.append({"id": tag_id, "data": r.take(r.u32("taggedEventDataSize"), "taggedEventData").hex()})
    return {"tagged_events": tags}


_DECODERS: dict[int, Callable[[Event], Decoded]] = {
    EventType.EV_NO_ACTION: _no_action,
    EventType.EV_SEPARATOR: _separator,
    EventType.EV_ACTION: _string,
    EventType.EV_EFI_ACTION: _string,
    EventType.EV_EFI_HCRTM_EVENT: _string,
    EventType.EV_OMIT_BOOT_DEVICE_EVENTS: _string,
    EventType.EV_IPL: _ipl,
    EventType.EV_S_CRTM_VERSION: _crtm_version,
    EventType.EV_POST_CODE: _string_or_blob,
    EventType.EV_S_CRTM_CONTENTS: _string_or_blob,
    EventType.EV_EFI_PLATFORM_FIRMWARE_BLOB: _blob,
    EventType.EV_EFI_PLATFORM_FIRMWARE_BLOB2: _blob2,
    EventType.EV_EFI_HANDOFF_TABLES: _handoff_tables,
    EventType.EV_EFI_HANDOFF_TABLES2: lambda ev: _handoff_tables(ev, described=True),
    EventType.EV_EFI_GPT_EVENT: _gpt,
    EventType.EV_EVENT_TAG: _event_tag,
    EventType.EV_EFI_VARIABLE_DRIVER_CONFIG: _variable,
    EventType.EV_EFI_VARIABLE_BOOT: _variable,
    EventType.EV_EFI_VARIABLE_BOOT2: _variable,
    EventType.EV_EFI_VARIABLE_AUTHORITY: _variable,
    EventType.EV_EFI_BOOT_SERVICES_APPLICATION: _image_load,
    EventType.EV_EFI_BOOT_SERVICES_DRIVER: _image_load,
    EventType.EV_EFI_RUNTIME_SERVICES_DRIVER: _image_load,
}
