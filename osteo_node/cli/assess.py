"""``osteo-node assess [--fhir BUNDLE.json | --fhir-url URL --patient ID] [--dxa FILE]
[--imaging ANALYSIS.json] --json OUT [--html PAGE.html]``.

Builds one patient-level assessment (DXA interpretation, QFracture-2012 risk, risk factors,
pathological-fracture red flags) and writes it as JSON (schema: issue 5; keys ``patient``,
``dxa``, ``risk_factors``, ``risk``, ``red_flags``, ``summary`` plus extras). ``--json -`` prints
to stdout; ``--html`` also writes a read-only page of the assessment (the dashboard view, see
``osteo-node dashboard``). Problems with the inputs are listed under ``messages`` and on stderr.
Every computed QFracture-2012 risk carries ClinRisk Ltd.'s disclaimer (``risk.disclaimer``, also
in the summary and on the page, as their licence requires) and, in ``risk.notes``, the caveat
that its categories apply CAROC / NOF cut-offs to QFracture. The CT density is named at the
level the analysis measured it (``imaging.density_level``, which may be a fallback to L1).
Exit status: 0 written, 2 an input could not be read at all.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "assess", help="patient-level assessment: DXA, clinical data, fracture risk, red flags",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    src = p.add_mutually_exclusive_group()
    src.add_argument("--fhir", type=Path, help="FHIR R4 Bundle (JSON file)")
    src.add_argument("--fhir-url", help="FHIR R4 server base URL (needs --patient)")
    p.add_argument("--patient", help="Patient id (server, or to pick one patient in a Bundle)")
    p.add_argument("--dxa", type=Path, help="DXA results: DICOM SR, FHIR JSON, JSON or CSV")
    p.add_argument("--imaging", type=Path, help="osteo-node analyze JSON result")
    p.add_argument("--menopause", choices=("premenopausal", "postmenopausal", "unknown"),
                   default="unknown", help="menopausal status (default: age < 50 as proxy)")
    p.add_argument("--timeout", type=float, default=10.0, help="FHIR server timeout (s)")
    p.add_argument("--json", dest="json_out", required=True, help="output file, or - for stdout")
    p.add_argument("--html", type=Path, help="also write a read-only HTML page of the assessment")
    p.set_defaults(func=run)


def _fail(message: str) -> int:
    print(f"osteo-node assess: {message}", file=sys.stderr)
    return 2


def run(args: argparse.Namespace) -> int:
    from osteo_node.clinical.assessment import build_assessment
    from osteo_node.clinical.dxa import DxaInputError, read_dxa
    from osteo_node.clinical.fhir_intake import (
        ClinicalRecord,
        FhirIntakeError,
        fetch_from_server,
        load_bundle_file,
    )

    record: ClinicalRecord | None = None
    try:
        if args.fhir_url:
            if not args.patient:
                return _fail("--fhir-url needs --patient ID")
            record = fetch_from_server(args.fhir_url, args.patient, timeout=args.timeout)
        elif args.fhir:
            record = load_bundle_file(args.fhir, args.patient)
    except FhirIntakeError as exc:
        return _fail(str(exc))
    dxa = None
    if args.dxa:
        try:
            dxa = read_dxa(args.dxa)
        except DxaInputError as exc:
            return _fail(str(exc))
    analysis = None
    if args.imaging:
        try:
            analysis = json.loads(args.imaging.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            return _fail(f"{args.imaging}: cannot read imaging analysis JSON ({exc})")
        if not isinstance(analysis, dict):
            return _fail(f"{args.imaging}: imaging analysis must be a JSON object")
    assessment = build_assessment(record, dxa, analysis, args.menopause)
    doc = assessment.to_json()
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
        from osteo_node.clinical.dashboard import render_dashboard

        args.html.parent.mkdir(parents=True, exist_ok=True)
        args.html.write_text(render_dashboard([doc]), encoding="utf-8")
    return 0
