"""``serve --roles`` and the schema step at start (issue 14): unknown roles and roles that start
nothing are refused with what is valid; on PostgreSQL ``serve`` refuses a database that was not
migrated (``osteo-node db upgrade`` first) and creates nothing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from sqlalchemy import inspect

from osteo_node.store.db import make_engine
from tests.node.databases import reset_postgres
from tests.node.support import REPO, free_port, node_config, write_config
from tests.outbox.postgres import TempPostgres


def _serve(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from osteo_node.cli.main import entry; entry()", "serve",
         "--config", str(config), "--allow-root", *args], cwd=REPO, capture_output=True,
        text=True, timeout=120, check=False)


def test_unknown_roles_and_roles_that_start_nothing_are_refused(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, node_config(tmp_path, free_port()))
    r = _serve(cfg, "--roles", "listener,wroker")
    assert r.returncode == 2
    assert ("--roles: unknown role(s) wroker; valid roles: listener, assembler, worker, "
            "outbox, web") in r.stderr
    r = _serve(cfg, "--roles", "web")  # web.enabled is false
    assert r.returncode == 2 and "the roles web start no process here" in r.stderr
    r = _serve(cfg, "--roles", "outbox")  # no destinations configured
    assert r.returncode == 2 and "the roles outbox start no process here" in r.stderr
    assert not (tmp_path / "node.db").exists()  # refused before touching anything


def test_postgresql_not_migrated_is_refused(tmp_path: Path, node_postgres: TempPostgres
                                            ) -> None:
    reset_postgres(node_postgres.url)
    cfg = node_config(tmp_path, free_port())
    cfg["storage"]["database_url"] = node_postgres.url
    r = _serve(write_config(tmp_path, cfg))
    assert r.returncode == 1, r.stderr[-2000:]
    assert "osteo-node serve: the database has no osteo-node schema revision" in r.stderr
    assert "run `osteo-node db upgrade --config FILE` first" in r.stderr
    engine = make_engine(node_postgres.url)
    try:
        assert inspect(engine).get_table_names() == []  # nothing created
    finally:
        engine.dispose()
