"""One ``destinations[i]`` entry with ``protocol: dicomweb`` (results sent by STOW-RS).

::

    - name: pacs-web
      protocol: dicomweb
      url: https://pacs.example.org/dicom-web
      send: [sr, seg, sc, kos]
      auth: {type: basic, username: osteo-node, password_file: /etc/osteo-node/pacs.password}
      tls: {ca_file: /etc/osteo-node/tls/pacs-ca.crt}

Problems are reported as ``destinations[i].key: reason`` like every other setting.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from osteo_node.config.reader import Reader
from osteo_node.config.values import boolean, existing_file, nonempty_str, send_kinds
from osteo_node.outbox.dicomweb_settings import AUTH_TYPES, DicomWebTarget, WebAuth, WebTls
from osteo_node.outbox.policy import ALL_KINDS, Destination

#: ``protocol`` values of a destination.
PROTOCOLS: tuple[str, ...] = ("dimse", "dicomweb")

#: DIMSE settings that mean nothing to a DICOMweb destination (the URL says where).
_DIMSE_ONLY = ("ae_title", "host", "port")


def _auth_type(v: Any) -> str:
    if v not in AUTH_TYPES:
        raise ValueError(f"must be one of {', '.join(AUTH_TYPES)}")
    return str(v)


def _username(v: Any) -> str:
    name = nonempty_str(v)
    if ":" in name or any(ord(c) < 0x20 for c in name):
        raise ValueError("must not contain ':' or control characters")
    return name


def _read_auth(sub: Reader, base: Path) -> tuple[WebAuth | None, bool]:
    """The ``auth`` mapping (absent or ``none``: no Authorization header) and whether
    credentials may go over plain http."""
    sub.used.add("auth")
    raw = sub.data.get("auth")
    if raw is None or raw == "none":
        return WebAuth(), False
    if not isinstance(raw, Mapping):
        sub.problem("auth", "must be a mapping {type: none|basic|bearer, ...} or 'none'")
        return None, False
    a = Reader(raw, sub.where("auth"), sub.problems)
    before = len(sub.problems)
    kind = a.get("type", "", _auth_type)
    args: dict[str, Any] = {
        "username": a.get("username", None, _username),
        "password_file": a.get("password_file", None, existing_file(base)),
        "token_file": a.get("token_file", None, existing_file(base)),
    }
    plain = a.get("allow_plain_http", False, boolean)
    a.finish()
    if "type" not in raw:
        a.problem("type", f"is required ({', '.join(AUTH_TYPES)})")
    needed = {"basic": ("username", "password_file"), "bearer": ("token_file",)}.get(kind, ())
    for key in needed:
        if key not in raw:
            a.problem(key, f"is required with type {kind}")
    for key in sorted(set(args) - set(needed)):
        if key in raw:
            a.problem(key, f"not used with type {kind or '(missing)'}")
    if len(sub.problems) > before:
        return None, plain
    try:
        return WebAuth(type=kind, **{k: args[k] for k in needed}), plain
    except ValueError as exc:
        sub.problems.append(f"{a.path}: {exc}")
        return None, plain


def _read_tls(sub: Reader, base: Path) -> WebTls | None:
    if "tls" not in sub.data:
        sub.used.add("tls")
        return WebTls()
    t = sub.section("tls")
    args = {
        "ca_file": t.get("ca_file", None, existing_file(base)),
        "verify": t.get("verify", True, boolean),
        "cert_file": t.get("cert_file", None, existing_file(base)),
        "key_file": t.get("key_file", None, existing_file(base)),
    }
    t.finish()
    try:
        return WebTls(**args)  # type: ignore[arg-type]
    except ValueError as exc:
        t.problems.append(f"{t.path}: {exc}")
        return None


def read_dicomweb_destination(sub: Reader, base: Path) -> Destination | None:
    """The destination described by ``sub`` (``protocol: dicomweb`` already read), or None
    after reporting its problems."""
    item = sub.data
    name = sub.get("name", "", nonempty_str)
    url = sub.get("url", "", nonempty_str)
    kinds = sub.get("send", sorted(ALL_KINDS), send_kinds)
    auth, plain_http = _read_auth(sub, base)
    tls = _read_tls(sub, base)
    for key in _DIMSE_ONLY:
        if key in item:
            sub.used.add(key)
            sub.problem(key, "not used with protocol: dicomweb (the url says where)")
    sub.finish()
    for key in ("name", "url"):
        if key not in item:
            sub.problem(key, "is required")
    if not (name and url) or auth is None or tls is None:
        return None
    if tls != WebTls() and not url.startswith("https://"):
        sub.problem("tls", "only used with an https:// url")
        return None
    try:
        target = DicomWebTarget(url, auth=auth, tls=tls, allow_plain_http_auth=plain_http)
    except ValueError as exc:
        sub.problem("url", str(exc))
        return None
    try:
        return Destination.stow_rs(name, target, kinds=frozenset(kinds))
    except ValueError as exc:
        sub.problems.append(f"{sub.path}: {exc}")
        return None
