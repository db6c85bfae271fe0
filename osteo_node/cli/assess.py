"""``osteo-node assess [--fhir BUNDLE.json | --fhir-url URL --patient ID] [--dxa FILE]
[--imaging ANALYSIS.json] --json OUT [--html PAGE.html]
[--worklist --by NAME (--config FILE | --db URL) [--study-uid UID]]``.

Builds one patient-level assessment (DXA interpretation, QFracture-2012 risk, risk factors,
pathological-fracture red flags) and writes it as JSON (schema: issue 5; keys ``patient``,
``dxa``, ``risk_factors``, ``risk``, ``red_flags``, ``summary`` plus extras). ``--json -`` prints
to stdout; ``--html`` also writes a static page of the assessment (the web application's study
page section, see ``osteo-node dashboard``). ``--worklist`` also stores it in the node's
database against its study (the ``--imaging`` analysis' Study Instance UID, or ``--study-uid``),
with who stored it (``--by``) and when: the FLS web application shows it on that study's page
and its risk category on the worklist. Problems with the inputs are listed under ``messages``
and on stderr.
Every computed QFracture-2012 risk carries ClinRisk Ltd.'s disclaimer (``risk.disclaimer``, also
in the summary and on the page, as their licence requires) and, in ``risk.notes``, the caveat
that its categories apply CAROC / NOF cut-offs to QFracture. The CT density is named at the
level the analysis measured it (``imaging.density_level``, which may be a fallback to L1).
Exit status: 0 written, 2 an input could not be read at all or the assessment could not be
stored (no study to store it against, database not reachable).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from osteo_node.cli.database_args import add_database_arguments, database_url

if TYPE_CHECKING:
    from osteo_node.clinical.dxa import DxaExam
    from osteo_node.clinical.fhir_intake import ClinicalRecord


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "assess", help="patient-level assessment: DXA, clinical data, fracture risk, red flags",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    src = p.add_mutually_exclusive_group()
    src.add_argument("--fhir", type=Path, help="FHIR R4 Bundle (JSON file)")
    src.add_argument("--fhir-url", help="FHIR R4 server base URL (needs --patient)")
    p.add_argument("--patient", help="Patient id (server, or to pick one patient in a Bundle)")
    p.add_argument("--fhir-token-file", type=Path, default=None,
                   help="file holding a bearer token for --fhir-url (one line, mode 0600)")
    p.add_argument("--dxa", type=Path, help="DXA results: DICOM SR, FHIR JSON, JSON or CSV")
    p.add_argument("--imaging", type=Path, help="osteo-node analyze JSON result")
    p.add_argument("--menopause", choices=("premenopausal", "postmenopausal", "unknown"),
                   default="unknown", help="menopausal status (default: age < 50 as proxy)")
    p.add_argument("--timeout", type=float, default=10.0, help="FHIR server timeout (s)")
    p.add_argument("--json", dest="json_out", required=True, help="output file, or - for stdout")
    p.add_argument("--html", type=Path, help="also write a static HTML page of the assessment")
    w = p.add_argument_group("storing it for the FLS web application")
    w.add_argument("--worklist", action="store_true",
                   help="store the assessment against its study in the node's database")
    w.add_argument("--by", help="who stores it (required with --worklist; recorded)")
    w.add_argument("--study-uid", help="the study (default: the --imaging analysis' study)")
    add_database_arguments(w, required=False)
    p.set_defaults(func=run)


def _fail(message: str) -> int:
    print(f"osteo-node assess: {message}", file=sys.stderr)
    return 2


class _InputError(Exception):
    """An input could not be read at all (exit status 2, the message on stderr)."""


def _read_record(args: argparse.Namespace) -> ClinicalRecord | None:
    """The FHIR clinical record from --fhir-url/--patient or --fhir, or None without either."""
    from osteo_node.clinical.fhir_intake import (
        FhirIntakeError,
        fetch_from_server,
        load_bundle_file,
    )

    try:
        if args.fhir_url:
            if not args.patient:
                raise _InputError("--fhir-url needs --patient ID")
            token = None
            if args.fhir_token_file is not None:
                from osteo_node.worklist.fhir_push import read_token

                try:
                    token = read_token(args.fhir_token_file)
                except (OSError, ValueError) as exc:
                    raise _InputError(f"cannot read the token file: {exc}") from exc
            return fetch_from_server(args.fhir_url, args.patient, timeout=args.timeout,
                                     token=token)
        if args.fhir:
            return load_bundle_file(args.fhir, args.patient)
    except FhirIntakeError as exc:
        raise _InputError(str(exc)) from exc
    return None


def _read_dxa(args: argparse.Namespace) -> DxaExam | None:
    """The DXA results from --dxa, or None without it."""
    from osteo_node.clinical.dxa import DxaInputError, read_dxa

    if not args.dxa:
        return None
    try:
        return read_dxa(args.dxa)
    except DxaInputError as exc:
        raise _InputError(str(exc)) from exc


def _read_imaging(args: argparse.Namespace) -> dict[str, Any] | None:
    """The analyze JSON object from --imaging, or None without it."""
    if not args.imaging:
        return None
    try:
        analysis = json.loads(args.imaging.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _InputError(f"{args.imaging}: cannot read imaging analysis JSON ({exc})") from exc
    if not isinstance(analysis, dict):
        raise _InputError(f"{args.imaging}: imaging analysis must be a JSON object")
    return analysis


def _write_outputs(args: argparse.Namespace, doc: dict[str, Any]) -> None:
    """Messages on stderr, the JSON to --json (or stdout), and the --html page."""
    text = json.dumps(doc, indent=2)
    for message in doc["messages"]:
        print(f"note: {message}", file=sys.stderr)
    if args.json_out == "-":
        print(text)
    else:
        out = Path(args.json_out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n", encoding="utf-8")
    if args.html:
        from osteo_node.web.assessment_export import render_assessments

        args.html.parent.mkdir(parents=True, exist_ok=True)
        args.html.write_text(render_assessments([doc]), encoding="utf-8")


def _check_worklist_args(args: argparse.Namespace) -> None:
    if not args.worklist:
        if args.by or args.study_uid or args.config or args.db:
            raise _InputError("--by, --study-uid, --config and --db go with --worklist")
        return
    if not (args.by or "").strip():
        raise _InputError("--worklist needs --by NAME (who stores the assessment)")
    if not (args.config or args.db):
        raise _InputError("--worklist needs --config FILE or --db URL")


def _store(args: argparse.Namespace, doc: dict[str, Any]) -> None:
    """The assessment into the node's database, against its study (``--worklist``)."""
    from sqlalchemy.exc import SQLAlchemyError

    from osteo_node.config import ConfigError
    from osteo_node.store.db import make_engine
    from osteo_node.store.schema import SchemaError, ensure_schema
    from osteo_node.worklist import assessments
    from osteo_node.worklist.store import has_row_for_study

    try:
        url = database_url(args)
    except ConfigError as exc:
        raise _InputError(str(exc)) from exc
    engine = make_engine(url)
    try:
        ensure_schema(engine)
        stored = assessments.store(engine, doc, stored_by=args.by, study_uid=args.study_uid)
        on_worklist = has_row_for_study(engine, stored.study_instance_uid)
    except (assessments.AssessmentError, SchemaError) as exc:
        raise _InputError(str(exc)) from exc
    except SQLAlchemyError as exc:
        raise _InputError(f"cannot store the assessment: {type(exc).__name__}") from exc
    finally:
        engine.dispose()
    print(f"assessment {stored.id} stored for study {stored.study_instance_uid}"
          + ("" if on_worklist else
             " (no worklist row for it yet: it shows when the study is flagged)"),
          file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    from osteo_node.clinical.assessment import build_assessment

    try:
        _check_worklist_args(args)
        record = _read_record(args)
        dxa = _read_dxa(args)
        analysis = _read_imaging(args)
    except _InputError as exc:
        return _fail(str(exc))
    assessment = build_assessment(record, dxa, analysis, args.menopause)
    doc = assessment.to_json()
    _write_outputs(args, doc)
    if args.worklist:
        try:
            _store(args, doc)
        except _InputError as exc:
            return _fail(str(exc))
    return 0
