"""``osteo-node worklist``: the fracture liaison service (FLS) worklist.

- ``worklist export --format csv|fhir [--since YYYY-MM-DD|ISO-DATE-TIME] [--status S ...]
  [--out FILE]``
- ``worklist push-fhir [--since ...] [--status S ...] [--url BASE] [--token-file FILE]``:
  the rows as one FHIR R4 transaction Bundle (conditional creates: pushing again creates
  nothing new) POSTed to the FHIR server, with the outbox's retry policy (``retry``); exit 1 and
  the reason when it is refused (a wrong token is not retried)
- ``worklist set-status ROW_ID STATUS --by NAME [--note TEXT]``

FHIR needs the hospital's patient-identifier system: ``fhir.patient_identifier_system`` in the
configuration or ``--patient-system URI``; ``--url`` / ``--token-file`` override
``fhir.base_url`` / ``fhir.token_file``.

The database comes from ``--config FILE`` (storage.database_url) or ``--db URL``. Exports hold
patient data by design (the FLS must contact the patient): write them with ``--out`` to a
protected place; nothing of it is logged.
"""

from __future__ import annotations

import argparse
import sys
from datetime import date, datetime
from pathlib import Path
from typing import Any

import structlog

from osteo_node.cli.database_args import add_database_arguments

log = structlog.get_logger(__name__)


SINCE_FORMAT = ("YYYY-MM-DD (a UTC day) or an ISO 8601 date-time such as 2026-11-22T08:30 "
                "or 2026-11-22T08:30+01:00 (UTC when no offset is given)")


def parse_since(text: str) -> date | datetime:
    """``--since``: a calendar date (rows of that UTC day onwards) or an ISO 8601 date-time.

    Raises :class:`argparse.ArgumentTypeError` naming the expected format (argparse then
    prints it and exits 2)."""
    value = text.strip()
    try:
        return date.fromisoformat(value)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a date: expected {SINCE_FORMAT}") from None
    return moment  # an offset is that instant, none means UTC (worklist.store.list_rows)


def _fhir_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--patient-system", default=None, metavar="URI",
                   help="patient identifier system (default: fhir.patient_identifier_system)")


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("worklist", help="FLS worklist: export (CSV / FHIR), set status")
    sub = p.add_subparsers(dest="worklist_command", metavar="ACTION", required=True)
    exp = sub.add_parser("export", help="export worklist rows as CSV or a FHIR R4 Bundle")
    exp.add_argument("--format", choices=("csv", "fhir"), default="csv")
    exp.add_argument("--since", type=parse_since, default=None, metavar="DATE",
                     help=f"only rows created/updated on or after this: {SINCE_FORMAT}")
    exp.add_argument("--status", action="append", default=None,
                     help="only rows with this status (repeatable)")
    exp.add_argument("--out", type=Path, default=None, help="output file (default stdout)")
    _fhir_args(exp)
    add_database_arguments(exp)
    push = sub.add_parser("push-fhir", help="push worklist rows to a FHIR R4 server")
    push.add_argument("--since", type=parse_since, default=None, metavar="DATE",
                      help=f"only rows created/updated on or after this: {SINCE_FORMAT}")
    push.add_argument("--status", action="append", default=None,
                      help="only rows with this status (repeatable)")
    push.add_argument("--url", default=None, help="FHIR base URL (default: fhir.base_url)")
    push.add_argument("--token-file", type=Path, default=None,
                      help="file with the bearer token (default: fhir.token_file)")
    _fhir_args(push)
    add_database_arguments(push)
    st = sub.add_parser("set-status", help="change the FLS status of a row")
    st.add_argument("row_id", type=int)
    st.add_argument("status", help="new, reviewed, contacted, referred, not_indicated or closed "
                    "(dicom_sr_templates/fls_worklist.yaml)")
    st.add_argument("--by", required=True, help="who made the change (user name)")
    st.add_argument("--note", default=None)
    add_database_arguments(st)
    p.set_defaults(func=run)


