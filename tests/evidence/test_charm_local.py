"""CharmRunner (a real ops charm run in-process) and LocalVcaDriver/CharmClient over it, with the fake
trust-proxy charm of charms/fake-trust-proxy: results, failures, Juju's parameter and config checks."""

from __future__ import annotations

import asyncio
import base64
import re
import threading
from pathlib import Path

import pytest

from osm_trustmgr.evidence.charm_local import CharmActionFailed, CharmRunner, run_config_primitive
from osm_trustmgr.evidence.document import parse_evidence_document
from osm_trustmgr.evidence.vca import CharmClient, LocalVcaDriver, VcaError, VcaUnavailable, VnfTarget
from osm_trustmgr.failures import Failure
from osm_trustmgr.tpm.errors import EvidenceError
from osm_trustmgr.tpm.pcr import parse_selection_spec
from osm_trustmgr.tpm.public import parse_public
from osm_trustmgr.tpm.quote import verify_quote

from .conftest import FAKE_CHARM, charm_module

SEL = parse_selection_spec("sha256:0-10")


def target(ee_id: str) -> VnfTarget:
    return VnfTarget("nsr-1", "vnfr-1", "1", ee_id=ee_id)


async def test_local_driver_identity_activate_quote(runner: CharmRunner) -> None:
    runner.configure("ns.app-a.0", {"ssh-hostname": "vnf-a", "ssh-username": "ubuntu"})
    client = CharmClient(LocalVcaDriver(runner), target("ns.app-a.0"))
    presented = await client.identity()
    tpm = charm_module(runner).TPMS["vnf-a"]
    assert presented.ek_public == tpm.ek_public and presented.ak_public == tpm.ak_public
    assert presented.ek_certificate is None
    assert await client.activate(b"credential-blob", b"encrypted-secret") == b"credential-blob"
    nonce = bytes(range(16))
    doc = await client.quote(nonce, SEL, 1)
    assert doc["ima_offset"] == 1 and doc["ima_next_offset"] == 3 and doc["boot_time"] == 1700000000
    assert doc["ima_log"].count("\n") == 2  # the charm's log from line 1 on
    ev = parse_evidence_document(doc).evidence
    verify_quote(ev.attest, ev.signature, parse_public(tpm.ak_public), nonce, ev.pcrs,
                 expected_signer=tpm.ak_qualified_name, expected_selection=SEL)  # fmt: skip
    # what the charm received: Juju's defaults filled in, the selection in tpm2-tools syntax
    host, action, params = charm_module(runner).CALLS[-1]
    assert (host, action) == ("vnf-a", "attest")
    assert params == {"nonce": nonce.hex(), "pcrs": "sha256:0,1,2,3,4,5,6,7,8,9,10", "ima-offset": 1,
                      "trustmgr-url": "", "osm-params": ""}  # fmt: skip


async def test_failures(runner: CharmRunner) -> None:
    driver = LocalVcaDriver(runner)
    runner.configure("down", {"ssh-hostname": "unreachable", "ssh-username": "ubuntu"})
    with pytest.raises(VcaError) as failed:
        await CharmClient(driver, target("down")).identity()
    assert failed.value.detail == "ssh ubuntu@unreachable: connection refused"
    runner.configure("bad", {"ssh-hostname": "bad-results"})
    with pytest.raises(EvidenceError) as bad:
        await CharmClient(driver, target("bad")).identity()
    assert bad.value.code is Failure.EVIDENCE_MALFORMED and "'ek-public' is not base64" in bad.value.detail
    with pytest.raises(EvidenceError, match="'signature' is not base64"):
        await CharmClient(driver, target("bad")).quote(b"\x01" * 8, SEL, 0)
    runner.configure("crash", {"ssh-hostname": "crash"})
    with pytest.raises(VcaError, match="action attest failed: RuntimeError: the quote helper crashed"):
        await CharmClient(driver, target("crash")).quote(b"\x01" * 8, SEL, 0)
    # the action ran and failed after setting results: both reach the caller
    runner.configure("strict", {"ssh-hostname": "vnf-s"})
    with pytest.raises(CharmActionFailed) as rejected:
        runner.run("strict", "attest", {"trustmgr-url": "http://tm/reject", "osm-params": "vnf_id: v9"})
    assert rejected.value.detail == "Trust Manager rejected VNF v9: loa 0 < 4"
    assert rejected.value.results == {"output": "Trust Manager rejected VNF v9: loa 0 < 4"}


def test_juju_checks_before_the_charm_runs(runner: CharmRunner) -> None:
    runner.configure("app", {"ssh-hostname": "vnf-j"})
    calls = len(charm_module(runner).CALLS)
    for action, params, needle in (
        ("reboot", {}, "Action reboot not in available actions"),
        ("activate", {"credential": "YQ=="}, "secret is required"),
        ("attest", {"nonce": "aa", "colour": "red"}, "additional property 'colour' is not allowed"),
        ("attest", {"nonce": "aa", "ima-offset": "3"}, "(root).ima-offset : invalid type, expected integer"),
        ("attest", {"nonce": "aa", "ima-offset": True}, "expected integer"),
        ("attest", {"nonce": "aa", "ima-offset": -1}, "greater than or equal to 0"),
    ):
        with pytest.raises(VcaError, match=re.escape(needle)):
            runner.run("app", action, params)
    assert len(charm_module(runner).CALLS) == calls  # refused by "Juju": the charm never saw them


