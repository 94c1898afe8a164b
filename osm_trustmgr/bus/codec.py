"""OSM's Kafka message encoding, and the limits that keep one bad message from hurting the service.

OSM (``osm_common/msgkafka.py``, class ``MsgKafka``, read in the osm/common history mirrored at
github.com/vuducmanh11/osm-common) writes the key as a plain UTF-8 string and the value as
``yaml.safe_dump(msg, default_flow_style=True)`` encoded as UTF-8, and reads both back with
``yaml.safe_load``. So JSON values also parse, and whatever OSM writes is YAML 1.1 flow style
with sorted keys and ASCII-escaped text.

Untrusted input rules here: a value is at most 1 MiB and a key 256 bytes, both UTF-8; the value must be
a YAML mapping. ``safe_dump`` emits anchors/aliases when a dict holds the same object twice, so aliases
cannot simply be refused; instead the *expanded* size (aliases counted each time they are used) is
bounded, which stops "billion laughs" documents and self-referencing ones. Merge keys (``<<``), which
``safe_dump`` never writes and whose flattening costs quadratic time, are refused.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from typing import Any

import yaml

__all__ = [
    "MAX_DEPTH",
    "MAX_EXPANDED_BYTES",
    "MAX_KEY_BYTES",
    "MAX_VALUE_BYTES",
    "MessageError",
    "decode",
    "encode_key",
    "encode_value",
]

MAX_VALUE_BYTES = 1 << 20  # Apache Kafka's default message.max.bytes is about the same
MAX_KEY_BYTES = 256
MAX_EXPANDED_BYTES = 4 * MAX_VALUE_BYTES  # aliases may expand a document at most this far
MAX_DEPTH = 100  # OSM documents nest about 10 levels; libyaml itself stops at 1000

_MERGE_TAG = "tag:yaml.org,2002:merge"
_SCALAR_WEIGHT = 8  # rough serialized size of a number, bool, null or date


class MessageError(ValueError):
    """A message that cannot be encoded or decoded; ``reason`` says why in a few words."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


_BaseLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml is ~10x faster


class _Loader(_BaseLoader):  # type: ignore[valid-type,misc]
    """Safe loader without merge keys."""

    def flatten_mapping(self, node: yaml.MappingNode) -> None:
        for key_node, _ in node.value:
            if key_node.tag == _MERGE_TAG:
                raise yaml.constructor.ConstructorError(
                    None, None, "merge keys (<<) are not accepted", key_node.start_mark
                )
        super().flatten_mapping(node)


class _Dumper(yaml.SafeDumper):
    """``yaml.safe_dump``'s dumper (pure Python, so the bytes equal OSM's) that never writes aliases."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def encode_value(msg: Mapping[str, Any]) -> bytes:
    """The value bytes OSM writes: YAML flow style, sorted keys, UTF-8."""
    try:
        text = yaml.dump(dict(msg), Dumper=_Dumper, default_flow_style=True)
    except yaml.YAMLError as exc:  # RepresenterError: an object YAML's safe dumper cannot write
        raise MessageError(f"value cannot be encoded: {exc}") from exc
    data = text.encode("utf-8")
    if len(data) > MAX_VALUE_BYTES:
        raise MessageError(f"value too large: {len(data)} bytes > {MAX_VALUE_BYTES}")
    return data


def encode_key(key: str) -> bytes:
    """A key as OSM writes it: the plain string in UTF-8 (OSM's readers ``safe_load`` it: keep it a word)."""
    if not isinstance(key, str) or not key:
        raise MessageError("key must be a non-empty string")
    try:
        data = key.encode("utf-8")
    except UnicodeEncodeError as exc:  # lone surrogates
        raise MessageError(f"key is not valid text: {exc.reason}") from exc
    if len(data) > MAX_KEY_BYTES:
        raise MessageError(f"key too long: {len(data)} bytes > {MAX_KEY_BYTES}")
    return data


def decode(key: bytes | None, value: bytes | None) -> tuple[str, dict[str, Any]]:
    """Key and value of a received message; ``MessageError`` for anything OSM would not have written."""
    if key is None:
        raise MessageError("message has no key")
    if len(key) > MAX_KEY_BYTES:
        raise MessageError(f"key too long: {len(key)} bytes > {MAX_KEY_BYTES}")
    if value is None:
        raise MessageError("message has no value")
    if len(value) > MAX_VALUE_BYTES:
        raise MessageError(f"value too large: {len(value)} bytes > {MAX_VALUE_BYTES}")
    try:
        key_text = key.decode("utf-8")
        text = value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MessageError(f"not UTF-8: {exc.reason} at byte {exc.start}") from exc
    if not key_text:
        raise MessageError("message has an empty key")
    try:
        doc = yaml.load(text, Loader=_Loader)  # a SafeLoader subclass: no arbitrary objects
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark else ""
        raise MessageError(f"invalid YAML: {exc.problem or exc.context}{where}") from exc
    except yaml.YAMLError as exc:
        raise MessageError(f"invalid YAML: {exc}") from exc
    except RecursionError as exc:  # only the pure-Python parser recurses; libyaml stops at 1000 levels
        raise MessageError(f"value nests deeper than {MAX_DEPTH} levels") from exc
    except (ValueError, OverflowError, TypeError) as exc:
        # e.g. an integer beyond Python's int/str digit limit, or a timestamp out of range
        raise MessageError(f"invalid YAML scalar: {exc}") from exc
    if not isinstance(doc, dict):
        raise MessageError(f"value is not a mapping but {type(doc).__name__}")
    _check_expansion(doc)
    return key_text, doc


def _check_expansion(root: dict[str, Any]) -> None:
    """Refuse a document whose aliases expand it beyond the limits, or that contains itself.

    An iterative post-order walk over distinct containers (memoized by identity), so a billion-laughs
    document costs as much as its few distinct nodes, not as much as its expansion.
    """
    size: dict[int, int] = {}  # id -> expanded weight
    height: dict[int, int] = {}
    open_: set[int] = set()  # containers on the current path: meeting one again means a cycle
    stack: list[tuple[object, bool]] = [(root, False)]
    while stack:
        obj, done = stack.pop()
        ident = id(obj)
        if not done:
            if ident in size:
                continue
            if ident in open_:
                raise MessageError("value contains itself (recursive alias)")
            open_.add(ident)
            stack.append((obj, True))
            stack.extend((child, False) for child in _items(obj) if isinstance(child, _CONTAINERS))
            continue
        total, deepest = 2, 0
        for child in _items(obj):
            if isinstance(child, _CONTAINERS):
                total += size[id(child)]
                deepest = max(deepest, height[id(child)])
            else:
                total += len(child) + 2 if isinstance(child, (str, bytes)) else _SCALAR_WEIGHT
        open_.discard(ident)
        size[ident], height[ident] = total, deepest + 1
        if total > MAX_EXPANDED_BYTES:
            raise MessageError(f"value expands beyond {MAX_EXPANDED_BYTES} bytes (YAML aliases)")
        if deepest + 1 > MAX_DEPTH:
            raise MessageError(f"value nests deeper than {MAX_DEPTH} levels")


_CONTAINERS = (dict, list, set)  # what SafeLoader builds; mapping keys are always hashable scalars


def _items(obj: object) -> Iterable[object]:
    if isinstance(obj, dict):
        return itertools.chain(obj.keys(), obj.values())
    assert isinstance(obj, (list, set))
    return obj
