"""Issue 14 (DICOMweb): the outbox delivers result objects by STOW-RS to a real Orthanc with its
DICOMweb plugin (Debian packages, private network namespace, HTTP basic auth), with the outbox's
retries and backoff, exactly once, and stops at the first credentials rejection.

The result objects are Secondary Captures and a Key Object Selection made from the real CT and
MR slices shipped with pydicom (two studies), one SC JPEG 2000 compressed.
"""

from __future__ import annotations

import io
import itertools
import json
import random
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import JPEG2000Lossless, generate_uid
from sqlalchemy import Engine

from osteo_node.outbox import store
from osteo_node.outbox.dicomweb_settings import DicomWebTarget, WebAuth, WebTls
from osteo_node.outbox.policy import Destination, RetryPolicy
from osteo_node.outbox.sender import OutboxSender, SenderSettings, Timeouts
from tests.integration.orthanc import OrthancServer
from tests.integration.orthanc_dicomweb import (
    DICOMWEB_ROOT,
    make_tls_files,
    orthanc_web_fixture,  # noqa: F401  (registers `orthanc_web`)
)
from tests.integration.outbox_support import claimed_at, engine_fixture, wait_for  # noqa: F401
from tests.integration.tls_proxy import TlsFront, running_tls_proxy
from tests.outbox.objects import key_object_selection, secondary_capture

pytestmark = [pytest.mark.integration]

TIMEOUTS = Timeouts(connect=5, acse=10, dimse=30, network=30)


@pytest.fixture(autouse=True)
def _fresh_structlog() -> Iterator[None]:
    structlog.reset_defaults()
    yield
    structlog.reset_defaults()


@pytest.fixture(scope="module")
def sources() -> tuple[Dataset, Dataset]:
    """The real CT and MR slices the results are made from (two studies)."""
    return dcmread(get_testdata_file("CT_small.dcm")), dcmread(get_testdata_file("MR_small.dcm"))


def _results(ct: Dataset, mr: Dataset) -> list[Dataset]:
    """Three SCs and a KOS in the CT's study, one JPEG 2000 SC in the MR's study."""
    series = generate_uid()
    objs: list[Dataset] = [secondary_capture(ct, series, i) for i in (1, 2, 3)]
    objs.append(key_object_selection([ct]))
    objs.append(secondary_capture(mr, generate_uid(), 1, transfer_syntax_uid=JPEG2000Lossless))
    return objs


