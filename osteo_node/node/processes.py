"""What runs where (table ``node_processes``, revision 0002): one row per process of every
``serve`` on every host, with its host (``node.name``), process name (``worker-1``), role, pid,
start and last heart-beat (epoch seconds). A process beats every ``node.heartbeat_seconds``; a
row whose last beat is older than :data:`STALE_BEATS` beats belongs to a process that is gone or
hung (killed, host down). A process that stops cleanly removes its row.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import psutil
from sqlalchemy import (
    Column,
    Connection,
    Engine,
    Float,
    Integer,
    String,
    Table,
    UniqueConstraint,
    and_,
    delete,
    insert,
    select,
    update,
)

from osteo_node.store.db import METADATA

#: a process that missed this many beats is shown stale
STALE_BEATS = 3.0

node_processes = Table(
    "node_processes", METADATA,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("host", String(255), nullable=False),
    Column("process", String(32), nullable=False),
    Column("role", String(16), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("started_at", Float, nullable=False),
    Column("last_beat", Float, nullable=False),
    UniqueConstraint("host", "pid", name="uq_node_processes_host_pid"),
)


@dataclass(frozen=True)
class ProcessRow:
    host: str
    process: str
    role: str
    pid: int
    started_at: float
    last_beat: float

    def age(self, now: float) -> float:
        return max(0.0, now - self.last_beat)

    def alive(self, now: float, heartbeat_seconds: float) -> bool:
        return self.age(now) <= STALE_BEATS * heartbeat_seconds


def register(engine: Engine, host: str, process: str, role: str, pid: int | None = None,
             now: float | None = None) -> int:
    """Record this process (replacing a row left by an earlier process with the same pid on this
    host). Returns the row id."""
    t = time.time() if now is None else now
    p = os.getpid() if pid is None else pid
    with engine.begin() as conn:
        conn.execute(delete(node_processes).where(node_processes.c.host == host[:255],
                                                  node_processes.c.pid == p))
        row_id = conn.execute(insert(node_processes).values(
            host=host[:255], process=process[:32], role=role[:16], pid=p, started_at=t,
            last_beat=t).returning(node_processes.c.id)).scalar_one()
    return int(row_id)


def beat(engine: Engine, row_id: int, now: float | None = None) -> bool:
    """Refresh the row's last beat; False when the row is gone (removed as dead by a
    supervisor that thought so: the caller registers again)."""
    t = time.time() if now is None else now
    with engine.begin() as conn:
        n = conn.execute(update(node_processes).where(node_processes.c.id == row_id)
                         .values(last_beat=t)).rowcount
    return n == 1


def forget(engine: Engine, row_id: int) -> None:
    with engine.begin() as conn:
        conn.execute(delete(node_processes).where(node_processes.c.id == row_id))


def forget_pid(engine: Engine, host: str, pid: int) -> None:
    """Remove the row of a process of this host that is known to be dead."""
    with engine.begin() as conn:
        conn.execute(delete(node_processes).where(node_processes.c.host == host[:255],
                                                  node_processes.c.pid == pid))


def pid_exists(pid: int) -> bool:
    """Whether a live process with this id exists on this machine (a zombie, killed but not yet
    reaped by its new parent, is not alive)."""
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True  # exists, owned by another user


def forget_dead_on_host(engine: Engine, host: str,
                        pid_alive: Callable[[int], bool] = pid_exists) -> int:
    """Remove the rows of processes on this host that no longer exist (a previous run killed
    with -9, a crashed child). Returns how many."""
    with engine.begin() as conn:
        rows = conn.execute(select(node_processes.c.id, node_processes.c.pid)
                            .where(node_processes.c.host == host[:255])).all()
        dead = [r.id for r in rows if not pid_alive(int(r.pid))]
        if dead:
            conn.execute(delete(node_processes).where(node_processes.c.id.in_(dead)))
    return len(dead)


def list_processes(conn: Connection) -> list[ProcessRow]:
    rows = conn.execute(select(
        node_processes.c.host, node_processes.c.process, node_processes.c.role,
        node_processes.c.pid, node_processes.c.started_at, node_processes.c.last_beat)
        .order_by(node_processes.c.host, node_processes.c.process, node_processes.c.pid)).all()
    return [ProcessRow(host=r.host, process=r.process, role=r.role, pid=int(r.pid),
                       started_at=float(r.started_at), last_beat=float(r.last_beat))
            for r in rows]


def live_processes(conn: Connection, role: str, now: float, heartbeat_seconds: float
                   ) -> set[tuple[str, int]]:
    """(host, pid) of the processes of ``role`` whose beat is recent."""
    cutoff = now - STALE_BEATS * heartbeat_seconds
    rows = conn.execute(select(node_processes.c.host, node_processes.c.pid).where(
        and_(node_processes.c.role == role, node_processes.c.last_beat >= cutoff))).all()
    return {(str(r.host), int(r.pid)) for r in rows}

