"""The ``hosts`` part of ``osteo-node status``: every host's processes from their heart-beats
(``node_processes``), each alive or stale by the age of its last beat."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, inspect

from osteo_node.node.processes import STALE_BEATS, list_processes, node_processes


def hosts_section(conn: Connection, now: float, heartbeat_seconds: float
                  ) -> dict[str, list[dict[str, Any]]] | None:
    """host -> its processes (name, role, pid, started_at, last_beat, age_s, state); None when
    the database has no heart-beat table yet (an older schema revision)."""
    if not inspect(conn).has_table(node_processes.name):
        return None
    hosts: dict[str, list[dict[str, Any]]] = {}
    for row in list_processes(conn):
        hosts.setdefault(row.host, []).append({
            "process": row.process, "role": row.role, "pid": row.pid,
            "started_at": row.started_at, "last_beat": row.last_beat,
            "age_s": round(row.age(now), 1),
            "state": "alive" if row.alive(now, heartbeat_seconds) else "stale",
        })
    return hosts


def text_lines(hosts: dict[str, list[dict[str, Any]]] | None, heartbeat_seconds: float
               ) -> list[str]:
    if hosts is None:
        return ["hosts: unknown (the database has no heart-beat table: run `osteo-node db "
                "upgrade`)"]
    if not hosts:
        return ["hosts: no process running"]
    stale_after = STALE_BEATS * heartbeat_seconds
    lines = [f"hosts (stale: no heart-beat for more than {stale_after:.0f} s):"]
    for host, procs in sorted(hosts.items()):
        alive = sum(p["state"] == "alive" for p in procs)
        lines.append(f"  {host}: {alive} of {len(procs)} processes alive")
        lines += [f"    {p['process']:<12} pid {p['pid']:<7} {p['state']:<5} last beat "
                  f"{p['age_s']:.0f} s ago" for p in procs]
    return lines
