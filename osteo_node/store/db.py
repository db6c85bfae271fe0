"""Database engine creation (SQLAlchemy Core). SQLite (WAL) by default; PostgreSQL works too.

All tables of the node are declared on :data:`METADATA` by their owning modules
(index, jobs, outbox, worklist) and created with :func:`create_all`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, MetaData, create_engine, event

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
