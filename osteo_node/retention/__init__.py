"""Retention: delete the spool files of settled series and the outbox files of settled result
objects by age and total size, and record it (issue 14).

* :mod:`.policy`: what may be deleted and what should be (pure functions);
* :mod:`.facts`: the node's state the policy needs, read from the database;
* :mod:`.purge`: deleting files and recording it in the index (the I/O);
* :mod:`.run`: one round (:func:`~.run.run_once`), also ``osteo-node retention run``;
* :mod:`.process`: the ``retention`` process of ``serve`` (a round every ``interval_seconds``);
* :mod:`.summary`: what ``osteo-node status`` shows;
* :mod:`.tables`: ``retention_runs`` and ``retention_log``.
"""