def _secret(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "orthanc.password"
    path.write_text(text + "\n")
    path.chmod(0o600)
    return path


def _destination(orthanc: OrthancServer, password_file: Path, **tls: object) -> Destination:
    auth = WebAuth("basic", username=orthanc.user, password_file=password_file)
    target = DicomWebTarget(
        orthanc.url + DICOMWEB_ROOT,
        auth=auth,
        tls=WebTls(**tls),  # type: ignore[arg-type]
        allow_plain_http_auth=not orthanc.url.startswith("https://"),  # private veth link
    )
    return Destination.stow_rs("orthanc-web", target)


def _post_instance(orthanc: OrthancServer, ds: Dataset) -> None:
    """Put a source image into Orthanc through its REST API (the PACS already has the CT)."""
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    orthanc.post_json("/instances", buf.getvalue())


def _study_sop_uids(orthanc: OrthancServer, study_uid: str) -> dict[str, set[str]]:
    """{modality: SOP Instance UIDs} of the Orthanc study with this Study Instance UID."""
    (study_id,) = [s for s in orthanc.studies() if orthanc.study_uid(s) == study_uid]
    out: dict[str, set[str]] = {}
    for series in orthanc.series_of(study_id):
        modality = series["MainDicomTags"].get("Modality", "")
        for inst in series["Instances"]:
            out.setdefault(modality, set()).add(orthanc.instance_tags(inst)["SOPInstanceUID"])
    return out


def test_results_reach_orthanc_by_stow_rs_in_their_studies(
    orthanc_web: OrthancServer, engine: Engine, tmp_path: Path,
    sources: tuple[Dataset, Dataset],
) -> None:
    ct, mr = sources
    _post_instance(orthanc_web, ct)  # the source CT is in the PACS
    objs = _results(ct, mr)
    outbox = tmp_path / "outbox"
    dest = _destination(orthanc_web, _secret(tmp_path, orthanc_web.password))
    store.enqueue(engine, outbox, objs, [dest], job_id="job-web")
    sender = OutboxSender(engine, outbox, [dest], RetryPolicy(),
                          settings=SenderSettings(timeouts=TIMEOUTS))

    report = sender.run_once()

    assert (report.sent, report.retrying, report.failed) == (len(objs), 0, 0)
    assert report.requests == 2  # one STOW-RS request per study
    assert report.associations == 0
    assert store.counts(engine) == {"orthanc-web": {"sent": len(objs)}}
    assert {it.last_status for it in store.list_items(engine)} == {0}
    # Orthanc's REST API: every result in the study of its source, next to the CT.
    by_modality = _study_sop_uids(orthanc_web, ct.StudyInstanceUID)
    assert by_modality["CT"] == {ct.SOPInstanceUID}
    assert by_modality["OT"] == {o.SOPInstanceUID for o in objs[:3]}
    assert by_modality["KO"] == {objs[3].SOPInstanceUID}
    assert _study_sop_uids(orthanc_web, mr.StudyInstanceUID) == {"OT": {objs[4].SOPInstanceUID}}
    # Stored as sent: same UID, same transfer syntax, same pixels.
    (hit,) = orthanc_web.lookup(objs[4].SOPInstanceUID)
    stored = orthanc_web.fetch_instance(hit["ID"])
    assert stored.file_meta.TransferSyntaxUID == JPEG2000Lossless
    assert (stored.pixel_array == objs[4].pixel_array).all()
    # Received once each (the CT once through the REST API).
    assert sorted(orthanc_web.received_sop_uids()) == sorted(
        [ct.SOPInstanceUID, *(o.SOPInstanceUID for o in objs)])

    # Delivered items are never sent again, also when the job enqueues them again.
    again = store.enqueue(engine, outbox, objs, [dest], job_id="job-web")
    assert all(r.new_destinations == () for r in again)
    later = sender.run_once()
    assert (later.claimed, later.requests) == (0, 0)
    assert len(orthanc_web.received_sop_uids()) == len(objs) + 1


def test_orthanc_down_retries_with_backoff_then_delivers_exactly_once(
    orthanc_web: OrthancServer, engine: Engine, tmp_path: Path,
    sources: tuple[Dataset, Dataset],
) -> None:
    objs = _results(*sources)
    uids = sorted(o.SOPInstanceUID for o in objs)
    outbox = tmp_path / "outbox"
    dest = _destination(orthanc_web, _secret(tmp_path, orthanc_web.password))
    policy = RetryPolicy(max_attempts=100, base_delay_s=0.3, max_delay_s=1.2, multiplier=2.0)
    orthanc_web.stop()
    assert not orthanc_web.running

    store.enqueue(engine, outbox, objs, [dest], job_id="job-down")
    sender = OutboxSender(engine, outbox, [dest], policy,
                          settings=SenderSettings(poll_interval_s=0.1, timeouts=TIMEOUTS))
    stop = threading.Event()
    thread = threading.Thread(target=sender.serve, args=(stop,), daemon=True)
    thread.start()
    try:
        seen: dict[str, dict[int, tuple[object, object]]] = {}

        def snapshot() -> bool:  # (claimed_at, next_attempt_at) per failed attempt
            for it in store.list_items(engine):
                if it.state == "pending" and it.attempts > 0:
                    seen.setdefault(it.sop_instance_uid, {})[it.attempts] = (
                        claimed_at(engine, it.id), it.next_attempt_at)
            return all(len(seen.get(u, {})) >= 3 for u in uids)

        wait_for(snapshot, 60, "3 failed attempts per item while Orthanc is down")
        checked = 0
        for per_item in seen.values():
            for a, b in itertools.pairwise(sorted(per_item)):
                if b == a + 1:
                    assert per_item[b][0] >= per_item[a][1]  # type: ignore[operator]
                    checked += 1
        assert checked >= len(uids)  # the backoff was respected between attempts
        for it in store.list_items(engine):
            assert it.state == "pending"
            assert it.last_error and it.last_error.startswith(
                f"could not connect to {orthanc_web.host}:{orthanc_web.http_port}")
        assert orthanc_web.received_sop_uids() == []

        orthanc_web.start()
        wait_for(lambda: store.counts(engine) == {"orthanc-web": {"sent": len(objs)}}, 60,
                  "delivery after Orthanc came back")
    finally:
        stop.set()
        sender.wake()
        thread.join(30)
    assert not thread.is_alive()
    assert sorted(orthanc_web.received_sop_uids()) == uids  # one STOW-RS receipt each
    assert sorted(orthanc_web.sop_instance_uids()) == uids
    assert all(it.attempts >= 4 for it in store.list_items(engine))
    assert sender.run_once().claimed == 0
    assert sorted(orthanc_web.received_sop_uids()) == uids


def test_wrong_credentials_fail_once_hold_the_destination_and_resume_when_fixed(
    orthanc_web: OrthancServer, engine: Engine, tmp_path: Path,
    sources: tuple[Dataset, Dataset], log_stream: io.StringIO,
) -> None:
    ct, mr = sources
    objs = _results(ct, mr)  # two studies: two requests if nothing stopped the sender
    outbox = tmp_path / "outbox"
    secret = _secret(tmp_path, "not-the-password")
    dest = _destination(orthanc_web, secret)
    host = orthanc_web.host
    store.enqueue(engine, outbox, objs, [dest], job_id="job-auth")
    sender = OutboxSender(engine, outbox, [dest], RetryPolicy(base_delay_s=0.0, max_delay_s=0.0),
                          settings=SenderSettings(timeouts=TIMEOUTS))

    first = sender.run_once()
    assert (first.claimed, first.requests, first.failed, first.sent) == (5, 1, 5, 0)
    items = store.list_items(engine)
    assert {(it.state, it.attempts) for it in items} == {("failed", 1)}
    for it in items:
        assert it.last_error is not None
        assert it.last_error.startswith(
            f"credentials rejected by {host} (HTTP 401 Unauthorized)")
        assert "outbox retry --destination orthanc-web" in it.last_error
    # The destination is held: no claim, no request, however often the sender looks.
    for _ in range(5):
        again = sender.run_once()
        assert (again.claimed, again.requests) == (0, 0)
    late = secondary_capture(ct, generate_uid(), 9)  # a new result while held waits
    store.enqueue(engine, outbox, [late], [dest], job_id="job-auth-2")
    assert sender.run_once().claimed == 0
    (waiting,) = store.list_items(engine, sop_instance_uid=late.SOPInstanceUID)
    assert (waiting.state, waiting.attempts) == ("pending", 0)
    assert orthanc_web.instance_count() == 0 and orthanc_web.received_sop_uids() == []
    assert max(it.attempts for it in store.list_items(engine)) == 1  # no retry storm

    # The operator fixes the password file: the waiting item goes, the failed ones wait for
    # `outbox retry`.
    secret.write_text(orthanc_web.password + "\n")
    resumed = sender.run_once()
    assert (resumed.claimed, resumed.sent, resumed.requests) == (1, 1, 1)
    assert store.retry_failed(engine, destination="orthanc-web") == 5
    done = sender.run_once()
    assert (done.sent, done.failed, done.requests) == (5, 0, 2)
    assert sorted(orthanc_web.received_sop_uids()) == sorted(
        [late.SOPInstanceUID, *(o.SOPInstanceUID for o in objs)])

    events = [json.loads(line) for line in log_stream.getvalue().splitlines() if line.strip()]
    rejected = [e for e in events if e.get("event") == "outbox.credentials_rejected"]
    assert len(rejected) == 1 and rejected[0]["http_status"] == 401
    assert [e["why"] for e in events if e.get("event") == "outbox.destination_resumed"] == [
        "credentials changed"]
    text = log_stream.getvalue()
    assert orthanc_web.password not in text and "not-the-password" not in text
    assert str(ct.PatientName) not in text and str(ct.PatientID) not in text


def test_account_fixed_on_the_server_resumes_after_outbox_retry(
    orthanc_web: OrthancServer, engine: Engine, tmp_path: Path,
    sources: tuple[Dataset, Dataset],
) -> None:
    objs = _results(*sources)[:2]
    outbox = tmp_path / "outbox"
    dest = _destination(orthanc_web, _secret(tmp_path, "the-new-password"))
    store.enqueue(engine, outbox, objs, [dest], job_id="job-account")
    sender = OutboxSender(engine, outbox, [dest], RetryPolicy(),
                          settings=SenderSettings(timeouts=TIMEOUTS))
    assert sender.run_once().failed == 2
    assert sender.run_once().claimed == 0  # held
    # Hospital IT sets the account's password on the server to the one in our file.
    orthanc_web.stop()
    orthanc_web.password = "the-new-password"
    orthanc_web.start()
    assert sender.run_once().claimed == 0  # still held: nothing told the sender
    assert store.retry_failed(engine, destination="orthanc-web") == 2  # `outbox retry`
    report = sender.run_once()
    assert (report.sent, report.requests) == (2, 1)
    assert sorted(orthanc_web.received_sop_uids()) == sorted(o.SOPInstanceUID for o in objs)


def _free_port_in(orthanc: OrthancServer) -> int:
    """A port other than Orthanc's for the TLS front on the namespace address."""
    taken = {orthanc.dicom_port, orthanc.http_port}
    return next(p for p in iter(lambda: random.randrange(20000, 60000), None) if p not in taken)


@pytest.mark.parametrize("mutual", [False, True], ids=["server-cert", "mutual-tls"])
def test_https_with_the_sites_ca_and_not_with_another(
    orthanc_web: OrthancServer, tmp_path: Path, engine: Engine,
    sources: tuple[Dataset, Dataset], mutual: bool,
) -> None:
    """STOW-RS over HTTPS, the server's certificate checked against ``tls.ca_file`` (and, for
    mutual TLS, our client certificate checked by the server). The TLS end is a proxy in front
    of Orthanc in its namespace (tests/integration/tls_proxy.py says why not Orthanc's own)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed")
    assert orthanc_web.link is not None
    tls = make_tls_files(tmp_path / "tls", orthanc_web.host)
    port = _free_port_in(orthanc_web)
    front = TlsFront(orthanc_web.link.ns, orthanc_web.host, port, orthanc_web.http_port,
                     tls["server.crt"], tls["server.key"], tls["ca.crt"] if mutual else None)
    with running_tls_proxy(front, tmp_path / "proxy.log"):
        url = f"https://{orthanc_web.host}:{port}{DICOMWEB_ROOT}"
        auth = WebAuth("basic", username=orthanc_web.user,
                       password_file=_secret(tmp_path, orthanc_web.password))
        client = {"cert_file": tls["client.crt"], "key_file": tls["client.key"]} if mutual else {}
        good = Destination.stow_rs("site-ca", DicomWebTarget(
            url, auth=auth, tls=WebTls(ca_file=tls["ca.crt"], **client)))  # type: ignore[arg-type]
        other = Destination.stow_rs("other-ca", DicomWebTarget(
            url, auth=auth, tls=WebTls(ca_file=tls["other_ca.crt"], **client)))  # type: ignore[arg-type]
        dests = [good, other]
        if mutual:  # the right CA but no client certificate: the server refuses the handshake
            dests.append(Destination.stow_rs("no-client-cert", DicomWebTarget(
                url, auth=auth, tls=WebTls(ca_file=tls["ca.crt"]))))
        objs = _results(*sources)
        outbox = tmp_path / "outbox"
        store.enqueue(engine, outbox, objs, dests, job_id="job-tls")

        report = OutboxSender(engine, outbox, dests, RetryPolicy(),
                              settings=SenderSettings(timeouts=TIMEOUTS)).run_once()

    assert report.per_destination["site-ca"] == {"sent": len(objs)}
    for name in [d.name for d in dests[1:]]:
        assert report.per_destination[name] == {"retrying": len(objs)}  # not failed for good
    errors = {it.destination: it.last_error or "" for it in store.list_items(engine)
              if it.destination != "site-ca"}
    assert "CERTIFICATE_VERIFY_FAILED" in errors["other-ca"]
    if mutual:
        assert errors["no-client-cert"].startswith(
            f"could not connect to {orthanc_web.host}:{port}")
    assert sorted(orthanc_web.received_sop_uids()) == sorted(o.SOPInstanceUID for o in objs)
