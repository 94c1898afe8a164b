"""Service configuration: a YAML file overridden by environment variables, the OSM way.

Every key can be set as ``OSMTRUSTMGR_<SECTION>_<KEY>`` (section and key case-insensitive; the value is
read as a YAML scalar or flow collection, so ``true``, ``5``, ``30s`` and ``[sha1, sha256]`` work, while
text keys such as passwords and URIs are taken verbatim). OSM's shared secret provides
``OSM_DATABASE_URI`` and ``OSM_DATABASE_COMMONKEY``; the module's own variables win over them.
The defaults below are the documented defaults of ``config/trustmgr.yaml``.
"""

from __future__ import annotations

import os
import re
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, SecretStr, ValidationError, model_validator

__all__ = [
    "ApiSection",
    "Config",
    "ConfigError",
    "DatabaseSection",
    "GateSection",
    "GlobalSection",
    "MessageSection",
    "MonitorSection",
    "NbiSection",
    "PolicySection",
    "TpmSection",
    "VcaSection",
    "load_config",
    "parse_duration",
]

ENV_PREFIX = "OSMTRUSTMGR_"
ENV_CONFIG = "OSMTRUSTMGR_CONFIG"
OSM_SHARED_ENV = {"OSM_DATABASE_URI": ("database", "uri"), "OSM_DATABASE_COMMONKEY": ("database", "commonkey")}
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")


class ConfigError(Exception):
    """Invalid configuration; the message names each offending key and where its value came from."""


def parse_duration(value: object) -> float:
    """Seconds from an int/float or a string such as ``"30s"``, ``"5m"``, ``"1h"``, ``"250ms"``, ``"2d"``."""
    if isinstance(value, bool):
        raise ValueError("duration must be a number of seconds or a string like '30s', '5m', '1h'")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str) and (m := _DURATION.match(value)):
        return float(m.group(1)) * _UNITS[m.group(2) or "s"]
    raise ValueError(f"invalid duration {value!r}: use seconds or a string like '30s', '5m', '1h'")


def _one_as_list(value: object) -> object:
    return [value] if isinstance(value, (str, Path)) else value


def _path(value: object) -> object:
    if value == "":
        raise ValueError("path must not be empty")
    return value


def _blank_is_none(value: object) -> object:
    return None if value == "" else value


def _loglevel(value: object) -> object:
    return value.upper() if isinstance(value, str) else value


Duration = Annotated[float, BeforeValidator(parse_duration), Field(gt=0)]
Port = Annotated[int, Field(strict=True, ge=1, le=65535)]
Flag = Annotated[bool, Field(strict=True)]
FilePath = Annotated[Path, BeforeValidator(_path)]
OptPath = Annotated[Path | None, BeforeValidator(_blank_is_none)]
OptSecret = Annotated[SecretStr | None, BeforeValidator(_blank_is_none)]
Name = Annotated[str, Field(min_length=1)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class GlobalSection(_Section):
    loglevel: Annotated[Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"], BeforeValidator(_loglevel)] = "INFO"


class MessageSection(_Section):
    driver: Literal["kafka", "local"] = "kafka"
    host: Name = "kafka"
    port: Port = 9092
    group_id: Name = "trustmgr"
    topics: Annotated[list[Name], BeforeValidator(_one_as_list), Field(min_length=1)] = ["ns", "nslcmops", "pla"]


class DatabaseSection(_Section):
    uri: Name = "mongodb://mongodb-k8s:27017/?replicaSet=rs0"
    name: Name = "osm"
    commonkey: OptSecret = None
    report_retention: Duration = 90 * 86400.0


class NbiSection(_Section):
    url: Name = "https://nbi:9999/osm"
    verify_tls: Flag = True
    user: Name = "admin"
    password: OptSecret = None
    project: Name = "admin"
    timeout: Duration = 30.0


class GateSection(_Section):
    mode: Literal["enforce", "placement", "audit"] = "enforce"
    max_age: Duration = 300.0
    timeout: Duration = 30.0
    terminate_on_reject: Flag = True


class MonitorSection(_Section):
    host_interval: Duration = 300.0
    vnf_interval: Duration = 600.0
    concurrency: Annotated[int, Field(strict=True, ge=1)] = 16
    remediation: Literal["notify", "terminate", "heal"] = "notify"
    jitter: Annotated[float, Field(strict=True, ge=0, lt=1)] = 0.1


class VcaSection(_Section):
    driver: Literal["nbi", "n2vc", "local"] = "nbi"
    timeout: Duration = 300.0
    poll_interval: Duration = 2.0
    charm_dir: OptPath = None


class ApiSection(_Section):
    enabled: Flag = True
    host: Name = "0.0.0.0"
    port: Port = 9998
    tls_cert: OptPath = None
    tls_key: OptPath = None
    rate_limit: Annotated[float, Field(gt=0)] = 5.0
    burst: Annotated[int, Field(strict=True, ge=1)] = 20
    challenge_ttl: Duration = 120.0

    @model_validator(mode="after")
    def _tls_pair(self) -> ApiSection:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key must be set together")
        return self


class TpmSection(_Section):
    ek_ca_bundle: OptPath = None
    pcr_banks: Annotated[
        list[Literal["sha1", "sha256", "sha384", "sha512", "sm3_256"]],
        BeforeValidator(_one_as_list),
        Field(min_length=1),
    ] = ["sha256"]
    allow_pinned_ek: Flag = False


class PolicySection(_Section):
    signers: Annotated[list[FilePath], BeforeValidator(_one_as_list)] = []
    require_signature: Flag = False
    dir: OptPath = None

    @model_validator(mode="after")
    def _signers_for_signatures(self) -> PolicySection:
        if self.require_signature and not self.signers:
            raise ValueError("require_signature is true but no signers are configured")
        return self


class Config(_Section):
    """The whole configuration; ``global`` is a Python keyword, so its attribute is ``global_``."""

    global_: GlobalSection = Field(default_factory=GlobalSection, alias="global")
    message: MessageSection = Field(default_factory=MessageSection)
    database: DatabaseSection = Field(default_factory=DatabaseSection)
    nbi: NbiSection = Field(default_factory=NbiSection)
    gate: GateSection = Field(default_factory=GateSection)
    monitor: MonitorSection = Field(default_factory=MonitorSection)
    vca: VcaSection = Field(default_factory=VcaSection)
    api: ApiSection = Field(default_factory=ApiSection)
    tpm: TpmSection = Field(default_factory=TpmSection)
    policy: PolicySection = Field(default_factory=PolicySection)

    def redacted(self) -> dict[str, Any]:
        """Plain dict for logging: secrets as ``**********``, passwords inside URLs masked too."""
        data: dict[str, Any] = self.model_dump(mode="json", by_alias=True)
        for section in data.values():
            for key, value in section.items():
                if isinstance(value, str):
                    section[key] = re.sub(r"(://[^/@:]*:)[^/@]*@", r"\1****@", value)
        return data


_SECTIONS: dict[str, type[_Section]] = {
    (f.alias or name): typing.cast("type[_Section]", f.annotation) for name, f in Config.model_fields.items()
}


def _is_text(section: str, key: str) -> bool:
    """True when the key takes a string or a secret, so an env value is used verbatim (not YAML-parsed)."""
    annotation = _SECTIONS[section].model_fields[key].annotation
    args = typing.get_args(annotation) or (annotation,)
    return any(a in (str, SecretStr) for a in args)


def _read_file(path: Path, origin: str) -> dict[str, Any]:
    try:
        with path.open(encoding="utf-8") as stream:
            data = yaml.safe_load(stream)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}{origin}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}{origin}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid YAML in {path}: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections, got {type(data).__name__}")
    # a section whose keys are all commented out reads as null: treat it as empty
    return {k: ({} if v is None else v) for k, v in data.items()}


