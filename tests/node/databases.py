"""Database fixtures: node tests run on SQLite (WAL file) and on a throw-away PostgreSQL (when
available; see tests/outbox/postgres.py). Import the fixtures into a conftest.py to use them.

Tables are made the way the node makes them: by the migrations (``osteo_node.store.schema``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from osteo_node.store.db import make_engine
from osteo_node.store.schema import upgrade
from tests.outbox.postgres import TempPostgres
from tests.outbox.postgres import unavailable_reason as pg_unavailable_reason


@pytest.fixture(scope="session")
def node_postgres() -> Iterator[TempPostgres]:
    reason = pg_unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    server = TempPostgres.start()
    yield server
    server.stop()


def reset_postgres(url: str) -> None:
    """Drop every table of the throw-away server's database (schema ``public`` made anew)."""
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text("DROP SCHEMA public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))
    finally:
        engine.dispose()


def empty_database_url(request: pytest.FixtureRequest, kind: str, tmp_path: Path) -> str:
    """A database without any table (SQLite: no file yet)."""
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'db.sqlite'}"
    url: str = request.getfixturevalue("node_postgres").url
    reset_postgres(url)
    return url


def fresh_database_url(request: pytest.FixtureRequest, kind: str, tmp_path: Path) -> str:
    """A database with the node's empty tables at the newest schema revision."""
    url = empty_database_url(request, kind, tmp_path)
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    return url


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return fresh_database_url(request, request.param, tmp_path)


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return empty_database_url(request, request.param, tmp_path)
