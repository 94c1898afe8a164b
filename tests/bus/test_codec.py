"""OSM's Kafka encoding (YAML flow style, plain string keys) and the limits on what we accept."""

from __future__ import annotations

import datetime
import time

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from osm_trustmgr.bus.codec import (
    MAX_DEPTH,
    MAX_KEY_BYTES,
    MAX_VALUE_BYTES,
    MessageError,
    decode,
    encode_key,
    encode_value,
)

from .semantics import NSLCMOP


def test_value_is_what_osm_writes() -> None:
    # osm_common.msgkafka.MsgKafka.aiowrite: yaml.safe_dump(msg, default_flow_style=True), UTF-8
    assert encode_value({"b": ["x", "y"], "a": 1}) == b"{a: 1, b: [x, y]}\n"
    assert encode_value(NSLCMOP) == yaml.safe_dump(NSLCMOP, default_flow_style=True).encode()


def test_round_trip_through_osm_reader() -> None:
    value = {**NSLCMOP, "when": datetime.datetime(2024, 5, 1, 12, 0, 0), "blob": b"\x00\x01", "none": None}
    assert yaml.safe_load(encode_value(value)) == value  # what OSM's aioread does with it
    assert decode(b"instantiate", encode_value(value)) == ("instantiate", value)


def test_key_is_a_plain_string() -> None:
    assert encode_key("instantiated") == b"instantiated"
    assert decode(encode_key("gate"), b"{}") == ("gate", {})
    assert encode_key("k" * MAX_KEY_BYTES) == b"k" * MAX_KEY_BYTES


def test_json_values_are_accepted() -> None:
    assert decode(b"cancel", b'{"_id": "x", "cancelMode": "FORCEFUL", "n": [1, 2.5, true, null]}') == (
        "cancel",
        {"_id": "x", "cancelMode": "FORCEFUL", "n": [1, 2.5, True, None]},
    )


def test_aliases_osm_writes_for_shared_objects_are_accepted() -> None:
    shared = {"member-vnf-index": "1"}
    written = yaml.safe_dump({"a": shared, "b": shared}, default_flow_style=True).encode()
    assert b"&id001" in written and b"*id001" in written  # PyYAML aliases objects it sees twice
    assert decode(b"k", written) == ("k", {"a": shared, "b": shared})
    assert b"&" not in encode_value({"a": shared, "b": shared})  # we never write aliases


@pytest.mark.parametrize(
    ("key", "value", "reason"),
    [
        (b"k", b"{a: [1, 2", "invalid YAML"),
        (b"k", b"a: b: c", "invalid YAML"),
        (b"k", b"{a: 1}\n---\n{b: 2}", "invalid YAML"),  # one document only
        (b"k", b"[1, 2]", "not a mapping but list"),
        (b"k", b"just text", "not a mapping but str"),
        (b"k", b"", "not a mapping but NoneType"),
        (b"k", None, "no value"),
        (None, b"{a: 1}", "no key"),
        (b"", b"{a: 1}", "empty key"),
        (b"k" * (MAX_KEY_BYTES + 1), b"{a: 1}", "key too long"),
        (b"k", b"{a: '" + b"x" * MAX_VALUE_BYTES + b"'}", "value too large"),
        (b"k", "{a: caf\u00e9}".encode("latin-1"), "not UTF-8"),
        (b"\xff", b"{a: 1}", "not UTF-8"),
        (b"k", b"{a: !!python/object/apply:os.system [echo]}", "invalid YAML"),  # safe loader only
        (b"k", b"{a: " + b"9" * 5000 + b"}", "invalid YAML scalar"),  # beyond Python's int digit limit
        (b"k", b"{a: 2024-13-45}", "invalid YAML scalar"),
        (b"k", b"base: &b {x: 1}\nderived: {<<: *b, y: 2}", "merge keys"),
        (b"k", b"a: &a [*a]", "contains itself"),
        (b"k", b"{a: " + b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1) + b"}", "nests deeper"),
        (b"k", b"{a: " + b"[" * 5000 + b"]" * 5000 + b"}", "invalid YAML"),  # libyaml's own limit
    ],
)
def test_malformed_messages_are_refused_with_a_reason(key: bytes | None, value: bytes | None, reason: str) -> None:
    with pytest.raises(MessageError) as err:
        decode(key, value)
    assert reason in err.value.reason


def billion_laughs(levels: int = 9) -> bytes:
    lines = ['l0: &l0 "lol"']
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, levels + 1)]
    return "\n".join(lines).encode()


def test_alias_bomb_is_refused_quickly() -> None:
    bomb = billion_laughs()  # 9**9 "lol"s when expanded, under 1 KiB as YAML
    assert len(bomb) < 1024
    started = time.perf_counter()
    with pytest.raises(MessageError, match="expands beyond"):
        decode(b"instantiate", bomb)
    assert time.perf_counter() - started < 0.5


def test_modest_alias_use_is_fine() -> None:
    assert decode(b"k", billion_laughs(levels=3))[1]["l3"][0][0] == ["lol"] * 9


def test_encode_refuses_what_osm_could_not_read() -> None:
    with pytest.raises(MessageError, match="cannot be encoded"):
        encode_value({"a": object()})
    with pytest.raises(MessageError, match="too large"):
        encode_value({"a": "x" * MAX_VALUE_BYTES})
    for bad_key in ("", "k" * (MAX_KEY_BYTES + 1), None, "\ud800"):
        with pytest.raises(MessageError, match="key"):
            encode_key(bad_key)  # type: ignore[arg-type]


json_like = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=30,
)


@settings(max_examples=200, deadline=None)
@given(key=st.text(min_size=1, max_size=30), value=st.dictionaries(st.text(max_size=10), json_like, max_size=5))
def test_round_trip_property(key: str, value: dict[str, object]) -> None:
    assert decode(encode_key(key), encode_value(value)) == (key, value)
    assert yaml.safe_load(encode_value(value)) == value
