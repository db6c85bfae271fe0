"""What retention did, in the node's database (declared on the shared metadata; made by the
migration ``0003_retention``).

``retention_runs``: one row per retention round (dry runs are not recorded): when it ran and
what it deleted; ``osteo-node status`` shows the last one. ``retention_log``: one row per
deletion (a series' spool files, or one result object's outbox file) with its UIDs, the
reason (``age`` or ``size``), files and bytes removed. The index rows themselves say it too
(``instances.purged_at``, ``series.purged_at``, ``outbox_objects.purged_at``). UIDs only, no
patient data. Times are epoch seconds, like the index's.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Float, ForeignKey, Integer, String, Table, Text

from osteo_node.store.db import METADATA

SPOOL = "spool"
OUTBOX = "outbox"
AGE = "age"
SIZE = "size"

retention_runs = Table(
    "retention_runs", METADATA,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("started_at", Float, nullable=False),
    Column("finished_at", Float, nullable=True),  # None: still running, or it stopped
    Column("spool_series", Integer, nullable=False, default=0),
    Column("spool_files", Integer, nullable=False, default=0),
    Column("spool_bytes", BigInteger, nullable=False, default=0),
    Column("outbox_objects", Integer, nullable=False, default=0),
    Column("outbox_bytes", BigInteger, nullable=False, default=0),
    Column("errors", Integer, nullable=False, default=0),
    #: warnings of the round, e.g. a size limit that only data not yet deletable keeps exceeded
    Column("note", Text, nullable=True),
)

retention_log = Table(
    "retention_log", METADATA,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", Integer, ForeignKey("retention_runs.id"), nullable=True),
    Column("purged_at", Float, nullable=False, index=True),
    Column("area", String(8), nullable=False),  # spool | outbox
    Column("reason", String(8), nullable=False),  # age | size
    Column("study_instance_uid", String(64), nullable=True),
    Column("series_instance_uid", String(64), nullable=True),  # spool: the received series
    Column("sop_instance_uid", String(64), nullable=True),  # outbox: the result object
    Column("files", Integer, nullable=False),
    Column("bytes", BigInteger, nullable=False),
)

TABLES = (retention_runs, retention_log)
