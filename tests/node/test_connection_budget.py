"""Idle and garbage connections cannot take the slots of real callers (issue 16, 3).

Before: ``max_associations`` counted raw TCP connections before any AE check and freed them only
at the 30 s timeout, so 16 idle sockets made every modality get "local limit exceeded", and 1 MB
of garbage produced about 89 ERROR lines."""

from __future__ import annotations

import contextlib
import io
import os
import socket
import time
from pathlib import Path

import pytest

from tests.node.support import echoscu, free_port, node_config, running_listener, wait_until

pytestmark = pytest.mark.skipif(os.system("command -v echoscu >/dev/null") != 0,
                                reason="dcmtk not installed")


def test_idle_connections_do_not_lock_out_callers(tmp_path: Path,
                                                  log_stream: io.StringIO) -> None:
    port = free_port()
    cfg = node_config(tmp_path, port)
    cfg["dicom"]["max_associations"] = 4
    with running_listener(cfg, tmp_path):
        # another peer (127.0.0.2 is loopback too) opens 40 connections and never associates,
        # and sends 1 MB of garbage on one more
        idle = [socket.create_connection(("127.0.0.1", port), source_address=("127.0.0.2", 0))
                for _ in range(40)]
        garbage = socket.create_connection(("127.0.0.1", port),
                                           source_address=("127.0.0.3", 0))
        with contextlib.suppress(OSError):  # the node may close it while we write
            garbage.sendall(os.urandom(1 << 20))
        try:
            def closed(s: socket.socket) -> bool:
                s.settimeout(0.02)
                try:
                    return s.recv(1 << 16) == b""
                except TimeoutError:
                    return False
                except OSError:
                    return True

            t0 = time.monotonic()
            # the idle ones beyond the per-peer budget (4) are closed at once...
            wait_until(lambda: sum(closed(s) for s in idle) >= 36, 20, interval=0.1,
                       what="connections beyond the per-peer budget closed")
            ok = echoscu(port)  # ...and a caller is served while the other 4 still wait
            assert ok.returncode == 0, ok.stdout + ok.stderr + log_stream.getvalue()[-3000:]
            # the rest close after the association-request timeout (5 s), not the old 30 s
            wait_until(lambda: all(closed(s) for s in idle), 25, interval=0.2,
                       what="idle connections closed")
            assert time.monotonic() - t0 < 25
        finally:
            for s in [*idle, garbage]:
                s.close()
    text = log_stream.getvalue()
    errors = [line for line in text.splitlines() if '"level": "error"' in line]
    assert len(errors) <= 3, "\n".join(errors[:20])
    assert text.count("too many from one peer") <= 1
