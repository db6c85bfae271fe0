"""The web application's own tables (users, audit), created by the web process at start and by
``osteo-node web-user``; the node's core tables are ``store.schema``'s."""

from __future__ import annotations

from sqlalchemy import Engine

from osteo_node.store.db import METADATA
from osteo_node.web.audit import web_audit
from osteo_node.web.users import web_users


def create_web_tables(engine: Engine) -> None:
    METADATA.create_all(engine, tables=[web_users, web_audit], checkfirst=True)