def test_config_like_juju_config(runner: CharmRunner) -> None:
    runner.configure("app", {"ssh-hostname": "h", "ssh-port": "2222"})
    runner.configure("app", {"ssh-username": "u"})
    assert runner.config("app") == {"ssh-hostname": "h", "ssh-port": 2222, "ssh-username": "u"}
    assert runner.config("other") == {}
    with pytest.raises(VcaError, match='unknown option "colour"'):
        runner.configure("app", {"colour": "red"})
    with pytest.raises(VcaError, match='option "ssh-port" expected int'):
        runner.configure("app", {"ssh-port": "twenty-two"})
    assert runner.config("app")["ssh-port"] == 2222


def test_config_primitive_like_n2vc(runner: CharmRunner) -> None:
    assert run_config_primitive(runner, "ok", {"ssh-hostname": "vnf-c", "ssh-username": "u"}) == "CONFIG OK"
    # N2VC logs a failed verify-ssh-credentials and still answers CONFIG OK; strict fails instead
    assert run_config_primitive(runner, "down", {"ssh-hostname": "unreachable"}, verify_attempts=2) == "CONFIG OK"
    tries = [c for c in charm_module(runner).CALLS if c[:2] == ("unreachable", "verify-ssh-credentials")]
    assert len(tries) == 2
    with pytest.raises(VcaError, match="verify-ssh-credentials failed: ssh @unreachable: connection refused"):
        run_config_primitive(runner, "down", {}, strict=True)


async def test_local_driver_config_timeout_and_concurrency(runner: CharmRunner) -> None:
    driver = LocalVcaDriver(runner)
    out = await driver.run(target("cfg"), "config", {"ssh-hostname": "vnf-t", "ssh-username": "u"})
    assert out == {"output": "CONFIG OK"} and runner.config("cfg")["ssh-hostname"] == "vnf-t"
    # concurrent actions on several applications from several threads: each gets its own results
    for i in range(4):
        runner.configure(f"app{i}", {"ssh-hostname": f"vnf-{i}"})
    results = await asyncio.gather(*(driver.run(target(f"app{i}"), "identity", {}) for i in range(4)))
    tpms = charm_module(runner).TPMS
    expected = [base64.b64encode(tpms[f"vnf-{i}"].ak_public).decode() for i in range(4)]
    assert [r["ak-public"] for r in results] == expected
    slow = LocalVcaDriver(runner, timeout=0.05)
    gate = threading.Event()
    original = runner.run

    def blocked(*args: object, **kwargs: object) -> dict[str, object]:
        gate.wait(5)
        return original(*args, **kwargs)  # type: ignore[arg-type]

    runner.run = blocked  # type: ignore[method-assign]
    try:
        with pytest.raises(VcaUnavailable, match=r"no result in 0\.05s"):
            await slow.run(target("app0"), "identity", {})
    finally:
        gate.set()
        runner.run = original  # type: ignore[method-assign]


def test_runner_needs_a_charm(tmp_path: Path) -> None:
    with pytest.raises(VcaUnavailable, match="is not a charm"):
        CharmRunner(tmp_path)
    (tmp_path / "src").mkdir()
    (tmp_path / "charmcraft.yaml").write_text((FAKE_CHARM / "charmcraft.yaml").read_text())
    (tmp_path / "src" / "charm.py").write_text("import ops\nVALUE = 1\n")
    runner = CharmRunner(tmp_path)
    with pytest.raises(VcaUnavailable, match=r"exactly one ops\.CharmBase subclass; found 0"):
        runner.run("app", "identity", {})
    broken = tmp_path / "broken"
    (broken / "src").mkdir(parents=True)
    (broken / "charmcraft.yaml").write_text((FAKE_CHARM / "charmcraft.yaml").read_text())
    (broken / "src" / "charm.py").write_text("raise ImportError('no paramiko here')\n")
    with pytest.raises(VcaUnavailable, match=r"cannot import the charm .*no paramiko here"):
        CharmRunner(broken).run("app", "identity", {})


def test_charm_root_is_a_private_copy(runner: CharmRunner) -> None:
    runner.configure("app", {"ssh-hostname": "vnf-r"})
    runner.run("app", "identity", {})
    root = runner._root
    assert root is not None and root.is_dir() and root != FAKE_CHARM
    assert not (FAKE_CHARM / "metadata.yaml").exists()  # ops.testing writes its files into the copy only
    runner.close()
    assert not root.exists()
    assert runner.run("app", "identity", {})["ak-public"]  # a new private root
    assert runner._root is not None and runner._root != root and runner._root.is_dir()
