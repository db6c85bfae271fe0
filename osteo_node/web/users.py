"""Local web users: name, role, scrypt password hash (``web_users`` table).

Roles, least to most: ``viewer`` (reads the worklist and study pages), ``editor`` (the FLS: also
changes a row's status), ``admin`` (also the node status page). Passwords are hashed with
scrypt (RFC 7914; n=2**14, r=8, p=1, 16-byte salt) and compared in constant time; they are never
stored or logged. Managed with ``osteo-node web-user``.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Column, DateTime, Engine, String, Table, delete, insert, select, update

from osteo_node.store.db import METADATA

ROLES = ("viewer", "editor", "admin")
MIN_PASSWORD_LENGTH = 12
_N, _R, _P = 2**14, 8, 1

web_users = Table(
    "web_users", METADATA,
    Column("name", String(64), primary_key=True),
    Column("role", String(16), nullable=False),
    Column("password_hash", String(200), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)


class UserError(ValueError):
    """A user could not be added or changed (the message says why)."""


@dataclass(frozen=True)
class User:
    name: str
    role: str

    def can(self, role: str) -> bool:
        """At least ``role`` (viewer < editor < admin)."""
        return ROLES.index(self.role) >= ROLES.index(role)


def hash_password(password: str, salt: bytes | None = None) -> str:
    salt = salt or os.urandom(16)
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=_N, r=_R, p=_P, dklen=32)
    return f"scrypt${_N}${_R}${_P}${salt.hex()}${digest.hex()}"


def check_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        got = hashlib.scrypt(password.encode("utf-8"), salt=bytes.fromhex(salt), n=int(n),
                             r=int(r), p=int(p), dklen=len(bytes.fromhex(digest)))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got.hex(), digest)


def _valid(name: str, role: str, password: str) -> None:
    if not name or len(name) > 64 or not name.replace(".", "").replace("-", "").replace(
            "_", "").isalnum():
        raise UserError("user name: 1-64 letters, digits, '.', '-' or '_'")
    if role not in ROLES:
        raise UserError(f"role must be one of {', '.join(ROLES)}")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise UserError(f"password must have at least {MIN_PASSWORD_LENGTH} characters")


def add_user(engine: Engine, name: str, role: str, password: str) -> None:
    _valid(name, role, password)
    with engine.begin() as conn:
        if conn.execute(select(web_users.c.name).where(web_users.c.name == name)).first():
            raise UserError(f"user {name!r} exists")
        conn.execute(insert(web_users).values(name=name, role=role,
                                              password_hash=hash_password(password),
                                              created_at=datetime.now(UTC)))


def set_password(engine: Engine, name: str, password: str) -> None:
    _valid(name, "viewer", password)
    with engine.begin() as conn:
        res = conn.execute(update(web_users).where(web_users.c.name == name).values(
            password_hash=hash_password(password)))
        if res.rowcount != 1:
            raise UserError(f"no user {name!r}")


def remove_user(engine: Engine, name: str) -> None:
    with engine.begin() as conn:
        if conn.execute(delete(web_users).where(web_users.c.name == name)).rowcount != 1:
            raise UserError(f"no user {name!r}")


def list_users(engine: Engine) -> list[User]:
    with engine.connect() as conn:
        return [User(r.name, r.role) for r in conn.execute(
            select(web_users.c.name, web_users.c.role).order_by(web_users.c.name))]


def authenticate(engine: Engine, name: str, password: str) -> User | None:
    """The user when the password is right; None otherwise (same work either way)."""
    with engine.connect() as conn:
        row = conn.execute(select(web_users).where(web_users.c.name == name)).first()
    stored = row.password_hash if row is not None else hash_password("not a user", b"0" * 16)
    ok = check_password(password, stored)
    return User(row.name, row.role) if row is not None and ok else None


def get_user(engine: Engine, name: str) -> User | None:
    with engine.connect() as conn:
        row = conn.execute(select(web_users.c.name, web_users.c.role).where(
            web_users.c.name == name)).first()
    return User(row.name, row.role) if row is not None else None
