"""The charm's parameter validation (src/params.py) against the JSON schema of charmcraft.yaml.

Juju validates action params with the schema; the charm validates them again because LCM forwards values
untyped and ops.testing does not apply the schema. The table says, for each input, what the schema and what
the charm decide. Where they differ it is on purpose: the charm is stricter where the schema cannot say it
(hex nonce, PCR syntax, URL, base64, YAML with vnf_id, plain vs strict mode), and more lenient in exactly one
place, an ima-offset sent as a decimal string.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jsonschema
import pytest
import yaml
from params import (
    ParamError,
    activate_params,
    attest_params,
    check_known,
    parse_ima_offset,
    parse_nonce,
    parse_pcrs,
    parse_url,
    parse_vnf_id,
    tools_selection,
)

B64 = "AAQBAgME"  # 6 bytes
URL = "https://trustmgr:9998/osm/trust/v1"
STRICT_DEFAULTS = {"pcrs": "sha256:0-10", "ima-offset": 0, "nonce": ""}  # what Juju fills in from the schema
OSM_PARAMS = yaml.safe_dump({"ns_id": "ns-1", "vnf_id": "vnfr-1", "member_vnf_index": "1", "vdu_id": None})

VALIDATORS: dict[str, Callable[[Mapping[str, Any]], object]] = {
    "verify-ssh-credentials": lambda p: check_known("verify-ssh-credentials", p),
    "identity": lambda p: check_known("identity", p),
    "activate": activate_params,
    "attest": attest_params,
}

# (id, action, params, schema accepts, charm accepts)
TABLE: list[tuple[str, str, dict[str, Any], bool, bool]] = [
    ("verify-none", "verify-ssh-credentials", {}, True, True),
    # No params and no additionalProperties in charmcraft.yaml: the schema lets anything through, the charm does not.
    ("verify-extra", "verify-ssh-credentials", {"x": "1"}, True, False),
    ("identity-none", "identity", {}, True, True),
    ("identity-extra", "identity", {"nonce": "aa"}, True, False),
    ("activate-ok", "activate", {"credential": B64, "secret": B64}, True, True),
    ("activate-missing-secret", "activate", {"credential": B64}, False, False),
    ("activate-not-b64", "activate", {"credential": "!!not base64", "secret": B64}, True, False),
    ("activate-empty", "activate", {"credential": "", "secret": B64}, True, False),
    ("activate-int", "activate", {"credential": 5, "secret": B64}, False, False),
    ("activate-extra", "activate", {"credential": B64, "secret": B64, "nonce": "aa"}, False, False),
    ("attest-nonce", "attest", {"nonce": "a1b2"}, True, True),
    ("attest-all", "attest", {"nonce": "a1b2", "pcrs": "sha1:0,1+sha256:0-10", "ima-offset": 12}, True, True),
    ("attest-nonce-64", "attest", {"nonce": "ab" * 64}, True, True),
    ("attest-nonce-65", "attest", {"nonce": "ab" * 65}, True, False),
    ("attest-nonce-not-hex", "attest", {"nonce": "zz"}, True, False),
    ("attest-nonce-odd", "attest", {"nonce": "abc"}, True, False),
    ("attest-nonce-shell", "attest", {"nonce": "aa; rm -rf /"}, True, False),
    ("attest-no-nonce", "attest", {}, True, False),
    ("attest-nonce-int", "attest", {"nonce": 12}, False, False),
    ("attest-pcr-24", "attest", {"nonce": "aa", "pcrs": "sha256:24"}, True, False),
    ("attest-pcr-md5", "attest", {"nonce": "aa", "pcrs": "md5:0"}, True, False),
    ("attest-pcr-reversed", "attest", {"nonce": "aa", "pcrs": "sha256:5-2"}, True, False),
    ("attest-pcr-shell", "attest", {"nonce": "aa", "pcrs": "sha256:0 $(reboot)"}, True, False),
    ("attest-offset-negative", "attest", {"nonce": "aa", "ima-offset": -1}, False, False),
    ("attest-offset-string", "attest", {"nonce": "aa", "ima-offset": "7"}, False, True),
    ("attest-offset-bool", "attest", {"nonce": "aa", "ima-offset": True}, False, False),
    ("attest-offset-fraction", "attest", {"nonce": "aa", "ima-offset": 1.5}, False, False),
    ("attest-offset-word", "attest", {"nonce": "aa", "ima-offset": "seven"}, False, False),
    ("attest-extra", "attest", {"nonce": "aa", "bogus": "1"}, False, False),
    ("attest-empty-url-is-plain", "attest", {"nonce": "aa", "trustmgr-url": ""}, True, True),
    ("strict", "attest", {"trustmgr-url": URL, "osm-params": OSM_PARAMS}, True, True),
    ("strict-with-defaults", "attest", {**STRICT_DEFAULTS, "trustmgr-url": URL, "osm-params": OSM_PARAMS}, True, True),
    ("strict-with-nonce", "attest", {"trustmgr-url": URL, "osm-params": OSM_PARAMS, "nonce": "aa"}, True, False),
    ("strict-no-osm-params", "attest", {"trustmgr-url": URL}, True, False),
    ("strict-no-vnf-id", "attest", {"trustmgr-url": URL, "osm-params": "ns_id: ns-1"}, True, False),
    ("strict-osm-params-list", "attest", {"trustmgr-url": URL, "osm-params": "- vnf_id"}, True, False),
    ("strict-ftp", "attest", {"trustmgr-url": "ftp://trustmgr/x", "osm-params": OSM_PARAMS}, True, False),
    ("osm-params-without-url", "attest", {"nonce": "aa", "osm-params": OSM_PARAMS}, True, False),
]
# The only inputs the schema rejects and the charm accepts.
MORE_LENIENT = {"attest-offset-string"}


def _schema(spec: Mapping[str, Any]) -> dict[str, Any]:
    """An action's params as the JSON schema Juju validates them with."""
    return {
        "type": "object",
        "properties": spec.get("params", {}),
        "required": spec.get("required", []),
        "additionalProperties": spec.get("additionalProperties", True),
    }


