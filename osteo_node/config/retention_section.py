"""The ``retention`` section: when received images (spool) and sent results (outbox) are
deleted (``osteo_node.retention``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from osteo_node.config.reader import Reader
from osteo_node.config.sections import RetentionSettings
from osteo_node.config.values import boolean, non_negative_float, positive_float

#: the limits; ``null`` means "no limit of this kind", a key left out keeps its default
LIMITS: dict[str, Callable[[Any], float]] = {
    "spool_max_age_hours": non_negative_float,
    "outbox_max_age_hours": non_negative_float,
    "spool_max_total_gb": positive_float,
    "outbox_max_total_gb": positive_float,
}


def _interval(v: Any) -> float:
    seconds = positive_float(v)
    if not 1.0 <= seconds <= 86400.0:
        raise ValueError("must be in 1..86400 (seconds)")
    return seconds


def _limit(r: Reader, key: str, conv: Callable[[Any], float]) -> float | None:
    default: float | None = getattr(RetentionSettings, key)
    r.used.add(key)
    if key not in r.data:
        return default
    value = r.data[key]
    if value is None:
        return None
    try:
        return conv(value)
    except (ValueError, TypeError) as exc:
        r.problem(key, f"{exc} (got {value!r}; null: no limit)")
        return default


def read_retention(top: Reader) -> RetentionSettings:
    r = top.section("retention")
    limits = {key: _limit(r, key, conv) for key, conv in LIMITS.items()}
    settings = RetentionSettings(
        enabled=r.get("enabled", RetentionSettings.enabled, boolean),
        interval_seconds=r.get("interval_seconds", RetentionSettings.interval_seconds,
                               _interval),
        **limits,
    )
    r.finish()
    if settings.enabled and all(v is None for v in limits.values()):
        r.problem("enabled", "set at least one of " + ", ".join(LIMITS)
                  + " (or enabled: false to keep everything)")
    return settings
