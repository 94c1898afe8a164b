"""From a policy document (already parsed from YAML/JSON) to a trusted TrustPolicy."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from osm_trustmgr.failures import Failure
from osm_trustmgr.policy.model import TrustPolicy
from osm_trustmgr.policy.signing import SignerKey, verify_policy_signature
from osm_trustmgr.tpm.errors import EvidenceError


def load_policy(document: Any, signers: Mapping[str, SignerKey], *, require_signature: bool) -> TrustPolicy:
    """Validate the document's shape, then its signature; raises EvidenceError(policy.*) with the reason.

    The signature is checked over the document as written, before defaults are filled in, so a signer's
    intent is exactly what was signed.
    """
    if not isinstance(document, Mapping):
        raise EvidenceError(Failure.POLICY_MALFORMED, "a trust policy must be a mapping")
    try:
        policy = TrustPolicy.model_validate(dict(document))
    except ValidationError as e:
        where = "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors()[:5])
        raise EvidenceError(Failure.POLICY_MALFORMED, where) from None
    verify_policy_signature(document, signers, required=require_signature)
    if policy.runtime is not None:
        policy.runtime.ima.compiled()  # bad digests, regexes or keys fail here, at load, not mid-attestation
    return policy
