"""Small portable SQL helpers (SQLAlchemy Core; SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, Table


def insert_ignore(conn: Connection, table: Table, values: Mapping[str, Any],
                  conflict_columns: Sequence[str]) -> bool:
    """``INSERT ... ON CONFLICT (cols) DO NOTHING`` (SQLite >= 3.24 and PostgreSQL).

    Returns True when a row was inserted. Unlike catching IntegrityError, this does not abort a
    PostgreSQL transaction.
    """
    name = conn.dialect.name
    if name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        stmt: Any = pg_insert(table).values(**values).on_conflict_do_nothing(
            index_elements=list(conflict_columns))
    elif name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        stmt = sqlite_insert(table).values(**values).on_conflict_do_nothing(
            index_elements=list(conflict_columns))
    else:
        raise NotImplementedError(f"database {name!r} is not supported (use SQLite or PostgreSQL)")
    return bool(conn.execute(stmt).rowcount == 1)
