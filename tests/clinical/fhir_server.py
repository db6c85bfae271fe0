"""A small FHIR R4 server for tests: real HTTP on 127.0.0.1 (free port), JSON resources.

Supports ``GET [base]/metadata``, ``GET [base]/Patient/[id]`` and type searches
``GET [base]/[type]?patient=[id]`` returning searchset Bundles paged ``page_size`` at a time with
``next`` links. ``fail_types`` answer 500 (to exercise partial intake). With ``token`` every
request but ``metadata`` needs ``Authorization: Bearer <token>`` (else 401).
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class _Handler(BaseHTTPRequestHandler):
    server: _FhirServer

    def log_message(self, format: str, *args: Any) -> None:  # quiet test output
        return

    def _send(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/fhir+json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _outcome(self, status: int, text: str) -> None:
        self._send(status, {"resourceType": "OperationOutcome", "issue": [
            {"severity": "error", "code": "not-found" if status == 404 else "exception",
             "diagnostics": text}]})

    def do_GET(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        parts = [p for p in url.path.split("/") if p][1:]  # drop the "fhir" base segment
        query = dict(urllib.parse.parse_qsl(url.query))
        srv = self.server
        srv.requests.append(self.path)
        srv.auth.append(self.headers.get("Authorization"))
        if srv.token and parts != ["metadata"] \
                and self.headers.get("Authorization") != f"Bearer {srv.token}":
            self._outcome(401, "invalid or missing bearer token")
            return
        if parts == ["metadata"]:
            self._send(200, {"resourceType": "CapabilityStatement", "status": "active",
                             "kind": "instance", "fhirVersion": "4.0.1",
                             "format": ["json"], "date": "2026-11-22"})
            return
        if len(parts) == 2 and parts[0] == "Patient":
            res = next((r for r in srv.resources if r["resourceType"] == "Patient"
                        and r["id"] == parts[1]), None)
            if res is None:
                self._outcome(404, f"Patient/{parts[1]} not found")
            else:
                self._send(200, res)
            return
        if len(parts) == 1:
            rtype = parts[0]
            if rtype in srv.fail_types:
                self._outcome(500, "internal error")
                return
            pid = query.get("patient", "")
            matches = [r for r in srv.resources if r["resourceType"] == rtype
                       and (r.get("subject") or {}).get("reference") == f"Patient/{pid}"]
            page = int(query.get("_page", "0"))
            chunk = matches[page * srv.page_size:(page + 1) * srv.page_size]
            bundle: dict[str, Any] = {
                "resourceType": "Bundle", "type": "searchset", "total": len(matches),
                "link": [{"relation": "self", "url": f"{srv.base}{self.path[len('/fhir'):]}"}],
                "entry": [{"fullUrl": f"{srv.base}/{rtype}/{r['id']}", "resource": r,
                           "search": {"mode": "match"}} for r in chunk],
            }
            if (page + 1) * srv.page_size < len(matches):
                nxt = dict(query, _page=str(page + 1))
                bundle["link"].append({"relation": "next",
                                       "url": f"{srv.base}/{rtype}?{urllib.parse.urlencode(nxt)}"})
            self._send(200, bundle)
            return
        self._outcome(404, f"unsupported path {url.path}")


class _FhirServer(ThreadingHTTPServer):
    def __init__(self, resources: list[dict[str, Any]], page_size: int,
                 fail_types: set[str], token: str | None = None) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.token = token
        self.auth: list[str | None] = []
        self.resources = resources
        self.page_size = page_size
        self.fail_types = fail_types
        self.requests: list[str] = []
        self.base = f"http://127.0.0.1:{self.server_address[1]}/fhir"


def _wait_ready(base: str, attempts: int = 200) -> None:
    """Poll the CapabilityStatement until the server answers (no fixed sleeps)."""
    last: Exception | None = None
    for _ in range(attempts):
        try:
            with urllib.request.urlopen(f"{base}/metadata", timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError) as exc:
            last = exc
            threading.Event().wait(0.01)
    raise RuntimeError(f"FHIR test server did not become ready: {last}")


@contextmanager
def fhir_server(
    resources: list[dict[str, Any]], page_size: int = 2, fail_types: set[str] | None = None,
    token: str | None = None,
) -> Iterator[_FhirServer]:
    srv = _FhirServer(resources, page_size, fail_types or set(), token)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        _wait_ready(srv.base)
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(timeout=5)
