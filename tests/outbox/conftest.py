"""Fixtures for outbox tests: a real SQLite engine and a real pynetdicom Storage SCP on 127.0.0.1
acting as the PACS (a fake peer is fine here: these tests are about the outbox)."""

from __future__ import annotations

import logging
import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import structlog
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    RLELossless,
)
from pynetdicom import AE, AllStoragePresentationContexts, evt
from sqlalchemy import Engine

from osteo_node.store.db import make_engine
from osteo_node.store.schema import upgrade
from tests.node.databases import reset_postgres
from tests.outbox.postgres import TempPostgres
from tests.outbox.postgres import unavailable_reason as pg_unavailable_reason

UNCOMPRESSED = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]
ALL_SYNTAXES = [*UNCOMPRESSED, JPEG2000Lossless, RLELossless]


@dataclass
class FakePacs:
    """pynetdicom Storage SCP on 127.0.0.1 (free port) that records what it gets.

    ``statuses``: C-STORE status to return, popped per request (the last one sticks).
    ``during_store``: called while a C-STORE request is being answered (tests use it to act
    while the sender waits for the response).
    """

    ae_title: str = "FAKEPACS"
    transfer_syntaxes: list[str] = field(default_factory=lambda: list(ALL_SYNTAXES))
    statuses: list[int] = field(default_factory=lambda: [0x0000])
    received: list[tuple[str, str, str]] = field(default_factory=list)  # (sop uid, ts, calling)
    associations: list[list[tuple[str, tuple[str, ...]]]] = field(default_factory=list)
    port: int = 0
    ssl_context: ssl.SSLContext | None = None
    during_store: Callable[[], None] | None = None
    _server: Any = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> FakePacs:
        ae = AE(ae_title=self.ae_title)
        ae.require_called_aet = True
        for cx in AllStoragePresentationContexts:
            ae.add_supported_context(cx.abstract_syntax, self.transfer_syntaxes)
        handlers = [(evt.EVT_REQUESTED, self._on_requested), (evt.EVT_C_STORE, self._on_store)]
        self._server = ae.start_server(
            ("127.0.0.1", 0), block=False, evt_handlers=handlers, ssl_context=self.ssl_context
        )
        self.port = int(self._server.server_address[1])
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None

    def _on_requested(self, event: evt.Event) -> None:
        proposed = [
            (str(cx.abstract_syntax), tuple(str(t) for t in cx.transfer_syntax))
            for cx in event.assoc.requestor.requested_contexts
        ]
        with self._lock:
            self.associations.append(proposed)

    def _on_store(self, event: evt.Event) -> int:
        if self.during_store is not None:
            self.during_store()
        with self._lock:
            status = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
            if status in (0x0000, 0xB000):
                self.received.append(
                    (
                        str(event.request.AffectedSOPInstanceUID),
                        str(event.context.transfer_syntax),
                        str(event.assoc.requestor.ae_title),
                    )
                )
        return status

    @property
    def received_uids(self) -> list[str]:
        return [r[0] for r in self.received]


@pytest.fixture(autouse=True)
def _isolated_logging() -> Iterator[None]:
    """CLI tests call ``main()``, which configures logging onto that test's captured stderr;
    restore the previous configuration so later tests do not log into a closed stream."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level, logging.getLogger("pynetdicom").level)
    yield
    structlog.reset_defaults()
    root.handlers[:], root.level = saved[0], saved[1]
    logging.getLogger("pynetdicom").setLevel(saved[2])


@pytest.fixture
def fake_pacs() -> Iterator[Callable[..., FakePacs]]:
    started: list[FakePacs] = []

    def _make(**kwargs: Any) -> FakePacs:
        pacs = FakePacs(**kwargs).start()
        started.append(pacs)
        return pacs

    yield _make
    for pacs in started:
        pacs.stop()


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A 127.0.0.1 port bound but not listening: connecting is refused while the test runs."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    yield int(s.getsockname()[1])
    s.close()


@pytest.fixture(scope="session")
def postgres() -> Iterator[TempPostgres]:
    reason = pg_unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    server = TempPostgres.start()
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """The outbox database: every test using it runs on SQLite (WAL file) and on PostgreSQL."""
    if request.param == "sqlite":
        eng = make_engine(f"sqlite:///{tmp_path / 'db' / 'node.db'}")
    else:
        server: TempPostgres = request.getfixturevalue("postgres")
        reset_postgres(server.url)  # a new database for each test
        eng = make_engine(server.url)
    upgrade(eng)
    yield eng
    eng.dispose()


@pytest.fixture
def outbox_dir(tmp_path: Path) -> Path:
    return tmp_path / "outbox"


@pytest.fixture(scope="session")
def ct_small() -> Dataset:
    """A real CT slice shipped with pydicom (128x128, explicit VR little endian)."""
    return dcmread(get_testdata_file("CT_small.dcm"))


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture
def tls_files(tmp_path: Path) -> dict[str, Path]:
    """A test CA, a PACS server certificate for 127.0.0.1 and a client certificate (openssl)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed")
    d = tmp_path / "tls"
    d.mkdir()
    for ca in ("ca", "other_ca"):
        _openssl(
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            f"/CN=osteo test {ca}",
            "-keyout",
            f"{ca}.key",
            "-out",
            f"{ca}.crt",
            cwd=d,
        )
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    for name in ("server", "client"):
        _openssl(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            f"/CN={name}",
            "-keyout",
            f"{name}.key",
            "-out",
            f"{name}.csr",
            cwd=d,
        )
        _openssl(
            "x509",
            "-req",
            "-in",
            f"{name}.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "san.ext",
            "-out",
            f"{name}.crt",
            cwd=d,
        )
    return {p.stem + "_" + p.suffix[1:]: p for p in d.iterdir()}
