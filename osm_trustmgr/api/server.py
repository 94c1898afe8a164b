"""uvicorn inside an existing event loop (the service's, a test's, the simulator's)."""

from __future__ import annotations

import contextlib
from collections.abc import Generator

import uvicorn


class EmbeddedServer(uvicorn.Server):
    """A uvicorn server that leaves signals to the host process (the service stops it through ``should_exit``)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield
