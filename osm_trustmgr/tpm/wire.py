"""Bounds-checked big-endian reader for TPM 2.0 structures (TPM 2.0 Part 2 marshalling rules)."""

from __future__ import annotations

import struct

from osm_trustmgr.failures import Failure
from osm_trustmgr.tpm.errors import EvidenceError


class Reader:
    """Reads TPM wire types from a byte string; every short read raises :class:`EvidenceError`.

    ``code`` is the failure reported when the bytes are truncated or malformed, so the same reader
    serves quotes, keys and signatures with the right stable code.
    """

    __slots__ = ("_buf", "_code", "_pos")

    def __init__(self, data: bytes, code: Failure) -> None:
        self._buf = memoryview(data)
        self._pos = 0
        self._code = code

    def fail(self, detail: str) -> EvidenceError:
        return EvidenceError(self._code, detail)

    @property
    def remaining(self) -> int:
        return len(self._buf) - self._pos

    @property
    def offset(self) -> int:
        return self._pos

    def take(self, n: int, what: str = "field") -> bytes:
        if n < 0 or self._pos + n > len(self._buf):
            raise self.fail(f"truncated {what}: need {n} bytes at offset {self._pos}, have {self.remaining}")
        out = bytes(self._buf[self._pos : self._pos + n])
        self._pos += n
        return out

    def u8(self, what: str = "u8") -> int:
        return self.take(1, what)[0]

    def u16(self, what: str = "u16") -> int:
        return int(struct.unpack(">H", self.take(2, what))[0])

    def u32(self, what: str = "u32") -> int:
        return int(struct.unpack(">I", self.take(4, what))[0])

    def u64(self, what: str = "u64") -> int:
        return int(struct.unpack(">Q", self.take(8, what))[0])

    def tpm2b(self, what: str = "TPM2B", limit: int = 4096) -> bytes:
        """A TPM2B_*: UINT16 size then that many bytes; ``limit`` bounds sizes the spec never allows."""
        size = self.u16(what)
        if size > limit:
            raise self.fail(f"{what} size {size} exceeds {limit}")
        return self.take(size, what)

    def end(self, what: str = "structure") -> None:
        if self.remaining:
            raise self.fail(f"{self.remaining} trailing bytes after {what}")


def tpm2b(data: bytes) -> bytes:
    """Marshal ``data`` as a TPM2B (UINT16 size prefix)."""
    return struct.pack(">H", len(data)) + data
