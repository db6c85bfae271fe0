"""Database fixtures: node tests run on SQLite (WAL file) and on a throw-away PostgreSQL (when
available; see tests/outbox/postgres.py). Import the fixtures into a conftest.py to use them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from osteo_node.store.db import METADATA, make_engine
from osteo_node.store.schema import create_node_tables
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


def fresh_database_url(request: pytest.FixtureRequest, kind: str, tmp_path: Path) -> str:
    """A database with empty node tables (index, jobs, outbox)."""
    if kind == "sqlite":
        url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    else:
        url = request.getfixturevalue("node_postgres").url
        engine = make_engine(url)
        create_node_tables(engine)  # registers every node table on METADATA first
        METADATA.drop_all(engine, checkfirst=True)
        engine.dispose()
    engine = make_engine(url)
    create_node_tables(engine)
    engine.dispose()
    return url


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return fresh_database_url(request, request.param, tmp_path)