def _charm_accepts(action: str, params: Mapping[str, Any]) -> bool:
    try:
        VALIDATORS[action](params)
    except ParamError:
        return False
    return True


def test_every_action_has_a_validator_and_a_valid_schema(charmcraft: dict[str, Any]) -> None:
    assert set(charmcraft["actions"]) == set(VALIDATORS)
    for spec in charmcraft["actions"].values():
        jsonschema.Draft7Validator.check_schema(_schema(spec))


@pytest.mark.parametrize(
    ("action", "params", "schema_ok", "charm_ok"), [r[1:] for r in TABLE], ids=[r[0] for r in TABLE]
)
def test_charm_and_schema_agree_on_purpose(
    charmcraft: dict[str, Any], action: str, params: dict[str, Any], schema_ok: bool, charm_ok: bool
) -> None:
    schema = _schema(charmcraft["actions"][action])
    assert jsonschema.Draft7Validator(schema).is_valid(params) is schema_ok
    assert _charm_accepts(action, params) is charm_ok


def test_charm_is_more_lenient_only_where_documented() -> None:
    lenient = {case for case, _, _, schema_ok, charm_ok in TABLE if charm_ok and not schema_ok}
    assert lenient == MORE_LENIENT
    stricter = {case for case, _, _, schema_ok, charm_ok in TABLE if schema_ok and not charm_ok}
    assert {"attest-nonce-not-hex", "attest-pcr-24", "strict-no-vnf-id", "activate-not-b64"} <= stricter
    assert {"identity-extra", "verify-extra"} <= stricter


@pytest.mark.parametrize(
    ("spec", "expected", "tools"),
    [
        ("sha256:0-10", {"sha256": list(range(11))}, "sha256:0,1,2,3,4,5,6,7,8,9,10"),
        ("sha1:0,1+sha256:0-2,7", {"sha1": [0, 1], "sha256": [0, 1, 2, 7]}, "sha1:0,1+sha256:0,1,2,7"),
        ("sha384:23,0,0", {"sha384": [0, 23]}, "sha384:0,23"),
        ("sha512:4", {"sha512": [4]}, "sha512:4"),
    ],
)
def test_pcr_selection_expands_ranges_for_tpm2_tools(spec: str, expected: dict[str, list[int]], tools: str) -> None:
    assert parse_pcrs(spec) == expected
    assert tools_selection(parse_pcrs(spec)) == tools


@pytest.mark.parametrize(
    "spec", ["", "sha256", "sha256:", "sha256:0,,1", "sha256:0+sha256:1", "sha256:-1", "SHA256:0", "sha256:0-24", 7]
)
def test_bad_pcr_selections_are_refused(spec: object) -> None:
    with pytest.raises(ParamError, match="pcrs"):
        parse_pcrs(spec)


def test_nonce_sizes() -> None:
    assert parse_nonce("00") == b"\x00"
    assert parse_nonce("AbCd") == b"\xab\xcd"
    for bad in ("", "a", "ab" * 65, "0x12", " ab"):
        with pytest.raises(ParamError, match="nonce"):
            parse_nonce(bad)


def test_ima_offset_forms() -> None:
    assert [parse_ima_offset(v) for v in (0, 12, "12", " 3 ", 4.0)] == [0, 12, 12, 3, 4]
    for bad in (-1, "-1", "1e3", None, False, [1]):
        with pytest.raises(ParamError, match="ima-offset"):
            parse_ima_offset(bad)


def test_trust_manager_url() -> None:
    assert parse_url("http://127.0.0.1:9998/osm/trust/v1/") == "http://127.0.0.1:9998/osm/trust/v1"
    for bad in ("trustmgr:9998", "file:///etc/passwd", "https://", "https://tm/x?y=1", "https://tm/ x", None):
        with pytest.raises(ParamError, match="trustmgr-url"):
            parse_url(bad)


def test_vnf_id_from_lcm_osm_params() -> None:
    """LCM substitutes ``<OSM>`` with ``yaml.safe_dump(get_osm_params(vnfr))``: block or flow style."""
    assert parse_vnf_id(OSM_PARAMS) == "vnfr-1"
    assert parse_vnf_id("{ns_id: n, vnf_id: 9a3c-77}") == "9a3c-77"
    for bad in ("", "vnf_id: ''", "vnf_id: [1]", "{unclosed", "just text"):
        with pytest.raises(ParamError, match="osm-params"):
            parse_vnf_id(bad)


def test_strict_mode_params_carry_url_and_vnf() -> None:
    p = attest_params({"trustmgr-url": URL + "/", "osm-params": OSM_PARAMS, "pcrs": "sha256:0-10", "ima-offset": 0})
    assert (p.nonce, p.trustmgr_url, p.vnf_id) == (None, URL, "vnfr-1")
    plain = attest_params({"nonce": "a1", "ima-offset": "5"})
    assert (plain.nonce, plain.ima_offset, plain.trustmgr_url) == (b"\xa1", 5, None)
    assert plain.selection == {"sha256": list(range(11))}
