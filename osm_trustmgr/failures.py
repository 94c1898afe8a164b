"""Stable failure codes: the one place where every code a verdict can carry is defined.

Operators grep logs and write alert rules against these strings, so a code is never renamed or
reused for another meaning; new codes are added here. ``docs/failure-codes.md`` is checked against
this table by the tests.
"""

from __future__ import annotations

from enum import Enum


class Failure(str, Enum):
    """A reason why evidence did not reach a Level of Assurance. The value is the stable code."""

    description: str

    def __new__(cls, code: str, description: str) -> Failure:
        obj = str.__new__(cls, code)
        obj._value_ = code
        obj.description = description
        return obj

    def __str__(self) -> str:
        return str(self.value)

    # evidence as a whole
    EVIDENCE_MALFORMED = ("evidence.malformed", "evidence document is missing fields or is not decodable")
    AGENT_UNREACHABLE = ("agent.unreachable", "the host agent did not answer; an unreachable host is never trusted")
    AGENT_ERROR = ("agent.error", "the host agent refused the request or answered something unusable")
    # quotes (TPMS_ATTEST / TPMT_SIGNATURE / TPM2B_PUBLIC)
    QUOTE_MALFORMED = (
        "quote.malformed",
        "TPMS_ATTEST cannot be parsed (truncated, trailing bytes, bad size)",
    )
    QUOTE_MAGIC = ("quote.magic_invalid", "TPMS_ATTEST magic is not TPM_GENERATED_VALUE")
    QUOTE_TYPE = ("quote.type_invalid", "TPMS_ATTEST is not of type TPM_ST_ATTEST_QUOTE")
    SIGNATURE_MALFORMED = ("quote.signature_malformed", "TPMT_SIGNATURE cannot be parsed")
    SIGNATURE_SCHEME = ("quote.signature_scheme", "signature scheme or hash does not fit the AK")
    SIGNATURE_INVALID = ("quote.signature_invalid", "quote signature does not verify with the AK")
    SIGNER_MISMATCH = ("quote.signer_mismatch", "qualifiedSigner is not the enrolled AK's qualified name")
    PCR_SELECTION = ("quote.pcr_selection_mismatch", "quoted PCR selection differs from the one asked for")
    PCR_DIGEST = ("quote.pcr_digest_mismatch", "reported PCR values do not hash to the quoted digest")
    PCR_MISSING = ("quote.pcr_missing", "a PCR required by the policy is not in the quote")
    NONCE_MISMATCH = ("nonce.mismatch", "extraData is not the nonce the verifier issued")
    NONCE_REPLAYED = ("nonce.replayed", "the nonce was already used or is unknown")
    CLOCK_ROLLBACK = ("clock.rollback", "resetCount/restartCount/clock went backwards since the last quote")
    CLOCK_UNSAFE = ("clock.unsafe", "the TPM reports its clock as not safe")
    # identity and enrollment
    AK_MALFORMED = ("ak.malformed", "AK TPM2B_PUBLIC / PEM cannot be parsed")
    AK_ATTRIBUTES = ("ak.attributes_invalid", "AK is not a fixedTPM, restricted signing key")
    AK_NOT_ENROLLED = ("identity.not_enrolled", "no enrolled or pinned AK for the entity")
    IDENTITY_CHANGED = ("identity.changed", "EK or AK differs from the enrolled identity")
    EK_CERT_MALFORMED = ("ek.cert_malformed", "EK certificate cannot be parsed")
    EK_CERT_UNTRUSTED = ("ek.cert_untrusted", "EK certificate does not chain to a configured CA")
    EK_CERT_EXPIRED = ("ek.cert_expired", "EK certificate (or an issuer) is outside its validity period")
    EK_CERT_SELF_SIGNED = ("ek.cert_self_signed", "EK certificate is self-signed")
    EK_KEY_MISMATCH = ("ek.key_mismatch", "EK certificate key is not the TPM's EK public key")
    EK_MALFORMED = ("ek.malformed", "EK TPM2B_PUBLIC cannot be parsed or is not a restricted decryption key")
    CREDENTIAL_FAILED = ("identity.activation_failed", "the TPM did not return the MakeCredential secret")
    # UEFI event log
    EVENTLOG_MALFORMED = ("eventlog.malformed", "UEFI event log cannot be parsed")
    EVENTLOG_MISSING = ("eventlog.missing", "the policy needs a UEFI event log and none was sent")
    EVENTLOG_REPLAY = ("eventlog.replay_mismatch", "UEFI event log does not replay to the quoted PCRs")
    SECUREBOOT_DISABLED = ("uefi.secureboot_disabled", "Secure Boot is not enabled")
    SECUREBOOT_DB = ("uefi.db_mismatch", "Secure Boot db/dbx/PK/KEK differ from the policy")
    FIRMWARE_MISMATCH = ("uefi.pcr_mismatch", "platform PCRs (0-7) differ from the policy's reference values")
    BOOT_COMPONENT = ("boot.component_unknown", "a boot loader, kernel or initrd digest is not allowed")
    BOOT_PCR = (
        "boot.pcr_mismatch",
        "OS boot PCRs (4, 8, 9 or 17-18) differ from the policy's reference values",
    )
    BOOT_CMDLINE = ("boot.cmdline_mismatch", "kernel command line is not allowed by the policy")
    # IMA
    IMA_MALFORMED = ("ima.malformed", "IMA log cannot be parsed")
    IMA_MISSING = ("ima.missing", "the policy needs an IMA log and none was sent")
    IMA_TEMPLATE_HASH = ("ima.template_hash_mismatch", "an entry's template hash is not the hash of its data")
    IMA_REPLAY = ("ima.replay_mismatch", "IMA log does not replay to the quoted PCR 10")
    IMA_BOOT_AGGREGATE = ("ima.boot_aggregate_mismatch", "boot_aggregate is not the hash of PCRs 0-9")
    IMA_UNKNOWN_DIGEST = ("ima.unknown_digest", "a measured file's digest is not in the allow-list")
    IMA_SIGNATURE = ("ima.signature_invalid", "an ima-sig signature does not verify with a trusted key")
    IMA_VIOLATION = ("ima.violation", "the IMA log records a measurement violation (zero digest)")
    # policy
    POLICY_MALFORMED = ("policy.malformed", "trust policy document is invalid")
    POLICY_UNSIGNED = ("policy.unsigned", "trust policy carries no signature but signatures are required")
    POLICY_SIGNATURE = ("policy.signature_invalid", "trust policy signature is not from a trusted signer")
    POLICY_MISSING = ("policy.missing", "the entity names a trust policy that is not stored")
    REPORT_STALE = ("report.stale", "evidence is older than the policy's max_age")


def describe(code: str) -> str:
    """Human description of a code; unknown codes are returned unchanged (forward compatibility)."""
    member = Failure._value2member_map_.get(code)
    return member.description if isinstance(member, Failure) else code


def markdown_table() -> str:
    """The code table of docs/failure-codes.md (regenerate with ``python -m osm_trustmgr.failures``)."""
    rows = [f"| `{f.value}` | {f.description} |" for f in Failure]
    return "\n".join(["| code | meaning |", "| --- | --- |", *rows]) + "\n"


if __name__ == "__main__":
    print(markdown_table(), end="")
