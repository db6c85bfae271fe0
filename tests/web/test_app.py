"""The FLS web application on a real node database (SQLite), through Starlette's test client.

The worklist rows come from the exporter tests' realistic analysis output (real CT slices); the
users are real rows with scrypt hashes. What is checked: sign-in is needed for everything but
/healthz; roles (viewer reads, editor changes status, admin sees node status and metrics); CSRF
on every form; filters, sort and pages; "not assessed" never shown as "no fracture"; 4xx pages
for bad input; who viewed which row is logged without PHI.
"""

from __future__ import annotations

import dataclasses
import io
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine
from starlette.testclient import TestClient

from osteo_node import logging_setup
from osteo_node.pipeline.results import AnalysisOutput
from osteo_node.store.db import make_engine
from osteo_node.store.schema import upgrade
from osteo_node.web import users
from osteo_node.web.app import WebContext, create_app
from osteo_node.worklist import store
from tests.exporters.conftest import PATIENT_ID, PATIENT_NAME

pytestmark = pytest.mark.shared_data

PASSWORDS = {"vera": "viewer-pass-123", "ed": "editor-pass-123", "ada": "admin-pass-1234"}


@pytest.fixture()
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{tmp_path / 'node.db'}")
    upgrade(engine)
    users.add_user(engine, "vera", "viewer", PASSWORDS["vera"])
    users.add_user(engine, "ed", "editor", PASSWORDS["ed"])
    users.add_user(engine, "ada", "admin", PASSWORDS["ada"])
    yield engine
    engine.dispose()


@pytest.fixture()
def rows(engine: Engine, ct20_output: AnalysisOutput) -> list[int]:
    """60 flagged studies (the same real analysis under 60 study UIDs)."""
    out = []
    for n in range(60):
        res = dataclasses.replace(ct20_output.result, study_instance_uid=f"1.2.3.{n}",
                                  series_instance_uid=f"1.2.3.{n}.1")
        vol = dataclasses.replace(ct20_output.volume, study_instance_uid=f"1.2.3.{n}",  # type: ignore[arg-type]
                                  series_instance_uid=f"1.2.3.{n}.1")
        row_id = store.add_from_result(engine, AnalysisOutput(res, vol, ct20_output.labels))
        assert row_id is not None
        out.append(row_id)
    return out


def _client(engine: Engine, tmp_path: Path) -> TestClient:
    return TestClient(create_app(WebContext(engine, spool_dir=tmp_path)),
                      follow_redirects=False)


def _csrf(html: str) -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', html)
    assert m, "no CSRF token in the page"
    return m.group(1)


def _login(client: TestClient, name: str) -> None:
    token = _csrf(client.get("/login").text)
    r = client.post("/login", data={"name": name, "password": PASSWORDS[name], "csrf": token})
    assert r.status_code == 303, r.text


def test_health_needs_no_login_everything_else_does(engine: Engine, tmp_path: Path) -> None:
    client = _client(engine, tmp_path)
    assert client.get("/healthz").text == "ok\n"
    assert client.get("/readyz").status_code == 200
    for path in ("/", "/rows/1", "/status", "/metrics"):
        r = client.get(path)
        assert r.status_code == 303 and r.headers["location"] == "/login", path
    assert client.post("/rows/1/status", data={"status": "referred"}).status_code in (401, 403)


def test_readyz_says_when_the_spool_is_not_writable(engine: Engine, tmp_path: Path) -> None:
    client = TestClient(create_app(WebContext(engine, spool_dir=tmp_path / "missing")))
    r = client.get("/readyz")
    assert r.status_code == 503 and "spool not writable" in r.text


def test_login_rejects_wrong_password_and_forged_forms(engine: Engine, tmp_path: Path) -> None:
    client = _client(engine, tmp_path)
    token = _csrf(client.get("/login").text)
    r = client.post("/login", data={"name": "vera", "password": "wrong-password", "csrf": token})
    assert r.status_code == 401 and "wrong password" in r.text
    r = client.post("/login", data={"name": "vera", "password": PASSWORDS["vera"]})
    assert r.status_code == 403 and "CSRF" in r.text  # no token: not from our page
    assert users.authenticate(engine, "nobody", "x" * 12) is None


