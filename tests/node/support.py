"""Helpers for node tests: free ports, polling, configs, UID-filled copies of real CT data,
running the node in-process or as ``osteo-node serve``."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydicom import dcmread
from pydicom.uid import generate_uid

REPO = Path(__file__).resolve().parents[2]
AE = "OSTEO_NODE"
CALLER = "STORESCU"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(pred: Callable[[], Any], timeout: float = 30.0, interval: float = 0.05,
               what: str = "condition") -> Any:
    """Poll ``pred`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def port_open(port: int) -> bool:
    """Something listens on ``port`` (a TCP self-connect, possible on an ephemeral port nobody
    listens on, does not count)."""
    with socket.socket() as s:
        s.settimeout(0.2)
        if s.connect_ex(("127.0.0.1", port)) != 0:
            return False
        return bool(s.getsockname() != s.getpeername())


def node_config(tmp: Path, port: int, **sections: dict[str, Any]) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "dicom": {"ae_title": AE, "bind_address": "127.0.0.1", "port": port,
                  "allowed_callers": [CALLER, "PYSCU"]},
        "storage": {"spool_dir": str(tmp / "spool"), "outbox_dir": str(tmp / "outbox"),
                    "database_url": f"sqlite:///{tmp / 'node.db'}"},
        "queue": {"series_quiet_seconds": 1, "workers": 1, "poll_seconds": 0.1},
        "logging": {"level": "INFO", "format": "json"},
    }
    for key, value in sections.items():
        if isinstance(value, dict):
            cfg.setdefault(key, {}).update(value)
        else:
            cfg[key] = value
    return cfg


def write_config(tmp: Path, cfg: dict[str, Any]) -> Path:
    path = tmp / "node.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


def fill_uids(src_files: list[Path], dst: Path) -> list[Path]:
    """Copies of ``src_files`` with new Study/Series/SOP Instance UIDs (one series) and the SOP
    Class UID taken from the file meta where the data set's is empty; every other element, the
    pixel data included, is written unchanged (same transfer syntax)."""
    dst.mkdir(parents=True, exist_ok=True)
    study, series = generate_uid(), generate_uid()
    out = []
    for i, f in enumerate(sorted(src_files)):
        ds = dcmread(f)
        sop = generate_uid()
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = study, series, sop
        ds.file_meta.MediaStorageSOPInstanceUID = sop
        if not ds.get("SOPClassUID"):
            ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
        p = dst / f"{i:04d}.dcm"
        ds.save_as(p, enforce_file_format=True)
        out.append(p)
    return out


def synth_series(src_files: list[Path], dst: Path, n: int) -> list[Path]:
    """``n`` slices made by cycling real slices with new UIDs and positions (2 mm apart)."""
    dst.mkdir(parents=True, exist_ok=True)
    study, series = generate_uid(), generate_uid()
    src = sorted(src_files)
    headers = [dcmread(f) for f in src]
    out = []
    for i in range(n):
        ds = headers[i % len(headers)]
        sop = generate_uid()
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = study, series, sop
        ds.file_meta.MediaStorageSOPInstanceUID = sop
        ds.InstanceNumber = i + 1
        x, y, _ = (float(v) for v in ds.ImagePositionPatient)
        ds.ImagePositionPatient = [x, y, -2.0 * i]
        p = dst / f"{i:04d}.dcm"
        ds.save_as(p, enforce_file_format=True)
        out.append(p)
    return out


def dataset_bytes(path: Path) -> bytes:
    """The encoded data set of a Part-10 file: everything after the file meta group."""
    raw = path.read_bytes()
    assert raw[128:132] == b"DICM", f"{path} is not a Part-10 file"
    group_len = int.from_bytes(raw[140:144], "little")  # (0002,0000) UL value
    return raw[144 + group_len:]


@dataclass
class StoreOutcome:
    returncode: int
    acknowledged: list[Path]  # files that got a Success C-STORE response
    output: str


_SENDING = re.compile(r"Sending file: (.+)$")
_RESPONSE = re.compile(r"Received Store Response \((.+?)\)")


def storescu(port: int, files: list[Path], *extra: str, calling: str = CALLER,
             timeout: float = 300) -> StoreOutcome:
    """Send ``files`` with dcmtk storescu (verbose) and return which were acknowledged."""
    cmd = ["storescu", "-v", "-aet", calling, "-aec", AE, *extra, "127.0.0.1", str(port),
           *map(str, files)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    return StoreOutcome(r.returncode, parse_acknowledged(r.stdout + r.stderr), r.stdout + r.stderr)


def parse_acknowledged(text: str) -> list[Path]:
    acked: list[Path] = []
    current: Path | None = None
    for line in text.splitlines():
        m = _SENDING.search(line)
        if m:
            current = Path(m.group(1).strip())
            continue
        m = _RESPONSE.search(line)
        if m and current is not None:
            if m.group(1).startswith("Success"):
                acked.append(current)
            current = None
    return acked


def echoscu(port: int, *extra: str, calling: str = CALLER) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["echoscu", "-v", "-aet", calling, "-aec", AE, *extra, "127.0.0.1",
                           str(port)], capture_output=True, text=True, timeout=60, check=False)


@contextmanager
def running_listener(cfg: dict[str, Any], base: Path) -> Iterator[Any]:
    """The listener in this process (a thread), bound and ready."""
    from osteo_node.config import settings_from_mapping
    from osteo_node.node.listener import Listener
    from osteo_node.store.db import make_engine
    from osteo_node.store.schema import upgrade

    settings = settings_from_mapping(cfg, base)
    engine = make_engine(settings.storage.database_url)
    upgrade(engine)  # as serve does before its children start
    engine.dispose()
    listener = Listener(settings)
    listener.prepare()
    listener.start()  # the port is bound when start() returns: no probe connection, which
    # would count against the per-peer budget of not-yet-associated connections until the
    # node's association thread notices the close
    try:
        yield listener
    finally:
        listener.stop()


class NodeProcess:
    """``osteo-node serve`` as a child process in its own process group (kill -9 = power cut)."""

    def __init__(self, config: Path, log: Path, env: dict[str, str] | None = None) -> None:
        self.config, self.log = config, log
        self.env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        # the tests (and CI) run as root: the node refuses that unless told (tested separately)
        self.serve_args: list[str] = ["--allow-root"] if os.geteuid() == 0 else []

    def start(self, port: int) -> NodeProcess:
        logf = self.log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from osteo_node.cli.main import entry; entry()",
             "serve", "--config", str(self.config), *self.serve_args],
            cwd=REPO, env=self.env, stdout=logf, stderr=subprocess.STDOUT,
            start_new_session=True)
        logf.close()
        wait_until(lambda: port_open(port) or self.proc.poll() is not None, 60,  # type: ignore[union-attr]
                   what="node listening")
        assert self.proc.poll() is None, self.log.read_text()[-3000:]
        return self

    def kill9(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            return self.proc.wait(30)


def in_thread(fn: Callable[[], Any]) -> threading.Thread:
    t = threading.Thread(target=fn, daemon=True)
    t.start()
    return t
