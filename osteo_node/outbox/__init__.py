"""Persisted outbox: result objects (SR, SEG, SC, KOS) sent by C-STORE to configured destinations.

- :mod:`.policy`: ``Destination``, ``TlsSettings``, ``RetryPolicy``, ``SenderSettings``,
  ``Timeouts`` (settings objects).
- :mod:`.store`: ``enqueue`` and the delivery-item state machine (SQLAlchemy Core tables from
  :mod:`.tables`, Part-10 files written durably by :mod:`.files`); gathers :mod:`.enqueue`,
  :mod:`.claims` (claim under a lease, record outcomes) and :mod:`.queries` (status, operator).
- :mod:`.sender`: ``OutboxSender`` (``run_once``/``serve``) and ``run_sender`` (process entry);
  gathers :mod:`.contexts`, :mod:`.association` (association, C-STORE), :mod:`.delivery` (the
  sender loop) and :mod:`.process`.

Nothing is imported here, so reading the settings does not load pynetdicom.
"""
