"""UEFI structures found in event data (UEFI 2.10 and TCG PFP), decoded from little-endian bytes.

Parsers raise :class:`EvidenceError` (EVENTLOG_MALFORMED) on malformed input; callers that must
never fail (``decode_event``) catch it. Text helpers never raise.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass

from osm_trustmgr.tpm.errors import EvidenceError
from osm_trustmgr.tpm.eventlog_types import LeReader

EFI_GLOBAL_VARIABLE = "8be4df61-93ca-11d2-aa0d-00e098032b8c"
EFI_IMAGE_SECURITY_DATABASE = "d719b2cb-3d3a-4596-a3bc-dad00e67656f"
SHIM_LOCK = "605dab50-e046-4300-abb6-3dd810dd8b23"
EFI_CERT_X509 = "a5c059a1-94e4-4aa7-87b5-ab155c2bf072"
EFI_CERT_SHA256 = "c1c41626-504c-4092-aca9-41f936934328"

GUID_NAMES = {
    EFI_GLOBAL_VARIABLE: "EFI_GLOBAL_VARIABLE",
    EFI_IMAGE_SECURITY_DATABASE: "EFI_IMAGE_SECURITY_DATABASE",
    SHIM_LOCK: "SHIM_LOCK",
    EFI_CERT_X509: "EFI_CERT_X509",
    EFI_CERT_SHA256: "EFI_CERT_SHA256",
    "826ca512-cf10-4ac9-b187-be01496631bd": "EFI_CERT_SHA1",
    "3c5766e8-269c-4e34-aa14-ed776e85b3b6": "EFI_CERT_RSA2048",
    "3bd2a492-96c0-4079-b420-fcf98ef103ed": "EFI_CERT_X509_SHA256",
    "77fa9abd-0359-4d32-bd60-28f4e78f784b": "MICROSOFT",
    "8868e871-e4f1-11d3-bc22-0080c73c8881": "EFI_ACPI_20_TABLE",
    "eb9d2d31-2d88-11d3-9a16-0090273fc14d": "SMBIOS_TABLE",
    "f2fd1544-9794-4a2c-992e-e5bbcf20e394": "SMBIOS3_TABLE",
}

# Caps well above real firmware; they keep hostile lengths from turning into long loops.
MAX_NAME_CHARS = 4096
MAX_DEVICE_PATH_NODES = 256


def guid(raw: bytes) -> str:
    """EFI_GUID (mixed-endian on the wire) as the usual 8-4-4-4-12 string."""
    return str(uuid.UUID(bytes_le=raw))


def read_guid(r: LeReader, what: str = "EFI_GUID") -> str:
    return guid(r.take(16, what))


def utf16(raw: bytes) -> str:
    """CHAR16 string, cut at the first NUL; never raises."""
    text = raw[: len(raw) - len(raw) % 2].decode("utf-16-le", errors="replace")
    return text.split("\x00", 1)[0]


def text(raw: bytes) -> str:
    """A firmware/loader string: trailing NULs dropped, undecodable bytes replaced; never raises."""
    return raw.rstrip(b"\x00").decode("utf-8", errors="replace")


def looks_utf16(raw: bytes) -> bool:
    """Heuristic for CHAR16 text: even length and every high byte zero (ASCII range)."""
    return len(raw) >= 2 and len(raw) % 2 == 0 and not any(raw[1::2]) and any(raw[0::2])


def is_printable(s: str) -> bool:
    return bool(s) and all(c.isprintable() or c in "\t\r\n" for c in s)


@dataclass(frozen=True)
class UefiVariable:
    """UEFI_VARIABLE_DATA: the variable's vendor GUID, name and value as measured."""

    guid: str
    name: str
    data: bytes
    trailing: int = 0  # bytes after VariableData (tolerated, reported)


