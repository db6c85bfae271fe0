"""What every analyser's stages share: the refusal exception and the per-run context."""

from __future__ import annotations

from dataclasses import dataclass, field


class NotAnalysable(Exception):
    """A stage refuses the input; the message is the reason reported to the user."""


@dataclass
class AnalysisContext:
    """State passed between stages (typed, filled stage by stage)."""

    timings: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    study_uid: str | None = None
    series_uid: str | None = None
