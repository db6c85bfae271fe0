"""Converters for configuration values: each takes the raw YAML value and returns the typed
value or raises ``ValueError``/``TypeError`` with the reason (see :meth:`Reader.get`)."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from osteo_node.outbox.policy import validate_ae_title

#: Modalities the node can be asked to accept (SOP classes follow from them, see conformance.md).
KNOWN_MODALITIES: frozenset[str] = frozenset({"CT", "MR", "CR", "DX", "OT", "SR", "SEG", "KO"})


def int_in(lo: int, hi: int) -> Callable[[Any], int]:
    def conv(v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int):
            raise TypeError("must be an integer")
        if not lo <= v <= hi:
            raise ValueError(f"must be in {lo}..{hi}")
        return v

    return conv


def positive_float(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise TypeError("must be a number")
    if v <= 0:
        raise ValueError("must be > 0")
    return float(v)


def non_negative_float(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise TypeError("must be a number")
    if v < 0:
        raise ValueError("must be >= 0")
    return float(v)


def boolean(v: Any) -> bool:
    if not isinstance(v, bool):
        raise TypeError("must be true or false")
    return v


def nonempty_str(v: Any) -> str:
    if not isinstance(v, str) or not v.strip():
        raise TypeError("must be a non-empty string")
    return v


_UID_ROOT = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")


def uid_root(v: Any) -> str | None:
    root = nonempty_str(str(v)).rstrip(".")
    if not _UID_ROOT.match(root) or len(root) > 40:
        raise ValueError("must be a dotted numeric DICOM UID root of at most 40 characters")
    return root


def optional_str(v: Any) -> str | None:
    return nonempty_str(v)


def ae_title(v: Any) -> str:
    return validate_ae_title(nonempty_str(v), "AE title")


def ip_address(v: Any) -> str:
    ipaddress.ip_address(nonempty_str(v))
    return str(v)


def ip_list(v: Any) -> list[str]:
    if not isinstance(v, list):
        raise TypeError("must be a list of IP addresses")
    return [ip_address(h) for h in v]


def send_kinds(v: Any) -> list[str]:
    if not isinstance(v, list):
        raise TypeError("must be a list of sr/seg/sc/kos")
    return [str(k).lower() for k in v]


def path_under(base: Path) -> Callable[[Any], Path]:
    def conv(v: Any) -> Path:
        p = Path(nonempty_str(v)).expanduser()
        return p if p.is_absolute() else (base / p).resolve()

    return conv


def existing_file(base: Path) -> Callable[[Any], Path]:
    def conv(v: Any) -> Path:
        p = path_under(base)(v)
        if not p.is_file():
            raise ValueError(f"file {p} does not exist")
        return p

    return conv


def db_url(base: Path) -> Callable[[Any], str]:
    def conv(v: Any) -> str:
        url = nonempty_str(v)
        if not re.match(r"^[a-z][a-z0-9+]*://", url):
            raise ValueError("must be an SQLAlchemy URL like sqlite:///var/osteo_node.db")
        if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
            rel = url.removeprefix("sqlite:///")
            if not rel.startswith("/"):
                url = "sqlite:///" + str((base / rel).resolve())
        return url

    return conv


def modality_list(v: Any) -> tuple[str, ...]:
    if not isinstance(v, list) or not v:
        raise TypeError("must be a non-empty list of modality codes")
    mods = tuple(str(m).upper() for m in v)
    unknown = sorted(set(mods) - KNOWN_MODALITIES)
    if unknown:
        raise ValueError(f"unknown modality {unknown}; known: {sorted(KNOWN_MODALITIES)}")
    return mods


def factory_ref(v: Any) -> str:
    s = nonempty_str(v)
    if not re.match(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$", s):
        raise ValueError("must be 'package.module:callable'")
    return s


def one_of(v: Any, allowed: tuple[str, ...]) -> str:
    s = str(v)
    if s not in allowed and s.upper() not in allowed:
        raise ValueError(f"must be one of {', '.join(allowed)}")
    return s.upper() if s.upper() in allowed else s


def uri(v: Any) -> str | None:
    text = optional_str(v)
    if text is not None and not (text.startswith(("http://", "https://", "urn:"))):
        raise ValueError("must be a URI (http://, https:// or urn:)")
    return text


def http_url(v: Any) -> str | None:
    text = optional_str(v)
    if text is not None and not text.startswith(("http://", "https://")):
        raise ValueError("must be an http:// or https:// URL")
    return None if text is None else text.rstrip("/")


def http_url_template(v: Any) -> str | None:
    text = optional_str(v)
    if text is not None and (not text.startswith(("http://", "https://"))
                             or "{study_uid}" not in text):
        raise ValueError("must be an http(s) URL containing {study_uid}")
    return text