def _set(
    data: dict[str, Any], sources: dict[tuple[str, str], str], where: str, section: str, key: str, value: object
) -> None:
    target = data.setdefault(section, {})
    if isinstance(target, dict):  # otherwise validation reports the malformed section
        target[key] = value
        sources[(section, key)] = where


def load_config(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Load the config from ``path`` (or ``$OSMTRUSTMGR_CONFIG``; neither → defaults), then env overrides."""
    env = os.environ if env is None else env
    origin = ""
    if path is None and env.get(ENV_CONFIG):
        path, origin = env[ENV_CONFIG], f" (from env {ENV_CONFIG})"
    data: dict[str, Any] = {}
    sources: dict[tuple[str, str], str] = {}
    if path is not None:
        data = _read_file(Path(path), origin)
        for section, values in data.items():
            for key in values if isinstance(values, dict) else ():
                sources[(section, str(key))] = str(path)
    errors: list[str] = []
    for var, (section, key) in OSM_SHARED_ENV.items():
        if env.get(var):
            _set(data, sources, f"env {var}", section, key, env[var])
    for var in sorted(env):
        if not var.upper().startswith(ENV_PREFIX) or var.upper() == ENV_CONFIG:
            continue
        section, _, key = var[len(ENV_PREFIX) :].lower().partition("_")
        if not key:
            errors.append(f"{var} names no key: use {ENV_PREFIX}<SECTION>_<KEY>")
        elif section not in _SECTIONS:
            errors.append(f"unknown section '{section}' (from env {var})")
        elif key not in _SECTIONS[section].model_fields:
            errors.append(f"unknown key '{section}.{key}' (from env {var})")
        else:
            try:
                value = env[var] if _is_text(section, key) else yaml.safe_load(env[var])
            except yaml.YAMLError:
                errors.append(f"{section}.{key}: not a YAML scalar or flow collection (from env {var})")
            else:
                _set(data, sources, f"env {var}", section, key, value)
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        errors.extend(_describe(err, sources, path) for err in exc.errors(include_url=False))
    if errors:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(errors))
    return config


def _describe(err: Any, sources: Mapping[tuple[str, str], str], path: str | Path | None) -> str:
    loc = [str(p) for p in err["loc"]]
    name = ".".join(loc[:2]) + "".join(f"[{p}]" for p in loc[2:])
    if len(loc) >= 2:
        source = sources.get((loc[0], loc[1]), "defaults")
    else:
        found = sorted({s for (sec, _), s in sources.items() if sec == loc[0]})
        source = ", ".join(found) or (str(path) if path is not None else "defaults")
    where = f"(from {source})" if source.startswith("env") or source == "defaults" else f"in {source}"
    if err["type"] == "extra_forbidden":
        return f"unknown {'key' if len(loc) > 1 else 'section'} '{name}' {where}"
    msg = str(err["msg"]).removeprefix("Value error, ")
    return f"{name}: {msg[:1].lower()}{msg[1:]} {where}"
