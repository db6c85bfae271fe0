"""Secrets (passwords, bearer tokens) kept in files the site's administrator writes, never in
the configuration itself: the one reader for all of them (DICOMweb destinations, FHIR push)."""

from __future__ import annotations

from pathlib import Path


def read_secret_file(path: str | Path) -> str:
    """The secret in ``path``: its one non-blank line, stripped. Raises ValueError (naming the
    file, never its content) when the file is empty, holds more than one line or a control
    character (it would be sent in an HTTP header)."""
    lines = [ln.strip() for ln in Path(path).read_text(encoding="utf-8").splitlines()]
    lines = [ln for ln in lines if ln]
    if not lines:
        raise ValueError(f"secret file {path} is empty")
    if len(lines) > 1:
        raise ValueError(f"secret file {path} has more than one line")
    secret = lines[0]
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in secret):
        raise ValueError(f"secret file {path} holds a control character")
    return secret
