"""The STOW-RS sender's own decisions, against a small STOW-RS server on 127.0.0.1 (a fake peer
is fine here: these tests are about how the sender plans, splits and stops; Orthanc is in
tests/integration/test_outbox_dicomweb_orthanc.py)."""

from __future__ import annotations

import copy
import email.parser
import email.policy
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import BytesIO
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from sqlalchemy import Engine

from osteo_node.outbox import store
from osteo_node.outbox.claims import ClaimedItem
from osteo_node.outbox.dicomweb_settings import DicomWebTarget, WebAuth
from osteo_node.outbox.policy import Destination, RetryPolicy, Timeouts
from osteo_node.outbox.sender import OutboxSender, SenderSettings
from osteo_node.outbox.stow import Part, multipart_body, plan_requests
from tests.outbox.objects import secondary_capture

TIMEOUTS = Timeouts(connect=5, acse=5, dimse=10, network=10)


@dataclass
class FakeStow:
    """A STOW-RS server on 127.0.0.1: answers each POST with the next scripted status (the last
    one sticks); a 200 lists every received instance as stored. Records (path, SOP UIDs,
    Authorization) per request."""

    statuses: list[int] = field(default_factory=lambda: [200])
    requests: list[tuple[str, list[str], str | None]] = field(default_factory=list)
    port: int = 0
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> FakeStow:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                uids = _sop_uids(self.headers["Content-Type"], body)
                with fake._lock:
                    fake.requests.append((self.path, uids, self.headers.get("Authorization")))
                    status = fake.statuses.pop(0) if len(fake.statuses) > 1 else fake.statuses[0]
                payload = _stored_response(uids) if status == 200 else b""
                self.send_response(status)
                self.send_header("Content-Type", "application/dicom+json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *_args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self._server.server_address[1])
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def destination(self, name: str = "web", **auth: object) -> Destination:
        web_auth = WebAuth(**auth) if auth else WebAuth()  # type: ignore[arg-type]
        target = DicomWebTarget(f"http://127.0.0.1:{self.port}/dicom-web", auth=web_auth,
                                allow_plain_http_auth=True)
        return Destination.stow_rs(name, target)


def _sop_uids(content_type: str, body: bytes) -> list[str]:
    """The SOP Instance UIDs of a multipart/related request, read with the stdlib MIME parser."""
    msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body)
    assert msg.get_content_type() == "multipart/related"
    assert msg.get_param("type") == "application/dicom"
    uids = []
    for part in msg.iter_parts():
        assert part.get_content_type() == "application/dicom"
        uids.append(str(dcmread(BytesIO(part.get_payload(decode=True))).SOPInstanceUID))
    return uids


def _stored_response(uids: list[str]) -> bytes:
    ds = Dataset()
    items = []
    for uid in uids:
        item = Dataset()
        item.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
        item.ReferencedSOPInstanceUID = uid
        items.append(item)
    ds.ReferencedSOPSequence = items
    return ds.to_json().encode()


@pytest.fixture
def fake_stow() -> Iterator[FakeStow]:
    server = FakeStow().start()
    yield server
    server.stop()


def _two_studies(ct: Dataset) -> list[Dataset]:
    """Two SCs in the CT's study and one in another study."""
    other = copy.deepcopy(ct)  # Dataset.copy() is shallow: it would change the fixture
    other.StudyInstanceUID = generate_uid()
    series = generate_uid()
    return [secondary_capture(ct, series, 1), secondary_capture(ct, series, 2),
            secondary_capture(other, generate_uid(), 1)]


def _sender(engine: Engine, outbox_dir: Path, dest: Destination,
            retry: RetryPolicy | None = None) -> OutboxSender:
    return OutboxSender(engine, outbox_dir, [dest], retry or RetryPolicy(),
                        settings=SenderSettings(timeouts=TIMEOUTS, poll_interval_s=0.5))


def _part(study: str | None, size: int) -> Part:
    item = ClaimedItem(0, generate_uid(), "web", 1, "1.2", "1.2.840.10008.1.2.1",
                       Path("/nonexistent"), "t")
    return Part(item, study, size)


def test_plan_requests_groups_by_study_and_cuts_by_count_and_size() -> None:
    a1, b1, a2, a3, big, a4 = (_part("A", 10), _part("B", 10), _part("A", 10), _part("A", 10),
                               _part("A", 500), _part("A", 10))
    plan = plan_requests([a1, b1, a2, a3, big, a4], max_instances=2, max_bytes=100)
    assert plan == [[a1, a2], [a3], [big], [a4], [b1]]  # a file larger than the limit goes alone


def test_multipart_body_is_valid_mime(ct_small: Dataset) -> None:
    docs = [b"\x00DICM first\r\n--not-a-boundary", b"second"]
    body = multipart_body(docs, "b0undary")
    msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b'Content-Type: multipart/related; type="application/dicom"; boundary=b0undary\r\n\r\n'
        + body)
    assert [p.get_payload(decode=True) for p in msg.iter_parts()] == docs


