"""Outbox claims on PostgreSQL skip an item another sender's transaction holds
(``FOR UPDATE SKIP LOCKED``) instead of waiting for it (issue 14: senders on several hosts)."""

from __future__ import annotations

import threading
import time
from datetime import datetime
from pathlib import Path

from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from sqlalchemy import Engine, select

from osteo_node.outbox import store
from osteo_node.outbox.claims import ClaimedItem
from osteo_node.outbox.policy import Destination
from osteo_node.outbox.tables import outbox_items
from tests.outbox.objects import secondary_capture

T0 = datetime(2026, 1, 1, 12, 0, 0)
PACS = Destination("pacs", "PACS", "127.0.0.1", 11112)


def test_claim_skips_an_item_another_transaction_holds(engine: Engine, outbox_dir: Path,
                                                        ct_small: Dataset) -> None:
    if engine.dialect.name != "postgresql":
        return  # SQLite: one writer at a time, no row locks to skip
    series = generate_uid()
    store.enqueue(engine, outbox_dir, [secondary_capture(ct_small, series, i) for i in (1, 2)],
                  [PACS], now=T0)
    with engine.connect() as conn:
        first, second = sorted(conn.execute(select(outbox_items.c.id)).scalars())
    got: list[list[ClaimedItem]] = []
    with engine.connect() as holder:
        holder.begin()
        holder.execute(select(outbox_items.c.id).where(outbox_items.c.id == first)
                       .with_for_update())
        t0 = time.monotonic()
        claimer = threading.Thread(
            target=lambda: got.append(store.claim_due(engine, outbox_dir, ["pacs"], T0)))
        claimer.start()
        claimer.join(20)
        waited = time.monotonic() - t0
        assert not claimer.is_alive(), "claim_due waited for the locked item"
        holder.rollback()
    assert [i.id for i in got[0]] == [second] and waited < 5
    assert [i.id for i in store.claim_due(engine, outbox_dir, ["pacs"], T0)] == [first]
