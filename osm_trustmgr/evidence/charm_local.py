"""Run a real ops charm's actions in this process, the way Juju would: for the sandbox and the OSM simulator.

:class:`CharmRunner` keeps what Juju keeps per application — its config (``juju config``) and the unit's state
between events (stored state, status) — and runs each action through ``ops.testing.Context`` with the charm
class loaded from ``<charm_dir>/src/charm.py`` (``src`` and ``lib`` on ``sys.path``, as Juju's dispatch does).
Where ``ops.testing`` is more lenient than Juju, the runner does Juju's part: action parameters are checked
against the action's schema (types, ``required``, ``minimum``, ``additionalProperties``) and schema defaults are
filled in; config values are converted to the option's type and unknown options refused; result values are
turned into strings (``action-set`` takes text).

``ops[testing]`` is a test/sandbox extra, imported only when an action runs. ``ops.testing`` sets the Juju
environment in ``os.environ`` for the duration of an event, so every run in the process is serialised by one
lock: the runner is thread-safe, but actions of different applications do not overlap.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib.util
import inspect
import logging
import shutil
import sys
import tempfile
import threading
import weakref
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from osm_trustmgr.evidence.vca import VcaError, VcaUnavailable

__all__ = ["CharmActionFailed", "CharmRunner", "run_config_primitive"]

log = logging.getLogger(__name__)

_RUN_LOCK = threading.Lock()  # ops.testing swaps os.environ during an event: one event at a time per process
_IGNORE = shutil.ignore_patterns(".git", ".venv", "venv", "__pycache__", "*.charm", "build", ".tox", "tests")
_JSON_TYPES: dict[str, type | tuple[type, ...]] = {
    "string": str,
    "integer": int,
    "number": (int, float),
    "boolean": bool,
    "object": dict,
    "array": list,
}


class CharmActionFailed(VcaError):
    """The action ran and called ``event.fail(message)``; ``results`` is what it had set before."""

    def __init__(self, message: str, results: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.results = dict(results or {})


def _juju_text(value: Any) -> Any:
    """``action-set key=value`` stores text; nested mappings stay nested (Juju re-nests dotted keys)."""
    if isinstance(value, Mapping):
        return {str(k): _juju_text(v) for k, v in value.items()}
    return str(value)


def _config_value(key: str, option: Mapping[str, Any], value: Any) -> Any:
    """``juju config app key=value``: the text converted to the option's type (Juju refuses what fails)."""
    kind = option.get("type", "string")
    text = str(value).lower() if isinstance(value, bool) else str(value)
    try:
        if kind == "int":
            if isinstance(value, float) or not text.strip().lstrip("+-").isdigit():
                raise ValueError
            return int(text)
        if kind == "float":
            return float(text)
        if kind == "boolean":
            truth = {"1": True, "t": True, "true": True, "0": False, "f": False, "false": False}
            return truth[text.strip().lower()]
    except (ValueError, KeyError):
        raise VcaError(f'option "{key}" expected {kind}, got {value!r}') from None
    return text


