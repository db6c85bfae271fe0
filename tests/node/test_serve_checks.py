"""Start-up checks of ``osteo-node serve`` (issue 16, hardening): no root without
``--allow-root``, files created without access for other users, a warning for a spool anyone
can write to."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.node.support import REPO, NodeProcess, echoscu, free_port, node_config, write_config


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (it checks the refusal of root)")
def test_serve_refuses_root_without_allow_root(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, node_config(tmp_path, free_port()))
    proc = subprocess.run(
        [sys.executable, "-c", "from osteo_node.cli.main import entry; entry()", "serve",
         "--config", str(cfg)], cwd=REPO, capture_output=True, text=True, timeout=60,
        check=False)
    assert proc.returncode == 2
    assert "refusing to run as root" in proc.stderr


def test_files_are_private_and_an_open_spool_is_reported(tmp_path: Path) -> None:
    port = free_port()
    cfg = node_config(tmp_path, port)
    spool = Path(cfg["storage"]["spool_dir"])
    spool.mkdir(parents=True)
    spool.chmod(0o777)  # anyone may write: reported
    node = NodeProcess(write_config(tmp_path, cfg), tmp_path / "node.log").start(port)
    try:
        assert echoscu(port).returncode == 0
    finally:
        node.stop()
    log = (tmp_path / "node.log").read_text()
    assert "folder writable by every user" in log
    db = Path(cfg["storage"]["database_url"].removeprefix("sqlite:///"))
    assert db.is_file()
    assert stat.S_IMODE(db.stat().st_mode) & 0o007 == 0, oct(db.stat().st_mode)