def parse_variable(data: bytes) -> UefiVariable:
    """UEFI_VARIABLE_DATA: VariableName GUID, UINT64 name length (chars), UINT64 data length, ..."""
    r = LeReader(data)
    vendor = read_guid(r, "VariableName")
    name_len = r.u64("UnicodeNameLength")
    data_len = r.u64("VariableDataLength")
    if name_len > MAX_NAME_CHARS:
        raise r.fail(f"UnicodeNameLength {name_len} too large")
    name = utf16(r.take(name_len * 2, "UnicodeName"))
    value = r.take(data_len, "VariableData")
    return UefiVariable(vendor, name, value, r.remaining)


def der_certificate(raw: bytes) -> bytes | None:
    """``raw`` if it is exactly one DER SEQUENCE with a long-form length (as every X.509
    certificate is), else None. Checks framing only: a text like "sbat,1,2022..." is not a cert."""
    if len(raw) < 4 or raw[0] != 0x30 or raw[1] not in (0x81, 0x82, 0x83):
        return None
    width = raw[1] - 0x80
    length = int.from_bytes(raw[2 : 2 + width], "big")
    return raw if len(raw) == 2 + width + length else None


@dataclass(frozen=True)
class SignatureList:
    """EFI_SIGNATURE_LIST: a signature type and its (owner GUID, signature data) entries."""

    type_guid: str
    entries: tuple[tuple[str, bytes], ...]


