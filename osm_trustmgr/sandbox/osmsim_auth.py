"""NBI accounts for the OSM simulator: projects, users, tokens and the project scope of a request.

Reproduces osm/NBI v19 (github.com/seltonlucas/osm-capk ``NBI/osm_nbi/``): ``auth.py`` ``Authenticator``
(``authorize``, ``new_token``, ``_internal_get_token``, ``_internal_get_token_list``, ``del_token``) with the
internal backend ``authconn_internal.py`` ``AuthconnInternal`` (``authenticate``, ``validate_token``), and
``nbi.py`` ``Server._manage_admin_query`` (the ``ADMIN`` query string). Tokens live in the ``tokens``
collection like NBI's; error texts and codes are NBI's.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from .osmsim_docs import OsmDb, format_on_new, new_id

__all__ = ["NbiAuth", "NbiHttpError", "Session", "SimUser", "not_found"]

TOKEN_TIME_WINDOW = 2.0  # authconn_internal.AuthconnInternal.token_time_window


class NbiHttpError(Exception):
    """What NBI turns into ``{code, status, detail}`` (``Server.default``'s exception handler)."""

    def __init__(self, status: HTTPStatus, detail: str) -> None:
        super().__init__(detail)
        self.status, self.detail = status, detail

    def body(self) -> dict[str, Any]:
        return {"code": self.status.name, "status": self.status.value, "detail": self.detail}


def not_found(table: str, q_filter: Mapping[str, Any]) -> NbiHttpError:
    # osm_common dbmongo.DbMongo.get_one, wrapped by DbException ("database exception ...")
    return NbiHttpError(HTTPStatus.NOT_FOUND, f"database exception Not found any {table[:-1]} with filter='{q_filter}'")


@dataclass(frozen=True)
class SimUser:
    """An NBI user: password, the projects (names) it may log in to, and its role names."""

    username: str
    password: str
    projects: tuple[str, ...] = ("admin",)
    roles: tuple[str, ...] = ("system_admin",)


@dataclass(frozen=True)
class Session:
    """``Server._manage_admin_query``'s session: project ids a request acts in (empty: all, admin only)."""

    username: str
    project_ids: tuple[str, ...]
    admin: bool

    def write_filter(self) -> dict[str, Any]:
        """``BaseTopic._get_project_filter`` for method "write": the projects, or public ("ANY")."""
        if not self.project_ids:
            return {}
        return {"_admin.projects_write": {"$in": [*self.project_ids, "ANY"]}}

    def read_filter(self) -> dict[str, Any]:
        if not self.project_ids:
            return {}
        return {"_admin.projects_read": {"$in": [*self.project_ids, "ANY"]}}


@dataclass
class NbiAuth:
    """Users (configured), projects (created at start, like ``Authenticator.init_db``) and tokens."""

    db: OsmDb
    users: Mapping[str, SimUser]
    token_ttl: float = 3600.0
    token_delay: float = 1.0  # authconn_internal.AuthconnInternal.token_delay
    projects: dict[str, str] = field(default_factory=dict)  # name -> id
    _last_login: dict[str, float] = field(default_factory=dict)

    async def setup(self) -> None:
        """The ``projects`` and their ids (NBI's ``Authenticator.init_db`` creates "admin" at first start)."""
        for user in self.users.values():
            for name in user.projects:
                if name not in self.projects:
                    self.projects[name] = new_id()
                    doc = format_on_new({"_id": self.projects[name], "name": name}, None)
                    await self.db.create("projects", doc)

    def project_id(self, name: str) -> str:
        return self.projects[name]

    # -- tokens (auth.py Authenticator, authconn_internal.py AuthconnInternal) ---------------------------

    async def new_token(self, body: Any, remote: tuple[str, int] | None) -> dict[str, Any]:
        """``AuthconnInternal.authenticate`` + ``Authenticator.new_token``."""
        if not isinstance(body, Mapping):
            raise NbiHttpError(HTTPStatus.BAD_REQUEST, "Expected application/yaml or application/json Content-Type")
        username, password = body.get("username"), body.get("password")
        if not username:
            raise NbiHttpError(
                HTTPStatus.UNAUTHORIZED, "Provide credentials: username/password or Authorization Bearer token"
            )
        user = self.users.get(str(username))
        if user is None or not secrets.compare_digest(str(password or ""), user.password):
            raise NbiHttpError(HTTPStatus.UNAUTHORIZED, "Invalid username/password")
        now = time.time()
        if now - self._last_login.get(user.username, 0.0) < TOKEN_TIME_WINDOW:
            await asyncio.sleep(self.token_delay)  # NBI slows down repeated logins
        self._last_login[user.username] = time.time()
        project = str(body.get("project_id") or user.projects[0])
        name = next((n for n, i in self.projects.items() if project in (n, i)), None)
        if name is None:
            raise not_found("projects", {"name": project})
        if name not in user.projects:
            raise NbiHttpError(HTTPStatus.UNAUTHORIZED, f"project {project} not allowed for this user")
        token_id = secrets.token_urlsafe(32)
        now = time.time()
        token = {
            "issued_at": now,
            "expires": now + self.token_ttl,
            "_id": token_id,
            "id": token_id,
            "project_id": self.projects[name],
            "project_name": name,
            "username": user.username,
            "user_id": f"user-{user.username}",
            "admin": name == "admin",  # AuthconnInternal.authenticate: the "admin" project is admin
            "roles": [{"name": role, "id": f"role-{role}"} for role in user.roles],
            "login_count": 0,
            "last_login": now,
            "admin_show": False,
            "user_show": False,
        }
        await self.db.create("tokens", token)
        answer = dict(token)
        if remote:
            answer["remote_host"], answer["remote_port"] = remote
        return answer

    async def authorize(self, authorization: str | None) -> dict[str, Any]:
        """``Authenticator.authorize`` with the internal backend's ``validate_token``: 401 unless valid."""
        token = None
        if authorization:
            parts = authorization.split(" ")
            if parts[0].lower() == "bearer":
                token = parts[-1]
        if not token:
            raise NbiHttpError(HTTPStatus.UNAUTHORIZED, "Needed a token or Authorization http header")
        info = await self.db.get_one("tokens", {"_id": token})
        if info is None:
            raise NbiHttpError(HTTPStatus.UNAUTHORIZED, "Invalid Token or Authorization HTTP header")
        if info["expires"] < time.time():
            raise NbiHttpError(HTTPStatus.UNAUTHORIZED, "Expired Token or Authorization HTTP header")
        return info

    async def get_token(self, token_info: Mapping[str, Any], token_id: str) -> dict[str, Any]:
        """``Authenticator._internal_get_token``."""
        value = await self.db.get_one("tokens", {"_id": token_id})
        if value is None:
            raise NbiHttpError(HTTPStatus.NOT_FOUND, "token not found")
        if value["username"] != token_info["username"] and not token_info["admin"]:
            raise NbiHttpError(HTTPStatus.UNAUTHORIZED, "needed admin privileges")
        return value

    async def list_tokens(self, token_info: Mapping[str, Any]) -> list[dict[str, Any]]:
        """``Authenticator._internal_get_token_list``: the caller's unexpired tokens."""
        return await self.db.get_list("tokens", {"username": token_info["username"], "expires": {"$gt": time.time()}})

    async def del_token(self, token_id: str) -> str:
        if await self.db.get_one("tokens", {"_id": token_id}) is None:
            raise NbiHttpError(HTTPStatus.NOT_FOUND, f"Token '{token_id}' not found")
        await self.db.del_one("tokens", token_id)
        return f"token '{token_id}' deleted"

    def session(self, token_info: Mapping[str, Any], admin_query: str | None) -> Session:
        """``Server._manage_admin_query``: ``ADMIN`` (admin tokens only) widens or moves the project scope."""
        projects: tuple[str, ...] = (str(token_info["project_id"]),)
        if admin_query is not None and admin_query.lower() != "false":
            if not token_info["admin"]:
                raise NbiHttpError(HTTPStatus.UNAUTHORIZED, "Only admin projects can use 'ADMIN' query string")
            projects = () if admin_query in ("", "true", "True") else tuple(admin_query.split(","))
        return Session(str(token_info["username"]), projects, bool(token_info["admin"]))
