"""Config: defaults, YAML file, env overrides (OSM convention), errors that name key and source."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from osm_trustmgr.config import Config, ConfigError, load_config, parse_duration

EXAMPLE = Path(__file__).resolve().parents[1] / "config" / "trustmgr.yaml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "trustmgr.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def error_of(path: Path | None = None, env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path, env={} if env is None else env)
    return str(info.value)


def test_defaults() -> None:
    cfg = load_config(env={})
    assert cfg == Config()
    assert cfg.global_.loglevel == "INFO"
    assert (cfg.message.driver, cfg.message.host, cfg.message.port) == ("kafka", "kafka", 9092)
    assert cfg.message.group_id == "trustmgr"
    assert cfg.database.uri == "mongodb://mongodb-k8s:27017/?replicaSet=rs0"
    assert cfg.database.name == "osm" and cfg.database.commonkey is None
    assert cfg.nbi.url == "https://nbi:9999/osm" and cfg.nbi.verify_tls is True
    assert cfg.nbi.password is None
    assert (cfg.gate.mode, cfg.gate.max_age, cfg.gate.timeout) == ("enforce", 300, 30)
    assert cfg.gate.terminate_on_reject is True
    assert (cfg.monitor.host_interval, cfg.monitor.vnf_interval, cfg.monitor.concurrency) == (300, 600, 16)
    assert cfg.monitor.remediation == "notify" and cfg.monitor.jitter == 0.1
    assert (cfg.vca.driver, cfg.vca.timeout, cfg.vca.poll_interval, cfg.vca.charm_dir) == ("nbi", 300, 2, None)
    assert (cfg.api.enabled, cfg.api.host, cfg.api.port) == (True, "0.0.0.0", 9998)
    assert (cfg.api.rate_limit, cfg.api.burst, cfg.api.challenge_ttl) == (5, 20, 120)
    assert cfg.api.tls_cert is None and cfg.api.tls_key is None
    assert cfg.tpm.pcr_banks == ["sha256"] and cfg.tpm.ek_ca_bundle is None and not cfg.tpm.allow_pinned_ek
    assert cfg.policy.signers == [] and cfg.policy.require_signature is False and cfg.policy.dir is None


def test_yaml_file_values(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "global: {loglevel: debug}\n"
        "message: {driver: local, port: 19092, topics: [ns]}\n"
        "gate: {mode: audit, max_age: 1h, terminate_on_reject: false}\n"
        "tpm: {pcr_banks: [sha1, sha256], ek_ca_bundle: /etc/ca.pem}\n"
        "policy: {signers: [/etc/a.pem], require_signature: true}\n",
    )
    cfg = load_config(path, env={})
    assert cfg.global_.loglevel == "DEBUG"
    assert (cfg.message.driver, cfg.message.port, cfg.message.topics) == ("local", 19092, ["ns"])
    assert (cfg.gate.mode, cfg.gate.max_age, cfg.gate.terminate_on_reject) == ("audit", 3600, False)
    assert cfg.tpm.pcr_banks == ["sha1", "sha256"] and cfg.tpm.ek_ca_bundle == Path("/etc/ca.pem")
    assert cfg.policy.signers == [Path("/etc/a.pem")] and cfg.policy.require_signature
    assert cfg.monitor == Config().monitor  # untouched sections keep their defaults


def test_empty_file_and_null_section_give_defaults(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "# nothing\n"), env={}) == Config()
    assert load_config(write(tmp_path, "gate:\n  # mode: audit\n"), env={}) == Config()


def test_env_override_wins_over_file(tmp_path: Path) -> None:
    path = write(tmp_path, "gate: {mode: audit, timeout: 10}\napi: {port: 8000}\n")
    env = {"OSMTRUSTMGR_GATE_MODE": "placement", "osmtrustmgr_Api_PORT": "9000", "PATH": "/bin"}
    cfg = load_config(path, env=env)
    assert cfg.gate.mode == "placement" and cfg.api.port == 9000
    assert cfg.gate.timeout == 10  # file value kept where env is silent


def test_env_values_parsed_as_yaml() -> None:
    env = {
        "OSMTRUSTMGR_NBI_VERIFY_TLS": "false",
        "OSMTRUSTMGR_MONITOR_CONCURRENCY": "4",
        "OSMTRUSTMGR_TPM_PCR_BANKS": "[sha1, sha384]",
        "OSMTRUSTMGR_MONITOR_JITTER": "0",
        "OSMTRUSTMGR_GLOBAL_LOGLEVEL": "warning",
        "OSMTRUSTMGR_POLICY_SIGNERS": "/etc/osm/signer.pem",
    }
    cfg = load_config(env=env)
    assert cfg.nbi.verify_tls is False and cfg.monitor.concurrency == 4 and cfg.monitor.jitter == 0
    assert cfg.tpm.pcr_banks == ["sha1", "sha384"] and cfg.global_.loglevel == "WARNING"
    assert cfg.policy.signers == [Path("/etc/osm/signer.pem")]


def test_env_text_values_taken_verbatim() -> None:
    cfg = load_config(env={"OSMTRUSTMGR_NBI_PASSWORD": "no", "OSMTRUSTMGR_DATABASE_COMMONKEY": "0123"})
    assert cfg.nbi.password is not None and cfg.nbi.password.get_secret_value() == "no"
    assert cfg.database.commonkey is not None and cfg.database.commonkey.get_secret_value() == "0123"


def test_osm_shared_secret_vars_honoured() -> None:
    env = {"OSM_DATABASE_URI": "mongodb://db:27017/?replicaSet=rs1", "OSM_DATABASE_COMMONKEY": "k3y"}
    cfg = load_config(env=env)
    assert cfg.database.uri == "mongodb://db:27017/?replicaSet=rs1"
    assert cfg.database.commonkey is not None and cfg.database.commonkey.get_secret_value() == "k3y"


def test_module_var_beats_osm_var(tmp_path: Path) -> None:
    env = {
        "OSM_DATABASE_URI": "mongodb://shared:27017",
        "OSMTRUSTMGR_DATABASE_URI": "mongodb://mine:27017",
        "OSM_DATABASE_COMMONKEY": "shared",
        "OSMTRUSTMGR_DATABASE_COMMONKEY": "mine",
    }
    cfg = load_config(write(tmp_path, "database: {uri: 'mongodb://file:27017'}\n"), env=env)
    assert cfg.database.uri == "mongodb://mine:27017"
    assert cfg.database.commonkey is not None and cfg.database.commonkey.get_secret_value() == "mine"
    # the shared secret still beats the file
    assert load_config(write(tmp_path, "database: {uri: x}\n"), env={"OSM_DATABASE_URI": "y"}).database.uri == "y"


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(5, 5), (2.5, 2.5), ("5m", 300), ("30s", 30), ("1h", 3600), ("250ms", 0.25), ("2d", 172800), ("45", 45)],
)
def test_durations(value: object, seconds: float) -> None:
    assert parse_duration(value) == seconds


def test_duration_strings_in_file_and_env(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, "monitor: {host_interval: 5m}\n"), env={"OSMTRUSTMGR_GATE_TIMEOUT": "1m"})
    assert cfg.monitor.host_interval == 300 and cfg.gate.timeout == 60


@pytest.mark.parametrize("bad", ["5x", "-5s", "m", True, [1]])
def test_bad_duration_rejected(bad: Any) -> None:
    with pytest.raises(ValueError):
        parse_duration(bad)


def test_invalid_mode_from_env_names_key_and_var() -> None:
    msg = error_of(env={"OSMTRUSTMGR_GATE_MODE": "enforcing"})
    assert "gate.mode: input should be 'enforce', 'placement' or 'audit' (from env OSMTRUSTMGR_GATE_MODE)" in msg


def test_invalid_mode_from_file_names_file(tmp_path: Path) -> None:
    path = write(tmp_path, "gate:\n  mode: block\n")
    msg = error_of(path)
    assert "gate.mode" in msg and str(path) in msg


@pytest.mark.parametrize(
    ("env", "key"),
    [
        ({"OSMTRUSTMGR_API_PORT": "0"}, "api.port"),
        ({"OSMTRUSTMGR_MESSAGE_PORT": "65536"}, "message.port"),
        ({"OSMTRUSTMGR_API_PORT": "true"}, "api.port"),
        ({"OSMTRUSTMGR_GLOBAL_LOGLEVEL": "verbose"}, "global.loglevel"),
        ({"OSMTRUSTMGR_MONITOR_CONCURRENCY": "0"}, "monitor.concurrency"),
        ({"OSMTRUSTMGR_MONITOR_HOST_INTERVAL": "0"}, "monitor.host_interval"),
        ({"OSMTRUSTMGR_MONITOR_JITTER": "1"}, "monitor.jitter"),
        ({"OSMTRUSTMGR_GATE_MAX_AGE": "5 minutes"}, "gate.max_age"),
        ({"OSMTRUSTMGR_MONITOR_REMEDIATION": "reboot"}, "monitor.remediation"),
        ({"OSMTRUSTMGR_TPM_PCR_BANKS": "[sha256, md5]"}, "tpm.pcr_banks[1]"),
        ({"OSMTRUSTMGR_NBI_VERIFY_TLS": "maybe"}, "nbi.verify_tls"),
        ({"OSMTRUSTMGR_MESSAGE_TOPICS": "[ns"}, "message.topics"),
        ({"OSMTRUSTMGR_POLICY_REQUIRE_SIGNATURE": "true"}, "policy"),
    ],
)
def test_invalid_env_values_name_key_and_source(env: dict[str, str], key: str) -> None:
    msg = error_of(env=env)
    (var,) = env
    assert f"{key}:" in msg and f"(from env {var})" in msg


def test_unknown_key_in_file(tmp_path: Path) -> None:
    path = write(tmp_path, "gate:\n  modee: audit\n")
    assert f"unknown key 'gate.modee' in {path}" in error_of(path)


def test_unknown_section_in_file(tmp_path: Path) -> None:
    path = write(tmp_path, "gates:\n  mode: audit\n")
    assert f"unknown section 'gates' in {path}" in error_of(path)


def test_unknown_env_key_and_section() -> None:
    msg = error_of(env={"OSMTRUSTMGR_GATE_MODEE": "audit", "OSMTRUSTMGR_GATES_MODE": "audit"})
    assert "unknown key 'gate.modee' (from env OSMTRUSTMGR_GATE_MODEE)" in msg
    assert "unknown section 'gates' (from env OSMTRUSTMGR_GATES_MODE)" in msg
    assert "OSMTRUSTMGR_GLOBAL names no key" in error_of(env={"OSMTRUSTMGR_GLOBAL": "x"})


def test_unrelated_env_vars_ignored() -> None:
    assert load_config(env={"OSMLCM_GATE_MODEE": "x", "OSM_OTHER": "y", "TRUSTMGR_PORT": "tcp://x"}) == Config()


def test_all_errors_reported_together(tmp_path: Path) -> None:
    msg = error_of(write(tmp_path, "api: {port: 0}\n"), {"OSMTRUSTMGR_GATE_MODE": "x"})
    assert "api.port" in msg and "gate.mode" in msg


@pytest.mark.parametrize("text", ["- gate\n- api\n", "just a string\n", "42\n"])
def test_non_mapping_yaml(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, text)
    msg = error_of(path)
    assert str(path) in msg and "mapping" in msg


def test_non_mapping_section(tmp_path: Path) -> None:
    path = write(tmp_path, "gate: enforce\n")
    msg = error_of(path)
    assert msg.count("gate:") == 1 and str(path) in msg


def test_invalid_yaml_syntax(tmp_path: Path) -> None:
    path = write(tmp_path, "gate: {mode: audit\n")
    msg = error_of(path)
    assert "invalid YAML" in msg and str(path) in msg


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    assert f"config file not found: {missing}" in error_of(missing)


def test_config_file_from_env(tmp_path: Path) -> None:
    path = write(tmp_path, "vca: {driver: local}\n")
    assert load_config(env={"OSMTRUSTMGR_CONFIG": str(path)}).vca.driver == "local"
    missing = str(tmp_path / "nope.yaml")
    assert "(from env OSMTRUSTMGR_CONFIG)" in error_of(env={"OSMTRUSTMGR_CONFIG": missing})
    # an explicit path wins over the variable
    assert load_config(path, env={"OSMTRUSTMGR_CONFIG": missing}).vca.driver == "local"


def test_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OSMTRUSTMGR_VCA_DRIVER", "n2vc")
    monkeypatch.delenv("OSMTRUSTMGR_CONFIG", raising=False)
    assert load_config().vca.driver == "n2vc"


def test_config_is_frozen() -> None:
    cfg = Config()
    with pytest.raises(ValueError):
        cfg.gate.mode = "audit"


def test_redacted_hides_secrets() -> None:
    env = {
        "OSMTRUSTMGR_NBI_PASSWORD": "nbi-s3cret",
        "OSM_DATABASE_COMMONKEY": "common-s3cret",
        "OSM_DATABASE_URI": "mongodb://osm:db-s3cret@mongodb-k8s:27017/?replicaSet=rs0",
    }
    red = load_config(env=env).redacted()
    text = json.dumps(red)
    for secret in env.values():
        assert "s3cret" in secret and "s3cret" not in text
    assert red["nbi"]["password"] == "**********" and red["database"]["commonkey"] == "**********"
    assert red["database"]["uri"] == "mongodb://osm:****@mongodb-k8s:27017/?replicaSet=rs0"
    assert red["global"]["loglevel"] == "INFO" and red["gate"]["mode"] == "enforce"  # the rest is shown


def test_example_file_is_the_defaults() -> None:
    assert load_config(EXAMPLE, env={}) == Config()


def test_example_file_documents_every_key() -> None:
    data = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    documented = {(section, key) for section, values in data.items() for key in values}
    defaults = Config().redacted()
    expected = {(section, key) for section, values in defaults.items() for key in values}
    assert documented == expected
    assert Config.model_validate(data) == Config()


def test_cli_config_show_names_bad_keys(tmp_path: Path) -> None:
    """`osm-trustmgr config show` exits 2 naming the key and its source, and masks secrets otherwise."""
    import subprocess
    import sys

    exe = Path(sys.executable).parent / "osm-trustmgr"
    env = {"PATH": "/usr/bin:/bin", "OSMTRUSTMGR_GATE_MODE": "enforc"}
    bad = subprocess.run([str(exe), "config", "show"], env=env, capture_output=True, text=True, check=False)
    assert bad.returncode == 2
    assert "gate.mode" in bad.stderr and "OSMTRUSTMGR_GATE_MODE" in bad.stderr
    env = {"PATH": "/usr/bin:/bin", "OSMTRUSTMGR_NBI_PASSWORD": "s3cret", "OSMTRUSTMGR_GATE_MODE": "audit"}
    good = subprocess.run([str(exe), "config", "show", "-o", "yaml"], env=env, capture_output=True, text=True,
                          check=False)  # fmt: skip
    assert good.returncode == 0, good.stderr
    shown = yaml.safe_load(good.stdout)
    assert shown["gate"]["mode"] == "audit"
    assert "s3cret" not in good.stdout and shown["nbi"]["password"] == "**********"


def test_api_tls_needs_both_files(tmp_path: Path) -> None:
    msg = error_of(write(tmp_path, "api: {tls_cert: /etc/tm/cert.pem}\n"))
    assert "tls_cert and tls_key must be set together" in msg
    cfg = load_config(write(tmp_path, "api: {tls_cert: /a.pem, tls_key: /a.key, rate_limit: 0.5}\n"), env={})
    assert (str(cfg.api.tls_cert), cfg.api.rate_limit) == ("/a.pem", 0.5)
    assert "api.burst" in error_of(None, {"OSMTRUSTMGR_API_BURST": "0"})