def parse_signature_lists(data: bytes) -> tuple[SignatureList, ...]:
    """The EFI_SIGNATURE_LISTs that make up PK, KEK, db and dbx values."""
    r = LeReader(data)
    lists = []
    while r.remaining:
        type_guid = read_guid(r, "SignatureType")
        list_size = r.u32("SignatureListSize")
        header_size = r.u32("SignatureHeaderSize")
        sig_size = r.u32("SignatureSize")
        body = list_size - 28 - header_size
        if body < 0 or sig_size < 16 or body % sig_size:
            raise r.fail(f"EFI_SIGNATURE_LIST sizes {list_size}/{header_size}/{sig_size} inconsistent")
        r.take(header_size, "SignatureHeader")
        entries = []
        for _ in range(body // sig_size):
            owner = read_guid(r, "SignatureOwner")
            entries.append((owner, r.take(sig_size - 16, "SignatureData")))
        lists.append(SignatureList(type_guid, tuple(entries)))
    return tuple(lists)


@dataclass(frozen=True)
class ImageLoad:
    """UEFI_IMAGE_LOAD_EVENT: where a PE image was loaded and the device path it came from."""

    location: int
    length: int
    link_time_address: int
    device_path: bytes


def parse_image_load(data: bytes) -> ImageLoad:
    r = LeReader(data)
    location, length, link = r.u64("ImageLocationInMemory"), r.u64("ImageLengthInMemory"), r.u64("Link")
    path_len = r.u64("LengthOfDevicePath")
    return ImageLoad(location, length, link, r.take(path_len, "DevicePath"))


@dataclass(frozen=True)
class LoadOption:
    """EFI_LOAD_OPTION (a Boot#### variable): attributes, description, device path, optional data."""

    attributes: int
    description: str
    device_path: bytes
    optional_data: bytes


def parse_load_option(data: bytes) -> LoadOption:
    r = LeReader(data)
    attributes = r.u32("Attributes")
    path_len = r.u16("FilePathListLength")
    chars = bytearray()
    while (pair := r.take(2, "Description")) != b"\x00\x00":
        chars += pair
    return LoadOption(attributes, utf16(bytes(chars)), r.take(path_len, "FilePathList"), r.rest())


@dataclass(frozen=True)
class DevicePathText:
    """Best-effort text of a device path; ``file_path`` joins its media file-path nodes."""

    text: str
    file_path: str | None
    complete: bool


def device_path_text(raw: bytes) -> DevicePathText:
    """Render an EFI_DEVICE_PATH_PROTOCOL in UEFI text notation as far as it parses; never raises."""
    r = LeReader(raw)
    parts: list[str] = []
    files: list[str] = []
    for _ in range(MAX_DEVICE_PATH_NODES):
        if r.remaining < 4:
            break
        node_type, subtype = r.u8(), r.u8()
        length = r.u16()
        if length < 4 or length - 4 > r.remaining:
            break
        node = r.take(length - 4)
        if node_type == 0x7F:
            if subtype == 0xFF:
                return DevicePathText("/".join(parts), "".join(files) or None, True)
            parts.append(",")
            continue
        if (node_type, subtype) == (4, 4):
            files.append(utf16(node))
        parts.append(_node_text(node_type, subtype, node))
    return DevicePathText("/".join(parts), "".join(files) or None, r.remaining == 0 and bool(parts))


def _node_text(node_type: int, subtype: int, node: bytes) -> str:
    render = _NODE_TEXT.get((node_type, subtype))
    if render is not None:
        try:
            return render(LeReader(node))
        except EvidenceError:  # node shorter than its type requires: fall back to raw form
            pass
    return f"Path({node_type},{subtype},{node.hex()})"


def _acpi(r: LeReader) -> str:
    hid, uid = r.u32(), r.u32()
    names = {0x0A0341D0: "PciRoot", 0x0A0841D0: "PcieRoot"}
    return f"{names[hid]}(0x{uid:x})" if hid in names else f"Acpi(0x{hid:08x},0x{uid:x})"


def _hard_drive(r: LeReader) -> str:
    number, start, size = r.u32(), r.u64(), r.u64()
    signature = r.take(16)
    _mbr_type, sig_type = r.u8(), r.u8()
    if sig_type == 2:
        return f"HD({number},GPT,{guid(signature)},0x{start:x},0x{size:x})"
    sig = int.from_bytes(signature[:4], "little")
    return f"HD({number},MBR,0x{sig:08x},0x{start:x},0x{size:x})"


def _mac(r: LeReader) -> str:
    address = r.take(32)
    return f"MAC({address[:6].hex()},0x{r.u8():x})"


def _ipv4(r: LeReader) -> str:
    local, remote = r.take(4), r.take(4)
    return f"IPv4({'.'.join(map(str, remote))},{'.'.join(map(str, local))})"


def _offset(r: LeReader) -> str:
    r.u32("Reserved")
    return f"Offset(0x{r.u64():x},0x{r.u64():x})"


def _pci(r: LeReader) -> str:
    function, device = r.u8(), r.u8()
    return f"Pci(0x{device:x},0x{function:x})"


_NODE_TEXT: dict[tuple[int, int], Callable[[LeReader], str]] = {
    (1, 1): _pci,
    (1, 4): lambda r: f"VenHw({read_guid(r)})",
    (2, 1): _acpi,
    (3, 2): lambda r: f"Scsi(0x{r.u16():x},0x{r.u16():x})",
    (3, 5): lambda r: f"USB(0x{r.u8():x},0x{r.u8():x})",
    (3, 10): lambda r: f"VenMsg({read_guid(r)})",
    (3, 11): _mac,
    (3, 12): _ipv4,
    (3, 18): lambda r: f"Sata(0x{r.u16():x},0x{r.u16():x},0x{r.u16():x})",
    (3, 23): lambda r: f"NVMe(0x{r.u32():x},{r.take(8).hex('-')})",
    (3, 24): lambda r: f"Uri({text(r.rest())})",
    (4, 1): _hard_drive,
    (4, 2): lambda r: f"CDROM(0x{r.u32():x})",
    (4, 3): lambda r: f"VenMedia({read_guid(r)})",
    (4, 4): lambda r: utf16(r.rest()),
    (4, 6): lambda r: f"FvFile({read_guid(r)})",
    (4, 7): lambda r: f"Fv({read_guid(r)})",
    (4, 8): _offset,
}
