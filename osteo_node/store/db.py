"""Database engine creation (SQLAlchemy Core). SQLite (WAL) by default; PostgreSQL works too.

All tables of the node are declared on :data:`METADATA` by their owning modules
(index, jobs, outbox, worklist) and created with :func:`create_all` by the node's processes.
Commands that only look at or manage existing data open the database with
:func:`open_existing`, which creates nothing.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sqlalchemy import Engine, MetaData, create_engine, event, inspect
from sqlalchemy.exc import SQLAlchemyError

METADATA = MetaData()


def make_engine(url: str) -> Engine:
    """Create an engine. For SQLite: WAL journal, synchronous=FULL for durability, a busy
    timeout so several processes can share the file.

    ``hide_parameters``: database errors never quote bound values (patient names and IDs are
    bound into the worklist table; error texts go to logs and job records).
    """
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        if str(path) not in ("", ":memory:"):
            path.parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False},
                               hide_parameters=True)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    return create_engine(url, pool_pre_ping=True, hide_parameters=True)


class DatabaseUnavailableError(RuntimeError):
    """The configured database does not exist, cannot be opened, or lacks the node's tables."""


def open_existing(url: str, tables: Iterable[str], *, read_only: bool = True) -> Engine:
    """An engine on an existing node database that has ``tables``; creates nothing (no file, no
    folder, no table). SQLite is opened read-only unless ``read_only`` is False.

    Raises :class:`DatabaseUnavailableError` with a message naming what is missing (a mistyped
    ``database_url`` must not look like an empty node).
    """
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        if str(path) in ("", ":memory:"):
            raise DatabaseUnavailableError("an in-memory SQLite database holds no node data")
        if not path.is_file():
            raise DatabaseUnavailableError(
                f"no database file at {path} (check storage.database_url; the node creates it "
                "when it first starts)")
        target = f"file:{quote(str(path.resolve()))}?mode={'ro' if read_only else 'rw'}"

        def connect() -> sqlite3.Connection:
            conn = sqlite3.connect(target, uri=True, timeout=30, check_same_thread=False)
            conn.execute("PRAGMA busy_timeout=30000")
            conn.execute("PRAGMA foreign_keys=ON")
            return conn

        engine = create_engine("sqlite://", creator=connect, hide_parameters=True)
        where = str(path)
    else:
        engine = create_engine(url, pool_pre_ping=True, hide_parameters=True)
        where = engine.url.render_as_string(hide_password=True)
    try:
        present = set(inspect(engine).get_table_names())
    except SQLAlchemyError as exc:
        engine.dispose()
        reason = getattr(exc, "orig", None) or exc  # the driver's message, without the SQL
        raise DatabaseUnavailableError(f"cannot open the database {where}: {reason}") from exc
    missing = sorted(set(tables) - present)
    if missing:
        engine.dispose()
        raise DatabaseUnavailableError(
            f"the database {where} has no osteo-node tables {', '.join(missing)} "
            "(check storage.database_url)")
    return engine
