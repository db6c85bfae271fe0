"""How a worker process signs the jobs it claims (``jobs.worker``): ``<node name>:<pid>:w<index>``,
unique across the hosts sharing one database, and read back to tell whether a running job's
worker is one of this host's processes that no longer exists."""

from __future__ import annotations

import os
from collections.abc import Callable


def worker_name(host: str, index: int, pid: int | None = None) -> str:
    return f"{host}:{os.getpid() if pid is None else pid}:w{index}"


def parse_worker_name(name: str | None) -> tuple[str, int] | None:
    """(host, pid) of a worker name; None when it is not one."""
    if not name:
        return None
    host, sep, rest = name.rpartition(":w")[0].rpartition(":")
    if not sep or not host or not rest.isdigit():
        return None
    return host, int(rest)


def dead_worker_of(host: str, pid_alive: Callable[[int], bool]) -> Callable[[str | None], bool]:
    """A predicate: the worker name is one of ``host``'s processes and that process is gone."""

    def gone(name: str | None) -> bool:
        parsed = parse_worker_name(name)
        return parsed is not None and parsed[0] == host and not pid_alive(parsed[1])

    return gone
