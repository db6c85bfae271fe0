"""Run this package's database tests on SQLite and PostgreSQL (fixtures ``db_url``: the node's
tables at the newest revision; ``empty_db_url``: no table at all)."""

from tests.node.databases import db_url, empty_db_url, node_postgres

__all__ = ["db_url", "empty_db_url", "node_postgres"]
