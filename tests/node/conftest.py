"""This package's database tests run on SQLite and PostgreSQL (fixture ``db_url``)."""

from tests.node.databases import db_url, node_postgres

__all__ = ["db_url", "node_postgres"]