def test_worklist_filters_sorts_pages_and_says_not_assessed(
        engine: Engine, rows: list[int], tmp_path: Path) -> None:
    client = _client(engine, tmp_path)
    _login(client, "vera")
    page = client.get("/")
    assert page.status_code == 200
    assert "60 studies" in page.text and "Page 1 of 3" in page.text
    assert PATIENT_NAME.replace("^", " ") in page.text and PATIENT_ID in page.text
    assert "T12" in page.text and " HU" in page.text  # density level and HU shown
    assert page.text.count('href="/rows/') == 25
    assert "Page 3 of 3" in client.get("/?page=3").text
    assert "Page 1 of 1" in client.get("/?per_page=100").text
    assert "No study matches" in client.get("/?status=referred").text
    assert "60 studies" in client.get("/?trigger=fracture&sort=-grade").text
    assert "60 studies" in client.get(f"/?q={PATIENT_ID[-5:]}").text
    assert "0 studies" in client.get("/?q=nobody-like-this").text
    for bad in ("/?status=bogus", "/?sort=password_hash", "/?page=0", "/?per_page=7",
                "/?from=yesterday", f"/?q={'x' * 101}"):
        r = client.get(bad)
        assert r.status_code == 400, bad
        assert "Traceback" not in r.text
    # a row whose fractures were not assessed is never shown as "no fracture" (nor is a
    # study without a stored DXA / clinical-risk assessment shown as a risk: its risk cell)
    na = '<span class="na">not assessed</span>'
    assert client.get("/?sort=created").text.count(na) == 25  # the risk cells
    engine_row = store.list_rows(engine)[-1]  # the newest: first on the page
    with engine.begin() as conn:
        conn.execute(store.fls_worklist.update().where(store.fls_worklist.c.id == engine_row.id)
                     .values(max_genant_grade=None))
    page_text = client.get("/?sort=created").text
    assert page_text.count(na) == 26 and "none ≥ G2" not in page_text


def test_row_page_and_status_workflow_with_roles_and_csrf(
        engine: Engine, rows: list[int], tmp_path: Path) -> None:
    log_stream = io.StringIO()
    logging_setup.configure("INFO", json=True, stream=log_stream)
    viewer = _client(engine, tmp_path)
    _login(viewer, "vera")
    page = viewer.get(f"/rows/{rows[0]}")
    assert page.status_code == 200
    assert "T12" in page.text and "G2" in page.text and "Decision support" in page.text
    assert page.text.count("Decision support") == 1  # the disclaimer once
    assert 'action="/rows/' not in page.text  # a viewer has no status form
    r = viewer.post(f"/rows/{rows[0]}/status",
                    data={"status": "referred", "csrf": _csrf(page.text)})
    assert r.status_code == 403
    assert viewer.get("/rows/999999").status_code == 404
    assert viewer.get("/rows/abc").status_code == 404
    assert viewer.get("/status").status_code == 403

    editor = _client(engine, tmp_path)
    _login(editor, "ed")
    page = editor.get(f"/rows/{rows[0]}")
    token = _csrf(page.text)
    assert editor.post(f"/rows/{rows[0]}/status",
                       data={"status": "referred"}).status_code == 403  # no CSRF token
    assert editor.post(f"/rows/{rows[0]}/status",
                       data={"status": "bogus", "csrf": token}).status_code == 400
    r = editor.post(f"/rows/{rows[0]}/status",
                    data={"status": "referred", "note": "DXA booked", "csrf": token})
    assert r.status_code == 303
    row = next(x for x in store.list_rows(engine) if x.id == rows[0])
    assert (row.status, row.status_changed_by, row.status_note) == ("referred", "ed",
                                                                    "DXA booked")
    assert "set by ed" in editor.get(f"/rows/{rows[0]}").text
    big = editor.post(f"/rows/{rows[0]}/status",
                      data={"status": "new", "note": "x" * 20000, "csrf": token})
    assert big.status_code == 413
    logs = log_stream.getvalue()
    assert '"web_row_viewed"' in logs and '"user": "vera"' in logs
    from osteo_node.web import audit

    trail = {(a.user, a.action, a.row_id) for a in audit.recent(engine)}
    assert {("vera", "view_row", rows[0]), ("ed", "set_status", rows[0]),
            ("ed", "login", None)} <= trail
    assert PATIENT_NAME not in logs and PATIENT_ID not in logs


