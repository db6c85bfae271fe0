"""Typed, frozen settings of the node, loaded from YAML and validated at start.

:func:`load_settings` reads the YAML file, applies environment overrides (see
:func:`apply_env_overrides`) and returns a :class:`Settings`. Every problem is reported as
``path.to.key: reason`` in one :class:`ConfigError`, so an operator sees all mistakes at once.
The settings object is immutable and passed explicitly (no global configuration).
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from osteo_node.outbox.policy import (
    ALL_KINDS,
    Destination,
    RetryPolicy,
    TlsSettings,
    validate_ae_title,
)

ENV_PREFIX = "OSTEO_NODE__"

#: Modalities the node can be asked to accept (SOP classes follow from them, see conformance.md).
KNOWN_MODALITIES: frozenset[str] = frozenset({"CT", "MR", "CR", "DX", "OT", "SR", "SEG", "KO"})

T = TypeVar("T")


class ConfigError(ValueError):
    """Invalid configuration; ``problems`` lists ``path: reason`` lines."""

    def __init__(self, problems: list[str], source: str = "") -> None:
        self.problems = problems
        head = f"invalid configuration{f' in {source}' if source else ''}"
        super().__init__(head + ":\n" + "\n".join(f"  - {p}" for p in problems))


@dataclass(frozen=True)
class AllowedCaller:
    """A calling AE title that may associate; ``hosts`` (IPs) restrict it further if not empty."""

    ae_title: str
    hosts: tuple[str, ...] = ()

    def permits(self, ae_title: str, host: str) -> bool:
        return ae_title == self.ae_title and (not self.hosts or host in self.hosts)


@dataclass(frozen=True)
class ListenerTls:
    """TLS for incoming associations. With ``ca_file`` and ``require_client_cert`` the peer
    must present a certificate signed by that CA (mutual TLS)."""

    cert_file: Path
    key_file: Path
    ca_file: Path | None = None
    require_client_cert: bool = False


@dataclass(frozen=True)
class DicomSettings:
    ae_title: str = "OSTEO_NODE"
    bind_address: str = "127.0.0.1"
    port: int = 11112
    allowed_callers: tuple[AllowedCaller, ...] = ()
    accepted_modalities: tuple[str, ...] = ("CT", "MR", "CR", "DX")
    tls: ListenerTls | None = None
    max_pdu: int = 262144
    max_associations: int = 16

    def caller_permitted(self, ae_title: str, host: str) -> bool:
        return any(c.permits(ae_title.strip(), host) for c in self.allowed_callers)


@dataclass(frozen=True)
class StorageSettings:
    spool_dir: Path = Path("var/spool")
    outbox_dir: Path = Path("var/outbox")
    database_url: str = "sqlite:///var/osteo_node.db"


@dataclass(frozen=True)
class QueueSettings:
    series_quiet_seconds: float = 30.0
    workers: int = 1
    job_lease_seconds: float = 300.0
    max_job_attempts: int = 3
    poll_seconds: float = 0.5


@dataclass(frozen=True)
class ResultsSettings:
    """What the node produces from an analysis (see the exporters and the FLS worklist)."""

    #: UID root for every object the node creates (your organisation's registered root);
    #: None: UUID-derived ``2.25.`` UIDs. Deterministic per job either way.
    uid_root: str | None = None
    #: InstitutionName written into the result objects (None: copied from the source).
    institution_name: str | None = None
    #: add analysed patients with a positive finding to the fracture liaison worklist
    worklist: bool = True


@dataclass(frozen=True)
class LoggingSettings:
    level: str = "INFO"
    format: str = "auto"  # auto | json | console


@dataclass(frozen=True)
class Settings:
    dicom: DicomSettings = field(default_factory=DicomSettings)
    storage: StorageSettings = field(default_factory=StorageSettings)
    queue: QueueSettings = field(default_factory=QueueSettings)
    destinations: tuple[Destination, ...] = ()
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    results: ResultsSettings = field(default_factory=ResultsSettings)
    logging: LoggingSettings = field(default_factory=LoggingSettings)
    #: modality -> "module:callable" analyser factory used INSTEAD of the registry entry
    #: (site-specific analysers, tests). Empty: the registry decides.
    analysers: Mapping[str, str] = field(default_factory=dict)
    #: "module:callable" turning an AnalysisOutput into DICOM datasets (the exporters).
    publisher: str = "osteo_node.worker.publish:exporters_publisher"
    source: str = ""


# --------------------------------------------------------------------------- env overrides


def apply_env_overrides(raw: dict[str, Any], env: Mapping[str, str]) -> dict[str, Any]:
    """Return a copy of ``raw`` with ``OSTEO_NODE__SECTION__KEY=value`` variables applied.

    Keys are lower-cased path segments separated by ``__`` (``OSTEO_NODE__DICOM__PORT=11113``
    sets ``dicom.port``). Values are parsed as YAML scalars/flow collections, so
    ``OSTEO_NODE__DICOM__ACCEPTED_MODALITIES='[CT, MR]'`` gives a list.
    """
    out: dict[str, Any] = _deep_copy(raw)
    for name in sorted(env):
        if not name.startswith(ENV_PREFIX):
            continue
        path = [p.lower() for p in name[len(ENV_PREFIX):].split("__") if p]
        if not path:
            continue
        node = out
        for part in path[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = {}
                node[part] = child
            node = child
        node[path[-1]] = yaml.safe_load(env[name]) if env[name] != "" else ""
    return out


def _deep_copy(raw: Any) -> Any:
    if isinstance(raw, dict):
        return {k: _deep_copy(v) for k, v in raw.items()}
    if isinstance(raw, list):
        return [_deep_copy(v) for v in raw]
    return raw


# --------------------------------------------------------------------------- validation


class _Reader:
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

    def section(self, key: str) -> _Reader:
        self.used.add(key)
        value = self.data.get(key) or {}
        if not isinstance(value, Mapping):
            self.problem(key, f"must be a mapping (got {type(value).__name__})")
            value = {}
        return _Reader(value, self.where(key), self.problems)

    def finish(self) -> None:
        for key in sorted(set(self.data) - self.used, key=str):
            self.problem(str(key), "unknown setting (typo?)")


def _int_in(lo: int, hi: int) -> Callable[[Any], int]:
    def conv(v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int):
            raise TypeError("must be an integer")
        if not lo <= v <= hi:
            raise ValueError(f"must be in {lo}..{hi}")
        return v

    return conv


def _positive_float(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise TypeError("must be a number")
    if v <= 0:
        raise ValueError("must be > 0")
    return float(v)


def _non_negative_float(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise TypeError("must be a number")
    if v < 0:
        raise ValueError("must be >= 0")
    return float(v)


def _bool(v: Any) -> bool:
    if not isinstance(v, bool):
        raise TypeError("must be true or false")
    return v


def _str(v: Any) -> str:
    if not isinstance(v, str) or not v.strip():
        raise TypeError("must be a non-empty string")
    return v


_UID_ROOT = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")


def _uid_root(v: Any) -> str | None:
    root = _str(str(v)).rstrip(".")
    if not _UID_ROOT.match(root) or len(root) > 40:
        raise ValueError("must be a dotted numeric DICOM UID root of at most 40 characters")
    return root


def _optional_str(v: Any) -> str | None:
    return _str(v)


def _ae(v: Any) -> str:
    return validate_ae_title(_str(v), "AE title")


def _ip(v: Any) -> str:
    ipaddress.ip_address(_str(v))
    return str(v)


def _ip_list(v: Any) -> list[str]:
    if not isinstance(v, list):
        raise TypeError("must be a list of IP addresses")
    return [_ip(h) for h in v]


def _kinds(v: Any) -> list[str]:
    if not isinstance(v, list):
        raise TypeError("must be a list of sr/seg/sc/kos")
    return [str(k).lower() for k in v]


def _path(base: Path) -> Callable[[Any], Path]:
    def conv(v: Any) -> Path:
        p = Path(_str(v)).expanduser()
        return p if p.is_absolute() else (base / p).resolve()

    return conv


def _existing_file(base: Path) -> Callable[[Any], Path]:
    def conv(v: Any) -> Path:
        p = _path(base)(v)
        if not p.is_file():
            raise ValueError(f"file {p} does not exist")
        return p

    return conv


def _db_url(base: Path) -> Callable[[Any], str]:
    def conv(v: Any) -> str:
        url = _str(v)
        if not re.match(r"^[a-z][a-z0-9+]*://", url):
            raise ValueError("must be an SQLAlchemy URL like sqlite:///var/osteo_node.db")
        if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
            rel = url.removeprefix("sqlite:///")
            if not rel.startswith("/"):
                url = "sqlite:///" + str((base / rel).resolve())
        return url

    return conv


def _modalities(v: Any) -> tuple[str, ...]:
    if not isinstance(v, list) or not v:
        raise TypeError("must be a non-empty list of modality codes")
    mods = tuple(str(m).upper() for m in v)
    unknown = sorted(set(mods) - KNOWN_MODALITIES)
    if unknown:
        raise ValueError(f"unknown modality {unknown}; known: {sorted(KNOWN_MODALITIES)}")
    return mods


def _factory(v: Any) -> str:
    s = _str(v)
    if not re.match(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$", s):
        raise ValueError("must be 'package.module:callable'")
    return s


def _callers(r: _Reader) -> tuple[AllowedCaller, ...]:
    r.used.add("allowed_callers")
    raw = r.data.get("allowed_callers")
    if raw is None:
        return ()
    if not isinstance(raw, list):
        r.problem("allowed_callers", "must be a list of AE titles or {ae_title, hosts}")
        return ()
    out: list[AllowedCaller] = []
    for i, item in enumerate(raw):
        where = f"allowed_callers[{i}]"
        entry = {"ae_title": item} if isinstance(item, str) else item
        if not isinstance(entry, Mapping):
            r.problem(where, "must be an AE title or a mapping {ae_title, hosts}")
            continue
        sub = _Reader(entry, r.where(where), r.problems)
        ae = sub.get("ae_title", "", _ae)
        hosts: list[str] = sub.get("hosts", [], _ip_list)
        sub.finish()
        if ae:
            out.append(AllowedCaller(ae, tuple(hosts)))
        elif "ae_title" not in entry:
            sub.problem("ae_title", "is required")
    return tuple(out)


def _tls(r: _Reader, base: Path) -> ListenerTls | None:
    t = r.section("tls")
    enabled = t.get("enabled", False, _bool)
    cert = t.get("cert_file", None, _existing_file(base)) if enabled else None
    key = t.get("key_file", None, _existing_file(base)) if enabled else None
    ca = t.get("ca_file", None, _existing_file(base)) if enabled else None
    require = t.get("require_client_cert", False, _bool)
    if not enabled:
        t.used.update({"cert_file", "key_file", "ca_file"})
    t.finish()
    if not enabled:
        return None
    if cert is None or key is None:
        if "cert_file" not in t.data:
            t.problem("cert_file", "is required when tls.enabled is true")
        if "key_file" not in t.data:
            t.problem("key_file", "is required when tls.enabled is true")
        return None
    if require and ca is None:
        t.problem("require_client_cert", "needs ca_file to verify client certificates")
    return ListenerTls(cert, key, ca, require)


def _destination_tls(sub: _Reader, base: Path) -> TlsSettings | None:
    """Optional outgoing TLS of a destination (the PACS certificate is verified)."""
    if "tls" not in sub.data:
        sub.used.add("tls")
        return None
    t = sub.section("tls")
    enabled = t.get("enabled", True, _bool)
    args = {
        "ca_file": t.get("ca_file", None, _existing_file(base)),
        "cert_file": t.get("cert_file", None, _existing_file(base)),
        "key_file": t.get("key_file", None, _existing_file(base)),
        "server_hostname": t.get("server_hostname", None, _str),
        "check_hostname": t.get("check_hostname", True, _bool),
    }
    t.finish()
    if not enabled:
        return None
    try:
        return TlsSettings(**args)  # type: ignore[arg-type]
    except ValueError as exc:
        t.problems.append(f"{t.path}: {exc}")
        return None


def _destinations(r: _Reader, calling_ae: str, base: Path) -> tuple[Destination, ...]:
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
        sub = _Reader(item, where, r.problems)
        name = sub.get("name", "", _str)
        ae = sub.get("ae_title", "", _str)
        host = sub.get("host", "", _str)
        port = sub.get("port", 0, _int_in(1, 65535))
        kinds = sub.get("send", sorted(ALL_KINDS), _kinds)
        tls = _destination_tls(sub, base)
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


def settings_from_mapping(raw: Mapping[str, Any], base: Path, source: str = "") -> Settings:
    """Validate a parsed configuration mapping; relative paths resolve against ``base``."""
    problems: list[str] = []
    top = _Reader(raw, "", problems)

    d = top.section("dicom")
    dicom = DicomSettings(
        ae_title=d.get("ae_title", "OSTEO_NODE", _ae),
        bind_address=d.get("bind_address", "127.0.0.1", _ip),
        port=d.get("port", 11112, _int_in(1, 65535)),
        allowed_callers=_callers(d),
        accepted_modalities=d.get("accepted_modalities", ("CT", "MR", "CR", "DX"), _modalities),
        tls=_tls(d, base),
        max_pdu=d.get("max_pdu", 262144, _int_in(0, 2**32 - 1)),
        max_associations=d.get("max_associations", 16, _int_in(1, 1000)),
    )
    d.finish()
    if not dicom.allowed_callers:
        problems.append("dicom.allowed_callers: list at least one calling AE title "
                        "(unknown callers are refused)")

    s = top.section("storage")
    storage = StorageSettings(
        spool_dir=s.get("spool_dir", _path(base)("var/spool"), _path(base)),
        outbox_dir=s.get("outbox_dir", _path(base)("var/outbox"), _path(base)),
        database_url=s.get("database_url", _db_url(base)("sqlite:///var/osteo_node.db"),
                           _db_url(base)),
    )
    s.finish()

    q = top.section("queue")
    queue = QueueSettings(
        series_quiet_seconds=q.get("series_quiet_seconds", 30.0, _non_negative_float),
        workers=q.get("workers", 1, _int_in(1, 64)),
        job_lease_seconds=q.get("job_lease_seconds", 300.0, _positive_float),
        max_job_attempts=q.get("max_job_attempts", 3, _int_in(1, 100)),
        poll_seconds=q.get("poll_seconds", 0.5, _positive_float),
    )
    q.finish()

    destinations = _destinations(top, dicom.ae_title, base)

    rt = top.section("retry")
    retry_args = {
        "max_attempts": rt.get("max_attempts", 10, _int_in(1, 10_000)),
        "base_delay_s": rt.get("base_delay_seconds", 5.0, _non_negative_float),
        "max_delay_s": rt.get("max_delay_seconds", 600.0, _non_negative_float),
    }
    rt.finish()
    try:
        retry = RetryPolicy(**retry_args)  # type: ignore[arg-type]
    except ValueError as exc:
        problems.append(f"retry: {exc}")
        retry = RetryPolicy()

    rs = top.section("results")
    results = ResultsSettings(
        uid_root=rs.get("uid_root", None, _uid_root),
        institution_name=rs.get("institution_name", None, _optional_str),
        worklist=rs.get("worklist", True, _bool),
    )
    rs.finish()

    lg = top.section("logging")
    log = LoggingSettings(
        level=lg.get("level", "INFO", lambda v: _choice(v, ("DEBUG", "INFO", "WARNING", "ERROR"))),
        format=lg.get("format", "auto", lambda v: _choice(v, ("auto", "json", "console"))),
    )
    lg.finish()

    top.used.add("analysers")
    analysers_raw = raw.get("analysers") or {}
    analysers: dict[str, str] = {}
    if not isinstance(analysers_raw, Mapping):
        problems.append("analysers: must be a mapping modality -> 'module:callable'")
    else:
        a = _Reader(analysers_raw, "analysers", problems)
        for mod in analysers_raw:
            analysers[str(mod).upper()] = a.get(mod, "", _factory)
    publisher = top.get("publisher", Settings.publisher, _factory)
    top.finish()

    if problems:
        raise ConfigError(problems, source)
    return Settings(dicom=dicom, storage=storage, queue=queue, destinations=destinations,
                    retry=retry, results=results, logging=log, analysers=analysers,
                    publisher=publisher, source=source)


def _choice(v: Any, allowed: tuple[str, ...]) -> str:
    s = str(v)
    if s not in allowed and s.upper() not in allowed:
        raise ValueError(f"must be one of {', '.join(allowed)}")
    return s.upper() if s.upper() in allowed else s


def load_settings(path: Path | str, env: Mapping[str, str] | None = None,
                  base: Path | None = None) -> Settings:
    """Load, override from ``env`` (default ``os.environ``) and validate a YAML config file.

    Relative paths in the file resolve against ``base`` (default: the current directory).
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"cannot read {p}: {exc.strerror or exc}"], str(p)) from exc
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError([f"not valid YAML: {exc}"], str(p)) from exc
    if not isinstance(raw, dict):
        raise ConfigError(["top level must be a mapping"], str(p))
    raw = apply_env_overrides(raw, os.environ if env is None else env)
    return settings_from_mapping(raw, (base or Path.cwd()).resolve(), str(p))
