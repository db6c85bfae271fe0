"""The ``destinations`` (where results are sent, optional TLS) and ``retry`` sections.

A destination is DIMSE (``protocol: dimse``, the default: ``ae_title``, ``host``, ``port``) or
DICOMweb STOW-RS (``protocol: dicomweb``: ``url``, ``auth``, ``tls``; read by
:mod:`.dicomweb_destination`)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from osteo_node.config.dicomweb_destination import PROTOCOLS, read_dicomweb_destination
from osteo_node.config.reader import Reader
from osteo_node.config.values import (
    boolean,
    existing_file,
    int_in,
    non_negative_float,
    nonempty_str,
    send_kinds,
)
from osteo_node.outbox.policy import ALL_KINDS, Destination, RetryPolicy, TlsSettings


def _destination_tls(sub: Reader, base: Path) -> TlsSettings | None:
    """Optional outgoing TLS of a destination (the PACS certificate is verified)."""
    if "tls" not in sub.data:
        sub.used.add("tls")
        return None
    t = sub.section("tls")
    enabled = t.get("enabled", True, boolean)
    args = {
        "ca_file": t.get("ca_file", None, existing_file(base)),
        "cert_file": t.get("cert_file", None, existing_file(base)),
        "key_file": t.get("key_file", None, existing_file(base)),
        "server_hostname": t.get("server_hostname", None, nonempty_str),
        "check_hostname": t.get("check_hostname", True, boolean),
    }
    t.finish()
    if not enabled:
        return None
    try:
        return TlsSettings(**args)  # type: ignore[arg-type]
    except ValueError as exc:
        t.problems.append(f"{t.path}: {exc}")
        return None


def read_destinations(r: Reader, calling_ae: str, base: Path) -> tuple[Destination, ...]:
    r.used.add("destinations")
    raw = r.data.get("destinations") or []
    if not isinstance(raw, list):
        r.problem("destinations", "must be a list")
        return ()
    out: list[Destination] = []
    for i, item in enumerate(raw):
        where = f"destinations[{i}]"
        if not isinstance(item, Mapping):
            r.problem(where, "must be a mapping {name, ae_title, host, port, send}")
            continue
        sub = Reader(item, where, r.problems)
        protocol = sub.get("protocol", "dimse", _protocol)
        if protocol == "dicomweb":
            web = read_dicomweb_destination(sub, base)
            if web is not None:
                out.append(web)
            continue
        name = sub.get("name", "", nonempty_str)
        ae = sub.get("ae_title", "", nonempty_str)
        host = sub.get("host", "", nonempty_str)
        port = sub.get("port", 0, int_in(1, 65535))
        kinds = sub.get("send", sorted(ALL_KINDS), send_kinds)
        tls = _destination_tls(sub, base)
        for key in ("url", "auth"):
            if key in item:
                sub.used.add(key)
                sub.problem(key, "only used with protocol: dicomweb")
        sub.finish()
        for key in ("name", "ae_title", "host", "port"):
            if key not in item:
                sub.problem(key, "is required")
        if not (name and ae and host and port):
            continue
        try:
            out.append(Destination(name=name, ae_title=ae, host=host, port=port,
                                   kinds=frozenset(kinds), tls=tls,
                                   calling_ae_title=calling_ae))
        except ValueError as exc:
            r.problems.append(f"{where}: {exc}")
    names = [d.name for d in out]
    for dup in sorted({n for n in names if names.count(n) > 1}):
        r.problem("destinations", f"duplicate destination name {dup!r}")
    return tuple(out)


def _protocol(v: object) -> str:
    if v not in PROTOCOLS:
        raise ValueError(f"must be one of {', '.join(PROTOCOLS)}")
    return str(v)


def read_retry(top: Reader) -> RetryPolicy:
    """The ``retry`` section (outgoing associations); the default policy if it is invalid."""
    rt = top.section("retry")
    retry_args = {
        "max_attempts": rt.get("max_attempts", 10, int_in(1, 10_000)),
        "base_delay_s": rt.get("base_delay_seconds", 5.0, non_negative_float),
        "max_delay_s": rt.get("max_delay_seconds", 600.0, non_negative_float),
    }
    rt.finish()
    try:
        return RetryPolicy(**retry_args)  # type: ignore[arg-type]
    except ValueError as exc:
        top.problems.append(f"retry: {exc}")
        return RetryPolicy()
