"""A software stand-in for a TPM that produces real TPMS_ATTEST/TPMT_SIGNATURE bytes.

For simulated fleets and benchmarks only: it lets thousands of hosts be attested without a TPM becoming the
bottleneck. Its keys live in process memory, so nothing it signs proves anything about a platform; tests of the
verifier's TPM handling use swtpm.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from osm_trustmgr.tpm import algorithms as alg
from osm_trustmgr.tpm.algorithms import HashAlg, hash_by_name
from osm_trustmgr.tpm.pcr import NUM_PCRS, PcrBanks, PcrSelection, extend, initial_value
from osm_trustmgr.tpm.public import ak_qualified_name, marshal_public, parse_public
from osm_trustmgr.tpm.quote import ClockInfo, Quote, marshal_attest, quote_pcr_digest
from osm_trustmgr.tpm.wire import tpm2b


def marshal_signature(sig_alg: int, hash_alg: HashAlg, value: bytes, key_size: int = 0) -> bytes:
    """TPMT_SIGNATURE bytes for a PKCS#1/PSS signature or a DER ECDSA signature (split into r, s)."""
    head = struct.pack(">HH", sig_alg, hash_alg.alg_id)
    if sig_alg == alg.ALG_ECDSA:
        r, s = decode_dss_signature(value)
        size = (key_size + 7) // 8
        return head + tpm2b(r.to_bytes(size, "big")) + tpm2b(s.to_bytes(size, "big"))
    return head + tpm2b(value)


@dataclass
class SoftTpm:
    """PCR banks, counters and a software AK/EK; ``quote`` signs like TPM2_Quote."""

    ak_alg: str = "ecc"
    banks: Sequence[str] = ("sha256",)
    reset_count: int = 0
    restart_count: int = 0
    clock: int = 1000
    firmware_version: int = 0x2000_0000_0001
    pcrs: PcrBanks = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._ak: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey = (
            ec.generate_private_key(ec.SECP256R1()) if self.ak_alg == "ecc" else rsa.generate_private_key(65537, 2048)
        )
        self._ek = rsa.generate_private_key(65537, 2048)
        self.ak_public = marshal_public(self._ak.public_key())
        self.ek_public = marshal_public(self._ek.public_key())
        self.ak_qualified_name = ak_qualified_name(parse_public(self.ek_public), parse_public(self.ak_public))
        self.reboot(count=False)

    def reboot(self, count: bool = True) -> None:
        """TPM2_Startup(CLEAR) after a reset: PCRs back to their initial values, resetCount + 1."""
        self.pcrs = {b: {i: initial_value(_bank(b), i) for i in range(NUM_PCRS)} for b in self.banks}
        if count:
            self.reset_count += 1
            self.clock = 1000

    def extend(self, pcr: int, digests: Mapping[str, bytes]) -> None:
        for bank, digest in digests.items():
            if bank in self.pcrs:
                self.pcrs[bank][pcr] = extend(_bank(bank), self.pcrs[bank][pcr], digest)

    def quote(
        self, nonce: bytes, selection: Sequence[PcrSelection], hash_alg: HashAlg = alg.SHA256
    ) -> dict[str, object]:
        """Quote in the agent's shape: ``attest``, ``signature`` (bytes) and the quoted ``pcrs``."""
        self.clock += 17
        q = Quote(
            qualified_signer=self.ak_qualified_name,
            extra_data=nonce,
            clock_info=ClockInfo(self.clock, self.reset_count, self.restart_count, True),
            firmware_version=self.firmware_version,
            pcr_selection=tuple(selection),
            pcr_digest=quote_pcr_digest(self.pcrs, selection, hash_alg),
        )
        attest = marshal_attest(q)
        return {"attest": attest, "signature": self.sign(attest, hash_alg), "pcrs": self.read(selection)}

    def sign(self, message: bytes, hash_alg: HashAlg = alg.SHA256) -> bytes:
        """Sign arbitrary bytes with the AK — what a restricted TPM key would refuse; used for negative tests."""
        if isinstance(self._ak, ec.EllipticCurvePrivateKey):
            der = self._ak.sign(message, ec.ECDSA(hash_alg.crypto()))
            return marshal_signature(alg.ALG_ECDSA, hash_alg, der, self._ak.curve.key_size)
        return marshal_signature(
            alg.ALG_RSASSA, hash_alg, self._ak.sign(message, padding.PKCS1v15(), hash_alg.crypto())
        )

    def read(self, selection: Sequence[PcrSelection]) -> PcrBanks:
        return {s.bank.name: {i: self.pcrs[s.bank.name][i] for i in s.pcrs} for s in selection}


def _bank(name: str) -> HashAlg:
    bank = hash_by_name(name)
    if bank is None:
        raise ValueError(f"unknown PCR bank {name!r}")
    return bank
