"""Worker names (``<node>:<pid>:w<index>``) and which of them belong to this host's processes
that are gone (start-up recovery with several hosts on one database, issue 14)."""

from __future__ import annotations

import os
import subprocess

from osteo_node.node.processes import pid_exists
from osteo_node.queue.worker_names import dead_worker_of, parse_worker_name, worker_name


def test_names_round_trip() -> None:
    assert worker_name("ct-a", 2, 123) == "ct-a:123:w2"
    assert parse_worker_name("ct-a:123:w2") == ("ct-a", 123)
    assert parse_worker_name(worker_name("ct.example.org", 0)) == ("ct.example.org", os.getpid())
    for other in (None, "", "w", "a:b:w1", ":12:w0", "host:12"):
        assert parse_worker_name(other) is None


def test_a_killed_unreaped_process_is_gone() -> None:
    """After kill -9 the processes of a node are zombies until their new parent reaps them;
    they are not alive (their jobs must be recovered at the next start)."""
    proc = subprocess.Popen(["sleep", "60"])
    try:
        assert pid_exists(proc.pid)
        proc.kill()
        os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)  # dead, not reaped: a zombie
        assert not pid_exists(proc.pid)
    finally:
        proc.wait()
    assert not pid_exists(proc.pid)


def test_only_this_hosts_dead_workers_are_gone() -> None:
    alive = {100}
    gone = dead_worker_of("ct-a", lambda pid: pid in alive)
    assert gone("ct-a:200:w0")
    assert not gone("ct-a:100:w0")  # still running
    assert not gone("ct-b:200:w0")  # another host's: its lease decides
    assert not gone(None) and not gone("legacy-name")
