"""The web application on PostgreSQL (a throw-away server, Unix socket only): the worklist and
sign-in work, and ``/readyz`` says "not ready" when the database is stopped, ``/healthz`` stays
up."""

from __future__ import annotations

from pathlib import Path

import pytest
from starlette.testclient import TestClient

from osteo_node.store.db import METADATA, make_engine
from osteo_node.web import users
from osteo_node.web.app import WebContext, create_app
from tests.outbox.postgres import TempPostgres, unavailable_reason

pytestmark = pytest.mark.skipif(unavailable_reason() is not None,
                                reason=unavailable_reason() or "")


def test_worklist_on_postgresql_and_readyz_when_the_database_stops(tmp_path: Path) -> None:
    pg = TempPostgres.start()
    try:
        engine = make_engine(pg.url)
        METADATA.create_all(engine)
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
