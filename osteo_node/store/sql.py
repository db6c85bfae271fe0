"""Small portable SQL helpers (SQLAlchemy Core; SQLite and PostgreSQL)."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, Engine, Table, event


@functools.cache
def insert_ignore_statement(dialect: str, table: Table, conflict_columns: tuple[str, ...]
                            ) -> Any:
    """A reusable ``INSERT ... ON CONFLICT (cols) DO NOTHING`` (values given at execution)."""
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        stmt: Any = pg_insert(table)
    elif dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        stmt = sqlite_insert(table)
    else:
        raise NotImplementedError(
            f"database {dialect!r} is not supported (use SQLite or PostgreSQL)")
    # RETURNING tells reliably whether a row went in (rowcount is -1 with some drivers).
    return stmt.on_conflict_do_nothing(index_elements=list(conflict_columns)).returning(
        *table.primary_key.columns)


def insert_ignore(conn: Connection, table: Table, values: Mapping[str, Any],
                  conflict_columns: Sequence[str]) -> bool:
    """``INSERT ... ON CONFLICT (cols) DO NOTHING`` (SQLite >= 3.24 and PostgreSQL).

    Returns True when a row was inserted. Unlike catching IntegrityError, this does not abort a
    PostgreSQL transaction. The statement is built once per table (cheap per call).
    """
    stmt = insert_ignore_statement(conn.dialect.name, table, tuple(conflict_columns))
    return conn.execute(stmt, dict(values)).first() is not None


def relax_commit_durability(engine: Engine) -> None:
    """Commits on this engine are durable against a crash of the process but not of the
    machine: SQLite ``synchronous=NORMAL`` in WAL mode (no fsync per commit), PostgreSQL
    ``synchronous_commit=off``.

    Only for the listener's index writes, whose source of truth is the fsync'ed spool: rows a
    power loss takes back are re-created from the spool at the next start
    (:func:`osteo_node.store.reconcile.reconcile_spool`).
    """

    @event.listens_for(engine, "connect")
    def _relax(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        if engine.dialect.name == "sqlite":
            cur.execute("PRAGMA synchronous=NORMAL")
        elif engine.dialect.name == "postgresql":
            cur.execute("SET SESSION synchronous_commit TO OFF")
            dbapi_conn.commit()  # a SET inside a transaction that is rolled back is undone
        cur.close()


def immediate_transactions(engine: Engine) -> None:
    """SQLite: start every transaction with ``BEGIN IMMEDIATE`` (take the write lock first).

    A deferred transaction that reads before it writes cannot upgrade to a writer once another
    connection committed meanwhile (SQLITE_BUSY_SNAPSHOT in WAL mode, not retried by the busy
    timeout); concurrent associations indexing instances would then fail. No-op elsewhere
    (PostgreSQL's row locks handle this).
    """
    if engine.dialect.name != "sqlite":
        return

    @event.listens_for(engine, "connect")
    def _no_implicit_begin(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # pysqlite must not emit its own BEGIN

    @event.listens_for(engine, "begin")
    def _begin_immediate(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")
