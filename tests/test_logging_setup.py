"""The repeat filter keeps a peer from flooding the log through pynetdicom (issue 16, 3)."""

from __future__ import annotations

import logging

from osteo_node.logging_setup import RepeatFilter


def record(name: str, msg: str, exc: BaseException | None = None) -> logging.LogRecord:
    info = (type(exc), exc, None) if exc else None
    return logging.LogRecord(name, logging.ERROR, __file__, 1, msg, None, info)


def test_same_message_passes_once_per_window_then_reports_the_count() -> None:
    now = [0.0]
    f = RepeatFilter(window_s=60.0, clock=lambda: now[0])
    passed = [f.filter(record("pynetdicom.dul", f"Unknown PDU type received '0x{i:02X}'"))
              for i in range(50)]
    assert passed == [True] + [False] * 49
    now[0] = 61.0
    late = record("pynetdicom.dul", "Unknown PDU type received '0x10'")
    assert f.filter(late)
    assert "49 similar held back" in late.getMessage()


def test_other_messages_and_other_loggers_are_not_held() -> None:
    f = RepeatFilter(window_s=60.0, clock=lambda: 0.0)
    assert f.filter(record("pynetdicom.dul", "Unknown PDU type received '0x09'"))
    assert f.filter(record("pynetdicom.dul", "Connection closed before the entire PDU"))
    assert all(f.filter(record("osteo_node.node", "stored")) for _ in range(5))


def test_connection_error_tracebacks_are_dropped() -> None:
    f = RepeatFilter(clock=lambda: 0.0)
    rec = record("pynetdicom.dul", "x", ConnectionResetError(104, "reset"))
    assert f.filter(rec) and rec.exc_info is None
    other = record("pynetdicom.assoc", "y", ValueError("bug"))
    assert f.filter(other) and other.exc_info is not None
