"""Heart-beats (issue 14): every process of every host keeps a ``node_processes`` row fresh; a
clean stop removes it, a dead process's row goes stale (and is removed by its host's
supervisor); database trouble never stops the process that beats. SQLite and PostgreSQL."""

from __future__ import annotations

import io
import json
import time

from sqlalchemy import select, text

from osteo_node.node import processes
from osteo_node.node.heartbeat import Heartbeat
from osteo_node.store.db import make_engine
from tests.node.support import wait_until


def _rows(url: str) -> list[processes.ProcessRow]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return processes.list_processes(conn)
    finally:
        engine.dispose()


def test_a_process_beats_until_it_stops_cleanly(db_url: str) -> None:
    beat = Heartbeat(db_url, "host-a", "worker-0", "worker", interval_s=0.1).start()
    try:
        (row,) = _rows(db_url)
        assert (row.host, row.process, row.role) == ("host-a", "worker-0", "worker")
        first = row.last_beat
        wait_until(lambda: _rows(db_url)[0].last_beat > first, 10, what="a later beat")
        assert _rows(db_url)[0].alive(time.time(), heartbeat_seconds=0.1)
    finally:
        beat.stop()
    assert _rows(db_url) == []


def test_a_dead_process_goes_stale_and_its_host_forgets_it(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        t = time.time()
        processes.register(engine, "host-a", "worker-0", "worker", pid=111, now=t - 100)
        processes.register(engine, "host-a", "listener", "listener", pid=222, now=t)
        processes.register(engine, "host-b", "worker-0", "worker", pid=111, now=t - 100)
        stale = [r for r in _rows(db_url) if not r.alive(t, heartbeat_seconds=10)]
        assert [(r.host, r.pid) for r in stale] == [("host-a", 111), ("host-b", 111)]
        # host-a's supervisor starts: pid 111 no longer exists here, 222 does
        assert processes.forget_dead_on_host(engine, "host-a", lambda pid: pid == 222) == 1
        assert [(r.host, r.pid) for r in _rows(db_url)] == [("host-a", 222), ("host-b", 111)]
        with engine.connect() as conn:
            assert processes.live_processes(conn, "worker", t, 10) == set()
            assert processes.live_processes(conn, "listener", t, 10) == {("host-a", 222)}
    finally:
        engine.dispose()


def test_database_trouble_is_logged_and_beating_resumes(db_url: str,
                                                        log_stream: io.StringIO) -> None:
    beat = Heartbeat(db_url, "host-a", "assembler", "assembler", interval_s=0.1).start()
    engine = make_engine(db_url)
    try:
        with engine.begin() as conn:  # the table vanishes under the process
            conn.execute(text("ALTER TABLE node_processes RENAME TO node_processes_away"))
        wait_until(lambda: "heartbeat_failed" in log_stream.getvalue(), 10,
                   what="a failed beat logged")
        assert beat._thread.is_alive()
        with engine.begin() as conn:
            conn.execute(text("ALTER TABLE node_processes_away RENAME TO node_processes"))
            conn.execute(text("DELETE FROM node_processes"))
        # its row is gone: the next beat registers it again
        wait_until(lambda: [r.process for r in _rows(db_url)] == ["assembler"], 10,
                   what="registered again")
    finally:
        beat.stop()
        engine.dispose()
    failed = [json.loads(line) for line in log_stream.getvalue().splitlines()
              if "heartbeat_failed" in line]
    assert failed and failed[0]["process"] == "assembler" and "error" in failed[0]


def test_register_replaces_a_row_left_by_the_same_pid(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        processes.register(engine, "host-a", "worker-0", "worker", pid=5, now=1.0)
        processes.register(engine, "host-a", "outbox", "outbox", pid=5, now=2.0)
        with engine.connect() as conn:
            rows = conn.execute(select(processes.node_processes.c.process)).all()
        assert [r.process for r in rows] == ["outbox"]
    finally:
        engine.dispose()
