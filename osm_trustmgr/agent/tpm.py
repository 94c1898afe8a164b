"""A TPM 2.0 as the agent sees it: EK, AK, quotes and credential activation through tpm2-pytss (ESAPI).

Byte formats. Everything this module returns or accepts is a TPM 2.0 structure marshalled as TPM 2.0 Part 2
defines it (big-endian; a TPM2B is a UINT16 size followed by that many bytes), so the verifier in
:mod:`osm_trustmgr.tpm` parses it without tpm2-pytss:

==========================  ===================================================================
EK / AK public              ``TPM2B_PUBLIC`` (size prefix included)
AK private blob             ``TPM2B_PRIVATE`` (size prefix included; wrapped by the EK, loads on this TPM only)
name, qualified name        the ``TPM2B_NAME`` payload: ``nameAlg`` (UINT16) || digest (no size prefix)
quote ``attest``            ``TPMS_ATTEST``: the payload of ``TPM2B_ATTEST``, exactly the bytes the AK signed
quote ``signature``         ``TPMT_SIGNATURE``
credential blob             ``TPM2B_ID_OBJECT`` (size prefix included), as TPM2_MakeCredential outputs it
encrypted secret            ``TPM2B_ENCRYPTED_SECRET`` (size prefix included)
EK certificate              DER X.509
PCR values                  ``{bank: {index: digest}}``, e.g. ``{"sha256": {0: b"..."}}``
==========================  ===================================================================

There is no resource manager between us and swtpm or ``/dev/tpm0``: every transient object and session is
flushed before a method returns, and the EK is re-derived from the endorsement seed whenever it is needed
(the same key every time, ~10 ms for RSA on swtpm) rather than held loaded.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from tpm2_pytss import ESAPI, TSS2_Exception
from tpm2_pytss.constants import ESYS_TR, TPM2_ALG, TPM2_CAP, TPM2_HT, TPM2_PT_NV, TPM2_SE, TPMA_OBJECT
from tpm2_pytss.types import (
    TPM2B_DATA,
    TPM2B_DIGEST,
    TPM2B_ENCRYPTED_SECRET,
    TPM2B_ID_OBJECT,
    TPM2B_NAME,
    TPM2B_PRIVATE,
    TPM2B_PUBLIC,
    TPML_DIGEST_VALUES,
    TPML_PCR_SELECTION,
    TPMS_ATTEST,
    TPMT_HA,
    TPMT_SIG_SCHEME,
    TPMT_SIGNATURE,
    TPMT_SYM_DEF,
    TPMU_HA,
)
from tpm2_pytss.utils import NoSuchIndex, create_ek_template

from osm_trustmgr.agent.tpm_types import Ak, AkBlobs, ClockInfo, Ek, PcrValues, QuoteResult, Selection, TpmError
from osm_trustmgr.tpm.algorithms import hash_by_id, hash_by_name

__all__ = [
    "EK_TEMPLATES",
    "Ak",
    "AkBlobs",
    "ClockInfo",
    "Ek",
    "EkTemplate",
    "PcrValues",
    "QuoteResult",
    "Selection",
    "TpmDevice",
    "TpmError",
]

AK_ATTRIBUTES = TPMA_OBJECT.parse("fixedtpm|fixedparent|sensitivedataorigin|userwithauth|restricted|sign")
AK_ALGORITHMS = {"rsa": "rsa2048:rsassa-{hash}:null", "ecc": "ecc256:ecdsa-{hash}:null"}
MAX_NONCE = 64  # TPM2B_DATA holds at most sizeof(TPMT_HA) - 2 bytes
_RC_NV_HANDLE = 0x18B  # TPM_RC_HANDLE on the first handle: the NV index is not defined
_MAX_QUOTE_ATTEMPTS = 3


@dataclass(frozen=True)
class EkTemplate:
    """A TCG EK Credential Profile template and the NV index of its certificate."""

    tcg_name: str
    cert_index: int
    # Low-range templates clear userWithAuth: using the EK needs PolicySecret(TPM_RH_ENDORSEMENT).
    # High-range ones set it, so an empty password works.
    policy_auth: bool


EK_TEMPLATES: dict[str, EkTemplate] = {
    "rsa": EkTemplate("EK-RSA2048", 0x01C00002, policy_auth=True),  # template L-1
    "ecc": EkTemplate("EK-ECC256", 0x01C0000A, policy_auth=True),  # template L-2, NIST P-256
    # template H-3, NIST P-384: what swtpm_setup 0.7 provisions for its ECC EK
    "ecc384": EkTemplate("EK-HIGH-ECC384", 0x01C00016, policy_auth=False),
}


class TpmDevice:
    """One TPM reached through a TCTI: ``swtpm:host=127.0.0.1,port=P``, ``device:/dev/tpmrm0``, …

    ``None`` lets tpm2-tss pick its default TCTI. Use as a context manager or call :meth:`close`. One ESAPI
    context is not thread-safe: callers serialize their calls (a TPM runs one command at a time anyway).
    """

    def __init__(self, tcti: str | None = None) -> None:
        # tpm2-tss reads TSS2_LOG once; without this, probing an absent EK certificate index prints
        # ESYS errors that are part of normal operation. An operator's own setting wins.
        os.environ.setdefault("TSS2_LOG", "all+NONE")
        self._esapi = ESAPI(tcti)
        self._nv_buffer_max: int | None = None
        self._ek_templates: dict[str, TPM2B_PUBLIC] = {}  # NV may refine a template: read it once

    def close(self) -> None:
        self._esapi.close()

    def __enter__(self) -> TpmDevice:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- endorsement key ------------------------------------------------------------------------

    def read_ek_certificate(self, alg: str = "rsa") -> bytes | None:
        """The EK certificate (DER) from its TCG NV index, or ``None`` when the TPM has none."""
        try:
            return _trim_der(self._nv_read(_ek_template(alg).cert_index))
        except NoSuchIndex:
            return None

    def create_ek(self, alg: str = "rsa") -> Ek:
        """Derive the EK from the TCG default template (so it matches the EK certificate's key).

        High-range templates (``ecc384``) are defined by their certificate: without one this raises ValueError.
        """
        with self._ek(alg) as handle:
            public, name, _ = self._esapi.read_public(handle)
        return Ek(alg, public.marshal(), bytes(name))

    # -- attestation key ------------------------------------------------------------------------

    def create_ak(self, alg: str = "rsa", hash: str = "sha256", ek_alg: str = "rsa") -> Ak:
        """Create a restricted signing key under the ``ek_alg`` EK (RSASSA on RSA 2048, or ECDSA on P-256)."""
        if alg not in AK_ALGORITHMS:
            raise ValueError(f"unknown AK algorithm {alg!r}; expected one of {sorted(AK_ALGORITHMS)}")
        _tpm_hash(hash)
        template = TPM2B_PUBLIC.parse(
            AK_ALGORITHMS[alg].format(hash=hash), objectAttributes=AK_ATTRIBUTES, nameAlg=hash
        )
        with self._ek(ek_alg) as ek, self._ek_auth(ek_alg) as session:
            private, public, *_ = self._esapi.create(ek, None, template, session1=session)
        return self.load_ak(AkBlobs(ek_alg, public.marshal(), private.marshal()))

    def load_ak(self, blobs: AkBlobs) -> Ak:
        """Check that ``blobs`` load under this TPM's EK and return the AK with its names."""
        ak = Ak(blobs, b"", b"")
        with self._ak(ak) as handle:
            _, name, qualified_name = self._esapi.read_public(handle)
        return Ak(blobs, bytes(name), bytes(qualified_name))

    def persist_ak(self, ak: Ak, handle: int) -> Ak:
        """Make the AK persistent at ``handle`` (0x81xxxxxx, owner hierarchy): quotes skip the EK then."""
        with self._ak(replace(ak, persistent_handle=None)) as transient:
            persistent = self._esapi.evict_control(ESYS_TR.OWNER, transient, handle)
            self._esapi.tr_close(persistent)
        return replace(ak, persistent_handle=handle)

    def evict(self, handle: int) -> None:
        """Remove the persistent object at ``handle``."""
        tr = self._esapi.tr_from_tpmpublic(handle)
        self._esapi.evict_control(ESYS_TR.OWNER, tr, handle)  # also invalidates ``tr``

    # -- evidence -------------------------------------------------------------------------------

    def quote(self, ak: Ak, nonce: bytes, selection: Selection) -> QuoteResult:
        """TPM2_Quote over ``selection`` with ``nonce`` as qualifying data, plus the quoted PCR values.

        The PCRs are read after the quote; if one changed in between (an extend raced us) the digest no
        longer matches the quote's ``pcrDigest`` and the quote is taken again.
        """
        if len(nonce) > MAX_NONCE:
            raise ValueError(f"nonce is {len(nonce)} bytes; a quote takes at most {MAX_NONCE}")
        selection = _normalized(selection)
        pcr_select = _pcr_selection(selection)
        with self._ak(ak) as handle:
            for _ in range(_MAX_QUOTE_ATTEMPTS):
                attest, signature = self._esapi.quote(
                    handle, pcr_select, TPM2B_DATA(nonce), TPMT_SIG_SCHEME(scheme=TPM2_ALG.NULL)
                )
                pcrs = self.pcr_read(selection)
                if _pcr_digest_matches(bytes(attest), signature, pcrs):
                    return QuoteResult(bytes(attest), signature.marshal(), pcrs)
        raise TpmError(f"PCRs changed during each of {_MAX_QUOTE_ATTEMPTS} quotes")

    def activate_credential(self, ak: Ak, credential_blob: bytes, encrypted_secret: bytes) -> bytes:
        """TPM2_ActivateCredential: recover the secret a verifier bound to the AK name and this EK."""
        credential = _unmarshal_exact(TPM2B_ID_OBJECT, credential_blob)
        secret = _unmarshal_exact(TPM2B_ENCRYPTED_SECRET, encrypted_secret)
        ek_alg = ak.blobs.ek_alg
        with self._ak(ak) as ak_handle, self._ek(ek_alg) as ek, self._ek_auth(ek_alg) as session:
            recovered = self._esapi.activate_credential(
                ak_handle, ek, credential, secret, session1=ESYS_TR.PASSWORD, session2=session
            )
        return bytes(recovered)

    def make_credential_on_tpm(self, ek_public: bytes, name: bytes, secret: bytes) -> tuple[bytes, bytes]:
        """TPM2_MakeCredential done by this TPM: ``(TPM2B_ID_OBJECT, TPM2B_ENCRYPTED_SECRET)``.

        Only a cross-check for the verifier's pure-Python MakeCredential; a verifier never needs a TPM.
        """
        public = _unmarshal_exact(TPM2B_PUBLIC, ek_public)
        with self._flushing(self._esapi.load_external(public, None, ESYS_TR.NULL)) as handle:
            blob, encrypted = self._esapi.make_credential(handle, TPM2B_DIGEST(secret), TPM2B_NAME(name))
        return blob.marshal(), encrypted.marshal()

    # -- PCRs and clock -------------------------------------------------------------------------

    def pcr_extend(self, pcr: int, digests: Mapping[str, bytes]) -> None:
        """Extend ``pcr`` in each bank of ``digests`` (bank name to digest of that bank's size)."""
        # Any digest fits the union's largest member; hashAlg decides how many bytes are marshalled.
        values = TPML_DIGEST_VALUES(
            [TPMT_HA(hashAlg=_tpm_hash(bank), digest=TPMU_HA(sha512=d)) for bank, d in digests.items()]
        )
        self._esapi.pcr_extend(ESYS_TR(pcr), values)

    def pcr_read(self, selection: Selection) -> PcrValues:
        """Read the selected PCRs. A TPM returns at most 8 per call, so this loops until all are read."""
        wanted = _normalized(selection)
        values: PcrValues = {bank: {} for bank in wanted}
        while any(wanted.values()):
            _, returned, digests = self._esapi.pcr_read(_pcr_selection(wanted))
            read = list(_selected_pcrs(returned))
            if not read:
                raise TpmError(f"TPM returned no PCR for {dict(wanted)}: is the bank active?")
            for (bank, index), digest in zip(read, digests, strict=True):
                values[bank][index] = bytes(digest)
                wanted[bank].remove(index)
        return values

    def read_clock(self) -> ClockInfo:
        info = self._esapi.read_clock()
        clock = info.clockInfo
        return ClockInfo(info.time, clock.clock, clock.resetCount, clock.restartCount, bool(clock.safe))

    # -- diagnostics ----------------------------------------------------------------------------

    def transient_handles(self) -> list[int]:
        """Transient objects loaded in the TPM (empty between calls: nothing leaks)."""
        return self._handles(TPM2_HT.TRANSIENT)

    def loaded_sessions(self) -> list[int]:
        return self._handles(TPM2_HT.LOADED_SESSION)

    def _handles(self, handle_type: int) -> list[int]:
        _, data = self._esapi.get_capability(TPM2_CAP.HANDLES, handle_type << 24, 64)
        return [int(h) for h in data.data.handles]

    # -- internals ------------------------------------------------------------------------------

    @contextmanager
    def _flushing(self, handle: ESYS_TR) -> Iterator[ESYS_TR]:
        try:
            yield handle
        finally:
            self._esapi.flush_context(handle)

    @contextmanager
    def _ek(self, alg: str) -> Iterator[ESYS_TR]:
        if alg not in self._ek_templates:
            # tpm2-pytss applies the TCG rules: a template or nonce in NV overrides the default one.
            _, self._ek_templates[alg] = create_ek_template(_ek_template(alg).tcg_name, self._nv_read)
        handle, *_ = self._esapi.create_primary(None, self._ek_templates[alg], ESYS_TR.ENDORSEMENT)
        with self._flushing(handle):
            yield handle

    @contextmanager
    def _ek_auth(self, alg: str) -> Iterator[ESYS_TR]:
        """The authorization to use the EK once (a policy session is consumed by the command it authorizes)."""
        if not _ek_template(alg).policy_auth:
            yield ESYS_TR.PASSWORD
            return
        session = self._esapi.start_auth_session(
            ESYS_TR.NONE, ESYS_TR.NONE, TPM2_SE.POLICY, TPMT_SYM_DEF(algorithm=TPM2_ALG.NULL), TPM2_ALG.SHA256
        )
        with self._flushing(session):
            self._esapi.policy_secret(ESYS_TR.ENDORSEMENT, session)
            yield session

    @contextmanager
    def _ak(self, ak: Ak) -> Iterator[ESYS_TR]:
        """The AK loaded for one operation: its persistent handle, or loaded under the EK and flushed after."""
        if ak.persistent_handle is not None:
            handle = self._esapi.tr_from_tpmpublic(ak.persistent_handle)
            try:
                public, _, _ = self._esapi.read_public(handle)
                if public.marshal() != ak.public:
                    raise TpmError(f"handle 0x{ak.persistent_handle:08x} holds another key than this AK")
                yield handle
            finally:
                self._esapi.tr_close(handle)
            return
        private = _unmarshal_exact(TPM2B_PRIVATE, ak.blobs.private)
        public = _unmarshal_exact(TPM2B_PUBLIC, ak.blobs.public)
        # The EK only has to be loaded while the AK is: flush it right away to keep the TPM's slots free.
        with self._ek(ak.blobs.ek_alg) as ek, self._ek_auth(ak.blobs.ek_alg) as session:
            handle = self._esapi.load(ek, private, public, session1=session)
        with self._flushing(handle):
            yield handle

    def _nv_read(self, index: int) -> bytes:
        """Read a whole NV index authorized by itself (empty auth); raises ``NoSuchIndex`` if undefined.

        Matches what ``tpm2_pytss.utils.create_ek_template`` expects from its reader callback.
        """
        try:
            handle = self._esapi.tr_from_tpmpublic(index)
        except TSS2_Exception as exc:
            if exc.rc == _RC_NV_HANDLE:
                raise NoSuchIndex(index) from exc
            raise
        try:
            public, _ = self._esapi.nv_read_public(handle)
            size, chunk = public.nvPublic.dataSize, self._nv_chunk()
            return b"".join(
                bytes(self._esapi.nv_read(handle, min(chunk, size - offset), offset))
                for offset in range(0, size, chunk)
            )
        finally:
            self._esapi.tr_close(handle)

    def _nv_chunk(self) -> int:
        if self._nv_buffer_max is None:
            _, data = self._esapi.get_capability(TPM2_CAP.TPM_PROPERTIES, TPM2_PT_NV.BUFFER_MAX, 1)
            props = [p.value for p in data.data.tpmProperties if p.property == TPM2_PT_NV.BUFFER_MAX]
            self._nv_buffer_max = props[0] if props else 512  # 512: the smallest any TPM reports
        return self._nv_buffer_max


def _ek_template(alg: str) -> EkTemplate:
    try:
        return EK_TEMPLATES[alg]
    except KeyError:
        raise ValueError(f"unknown EK type {alg!r}; expected one of {sorted(EK_TEMPLATES)}") from None


def _tpm_hash(bank: str) -> TPM2_ALG:
    known = hash_by_name(bank)
    if known is None:
        raise ValueError(f"unsupported hash algorithm {bank!r}")
    return TPM2_ALG(known.alg_id)


def _normalized(selection: Selection) -> dict[str, list[int]]:
    """Validated copy of a selection, indices sorted and unique (an iterator in it is read once)."""
    banks = {bank: sorted(set(indices)) for bank, indices in selection.items()}
    for bank, indices in banks.items():
        _tpm_hash(bank)
        if not all(0 <= i < 24 for i in indices):
            raise ValueError(f"PCR index out of range 0-23 in {bank}: {indices}")
    return banks


def _pcr_selection(selection: dict[str, list[int]]) -> TPML_PCR_SELECTION:
    return TPML_PCR_SELECTION.parse(
        "+".join(f"{bank}:{','.join(map(str, indices))}" for bank, indices in selection.items() if indices)
    )


def _selected_pcrs(selection: TPML_PCR_SELECTION) -> Iterator[tuple[str, int]]:
    """(bank, index) in the order the TPM lays out their digests: banks as listed, indices ascending."""
    for entry in selection:
        bank = hash_by_id(int(entry.hash))
        if bank is None:
            raise TpmError(f"TPM returned PCRs of an unsupported bank 0x{int(entry.hash):04x}")
        bitmap = bytes(entry.pcrSelect)[: entry.sizeofSelect]
        for index in range(len(bitmap) * 8):
            if bitmap[index // 8] & (1 << (index % 8)):
                yield bank.name, index


def _pcr_digest_matches(attest: bytes, signature: TPMT_SIGNATURE, pcrs: PcrValues) -> bool:
    """Do ``pcrs`` hash to the quote's pcrDigest? The TPM hashes them with the signature's hash algorithm."""
    quoted, _ = TPMS_ATTEST.unmarshal(attest)
    selection = quoted.attested.quote.pcrSelect
    digest_alg = hash_by_id(int(signature.signature.any.hashAlg))
    if digest_alg is None:
        raise TpmError("quote signed with an unsupported hash")
    composite = b"".join(pcrs[bank][index] for bank, index in _selected_pcrs(selection))
    return digest_alg.digest(composite) == bytes(quoted.attested.quote.pcrDigest)


_T = TypeVar("_T")


def _unmarshal_exact(kind: type[_T], data: bytes) -> _T:
    value: Any
    try:
        value, used = kind.unmarshal(data)  # type: ignore[attr-defined]
    except Exception as exc:  # tpm2-pytss raises TSS2_Exception or ValueError on short input
        raise ValueError(f"malformed {kind.__name__}: {exc}") from exc
    if used != len(data):
        raise ValueError(f"{len(data) - used} trailing bytes after {kind.__name__}")
    return value  # type: ignore[no-any-return]


def _trim_der(data: bytes) -> bytes:
    """Cut NV padding after a DER certificate (some TPMs pad the index with 0x00 or 0xFF)."""
    if len(data) < 4 or data[0] != 0x30 or data[1] & 0x80 == 0:
        return data
    length_bytes = data[1] & 0x7F
    header = 2 + length_bytes
    return data[: header + int.from_bytes(data[2:header], "big")]