def test_admin_sees_node_status_and_prometheus_metrics(
        engine: Engine, rows: list[int], tmp_path: Path) -> None:
    admin = _client(engine, tmp_path)
    _login(admin, "ada")
    status = admin.get("/status").text
    assert "Node status" in status and "Audit" in status and ">login<" in status
    m = admin.get("/metrics")
    assert m.status_code == 200 and m.headers["content-type"].startswith("text/plain")
    assert 'osteo_node_worklist_rows{status="new"} 60' in m.text
    assert "# TYPE osteo_node_analysis_seconds histogram" in m.text
    assert 'osteo_node_analysis_seconds_bucket{le="+Inf"}' in m.text


def test_sign_out_ends_the_session(engine: Engine, tmp_path: Path) -> None:
    client = _client(engine, tmp_path)
    _login(client, "vera")
    token = _csrf(client.get("/").text)
    assert client.post("/logout", data={"csrf": token}).status_code == 303
    assert client.get("/").status_code == 303


def test_passwords_are_hashed_and_checked() -> None:
    stored = users.hash_password("correct horse battery")
    assert stored.startswith("scrypt$") and "correct" not in stored
    assert users.check_password("correct horse battery", stored)
    assert not users.check_password("wrong horse battery", stored)
    assert not users.check_password("x", "garbage")
    with pytest.raises(users.UserError, match="at least"):
        users._valid("bob", "viewer", "short")


def test_study_page_shows_the_overlay_the_node_sent(engine: Engine, rows: list[int],
                                                    ct20_output: AnalysisOutput,
                                                    tmp_path: Path) -> None:
    """The SC made for the row's series (through the real exporters and outbox) is shown on
    the study page as PNG; a row without one says nothing and its image URL is a 404."""
    from PIL import Image

    from osteo_node.exporters.publish import build_objects
    from osteo_node.outbox.enqueue import enqueue
    from osteo_node.outbox.policy import Destination

    row = next(r for r in store.list_rows(engine) if r.id == rows[0])
    sc = next(o.dataset for o in build_objects(ct20_output, uid_root=None, job_key="web")
              if o.kind == "sc")
    outbox = tmp_path / "outbox"
    from osteo_node.queue import jobs
    from osteo_node.store.index import InstanceRecord, record_instance

    with engine.begin() as conn:  # the node received the series and queued its job
        record_instance(conn, InstanceRecord(
            row.study_instance_uid, row.series_instance_uid, "1.2.9.1.1",
            "1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.1.2.1", "CT", 1, "a/b.dcm", 100),
            now=0.0)
    assert jobs.queue_complete_series(engine, quiet_seconds=1.0, now=100.0)
    job = jobs.claim_next(engine, "w1", 60.0)
    assert job is not None
    pacs = Destination("pacs", "PACS", "127.0.0.1", 104)
    enqueue(engine, outbox, [sc], [pacs], job_id=job.id, kind="sc")
    client = TestClient(create_app(WebContext(engine, spool_dir=tmp_path, outbox_dir=outbox)),
                        follow_redirects=False)
    _login(client, "vera")
    page = client.get(f"/rows/{rows[0]}")
    assert f'src="/rows/{rows[0]}/overlay.png"' in page.text
    img = client.get(f"/rows/{rows[0]}/overlay.png")
    assert img.status_code == 200 and img.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(img.content)).size == (int(sc.Columns), int(sc.Rows))
    assert "overlay.png" not in client.get(f"/rows/{rows[1]}").text
    assert client.get(f"/rows/{rows[1]}/overlay.png").status_code == 404


