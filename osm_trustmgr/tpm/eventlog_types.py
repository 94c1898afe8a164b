"""Types shared by the UEFI event log modules: event types, events, logs and a little-endian reader.

The TCG PC Client Platform Firmware Profile (PFP) defines the log; unlike TPM wire structures it is
little-endian, so :class:`LeReader` mirrors :class:`~osm_trustmgr.tpm.wire.Reader` with LE integers.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from osm_trustmgr.failures import Failure
from osm_trustmgr.tpm.algorithms import ALG_SM3_256, HASHES_BY_ID
from osm_trustmgr.tpm.wire import Reader


class EventType(IntEnum):
    """TCG PC Client event types (PFP section 10.4.1)."""

    EV_PREBOOT_CERT = 0x00000000
    EV_POST_CODE = 0x00000001
    EV_UNUSED = 0x00000002
    EV_NO_ACTION = 0x00000003
    EV_SEPARATOR = 0x00000004
    EV_ACTION = 0x00000005
    EV_EVENT_TAG = 0x00000006
    EV_S_CRTM_CONTENTS = 0x00000007
    EV_S_CRTM_VERSION = 0x00000008
    EV_CPU_MICROCODE = 0x00000009
    EV_PLATFORM_CONFIG_FLAGS = 0x0000000A
    EV_TABLE_OF_DEVICES = 0x0000000B
    EV_COMPACT_HASH = 0x0000000C
    EV_IPL = 0x0000000D
    EV_IPL_PARTITION_DATA = 0x0000000E
    EV_NONHOST_CODE = 0x0000000F
    EV_NONHOST_CONFIG = 0x00000010
    EV_NONHOST_INFO = 0x00000011
    EV_OMIT_BOOT_DEVICE_EVENTS = 0x00000012
    EV_EFI_EVENT_BASE = 0x80000000
    EV_EFI_VARIABLE_DRIVER_CONFIG = 0x80000001
    EV_EFI_VARIABLE_BOOT = 0x80000002
    EV_EFI_BOOT_SERVICES_APPLICATION = 0x80000003
    EV_EFI_BOOT_SERVICES_DRIVER = 0x80000004
    EV_EFI_RUNTIME_SERVICES_DRIVER = 0x80000005
    EV_EFI_GPT_EVENT = 0x80000006
    EV_EFI_ACTION = 0x80000007
    EV_EFI_PLATFORM_FIRMWARE_BLOB = 0x80000008
    EV_EFI_HANDOFF_TABLES = 0x80000009
    EV_EFI_PLATFORM_FIRMWARE_BLOB2 = 0x8000000A
    EV_EFI_HANDOFF_TABLES2 = 0x8000000B
    EV_EFI_VARIABLE_BOOT2 = 0x8000000C
    EV_EFI_HCRTM_EVENT = 0x80000010
    EV_EFI_VARIABLE_AUTHORITY = 0x800000E0
    EV_EFI_SPDM_FIRMWARE_BLOB = 0x800000E1
    EV_EFI_SPDM_FIRMWARE_CONFIG = 0x800000E2


_TYPE_NAMES = {t.value: t.name for t in EventType}


def event_type_name(event_type: int) -> str:
    """The PFP name of an event type; unknown types get a stable ``EV_UNKNOWN_0x…`` name."""
    return _TYPE_NAMES.get(event_type) or f"EV_UNKNOWN_0x{event_type:08x}"


def bank_name(alg_id: int) -> str:
    """PCR bank name as tpm2-tools spells it; banks we cannot hash still get a stable name."""
    known = HASHES_BY_ID.get(alg_id)
    if known is not None:
        return known.name
    if alg_id == ALG_SM3_256:
        return "sm3_256"
    return f"alg_0x{alg_id:04x}"


@dataclass(frozen=True, slots=True)
class Event:
    """One measurement: which PCR, what kind of event, the digest per bank and the event data.

    ``index`` is the position in the log, counting the Spec ID header as event 0 exactly like
    ``tpm2_eventlog``'s ``EventNum``, so operators can cross-reference both outputs.
    """

    index: int
    pcr: int
    type: int
    type_name: str
    digests: dict[str, bytes]
    data: bytes


@dataclass(frozen=True, slots=True)
class EventLog:
    """A parsed log. ``banks`` come from the Spec ID event (``("sha1",)`` for a legacy log);
    ``spec_version`` is ``"major.minor.errata"`` of the Spec ID event, None without one;
    ``warnings`` lists every vendor oddity a workaround tolerated."""

    events: tuple[Event, ...]
    banks: tuple[str, ...]
    spec_version: str | None
    warnings: tuple[str, ...]


class LeReader(Reader):
    """Bounds-checked little-endian reader; short reads raise EVENTLOG_MALFORMED."""

    __slots__ = ()

    def __init__(self, data: bytes) -> None:
        super().__init__(data, Failure.EVENTLOG_MALFORMED)

    def u16(self, what: str = "u16") -> int:
        return int.from_bytes(self.take(2, what), "little")

    def u32(self, what: str = "u32") -> int:
        return int.from_bytes(self.take(4, what), "little")

    def u64(self, what: str = "u64") -> int:
        return int.from_bytes(self.take(8, what), "little")

    def rest(self) -> bytes:
        return self.take(self.remaining, "rest")
