"""The node database's schema, made and changed only by migrations (Alembic; the revisions are in
``osteo_node/store/migrations/versions``). The one entry point for every table of the node.

* :func:`upgrade` (``osteo-node db upgrade``): bring a database to the newest revision, in one
  transaction, serialised against concurrent upgrades (SQLite ``BEGIN IMMEDIATE``, PostgreSQL
  an advisory lock). A database made before migrations existed (the node's tables, no
  ``alembic_version``) is adopted first: missing tables are created, tables get the nullable
  columns they lack, and it is stamped ``0001``; no row is touched.
* :func:`require_current`: refuse a database whose revision is not the newest (PostgreSQL
  deployments migrate once, with ``db upgrade``, before any process starts).
* :func:`ensure_schema`: what a process or offline command calls before it uses the database:
  on the embedded SQLite database it upgrades (so ``make run`` works on a fresh machine); on a
  server database (PostgreSQL) it only checks.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import structlog
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, MetaData, inspect, text

log = structlog.get_logger(__name__)

MIGRATIONS = "osteo_node.store:migrations"
#: the revision a database made before migrations existed is stamped with after adoption
BASELINE = "0001"
#: PostgreSQL advisory lock key held while upgrading ("osteo" in hex, arbitrary but fixed)
UPGRADE_LOCK_KEY = 0x6F7374656F
UPGRADE_HINT = "run `osteo-node db upgrade --config FILE` first"


class SchemaError(RuntimeError):
    """The database cannot be used or upgraded as it is (the message says why and what to do)."""


class SchemaNotCurrentError(SchemaError):
    """The database is not at the newest revision this version of the node knows."""


@dataclass(frozen=True)
class UpgradeResult:
    before: str | None  # revision before the upgrade (None: empty or pre-migration database)
    after: str
    adopted: bool  # a database made before migrations existed was stamped BASELINE


def _config(connection: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", MIGRATIONS)
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def _scripts() -> ScriptDirectory:
    return ScriptDirectory.from_config(_config())


def head_revision() -> str:
    head = _scripts().get_current_head()
    if head is None:  # pragma: no cover - the package always ships revisions
        raise SchemaError("no migrations found in the package")
    return head


def revision_of(conn: Connection) -> str | None:
    """The database's revision (None: never migrated)."""
    return MigrationContext.configure(conn).get_current_revision()


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return revision_of(conn)


def baseline_tables(metadata: MetaData) -> list[Any]:
    """The tables of revision BASELINE, declared on ``metadata``."""
    module = _scripts().get_revision(BASELINE).module
    tables: list[Any] = module.tables(metadata)
    return tables


@contextmanager
def _upgrade_transaction(engine: Engine) -> Iterator[Connection]:
    """One transaction that no other upgrade runs beside: SQLite takes the write lock at
    ``BEGIN IMMEDIATE`` (on its own engine, whose driver must not begin implicitly), PostgreSQL
    waits for an advisory transaction lock."""
    from osteo_node.store.db import make_engine
    from osteo_node.store.sql import immediate_transactions

    if engine.dialect.name == "sqlite":
        path = engine.url.database
        if not path or path == ":memory:":
            raise SchemaError("an in-memory SQLite database cannot be migrated")
        own = make_engine(engine.url.render_as_string(hide_password=False))
        immediate_transactions(own)
        try:
            with own.begin() as conn:
                yield conn
        finally:
            own.dispose()
        return
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": UPGRADE_LOCK_KEY})
        yield conn


def _adopt(conn: Connection) -> bool:
    """Stamp a database made before migrations existed, after making it match BASELINE.
    Returns False when the database holds none of the node's tables (nothing to adopt)."""
    metadata = MetaData()
    tables = baseline_tables(metadata)
    present = set(inspect(conn).get_table_names())
    if not present & {t.name for t in tables}:
        return False
    added: dict[str, list[str]] = {}
    for table in tables:
        if table.name not in present:
            continue
        have = {c["name"] for c in inspect(conn).get_columns(table.name)}
        missing = [col for col in table.columns if col.name not in have]
        required = [col.name for col in missing if not col.nullable]
        if required:
            raise SchemaError(f"table {table.name} lacks required columns {required}: it was "
                              "made by an incompatible version")
        for col in missing:
            conn.execute(text(f"ALTER TABLE {table.name} ADD COLUMN {col.name} "
                              f"{col.type.compile(conn.dialect)}"))
        if missing:
            added[table.name] = [col.name for col in missing]
    created = [t.name for t in tables if t.name not in present]
    metadata.create_all(conn, checkfirst=True)
    command.stamp(_config(conn), BASELINE)
    log.warning("database_adopted", revision=BASELINE, tables_created=created,
                columns_added=added)
    return True


def upgrade(engine: Engine, revision: str = "head") -> UpgradeResult:
    """Bring the database to ``revision`` (default: the newest), adopting a database made before
    migrations existed. Atomic; safe to run from several processes at once."""
    with _upgrade_transaction(engine) as conn:
        before = revision_of(conn)
        adopted = before is None and _adopt(conn)
        try:
            command.upgrade(_config(conn), revision)
        except Exception as exc:
            if before is not None and before not in _known_revisions():
                raise SchemaError(_unknown_revision_message(before)) from exc
            raise
        after = revision_of(conn)
    if after is None:  # pragma: no cover - alembic always stamps
        raise SchemaError("the upgrade left no revision in the database")
    if after != before:
        log.info("database_upgraded", before=before, after=after, adopted=adopted)
    return UpgradeResult(before=before, after=after, adopted=adopted)


def _known_revisions() -> set[str]:
    return {s.revision for s in _scripts().walk_revisions()}


def _unknown_revision_message(revision: str) -> str:
    return (f"the database is at revision {revision}, which this version of osteo-node does "
            "not know (made by a newer version?)")


def require_current(engine: Engine) -> str:
    """The database's revision when it is the newest; else :class:`SchemaNotCurrentError`."""
    head = head_revision()
    current = current_revision(engine)
    if current == head:
        return current
    if current is None:
        raise SchemaNotCurrentError(f"the database has no osteo-node schema revision (new, or "
                                    f"made before migrations existed); {UPGRADE_HINT}")
    if current not in _known_revisions():
        raise SchemaNotCurrentError(_unknown_revision_message(current))
    raise SchemaNotCurrentError(f"the database is at revision {current}, this version needs "
                                f"{head}; {UPGRADE_HINT}")


def migrates_itself(engine: Engine) -> bool:
    """The embedded database (SQLite) is upgraded by the node itself; a server database is
    migrated once by ``osteo-node db upgrade`` before the node's processes start."""
    return engine.dialect.name == "sqlite"


def ensure_schema(engine: Engine) -> None:
    """Before a process or command uses the database: upgrade the embedded SQLite database;
    check a server database (:class:`SchemaNotCurrentError` when not migrated)."""
    if migrates_itself(engine):
        upgrade(engine)
    else:
        require_current(engine)