def test_exports_from_the_page_and_the_viewer_link(engine: Engine, rows: list[int],
                                                    tmp_path: Path) -> None:
    from osteo_node.worklist import export_csv, fhir

    app = create_app(WebContext(engine, spool_dir=tmp_path,
                                viewer_url="https://pacs.example.org/viewer?study={study_uid}",
                                patient_identifier_system="urn:oid:1.2.826.0.1.3680043.9.7777"))
    viewer, editor = TestClient(app, follow_redirects=False), TestClient(app,
                                                                         follow_redirects=False)
    _login(viewer, "vera")
    assert viewer.get("/export/csv").status_code == 403  # the contact list: editors only
    assert "Export these rows" not in viewer.get("/").text
    row = next(r for r in store.list_rows(engine) if r.id == rows[0])
    assert (f'href="https://pacs.example.org/viewer?study={row.study_instance_uid}"'
            in viewer.get(f"/rows/{rows[0]}").text)
    _login(editor, "ed")
    csv_r = editor.get("/export/csv?trigger=fracture")
    assert csv_r.status_code == 200 and csv_r.headers["content-type"].startswith("text/csv")
    assert len(export_csv.parse_csv(csv_r.text)) == 60
    fhir_r = editor.get("/export/fhir?status=new&per_page=25")
    bundle = fhir.parse_bundle(fhir_r.text)
    assert bundle.type == "transaction" and len(bundle.entry) == 60 * 7
    assert editor.get("/export/xml").status_code == 404
    assert editor.get("/export/csv?status=bogus").status_code == 400


def test_a_trusted_proxy_header_signs_in_only_from_the_proxy(engine: Engine,
                                                             tmp_path: Path) -> None:
    """With ``trusted_user_header`` the proxy's header names the user (the role still comes
    from web_users); the same header from any other address is ignored."""
    def client(proxies: tuple[str, ...]) -> TestClient:
        app = create_app(WebContext(engine, spool_dir=tmp_path, trusted_user_header="X-User",
                                    trusted_proxies=proxies))
        return TestClient(app, follow_redirects=False)

    # Starlette's test client connects from "testclient"
    trusted = client(("testclient",))
    assert trusted.get("/", headers={"X-User": "vera"}).status_code == 200
    assert trusted.get("/status", headers={"X-User": "vera"}).status_code == 403  # a viewer
    assert trusted.get("/", headers={"X-User": "stranger"}).status_code == 303  # unknown user
    untrusted = client(("10.1.2.3",))
    assert untrusted.get("/", headers={"X-User": "ada"}).status_code == 303


def test_metrics_parse_as_prometheus_text_and_move(engine: Engine, rows: list[int],
                                                   tmp_path: Path) -> None:
    """The official parser reads /metrics; the counters move when an instance arrives, a
    series is queued and its job ends."""
    from prometheus_client.parser import text_string_to_metric_families

    from osteo_node.queue import jobs
    from osteo_node.store.index import InstanceRecord, record_instance

    admin = _client(engine, tmp_path)
    _login(admin, "ada")

    def samples() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        text = admin.get("/metrics").text
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for fam in text_string_to_metric_families(text) for s in fam.samples}

    before = samples()
    assert before[("osteo_node_instances_received_total", ())] == 0
    with engine.begin() as conn:
        record_instance(conn, InstanceRecord(
            "1.2.9", "1.2.9.1", "1.2.9.1.1", "1.2.840.10008.5.1.4.1.1.2",
            "1.2.840.10008.1.2.1", "CT", 1, "a/b.dcm", 100), now=0.0)
    queued = jobs.queue_complete_series(engine, quiet_seconds=1.0, now=100.0)
    assert queued
    job = jobs.claim_next(engine, "w1", 60.0)
    assert job is not None
    jobs.finish(engine, job, jobs.DONE)
    after = samples()
    assert after[("osteo_node_instances_received_total", ())] == 1
    assert after[("osteo_node_jobs", (("state", "done"),))] == 1
    assert after[("osteo_node_analysis_seconds_count", ())] == 1
    assert after[("osteo_node_worklist_rows", (("status", "new"),))] == 60
