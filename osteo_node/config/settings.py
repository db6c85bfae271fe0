"""Typed, frozen settings of the node, loaded from YAML and validated at start.

:func:`load_settings` reads the YAML file, applies environment overrides (see
:func:`apply_env_overrides`) and returns a :class:`Settings`. Every problem is reported as
``path.to.key: reason`` in one :class:`ConfigError`, so an operator sees all mistakes at once.
The settings object is immutable and passed explicitly (no global configuration).

The pieces: the dataclasses (:mod:`.sections`), value converters (:mod:`.values`), the
problem-collecting reader (:mod:`.reader`), environment overrides (:mod:`.env`) and the
``dicom`` and ``destinations``/``retry`` sections (:mod:`.dicom_section`,
:mod:`.destinations_section`); this module reads the small sections and assembles.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from osteo_node.config.destinations_section import read_destinations, read_retry
from osteo_node.config.dicom_section import read_dicom
from osteo_node.config.env import ENV_PREFIX, apply_env_overrides
from osteo_node.config.node_section import read_node
from osteo_node.config.reader import ConfigError, Reader
from osteo_node.config.retention_section import read_retention
from osteo_node.config.sections import (
    AllowedCaller,
    DicomSettings,
    FhirSettings,
    ListenerTls,
    LoggingSettings,
    NodeSettings,
    QueueSettings,
    ResultsSettings,
    Settings,
    StorageSettings,
    WebSettings,
)
from osteo_node.config.values import (
    KNOWN_MODALITIES,
    boolean,
    db_url,
    existing_file,
    factory_ref,
    http_url,
    http_url_template,
    int_in,
    ip_address,
    ip_list,
    non_negative_float,
    one_of,
    optional_str,
    path_under,
    positive_float,
    uid_root,
    uri,
)

__all__ = [
    "ENV_PREFIX",
    "KNOWN_MODALITIES",
    "AllowedCaller",
    "ConfigError",
    "DicomSettings",
    "FhirSettings",
    "ListenerTls",
    "LoggingSettings",
    "NodeSettings",
    "QueueSettings",
    "ResultsSettings",
    "Settings",
    "StorageSettings",
    "WebSettings",
    "apply_env_overrides",
    "load_settings",
    "settings_from_mapping",
]


def _read_storage(top: Reader, base: Path) -> StorageSettings:
    s = top.section("storage")
    storage = StorageSettings(
        spool_dir=s.get("spool_dir", path_under(base)("var/spool"), path_under(base)),
        outbox_dir=s.get("outbox_dir", path_under(base)("var/outbox"), path_under(base)),
        database_url=s.get("database_url", db_url(base)("sqlite:///var/osteo_node.db"),
                           db_url(base)),
    )
    s.finish()
    return storage


def _read_queue(top: Reader) -> QueueSettings:
    q = top.section("queue")
    queue = QueueSettings(
        series_quiet_seconds=q.get("series_quiet_seconds", 30.0, non_negative_float),
        workers=q.get("workers", 1, int_in(1, 64)),
        job_lease_seconds=q.get("job_lease_seconds", 300.0, positive_float),
        max_job_attempts=q.get("max_job_attempts", 3, int_in(1, 100)),
        poll_seconds=q.get("poll_seconds", 0.5, positive_float),
    )
    q.finish()
    return queue


def _read_results(top: Reader) -> ResultsSettings:
    rs = top.section("results")
    results = ResultsSettings(
        uid_root=rs.get("uid_root", None, uid_root),
        institution_name=rs.get("institution_name", None, optional_str),
        worklist=rs.get("worklist", True, boolean),
    )
    rs.finish()
    return results


def _read_fhir(top: Reader, base: Path) -> FhirSettings:
    f = top.section("fhir")
    fhir = FhirSettings(
        base_url=f.get("base_url", None, http_url),
        patient_identifier_system=f.get("patient_identifier_system", None, uri),
        token_file=f.get("token_file", None, path_under(base)),
        timeout_s=f.get("timeout_s", 30.0, positive_float),
    )
    f.finish()
    return fhir


def _read_web(top: Reader, base: Path) -> WebSettings:
    w = top.section("web")
    web = WebSettings(
        enabled=w.get("enabled", False, boolean),
        bind_address=w.get("bind_address", "127.0.0.1", ip_address),
        port=w.get("port", 8080, int_in(1, 65535)),
        secret_key_file=w.get("secret_key_file", None, existing_file(base)),
        session_seconds=w.get("session_seconds", 8 * 3600, int_in(60, 7 * 24 * 3600)),
        tls_certificate=w.get("tls_certificate", None, existing_file(base)),
        tls_private_key=w.get("tls_private_key", None, existing_file(base)),
        viewer_url=w.get("viewer_url", None, http_url_template),
        trusted_user_header=w.get("trusted_user_header", None, optional_str),
        trusted_proxies=tuple(w.get("trusted_proxies", [], ip_list)),
    )
    if web.trusted_user_header and not web.trusted_proxies:
        w.problem("trusted_user_header", "needs trusted_proxies (the proxy's addresses)")
    if (web.tls_certificate is None) != (web.tls_private_key is None):
        w.problem("tls_certificate", "set both tls_certificate and tls_private_key, or neither")
    w.finish()
    return web


def _read_logging(top: Reader) -> LoggingSettings:
    lg = top.section("logging")
    log = LoggingSettings(
        level=lg.get("level", "INFO", lambda v: one_of(v, ("DEBUG", "INFO", "WARNING", "ERROR"))),
        format=lg.get("format", "auto", lambda v: one_of(v, ("auto", "json", "console"))),
    )
    lg.finish()
    return log


def _read_analysers(top: Reader) -> dict[str, str]:
    top.used.add("analysers")
    analysers_raw = top.data.get("analysers") or {}
    analysers: dict[str, str] = {}
    if not isinstance(analysers_raw, Mapping):
        top.problems.append("analysers: must be a mapping modality -> 'module:callable'")
    else:
        a = Reader(analysers_raw, "analysers", top.problems)
        for mod in analysers_raw:
            analysers[str(mod).upper()] = a.get(mod, "", factory_ref)
    return analysers


def settings_from_mapping(raw: Mapping[str, Any], base: Path, source: str = "") -> Settings:
    """Validate a parsed configuration mapping; relative paths resolve against ``base``."""
    problems: list[str] = []
    top = Reader(raw, "", problems)
    dicom = read_dicom(top, base)
    storage = _read_storage(top, base)
    queue = _read_queue(top)
    destinations = read_destinations(top, dicom.ae_title, base)
    retry = read_retry(top)
    results = _read_results(top)
    fhir = _read_fhir(top, base)
    web = _read_web(top, base)
    retention = read_retention(top)
    log = _read_logging(top)
    node = read_node(top)
    analysers = _read_analysers(top)
    publisher = top.get("publisher", Settings.publisher, factory_ref)
    top.finish()

    if problems:
        raise ConfigError(problems, source)
    return Settings(dicom=dicom, storage=storage, queue=queue, destinations=destinations,
                    retry=retry, results=results, fhir=fhir, web=web, retention=retention,
                    logging=log,
                    analysers=analysers, publisher=publisher, node=node, source=source)


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
