"""Persisted outbox: result objects (SR, SEG, SC, KOS) sent by C-STORE to configured destinations.

- :mod:`.policy`: ``Destination``, ``TlsSettings``, ``RetryPolicy`` (settings objects).
- :mod:`.store`: ``enqueue`` and the delivery-item state machine (SQLAlchemy Core tables from
  :mod:`.tables`, Part-10 files written durably by :mod:`.files`).
- :mod:`.sender`: ``OutboxSender`` (``run_once``/``serve``) and ``run_sender`` (process entry).

Nothing is imported here, so reading the settings does not load pynetdicom.
"""
