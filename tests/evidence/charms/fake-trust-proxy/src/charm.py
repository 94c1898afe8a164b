"""Test double of charms/trust-proxy: the same actions, canned behaviour chosen by ``ssh-hostname``.

* any host: a software TPM of its own (osm_trustmgr.sandbox.softtpm), kept across events in ``TPMS``;
* ``unreachable``: verify-ssh-credentials, identity and attest fail like an SSH failure would;
* ``bad-results``: identity and attest answer results that are not base64;
* ``crash``: attest raises (an uncaught exception in the charm);
* strict attest (``trustmgr-url``): fails when the URL contains ``reject``, after setting ``output``.

Every event's action parameters are appended to ``CALLS`` (host, action, params) for the tests to inspect.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import ops
import yaml

from osm_trustmgr.sandbox.softtpm import SoftTpm
from osm_trustmgr.tpm.pcr import parse_selection_spec
from osm_trustmgr.tpm.public import parse_public

TPMS: dict[str, SoftTpm] = {}
CALLS: list[tuple[str, str, dict[str, Any]]] = []
IMA_LINES = [f"10 {'ab' * 20} ima-ng sha256:{'cd' * 32} /usr/bin/tool{i}\n" for i in range(3)]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class FakeTrustProxyCharm(ops.CharmBase):
    def __init__(self, framework: ops.Framework) -> None:
        super().__init__(framework)
        for action in ("verify_ssh_credentials", "identity", "activate", "attest"):
            framework.observe(getattr(self.on, f"{action}_action"), getattr(self, f"_on_{action}"))

    @property
    def host(self) -> str:
        return str(self.config.get("ssh-hostname") or "")

    def _tpm(self, event: ops.ActionEvent) -> SoftTpm | None:
        CALLS.append((self.host, event.handle.kind.removesuffix("_action").replace("_", "-"), dict(event.params)))
        if self.host in ("", "unreachable"):
            event.fail(f"ssh {self.config.get('ssh-username')}@{self.host}: connection refused")
            return None
        return TPMS.setdefault(self.host, SoftTpm())

    def _on_verify_ssh_credentials(self, event: ops.ActionEvent) -> None:
        if self._tpm(event) is None:
            return
        if not self.config.get("ssh-username"):
            event.fail("ssh-username is not set")
            return
        event.set_results({"verified": True})

    def _on_identity(self, event: ops.ActionEvent) -> None:
        tpm = self._tpm(event)
        if tpm is None:
            return
        if self.host == "bad-results":
            event.set_results({"ek-public": "not base64!", "ak-public": _b64(tpm.ak_public)})
            return
        name = parse_public(tpm.ak_public).name or b""
        event.set_results({"ek-public": _b64(tpm.ek_public), "ak-public": _b64(tpm.ak_public), "ak-name": name.hex()})

    def _on_activate(self, event: ops.ActionEvent) -> None:
        if self._tpm(event) is not None:
            event.set_results({"secret": event.params["credential"]})

    def _on_attest(self, event: ops.ActionEvent) -> None:
        tpm = self._tpm(event)
        if tpm is None:
            return
        params = event.params
        if params.get("trustmgr-url"):
            vnf_id = (yaml.safe_load(params.get("osm-params") or "{}") or {}).get("vnf_id", "")
            if "reject" in params["trustmgr-url"]:
                reason = f"Trust Manager rejected VNF {vnf_id}: loa 0 < 4"
                event.set_results({"output": reason})
                event.fail(reason)
                return
            event.set_results({"verdict": "accepted", "vnf-id": vnf_id})
            return
        if self.host == "crash":
            raise RuntimeError("the quote helper crashed")
        nonce = bytes.fromhex(params["nonce"])
        q = tpm.quote(nonce, parse_selection_spec(params["pcrs"]))
        pcrs = {bank: {str(i): v.hex() for i, v in values.items()} for bank, values in q["pcrs"].items()}
        offset = params["ima-offset"]
        results = {
            "attest": _b64(q["attest"]),
            "signature": _b64(q["signature"]),
            "pcrs": json.dumps(pcrs),
            "ima-log": "".join(IMA_LINES[offset:]),
            "ima-offset": offset,
            "ima-next-offset": len(IMA_LINES),
            "boot-time": 1700000000,
            "nonce": nonce.hex(),
            "ak-public": _b64(tpm.ak_public),
        }
        if self.host == "bad-results":
            results["signature"] = "%%%"
        event.set_results(results)


if __name__ == "__main__":  # pragma: no cover - what Juju's dispatch would run
    ops.main(FakeTrustProxyCharm)
