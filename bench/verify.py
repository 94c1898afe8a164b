"""Quote verification throughput against bare `cryptography` signature verification of the same bytes.

Full verification = parse TPMT_SIGNATURE + signature check + parse TPMS_ATTEST + signer + nonce + selection +
PCR digest, with the AK parsed once (as the service does at enrollment). Quotes come from the software TPM
(real TPMS_ATTEST/TPMT_SIGNATURE bytes) so the measurement is of the verifier alone.
Goal: ratio >= 0.8 for ECC and RSA.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import rate, report
from cryptography.hazmat.primitives.asymmetric import ec, padding

from osm_trustmgr.sandbox.softtpm import SoftTpm
from osm_trustmgr.tpm.pcr import parse_selection_spec
from osm_trustmgr.tpm.public import parse_public
from osm_trustmgr.tpm.quote import parse_signature, verify_quote


def bench(ak_alg: str) -> None:
    tpm = SoftTpm(ak_alg=ak_alg, banks=("sha256",))
    selection = parse_selection_spec("sha256:0-10")
    nonce = bytes(range(20))
    q = tpm.quote(nonce, selection)
    attest, signature, pcrs = q["attest"], q["signature"], q["pcrs"]
    assert isinstance(attest, bytes) and isinstance(signature, bytes) and isinstance(pcrs, dict)
    ak = parse_public(tpm.ak_public)
    sig = parse_signature(signature)

    def full() -> None:
        verify_quote(
            attest, signature, ak, nonce, pcrs, expected_signer=tpm.ak_qualified_name, expected_selection=selection
        )

    key = ak.key
    if ak_alg == "ecc":
        assert isinstance(key, ec.EllipticCurvePublicKey)

        def bare() -> None:
            key.verify(sig.value, attest, ec.ECDSA(sig.hash.crypto()))
    else:

        def bare() -> None:
            key.verify(sig.value, attest, padding.PKCS1v15(), sig.hash.crypto())  # type: ignore[union-attr,call-arg]

    full_rate, bare_rate = rate(full), rate(bare)
    report("verify", f"quote_verify_rate_{ak_alg}", full_rate, "quotes/s", bare_rate, full_rate / bare_rate)


if __name__ == "__main__":
    bench("ecc")
    bench("rsa")
