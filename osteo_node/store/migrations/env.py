"""Alembic environment of the node's database (run by :mod:`osteo_node.store.schema`).

The caller passes an open connection, already inside the transaction that makes the upgrade
atomic, as ``config.attributes["connection"]``; there is no ``alembic.ini``.
"""

from __future__ import annotations

from alembic import context

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations with `osteo-node db upgrade` (osteo_node.store.schema)")
context.configure(connection=connection, target_metadata=None)
with context.begin_transaction():
    context.run_migrations()
