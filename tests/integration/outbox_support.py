"""What the outbox's Orthanc tests share: polling with a deadline and a migrated SQLite node
database."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, select

from osteo_node.outbox.tables import outbox_items
from osteo_node.store.db import make_engine
from osteo_node.store.schema import upgrade


def wait_for(cond: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``cond`` every 0.1 s until it holds; fail with ``what`` after ``timeout`` s."""
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def claimed_at(engine: Engine, item_id: int) -> object:
    """The outbox item's ``claimed_at`` (None when no sender holds it)."""
    with engine.connect() as conn:
        return conn.execute(
            select(outbox_items.c.claimed_at).where(outbox_items.c.id == item_id)
        ).scalar_one()


@pytest.fixture(name="engine")
def engine_fixture(tmp_path: Path) -> Iterator[Engine]:
    """A migrated SQLite node database (fixture ``engine``)."""
    eng = make_engine(f"sqlite:///{tmp_path / 'node.db'}")
    upgrade(eng)
    yield eng
    eng.dispose()
