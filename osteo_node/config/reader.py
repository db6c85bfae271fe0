"""Reading typed values from a parsed configuration mapping, collecting every problem.

A :class:`Reader` reports ``path.to.key: reason`` lines into one shared list; the loader raises
them together as one :class:`ConfigError`, so an operator sees all mistakes at once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    """Invalid configuration; ``problems`` lists ``path: reason`` lines."""

    def __init__(self, problems: list[str], source: str = "") -> None:
        self.problems = problems
        head = f"invalid configuration{f' in {source}' if source else ''}"
        super().__init__(head + ":\n" + "\n".join(f"  - {p}" for p in problems))


class Reader:
    """Reads typed values from a mapping, collecting ``path: reason`` problems."""

    def __init__(self, data: Mapping[str, Any], path: str, problems: list[str]) -> None:
        self.data = data
        self.path = path
        self.problems = problems
        self.used: set[str] = set()

    def where(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def problem(self, key: str, reason: str) -> None:
        self.problems.append(f"{self.where(key)}: {reason}")

    def get(self, key: str, default: T, conv: Callable[[Any], T]) -> T:
        self.used.add(key)
        if key not in self.data or self.data[key] is None:
            return default
        try:
            return conv(self.data[key])
        except (ValueError, TypeError) as exc:
            self.problem(key, f"{exc} (got {self.data[key]!r})")
            return default

    def section(self, key: str) -> Reader:
        self.used.add(key)
        value = self.data.get(key) or {}
        if not isinstance(value, Mapping):
            self.problem(key, f"must be a mapping (got {type(value).__name__})")
            value = {}
        return Reader(value, self.where(key), self.problems)

    def finish(self) -> None:
        for key in sorted(set(self.data) - self.used, key=str):
            self.problem(str(key), "unknown setting (typo?)")
