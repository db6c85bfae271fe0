"""``worklist push-fhir`` against a local HTTP endpoint that behaves like a FHIR R4 server.

No FHIR server can be installed here (HAPI FHIR and the HL7 validator are Java downloads, not in
Debian or PyPI), so the endpoint is a small server in the test: it is a fake of what the test is
not about (storage); what the test is about is checked on the wire: the method and path, the
bearer token, the content type, a ``transaction`` Bundle that validates against FHIR 4.0.1, and
conditional creates (``ifNoneExist``), which the endpoint honours as a FHIR server does (the
second push of the same rows creates nothing). It answers 503 first (retried with the outbox's
backoff), 401 to a wrong token (not retried), and nothing at all when it is down.
"""

from __future__ import annotations

import io
import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from osteo_node import logging_setup
from osteo_node.cli.main import main as cli_main
from osteo_node.pipeline.results import AnalysisOutput
from osteo_node.store.db import make_engine
from osteo_node.store.schema import upgrade
from osteo_node.worklist import fhir, store

pytestmark = pytest.mark.shared_data

TOKEN = "s3cret-bearer-token"
MRN_SYSTEM = "urn:oid:1.2.826.0.1.3680043.9.7777"


@dataclass
class FakeFhir:
    """What the endpoint saw and holds; ``fail_first``: answer 503 to that many requests."""

    fail_first: int = 0
    requests: list[dict[str, Any]] = field(default_factory=list)
    stored: dict[str, str] = field(default_factory=dict)  # "system|value" -> resource id
    problems: list[str] = field(default_factory=list)


def _handler(state: FakeFhir) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:  # quiet
            pass

        def _answer(self, code: int, doc: dict[str, Any]) -> None:
            body = json.dumps(doc).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/fhir+json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            state.requests.append({"path": self.path, "auth": self.headers.get("Authorization"),
                                   "type": self.headers.get("Content-Type")})
            if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                self._answer(401, {"resourceType": "OperationOutcome", "issue": [{
                    "severity": "error", "code": "login", "diagnostics": "invalid token"}]})
                return
            if len(state.requests) <= state.fail_first:
                self._answer(503, {"resourceType": "OperationOutcome", "issue": [{
                    "severity": "error", "code": "transient", "diagnostics": "busy"}]})
                return
            if self.path != "/fhir" or not str(self.headers.get("Content-Type")).startswith(
                    "application/fhir+json"):
                state.problems.append(f"{self.path} {self.headers.get('Content-Type')}")
            bundle = json.loads(body)
            fhir.validate(bundle)  # FHIR 4.0.1 models, strict
            if bundle["type"] != "transaction":
                state.problems.append(f"bundle type {bundle['type']}")
            entries = []
            for e in bundle["entry"]:
                req = e["request"]
                cond = req.get("ifNoneExist", "")
                if req["method"] != "POST" or not cond.startswith("identifier="):
                    state.problems.append(f"not a conditional create: {req}")
                key = cond.removeprefix("identifier=")
                if key in state.stored:
                    status = "200 OK"
                else:
                    state.stored[key] = f"{req['url']}/{len(state.stored) + 1}"
                    status = "201 Created"
                entries.append({"response": {"status": status,
                                             "location": state.stored[key]}})
            self._answer(200, {"resourceType": "Bundle", "type": "transaction-response",
                               "entry": entries})

    return Handler


@pytest.fixture()
def server() -> Iterator[tuple[str, FakeFhir]]:
    state = FakeFhir(fail_first=1)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/fhir", state
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture()
def node(tmp_path: Path, ct20_output: AnalysisOutput) -> Iterator[tuple[Path, Engine]]:
    url = f"sqlite:///{tmp_path / 'node.db'}"
    engine = make_engine(url)
    upgrade(engine)
    assert store.add_from_result(engine, ct20_output) is not None
    yield tmp_path, engine
    engine.dispose()


def _config(tmp: Path, base_url: str, token: str) -> Path:
    (tmp / "token").write_text(token + "\n", encoding="utf-8")
    cfg = tmp / "node.yaml"
    cfg.write_text(
        "dicom:\n  allowed_callers: [{ae_title: MODALITY}]\n"
        f"storage:\n  database_url: sqlite:///{tmp / 'node.db'}\n"
        f"retry:\n  max_attempts: 3\n  base_delay_seconds: 0.05\n  max_delay_seconds: 0.1\n"
        f"fhir:\n  base_url: {base_url}\n  patient_identifier_system: '{MRN_SYSTEM}'\n"
        f"  token_file: {tmp / 'token'}\n  timeout_s: 5\n", encoding="utf-8")
    return cfg


def test_push_retries_a_busy_server_and_creates_each_resource_once(
        node: tuple[Path, Engine], server: tuple[str, FakeFhir],
        capsys: pytest.CaptureFixture[str]) -> None:
    tmp, _ = node
    base_url, state = server
    log_stream = io.StringIO()
    logging_setup.configure("DEBUG", json=True, stream=log_stream)
    cfg = _config(tmp, base_url, TOKEN)
    assert cli_main(["--log-format", "json", "worklist", "push-fhir", "--config", str(cfg)]
                    ) == 0
    assert len(state.requests) == 2  # 503, then accepted
    assert all(r["auth"] == f"Bearer {TOKEN}" for r in state.requests)
    assert state.problems == []
    n = len(state.stored)
    assert n == 7  # Patient, ImagingStudy, 3 Observations, DiagnosticReport, Task
    first = capsys.readouterr()
    assert f"{n} created" in first.out
    # pushed again: conditional creates find every resource, nothing new
    assert cli_main(["worklist", "push-fhir", "--config", str(cfg)]) == 0
    again = capsys.readouterr()
    assert len(state.stored) == n and "0 created" in again.out
    logs = log_stream.getvalue() + first.err + first.out + again.err
    assert "fhir_push_retry" in logs and "worklist_fhir_pushed" in logs
    assert TOKEN not in logs  # the token is never logged


def test_a_wrong_token_is_a_clear_failure_not_a_retry_storm(
        node: tuple[Path, Engine], server: tuple[str, FakeFhir],
        capsys: pytest.CaptureFixture[str]) -> None:
    tmp, _ = node
    base_url, state = server
    cfg = _config(tmp, base_url, "expired-token")
    assert cli_main(["worklist", "push-fhir", "--config", str(cfg)]) == 1
    assert len(state.requests) == 1  # 401 is not retried
    err = capsys.readouterr().err
    assert "HTTP 401" in err and "token" in err and "invalid token" in err
    assert state.stored == {}


def test_a_server_that_is_down_is_retried_then_reported(
        node: tuple[Path, Engine], capsys: pytest.CaptureFixture[str]) -> None:
    tmp, _ = node
    with socket.socket() as s:  # a free port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = _config(tmp, f"http://127.0.0.1:{port}/fhir", TOKEN)
    assert cli_main(["worklist", "push-fhir", "--config", str(cfg)]) == 1
    assert "not reachable after 3 attempts" in capsys.readouterr().err


def test_push_needs_a_url_and_the_patient_system(node: tuple[Path, Engine],
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    tmp, _ = node
    url = f"sqlite:///{tmp / 'node.db'}"
    assert cli_main(["worklist", "push-fhir", "--db", url]) == 1
    assert "no FHIR base URL" in capsys.readouterr().err
    assert cli_main(["worklist", "push-fhir", "--db", url, "--url", "http://127.0.0.1:9/fhir"]
                    ) == 1
    assert "patient_identifier_system" in capsys.readouterr().err
