"""Create every table the node's processes use (index, jobs, outbox, FLS worklist and the
assessments stored against its studies), idempotently (the web application creates its own:
``web.schema``)."""

from __future__ import annotations

from sqlalchemy import Engine


def create_node_tables(engine: Engine) -> None:
    from osteo_node.outbox.tables import create_tables as create_outbox_tables
    from osteo_node.queue.jobs import jobs
    from osteo_node.store.db import METADATA
    from osteo_node.store.index import create_tables as create_index_tables
    from osteo_node.worklist.assessments import create_tables as create_assessment_tables
    from osteo_node.worklist.store import create_tables as create_worklist_tables

    create_index_tables(engine)
    METADATA.create_all(engine, tables=[jobs], checkfirst=True)
    create_outbox_tables(engine)
    create_worklist_tables(engine)
    create_assessment_tables(engine)
