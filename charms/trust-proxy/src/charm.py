#!/usr/bin/env python3
"""trust-proxy: OSM proxy charm that attests its VNF with the VNF's (v)TPM over SSH (DESIGN.md §5, §7).

OSM's day-1 ``config`` primitive sets the ssh-* options and then runs ``verify-ssh-credentials``. The Trust
Manager drives ``identity``, ``activate`` and ``attest`` as NS actions; ``attest`` with ``trustmgr-url``
(strict mode) talks to the Trust Manager itself and fails when the VNF is not trusted.

Every action reports a problem through ``event.fail`` with a reason an operator can act on: a raised
exception would only show up as a hook error with a traceback in the unit's log, and LCM would record an
unhelpful failure.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import ops
from params import ParamError, activate_params, attest_params, check_known
from ssh import SshError, SshRunner, SshTarget, load_private_key
from strict import StrictModeError, TrustManagerClient, attest_strictly
from vnf_tpm import TpmCommandError, VnfTpm

logger = logging.getLogger(__name__)

SSH_OPTIONS = ("ssh-hostname", "ssh-port", "ssh-username", "ssh-password", "ssh-private-key")


class NotConfigured(Exception):
    """The ssh-* config is incomplete or invalid."""


class TrustProxyCharm(ops.CharmBase):
    _stored = ops.StoredState()

    # How the charm reaches the VNF's TPM and the Trust Manager. Class attributes so the unit tests in
    # tests/charm can substitute them; the charm itself never changes them.
    tpm_factory: Callable[[SshRunner], VnfTpm] = VnfTpm
    client_factory: Callable[[str], TrustManagerClient] = TrustManagerClient

    def __init__(self, framework: ops.Framework) -> None:
        super().__init__(framework)
        # host_keys: pinned SSH host keys (see ssh.py); ssh_config: a digest of the ssh-* options they belong to.
        self._stored.set_default(host_keys={}, ssh_config="")
        for event in (self.on.install, self.on.start, self.on.config_changed, self.on.upgrade_charm):
            framework.observe(event, self._on_config)
        framework.observe(self.on.verify_ssh_credentials_action, self._on_verify_ssh_credentials)
        framework.observe(self.on.identity_action, self._on_identity)
        framework.observe(self.on.activate_action, self._on_activate)
        framework.observe(self.on.attest_action, self._on_attest)

    # -- configuration ----------------------------------------------------------------------------

    def _config_problem(self) -> str | None:
        """What keeps the charm from logging in, checked locally (no SSH here: the VNF may still be booting)."""
        c = self.config
        missing = [name for name in ("ssh-hostname", "ssh-username") if not str(c.get(name) or "").strip()]
        if not c.get("ssh-password") and not c.get("ssh-private-key"):
            missing.append("ssh-password or ssh-private-key")
        if missing:
            return f"missing config: {', '.join(missing)}"
        port = c.get("ssh-port", 22)
        if not isinstance(port, int) or not 0 < port < 65536:
            return f"ssh-port {port!r} is not a TCP port"
        if c.get("ssh-private-key"):
            try:
                load_private_key(str(c["ssh-private-key"]))
            except SshError as e:
                return str(e)
        return None

    def _on_config(self, _: ops.EventBase) -> None:
        # A new VNF address or new credentials mean the operator (or OSM) pointed the charm at a VNF again:
        # that is when a new host key is accepted. Only a digest is kept, never the password or key.
        digest = hashlib.sha256(json.dumps([self.config.get(k) for k in SSH_OPTIONS]).encode()).hexdigest()
        if digest != self._stored.ssh_config:
            self._stored.ssh_config = digest
            self._stored.host_keys = {}
        problem = self._config_problem()
        self.unit.status = ops.BlockedStatus(problem) if problem else ops.ActiveStatus("ready")

    def _target(self) -> SshTarget:
        problem = self._config_problem()
        if problem:
            raise NotConfigured(f"charm not configured: {problem}")
        c = self.config
        return SshTarget(
            hostname=str(c["ssh-hostname"]).strip(),
            port=int(c.get("ssh-port", 22)),
            username=str(c["ssh-username"]).strip(),
            password=str(c.get("ssh-password") or "") or None,
            private_key=str(c.get("ssh-private-key") or "") or None,
        )

    # -- actions ----------------------------------------------------------------------------------

    @contextmanager
    def _ssh(self) -> Iterator[SshRunner]:
        with SshRunner(self._target(), self._stored.host_keys) as runner:
            yield runner

    def _run(self, event: ops.ActionEvent, work: Callable[[], dict[str, str]]) -> None:
        try:
            event.set_results(work())
        except (ParamError, NotConfigured, SshError, TpmCommandError, StrictModeError) as e:
            _fail(event, str(e))
        except Exception as e:  # a bug must still end as a failed action with a reason, not a hook error
            logger.exception("%s action failed", event.handle.kind)
            _fail(event, f"unexpected error: {type(e).__name__}: {e}")

    def _on_verify_ssh_credentials(self, event: ops.ActionEvent) -> None:
        def work() -> dict[str, str]:
            check_known("verify-ssh-credentials", event.params)
            with self._ssh() as runner:
                rc, _, err = runner.run("true")
            if rc != 0:
                raise SshError(f"logged in, but a command failed ({rc}): {err.decode(errors='replace').strip()}")
            return {"verified": "true"}

        self._run(event, work)

    def _on_identity(self, event: ops.ActionEvent) -> None:
        def work() -> dict[str, str]:
            check_known("identity", event.params)
            with self._ssh() as runner:
                doc = self.tpm_factory(runner).identity()
            results = {"ek-public": doc["ek_public"], "ak-public": doc["ak_public"], "ak-name": doc["ak_name"]}
            if doc.get("ek_certificate"):
                results["ek-certificate"] = doc["ek_certificate"]
            return results

        self._run(event, work)

    def _on_activate(self, event: ops.ActionEvent) -> None:
        def work() -> dict[str, str]:
            p = activate_params(event.params)
            with self._ssh() as runner:
                secret = self.tpm_factory(runner).activate(p.credential, p.secret)
            return {"secret": base64.b64encode(secret).decode()}

        self._run(event, work)

    def _on_attest(self, event: ops.ActionEvent) -> None:
        def work() -> dict[str, str]:
            p = attest_params(event.params)
            with self._ssh() as runner:
                tpm = self.tpm_factory(runner)
                if p.trustmgr_url is None:
                    assert p.nonce is not None  # attest_params guarantees it in plain mode
                    return _quote_results(tpm.quote(p.nonce, p.selection, p.ima_offset))
                assert p.vnf_id is not None
                event.log(f"strict mode: challenge from {p.trustmgr_url} for VNF {p.vnf_id}")
                verdict = attest_strictly(tpm, self.client_factory(p.trustmgr_url), p.vnf_id)
            if not verdict.accepted:
                reasons = "; ".join(verdict.reasons) or "no reason given"
                raise StrictModeError(
                    f"VNF not trusted: LoA {verdict.loa} < required {verdict.required_loa}: {reasons}"
                )
            return {
                "decision": verdict.decision,
                "loa": str(verdict.loa),
                "required-loa": str(verdict.required_loa),
                "report-id": verdict.report_id,
            }

        self._run(event, work)


def _quote_results(doc: dict[str, Any]) -> dict[str, str]:
    """The agent's quote document as action results: Juju keys are hyphenated and every value is a string."""
    results = {
        "attest": doc["attest"],
        "signature": doc["signature"],
        "pcrs": json.dumps(doc["pcrs"], sort_keys=True),
        "ima-offset": str(doc["ima_offset"]),
        "ima-next-offset": str(doc["ima_next_offset"]),
        "nonce": doc["nonce"],
        "ak-public": doc["ak_public"],
    }
    optional = {"uefi-log": doc.get("uefi_log"), "ima-log": doc.get("ima_log"), "boot-time": doc.get("boot_time")}
    results.update({k: str(v) for k, v in optional.items() if v is not None})
    return results


def _fail(event: ops.ActionEvent, reason: str) -> None:
    # OSM's N2VC passes a failed action's reason on only from its results' "output" (n2vc_juju_conn.py
    # exec_primitive); without it LCM records "No further information received from action".
    event.set_results({"output": reason})
    event.fail(reason)


if __name__ == "__main__":  # pragma: no cover - Juju's entry point
    ops.main(TrustProxyCharm)