def test_one_request_per_study_with_basic_auth(
    fake_stow: FakeStow, engine: Engine, outbox_dir: Path, ct_small: Dataset, tmp_path: Path
) -> None:
    pw = tmp_path / "pw"
    pw.write_text("s3cret\n")
    dest = fake_stow.destination(type="basic", username="osteo", password_file=pw)
    objs = _two_studies(ct_small)
    store.enqueue(engine, outbox_dir, objs, [dest])
    report = _sender(engine, outbox_dir, dest).run_once()
    assert (report.sent, report.requests) == (3, 2)
    paths = sorted(path for path, _, _ in fake_stow.requests)
    assert paths == sorted(f"/dicom-web/studies/{o.StudyInstanceUID}" for o in objs[1:])
    assert {auth for _, _, auth in fake_stow.requests} == {"Basic b3N0ZW86czNjcmV0"}


def test_413_for_several_instances_sends_them_one_by_one(
    fake_stow: FakeStow, engine: Engine, outbox_dir: Path, ct_small: Dataset
) -> None:
    fake_stow.statuses = [413, 200]
    dest = fake_stow.destination()
    objs = _two_studies(ct_small)[:2]  # one study: one request, refused as too large
    store.enqueue(engine, outbox_dir, objs, [dest])
    report = _sender(engine, outbox_dir, dest).run_once()
    assert (report.sent, report.failed, report.requests) == (2, 0, 3)
    assert [len(uids) for _, uids, _ in fake_stow.requests] == [2, 1, 1]
    # a single instance still too large fails for good, with the reason
    fake_stow.statuses = [413]
    one = secondary_capture(ct_small, generate_uid(), 7)
    store.enqueue(engine, outbox_dir, [one], [dest])
    assert _sender(engine, outbox_dir, dest).run_once().failed == 1
    (item,) = store.list_items(engine, sop_instance_uid=one.SOPInstanceUID)
    assert item.state == "failed" and "HTTP 413" in str(item.last_error)


def test_busy_server_stops_the_pass_and_everything_is_retried(
    fake_stow: FakeStow, engine: Engine, outbox_dir: Path, ct_small: Dataset
) -> None:
    fake_stow.statuses = [503]
    dest = fake_stow.destination()
    store.enqueue(engine, outbox_dir, _two_studies(ct_small), [dest])
    report = _sender(engine, outbox_dir, dest).run_once()
    assert (report.retrying, report.requests) == (3, 1)  # the second study was not sent
    items = store.list_items(engine)
    assert {it.state for it in items} == {"pending"}
    assert all("busy (HTTP 503)" in str(it.last_error) or "HTTP 503 Service Unavailable"
               in str(it.last_error) for it in items)


def test_unreadable_secret_makes_no_request_and_retries(
    fake_stow: FakeStow, engine: Engine, outbox_dir: Path, ct_small: Dataset, tmp_path: Path
) -> None:
    token = tmp_path / "token"
    token.write_text("t0ken\n")
    dest = fake_stow.destination(type="bearer", token_file=token)
    token.unlink()  # after configuration: e.g. a secret rotation gone wrong
    store.enqueue(engine, outbox_dir, _two_studies(ct_small), [dest])
    sender = _sender(engine, outbox_dir, dest, RetryPolicy(base_delay_s=0, max_delay_s=0))
    report = sender.run_once()
    assert (report.retrying, report.requests) == (3, 0) and fake_stow.requests == []
    assert all(str(it.last_error).startswith("cannot read the secret of destination 'web'")
               for it in store.list_items(engine))
    token.write_text("t0ken\n")  # fixed: the next pass reads it, no restart
    assert sender.run_once().sent == 3
    assert {auth for _, _, auth in fake_stow.requests} == {"Bearer t0ken"}


def test_held_destination_is_not_polled_in_a_loop(
    fake_stow: FakeStow, engine: Engine, outbox_dir: Path, ct_small: Dataset, tmp_path: Path
) -> None:
    fake_stow.statuses = [401]
    pw = tmp_path / "pw"
    pw.write_text("wrong\n")
    dest = fake_stow.destination(type="basic", username="osteo", password_file=pw)
    sender = _sender(engine, outbox_dir, dest)
    store.enqueue(engine, outbox_dir, _two_studies(ct_small), [dest])
    assert sender.run_once().requests == 1
    # a new result is due now, but the destination is held: the idle wait is the poll interval,
    # not zero (the serving loop would otherwise spin on an item it may not claim)
    store.enqueue(engine, outbox_dir, [secondary_capture(ct_small, generate_uid(), 5)], [dest])
    assert sender._idle_delay() == pytest.approx(0.5)
    assert sender.run_once().claimed == 0
    # re-armed by an operator: claimed and sent again (one request per study)
    fake_stow.statuses = [200]
    assert store.retry_failed(engine, destination="web") == 3
    report = sender.run_once()
    assert (report.sent, report.requests) == (4, 2)
