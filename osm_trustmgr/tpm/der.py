"""The few DER walks X.509 libraries do not offer for TPM EK certificates (ITU-T X.690 §8.1, definite lengths).

Raises ValueError on anything it cannot walk; callers map that to their failure code.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric import rsa

RSAES_OAEP = "1.2.840.113549.1.1.7"  # id-RSAES-OAEP (RFC 4055 §4.1)

_SEQUENCE = 0x30
_INTEGER = 0x02
_BIT_STRING = 0x03
_EXPLICIT_0 = 0xA0  # TBSCertificate's [0] EXPLICIT version


def element(data: bytes, pos: int = 0) -> tuple[int, int, int]:
    """``(tag, content_start, content_end)`` of the single-byte-tag element at ``pos``."""
    if pos + 2 > len(data):
        raise ValueError(f"truncated DER header at offset {pos}")
    tag, first = data[pos], data[pos + 1]
    pos += 2
    if first & 0x80:
        count = first & 0x7F
        if not 1 <= count <= 4 or pos + count > len(data):
            raise ValueError(f"unsupported DER length form 0x{first:02x}")
        length = int.from_bytes(data[pos : pos + count], "big")
        pos += count
    else:
        length = first
    if pos + length > len(data):
        raise ValueError(f"DER element of {length} bytes at offset {pos} overruns {len(data)} bytes")
    return tag, pos, pos + length


def element_end(data: bytes) -> int:
    """Where the SEQUENCE starting ``data`` ends: what a certificate read from a padded NV index occupies."""
    tag, _, end = element(data)
    if tag != _SEQUENCE:
        raise ValueError(f"expected a DER SEQUENCE, found tag 0x{tag:02x}")
    return end


def strip_nv_padding(data: bytes) -> bytes:
    """The DER element starting ``data`` without the zero (or erased 0xFF) fill of the NV index it was read from."""
    end = element_end(data)
    tail = data[end:]
    if tail.strip(b"\x00") and tail.strip(b"\xff"):
        raise ValueError(f"{len(tail)} bytes after the certificate are not NV padding")
    return data[:end]


def children(data: bytes, start: int, end: int) -> list[tuple[int, int, int]]:
    """The elements directly inside ``data[start:end]``."""
    out = []
    while start < end:
        tag, content_start, content_end = element(data, start)
        if content_end > end:
            raise ValueError("DER element overruns its parent")
        out.append((tag, content_start, content_end))
        start = content_end
    return out


def rsa_key_from_tbs(tbs: bytes) -> rsa.RSAPublicKey | None:
    """The RSAPublicKey in a TBSCertificate's subjectPublicKeyInfo whatever its algorithm OID (RFC 5280 §4.1).

    Returns None when the structure is not that of a certificate with an RSA key.
    """
    try:
        _, start, end = element(tbs)
        fields = children(tbs, start, end)
        spki = fields[6] if fields[0][0] == _EXPLICIT_0 else fields[5]
        _, bits = children(tbs, spki[1], spki[2])
        if bits[0] != _BIT_STRING or bits[2] - bits[1] < 2 or tbs[bits[1]] != 0:
            return None
        key = tbs[bits[1] + 1 : bits[2]]  # after the unused-bits octet
        _, start, end = element(key)
        (n_tag, n_start, n_end), (e_tag, e_start, e_end) = children(key, start, end)
        if n_tag != _INTEGER or e_tag != _INTEGER:
            return None
        numbers = rsa.RSAPublicNumbers(
            int.from_bytes(key[e_start:e_end], "big"), int.from_bytes(key[n_start:n_end], "big")
        )
        return numbers.public_key()
    except (ValueError, IndexError):
        return None
