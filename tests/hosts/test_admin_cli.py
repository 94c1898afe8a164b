"""The operator's path: config file → policy put → host add → host attest/list/reports → serve (monitor)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import yaml
from cryptography.hazmat.primitives.serialization import Encoding
from pymongo import MongoClient

from osm_trustmgr.sandbox.servers import TansuBroker, free_port
from osm_trustmgr.sandbox.swtpm import LocalCa
from tests.hosts.conftest import MakeHost, Tls

EXE = Path(sys.executable).parent / "osm-trustmgr"


def _config(tmp_path: Path, mongo_uri: str, mongo_db: str, kafka: TansuBroker, ca: LocalCa) -> Path:
    bundle = tmp_path / "ek-ca.pem"
    bundle.write_bytes(b"".join(c.public_bytes(Encoding.PEM) for c in ca.certificates))
    host, port = kafka.bootstrap.split(":")
    config = {
        "database": {"uri": mongo_uri, "name": mongo_db},
        "message": {"host": host, "port": int(port)},
        "tpm": {"ek_ca_bundle": str(bundle)},
        "monitor": {"host_interval": "1h", "concurrency": 4},
        "api": {"host": "127.0.0.1", "port": free_port()},
    }
    path = tmp_path / "trustmgr.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([str(EXE), *args, "--config", str(config)], capture_output=True, text=True, timeout=120)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def test_operator_workflow(
    tmp_path: Path, mongo_uri: str, mongo_db: str, kafka_broker: TansuBroker, swtpm_ca: LocalCa,
    make_host: MakeHost, tls: Tls,
) -> None:  # fmt: skip
    config = _config(tmp_path, mongo_uri, mongo_db, kafka_broker, swtpm_ca)
    host = make_host()
    policy = tmp_path / "policy.yaml"
    policy.write_text(yaml.safe_dump(host.sim.reference_policy(policy_id="compute-golden")))
    stored = _cli(config, "policy", "put", str(policy))
    assert stored.returncode == 0 and "compute-golden" in stored.stdout, stored.stderr
    ep = host.endpoint(tls)
    added = _cli(config, "host", "add", host.id, "--vim-account", "vim-a", "--agent-url", ep.url, "--ca-file",
                 str(ep.ca_file), "--client-cert", str(ep.client_cert), "--client-key", str(ep.client_key),
                 "--policy", "compute-golden")  # fmt: skip
    assert added.returncode == 0, added.stderr
    again = _cli(config, "host", "add", host.id, "--vim-account", "vim-a", "--agent-url", ep.url)
    assert again.returncode == 1 and "already registered" in again.stderr

    attested = _cli(config, "host", "attest", host.id)
    assert attested.returncode == 0, attested.stderr
    assert json.loads(attested.stdout)["loa"] == 4
    listed = json.loads(_cli(config, "host", "list").stdout)
    assert [(h["id"], h["state"], h["loa"]) for h in listed] == [(host.id, "attested", 4)]
    reports = json.loads(_cli(config, "host", "reports", host.id).stdout)
    assert len(reports) == 1 and reports[0]["loa_name"] == "runtime"
    missing = _cli(config, "host", "show", "nope")
    assert missing.returncode == 1 and "not registered" in missing.stderr

    updated = _cli(config, "host", "update", host.id, "--vim-account", "vim-b", "--policy", "other-policy")
    assert updated.returncode == 0, updated.stderr
    shown = json.loads(_cli(config, "host", "show", host.id).stdout)
    assert (shown["vim_account_id"], shown["policy_id"], shown["agent"]["url"]) == ("vim-b", "other-policy", ep.url)
    bad = _cli(config, "host", "update", host.id, "--agent-url", "ftp://nowhere")
    assert bad.returncode == 1 and "url" in bad.stderr
    assert json.loads(_cli(config, "host", "show", host.id).stdout)["agent"]["url"] == ep.url  # unchanged

    assert _cli(config, "nsd-policy", "set", "nsd-1", "4").returncode == 0
    assert _cli(config, "nsd-policy", "show", "nsd-1").stdout.strip() == "4"
    assert _cli(config, "nsd-policy", "set", "nsd-1", "6").returncode == 2  # LoA range checked
    assert _cli(config, "nsd-policy", "show", "nsd-2").returncode == 1


def test_serve_runs_the_monitor_and_stops_on_sigterm(
    tmp_path: Path, mongo_uri: str, mongo_db: str, kafka_broker: TansuBroker, swtpm_ca: LocalCa,
    make_host: MakeHost, tls: Tls,
) -> None:  # fmt: skip
    config = _config(tmp_path, mongo_uri, mongo_db, kafka_broker, swtpm_ca)
    host = make_host()
    ep = host.endpoint(tls)
    _cli(config, "host", "add", host.id, "--vim-account", "vim-a", "--agent-url", ep.url, "--ca-file",
         str(ep.ca_file), "--client-cert", str(ep.client_cert), "--client-key", str(ep.client_key))  # fmt: skip
    log = (tmp_path / "serve.log").open("wb")
    service = subprocess.Popen([str(EXE), "--log-level", "INFO", "serve", "--config", str(config)],
                               stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        with MongoClient(mongo_uri) as client:
            deadline = time.monotonic() + 30
            doc = None
            while time.monotonic() < deadline:
                doc = client[mongo_db]["trust_hosts"].find_one({"_id": host.id})
                if doc and doc.get("next_attempt_at"):
                    break
                time.sleep(0.2)
        assert doc is not None and doc["state"] == "attested" and doc["loa"] == 1  # no policy: identity + quote
        api = yaml.safe_load(config.read_text())["api"]
        health = _get_when_up(f"http://127.0.0.1:{api['port']}/osm/trust/v1/healthz")
        assert health.status_code == 200 and health.json()["status"] == "ok"
        refused = httpx.post(f"http://127.0.0.1:{api['port']}/osm/trust/v1/challenges", json={}, timeout=10)
        assert refused.status_code == 422
    finally:
        service.send_signal(signal.SIGTERM)
        code = service.wait(20)
        log.close()
    output = (tmp_path / "serve.log").read_text()
    assert code == 0, output
    assert "osm-trustmgr stopped" in output


def _get_when_up(url: str, timeout: float = 15.0) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return httpx.get(url, timeout=5)
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_bad_config_is_a_clear_startup_error(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(yaml.safe_dump({"tpm": {"ek_ca_bundle": str(tmp_path / "missing.pem")}}))
    proc = subprocess.run([str(EXE), "serve", "--config", str(config)], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and "tpm.ek_ca_bundle" in proc.stderr and "Traceback" not in proc.stderr
    config.write_text(yaml.safe_dump({"monitor": {"host_interval": "soon"}}))
    proc = subprocess.run([str(EXE), "serve", "--config", str(config)], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and "monitor.host_interval" in proc.stderr
