"""Run this package's database tests on SQLite and PostgreSQL (fixture ``db_url``: the node's
tables at the newest revision)."""

from tests.node.databases import db_url, node_postgres

__all__ = ["db_url", "node_postgres"]
