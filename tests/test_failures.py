"""The failure-code registry is unique, documented, and the docs table is current."""

from __future__ import annotations

import re

from osm_trustmgr.failures import Failure, describe, markdown_table
from tests.conftest import REPO


def test_codes_are_unique_dotted_and_described() -> None:
    codes = [f.value for f in Failure]
    assert len(codes) == len(set(codes))
    for f in Failure:
        assert re.fullmatch(r"[a-z0-9]+\.[a-z0-9_]+", f.value), f.value
        assert f.description and describe(f.value) == f.description
    assert describe("future.code") == "future.code"


def test_docs_table_is_current() -> None:
    doc = (REPO / "docs" / "failure-codes.md").read_text()
    assert markdown_table() in doc


def test_every_code_used_in_source_is_registered() -> None:
    used = set()
    for path in (REPO / "osm_trustmgr").rglob("*.py"):
        used.update(re.findall(r"Failure\.([A-Z][A-Z0-9_]+)", path.read_text()))
    assert used, "no Failure members referenced"
    assert used <= set(Failure.__members__), used - set(Failure.__members__)
