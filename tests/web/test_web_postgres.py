"""The web application on PostgreSQL (a throw-away server, Unix socket only): the worklist and
sign-in work, and ``/readyz`` says "not ready" when the database is stopped, ``/healthz`` stays
up."""

from __future__ import annotations

from pathlib import Path

import pytest
from starlette.testclient import TestClient

from osteo_node.store.db import make_engine
from osteo_node.store.schema import upgrade
from osteo_node.web import users
from osteo_node.web.app import WebContext, create_app
from tests.outbox.postgres import TempPostgres, unavailable_reason

pytestmark = pytest.mark.skipif(unavailable_reason() is not None,
                                reason=unavailable_reason() or "")


def test_worklist_on_postgresql_and_readyz_when_the_database_stops(tmp_path: Path) -> None:
    pg = TempPostgres.start()
    try:
        engine = make_engine(pg.url)
        upgrade(engine)
        users.add_user(engine, "vera", "viewer", "viewer-pass-123")
        client = TestClient(create_app(WebContext(engine, spool_dir=tmp_path)),
                            follow_redirects=False)
        assert client.get("/readyz").status_code == 200
        import re

        token = re.search(r'name="csrf" value="([^"]+)"', client.get("/login").text)
        assert token is not None
        r = client.post("/login", data={"name": "vera", "password": "viewer-pass-123",
                                        "csrf": token.group(1)})
        assert r.status_code == 303
        assert "0 studies" in client.get("/?q=someone&sort=-hu").text
        pg.stop()
        engine.dispose()  # no pooled connection survives the server
        r = client.get("/readyz")
        assert r.status_code == 503 and "database" in r.text
        assert client.get("/healthz").status_code == 200
    finally:
        pg.stop()


def test_assessments_stored_and_shown_on_postgresql(tmp_path: Path) -> None:
    """``fls_assessments`` is made by the node's schema step on PostgreSQL too; the newest
    assessment of a study is found, and the study page shows it."""
    import re
    from datetime import UTC, datetime

    from sqlalchemy import insert

    from osteo_node.worklist import assessments
    from osteo_node.worklist.store import fls_worklist

    pg = TempPostgres.start()
    try:
        engine = make_engine(pg.url)
        upgrade(engine)
        upgrade(engine)  # idempotent
        users.add_user(engine, "vera", "viewer", "viewer-pass-123")
        now = datetime(2026, 11, 22, tzinfo=UTC)
        with engine.begin() as conn:
            row_id = conn.execute(insert(fls_worklist).values(
                study_instance_uid="1.2.3", series_instance_uid="1.2.3.1", trigger="fracture",
                created_at=now, updated_at=now, status="new")).inserted_primary_key[0]
        doc = {"patient": {"age": 70, "sex": "female"}, "dxa": {"category": None},
               "risk": {"model": "QFracture-2012", "major_fracture_10y": 12.5,
                        "hip_fracture_10y": 2.0, "category": "moderate",
                        "disclaimer": "the authors disclaimer text"},
               "risk_factors": [], "red_flags": [], "summary": "s",
               "imaging": {"study_instance_uid": "1.2.3"}}
        assessments.store(engine, {**doc, "risk": {"model": "QFracture-2012",
                                                   "major_fracture_10y": None}},
                          stored_by="ed", now=now)
        assessments.store(engine, doc, stored_by="ed")
        assert assessments.risk_categories(engine, ["1.2.3", "9.9"]) == {"1.2.3": "moderate"}
        client = TestClient(create_app(WebContext(engine, spool_dir=tmp_path)),
                            follow_redirects=False)
        token = re.search(r'name="csrf" value="([^"]+)"', client.get("/login").text)
        assert token is not None
        client.post("/login", data={"name": "vera", "password": "viewer-pass-123",
                                    "csrf": token.group(1)})
        page = client.get(f"/rows/{row_id}").text
        assert "12.5 %" in page and "moderate risk" in page
        assert page.count("the authors disclaimer text") == 1
        engine.dispose()
    finally:
        pg.stop()