class CharmRunner:
    """The charm at ``charm_dir`` (``charmcraft.yaml`` + ``src/charm.py``), one simulated unit per application.

    ``charm_class`` names the ``ops.CharmBase`` subclass when ``src/charm.py`` defines several. The charm runs
    in a private copy of ``charm_dir`` (``ops.testing`` writes metadata files into the charm root), removed by
    :meth:`close`.
    """

    def __init__(self, charm_dir: Path | str, *, charm_class: str | None = None) -> None:
        self.charm_dir = Path(charm_dir).resolve()
        source = self.charm_dir / "src" / "charm.py"
        meta_path = self.charm_dir / "charmcraft.yaml"
        if not source.is_file() or not meta_path.is_file():
            raise VcaUnavailable(f"{self.charm_dir} is not a charm: it needs charmcraft.yaml and src/charm.py")
        meta = yaml.safe_load(meta_path.read_text())
        if not isinstance(meta, dict) or not meta.get("name"):
            raise VcaUnavailable(f"{meta_path} has no charm name")
        self.meta: dict[str, Any] = meta
        self.options: dict[str, Any] = dict((meta.get("config") or {}).get("options") or {})
        self.actions: dict[str, Any] = {name: spec or {} for name, spec in (meta.get("actions") or {}).items()}
        self._class_name = charm_class
        self._charm_type: type[Any] | None = None
        self._root: Path | None = None
        self._configs: dict[str, dict[str, Any]] = {}
        self._states: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._finalizer: weakref.finalize[Any, CharmRunner] | None = None

    # -- juju config --------------------------------------------------------------------------------------

    def configure(self, app: str, config: Mapping[str, Any]) -> None:
        """``juju config <app> k=v …``: merged into the application's config; VcaError names a bad option."""
        converted = {}
        for key, value in config.items():
            if key not in self.options:
                raise VcaError(f'unknown option "{key}"')
            converted[key] = _config_value(key, self.options[key], value)
        with self._lock:
            self._configs.setdefault(app, {}).update(converted)

    def config(self, app: str) -> dict[str, Any]:
        """The options set for ``app`` (without the charm's defaults)."""
        with self._lock:
            return dict(self._configs.get(app, {}))

    # -- actions ------------------------------------------------------------------------------------------

    def check_params(self, action: str, params: Mapping[str, Any]) -> dict[str, Any]:
        """What Juju does before queueing an action: schema check, then the schema's defaults filled in."""
        if action not in self.actions:
            raise VcaError(f"Action {action} not in available actions")  # libjuju JujuActionNotFound
        spec = self.actions[action]
        schema: dict[str, Any] = spec.get("params") or {}
        for name in spec.get("required") or ():
            if name not in params:
                raise VcaError(f"validation failed: (root) : {name} is required")
        for name, value in params.items():
            if name not in schema:
                if spec.get("additionalProperties", True) is False:
                    raise VcaError(f"validation failed: (root) : additional property {name!r} is not allowed")
                continue
            kind = schema[name].get("type")
            expected = _JSON_TYPES.get(kind or "")
            wrong_bool = isinstance(value, bool) and kind in ("integer", "number")
            if expected is not None and (not isinstance(value, expected) or wrong_bool):
                raise VcaError(f"validation failed: (root).{name} : invalid type, expected {kind}, given {value!r}")
            minimum = schema[name].get("minimum")
            if minimum is not None and isinstance(value, (int, float)) and value < minimum:
                raise VcaError(f"validation failed: (root).{name} : must be greater than or equal to {minimum}")
        defaults = {k: v["default"] for k, v in schema.items() if isinstance(v, Mapping) and "default" in v}
        return {**defaults, **params}

    def run(self, app: str, action: str, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Run ``action`` on the leader unit of ``app``; its results, every value as text.

        ``CharmActionFailed`` when the charm calls ``event.fail``; ``VcaError`` when Juju would refuse the action
        or the charm raises; ``VcaUnavailable`` when ``ops[testing]`` or the charm cannot be loaded.
        """
        checked = self.check_params(action, params or {})
        testing = _ops_testing()
        charm_type = self._load()
        with _RUN_LOCK:
            with self._lock:
                config = dict(self._configs.get(app, {}))
                previous = self._states.get(app)
            state = (
                testing.State(config=config, leader=True)
                if previous is None
                else dataclasses.replace(previous, config=config)
            )
            with (
                _host_logging_kept(),
                testing.Context(charm_type, meta=self.meta, charm_root=self._charm_root()) as ctx,
            ):
                try:
                    out = ctx.run(ctx.on.action(action, params=checked), state)
                except testing.ActionFailed as exc:
                    with self._lock:
                        if exc.state is not None:
                            self._states[app] = exc.state
                    raise CharmActionFailed(exc.message, _juju_text(ctx.action_results or {})) from None
                except Exception as exc:  # UncaughtCharmError and friends: Juju marks the action failed
                    cause = exc.__cause__ or exc
                    raise VcaError(f"action {action} failed: {type(cause).__name__}: {cause}") from exc
                results = dict(_juju_text(ctx.action_results or {}))
            with self._lock:
                self._states[app] = out
        return results

    def close(self) -> None:
        """Remove the private copy of the charm root (a later run makes a new one)."""
        with self._lock:
            finalizer, self._finalizer, self._root = self._finalizer, None, None
        if finalizer is not None:
            finalizer()

    # -- loading ------------------------------------------------------------------------------------------

    def _charm_root(self) -> Path:
        with self._lock:
            if self._root is None:
                root = Path(tempfile.mkdtemp(prefix="charm-root-"))
                shutil.copytree(self.charm_dir, root / "charm", ignore=_IGNORE)
                self._root = root / "charm"
                self._finalizer = weakref.finalize(self, shutil.rmtree, str(root), True)
            return self._root

    def _load(self) -> type[Any]:
        with self._lock:
            if self._charm_type is None:
                self._charm_type = _load_charm_class(self.charm_dir, self._class_name)
            return self._charm_type


class _AtLeast(logging.Filter):
    def __init__(self, level: int) -> None:
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= self.level


@contextlib.contextmanager
def _host_logging_kept() -> Iterator[None]:
    """ops sets the root logger to DEBUG while a charm runs (as Juju's dispatch does, for the unit's log): the
    process hosting the charm keeps its own verbosity, else every SSH handshake floods the service's log."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    keep = _AtLeast(level or logging.WARNING)
    for handler in handlers:
        handler.addFilter(keep)
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(keep)
        root.setLevel(level)
        root.handlers[:] = handlers


def _ops_testing() -> Any:
    try:
        import ops.testing
    except ImportError as exc:
        hint = "running a charm in-process needs ops[testing] (pip install 'ops[testing]')"
        raise VcaUnavailable(f"{hint}: {exc}") from exc
    return ops.testing


def _load_charm_class(charm_dir: Path, class_name: str | None) -> type[Any]:
    """Import ``src/charm.py`` under a name of its own (two charms may both call theirs ``charm``)."""
    import ops

    for sub in ("lib", "src"):
        path = str(charm_dir / sub)
        if (charm_dir / sub).is_dir() and path not in sys.path:
            sys.path.insert(0, path)
    name = "_osm_trustmgr_charm_" + hashlib.sha1(str(charm_dir).encode()).hexdigest()[:12]
    module = sys.modules.get(name)
    if module is None:
        spec = importlib.util.spec_from_file_location(name, charm_dir / "src" / "charm.py")
        if spec is None or spec.loader is None:
            raise VcaUnavailable(f"cannot import {charm_dir / 'src' / 'charm.py'}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            del sys.modules[name]
            raise VcaUnavailable(f"cannot import the charm at {charm_dir}: {type(exc).__name__}: {exc}") from exc
    found = [
        obj
        for obj in vars(module).values()
        if inspect.isclass(obj) and issubclass(obj, ops.CharmBase) and obj.__module__ == name
        and (class_name is None or obj.__name__ == class_name)
    ]  # fmt: skip
    if len(found) != 1:
        what = f"class {class_name}" if class_name else "ops.CharmBase subclass"
        raise VcaUnavailable(f"{charm_dir}/src/charm.py must define exactly one {what}; found {len(found)}")
    return found[0]


def run_config_primitive(
    runner: CharmRunner, app: str, params: Mapping[str, Any], *, verify_attempts: int = 1, strict: bool = False
) -> str:
    """N2VC's ``config`` primitive: ``juju config``, then ``verify-ssh-credentials`` when the charm has it.

    Reproduces osm/LCM v19 ``osm_lcm/n2vc/n2vc_juju_conn.py`` ``N2VCJujuConnector.exec_primitive``: a failed
    verification is retried (N2VC: 20 attempts, 15 s apart) and then only logged — the primitive still answers
    ``"CONFIG OK"`` and the next primitive is the one that fails. ``strict=True`` fails the primitive instead
    (``VcaError``), which tests use to stop at the first bad credential.
    """
    runner.configure(app, params)
    if "verify-ssh-credentials" not in runner.actions:
        return "CONFIG OK"
    last: VcaError | None = None
    for _ in range(max(1, verify_attempts)):
        try:
            runner.run(app, "verify-ssh-credentials", {})
            return "CONFIG OK"
        except VcaError as exc:
            last = exc
    log.error("verify-ssh-credentials of %s failed %d time(s): %s", app, max(1, verify_attempts), last)
    if strict and last is not None:
        raise VcaError(f"verify-ssh-credentials failed: {last.detail}")
    return "CONFIG OK"
