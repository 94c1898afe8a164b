"""The exceptions the evidence parsers raise. Parsers raise nothing else on bad input."""

from __future__ import annotations

from osm_trustmgr.failures import Failure


class EvidenceError(ValueError):
    """Evidence is unusable; ``code`` is a stable failure code from :mod:`osm_trustmgr.failures`."""

    def __init__(self, code: Failure, detail: str) -> None:
        super().__init__(f"{code.value}: {detail}")
        self.code = code
        self.detail = detail
