"""A throw-away PostgreSQL server for tests: ``initdb`` + ``pg_ctl`` (Debian postgresql), run as
the ``postgres`` user, listening on a Unix socket only (``listen_addresses=''``: no TCP at all),
or also on ``127.0.0.1`` at a given port (``start(tcp_port=...)``: the multi-host test reaches it
the way a second host would, over TCP).

Used to run the outbox tests on PostgreSQL as well as SQLite (the database layer must work on
both). Skips with a reason when the server binaries, the ``postgres`` user, root or the psycopg
driver are missing.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

PG_BIN_DIRS = [Path("/usr/lib/postgresql") / v / "bin" for v in ("17", "16", "15", "14", "13")]


def _find_bin(name: str) -> str | None:
    for d in PG_BIN_DIRS:
        if (d / name).is_file():
            return str(d / name)
    return shutil.which(name)


def unavailable_reason() -> str | None:
    if importlib.util.find_spec("psycopg") is None:
        return "PostgreSQL driver psycopg not installed (pip install 'psycopg[binary]')"
    if _find_bin("initdb") is None or _find_bin("pg_ctl") is None:
        return "PostgreSQL server binaries (initdb, pg_ctl) not installed"
    if os.geteuid() != 0:
        return "starting a throw-away PostgreSQL as user 'postgres' needs root"
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        return "no 'postgres' system user"
    return None


@dataclass
class TempPostgres:
    root: Path
    tcp_port: int | None = None

    @property
    def socket_dir(self) -> Path:
        return self.root / "sock"

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@/postgres?host={self.socket_dir}"

    @property
    def tcp_url(self) -> str:
        """The database over TCP on 127.0.0.1 (only when started with ``tcp_port``)."""
        if self.tcp_port is None:
            raise RuntimeError("started without tcp_port: Unix socket only")
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.tcp_port}/postgres"

    def _as_postgres(self, *cmd: str) -> None:
        res = subprocess.run(
            ["runuser", "-u", "postgres", "--", *cmd],
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        if res.returncode != 0:
            raise RuntimeError(f"{cmd[0]} failed: {res.stdout}\n{res.stderr}")

    @classmethod
    def start(cls, tcp_port: int | None = None) -> TempPostgres:
        root = Path(tempfile.mkdtemp(prefix="osteo-pg-"))
        pg = cls(root, tcp_port)
        user = pwd.getpwnam("postgres")
        pg.socket_dir.mkdir()
        for p in (root, pg.socket_dir):
            os.chown(p, user.pw_uid, user.pw_gid)
        data = root / "data"
        initdb, pg_ctl = _find_bin("initdb"), _find_bin("pg_ctl")
        assert initdb and pg_ctl
        pg._as_postgres(initdb, "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync")
        listen = "''" if tcp_port is None else f"127.0.0.1 -p {tcp_port}"
        opts = f"-c listen_addresses={listen} -k {pg.socket_dir} -c fsync=off"
        # -w: pg_ctl itself polls until the server accepts connections.
        pg._as_postgres(
            pg_ctl,
            "-D",
            str(data),
            "-o",
            opts,
            "-l",
            str(root / "log"),
            "-w",
            "-t",
            "60",
            "start",
        )
        return pg

    def stop(self) -> None:
        pg_ctl = _find_bin("pg_ctl")
        if pg_ctl and (self.root / "data").is_dir():
            subprocess.run(
                [
                    "runuser",
                    "-u",
                    "postgres",
                    "--",
                    pg_ctl,
                    "-D",
                    str(self.root / "data"),
                    "-m",
                    "immediate",
                    "-w",
                    "stop",
                ],
                capture_output=True,
                check=False,
                timeout=60,
            )
        shutil.rmtree(self.root, ignore_errors=True)