def _settings(args: argparse.Namespace) -> Any:
    """The node settings from ``--config``, defaults with ``--db``; None after an error."""
    from osteo_node.config import ConfigError, Settings, load_settings

    if args.db:
        return Settings()
    try:
        return load_settings(args.config)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return None


def _database_url(args: argparse.Namespace, settings: Any) -> str:
    return str(args.db) if args.db else str(settings.storage.database_url)


def _patient_system(args: argparse.Namespace, settings: Any) -> str | None:
    return getattr(args, "patient_system", None) or settings.fhir.patient_identifier_system


def _export(engine: Any, args: argparse.Namespace, settings: Any) -> int:
    from osteo_node.worklist import export_csv, fhir, store

    rows = store.list_rows(engine, since=args.since, statuses=args.status)
    try:
        text = (export_csv.to_csv(rows) if args.format == "csv" else fhir.bundle_json(
            rows, patient_system=_patient_system(args, settings)) + "\n")
    except fhir.FhirExportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    log.info("worklist_exported", rows=len(rows), format=args.format,
             out=str(args.out) if args.out else "stdout")
    return 0


def _push(engine: Any, args: argparse.Namespace, settings: Any) -> int:
    from osteo_node.worklist import fhir, fhir_push, store

    url = args.url or settings.fhir.base_url
    if not url or not str(url).startswith(("http://", "https://")):
        print("error: no FHIR base URL (http/https): set fhir.base_url or --url", file=sys.stderr)
        return 1
    token_file = args.token_file or settings.fhir.token_file
    try:
        token = fhir_push.read_token(token_file) if token_file else None
        rows = store.list_rows(engine, since=args.since, statuses=args.status)
        bundle = fhir.to_bundle(rows, patient_system=_patient_system(args, settings))
    except (OSError, ValueError) as exc:  # token file, FhirExportError
        print(f"error: {exc}", file=sys.stderr)
        return 1
    try:
        result = fhir_push.push_bundle(bundle, str(url).rstrip("/"), token=token,
                                       policy=settings.retry, timeout=settings.fhir.timeout_s)
    except fhir_push.FhirPushError as exc:
        log.error("worklist_fhir_push_failed", rows=len(rows), attempts=exc.attempts,
                  status=exc.status, permanent=exc.permanent)
        print(f"error: {exc}", file=sys.stderr)
        return 1
    created = sum(s.startswith("201") for s in result.entry_status)
    log.info("worklist_fhir_pushed", rows=len(rows), entries=len(result.entry_status),
             created=created, attempts=result.attempts)
    print(f"pushed {len(rows)} rows ({len(result.entry_status)} resources, {created} created) "
          f"in {result.attempts} attempt(s)")
    return 0


def _set_status(engine: Any, args: argparse.Namespace) -> int:
    from osteo_node.worklist import store

    try:
        row = store.set_status(engine, args.row_id, args.status, changed_by=args.by,
                               note=args.note)
    except store.WorklistError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"row {row.id}: status {row.status} (by {row.status_changed_by} at "
          f"{row.status_changed_at.isoformat() if row.status_changed_at else '?'})")
    return 0


def run(args: argparse.Namespace) -> int:
    from osteo_node.store.db import DatabaseUnavailableError, open_existing
    from osteo_node.worklist import store

    settings = _settings(args)
    if settings is None:
        return 1
    url = _database_url(args, settings)
    # an existing node database only: a mistyped URL must not look like an empty worklist
    try:
        engine = open_existing(url, [store.fls_worklist.name],
                               read_only=args.worklist_command != "set-status")
    except DatabaseUnavailableError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    try:
        if args.worklist_command == "export":
            return _export(engine, args, settings)
        if args.worklist_command == "push-fhir":
            return _push(engine, args, settings)
        return _set_status(engine, args)
    finally:
        engine.dispose()
