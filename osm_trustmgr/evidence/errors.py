"""How fetching evidence fails, whatever carries it (host agent over HTTPS, charm action through OSM).

``SourceUnreachable``: nothing answered (refused, timeout, NBI down); the entity's trust is unknown, so it is
``unreachable`` and never trusted. ``SourceError``: something answered with an error (agent 4xx, a failed
charm action); the round ends with a verdict naming the reason.
"""

from __future__ import annotations


class SourceUnreachable(Exception):
    """The evidence source could not be reached or did not answer in time."""


class SourceError(Exception):
    """The evidence source answered with an error; ``detail`` is its reason."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail
