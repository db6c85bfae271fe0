"""``osteo-node analyze PATH [--json OUT] [--png OUT] [--seg OUT.nii.gz]``.

PATH is a DICOM folder (any file names; CT or sagittal spine MR, see ``--modality``; the CT
series is selected by the rules in
``config/series_selection.yaml``), one DICOM file, or a NIfTI file (research use). Progress goes
to stderr stage by stage; the JSON (``AnalysisResult.to_json()``) goes to ``--json`` or stdout.
``--seg`` writes the vertebra label map on the input grid; the JSON ``label_map`` says which
value is which level. Exit status: 0 analysed, 3 not analysable, 2 usage error.

``--dicom-out DIR`` writes exactly the DICOM objects (SR, SEG, SC and, when flagged, KOS) the
node would send for this series on its first arrival: same exporters, same job key, same UIDs.
``--config FILE`` takes the UID root and institution from the node's configuration.
Exit status 1 when a requested output could not be written.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from osteo_node.config.settings import ResultsSettings
from osteo_node.pipeline.results import AnalysisOutput

if TYPE_CHECKING:
    from osteo_node.pipeline.registry import Analyser


def export_dicom(output: AnalysisOutput, directory: Path,
                 results: ResultsSettings | None = None) -> list[Path]:
    """Write the DICOM objects the node would send for ``output`` into ``directory``."""
    from osteo_node.exporters.publish import ExportedObject, write_objects
    from osteo_node.queue.jobs import job_key
    from osteo_node.worker.publish import content_key, exporters_publisher

    series_uid = output.result.series_instance_uid
    if output.result.status != "analysed" or not series_uid:
        return []
    key = content_key(job_key(series_uid), output)  # the node's key for a first generation
    objects = exporters_publisher(output, key, results or ResultsSettings())
    return write_objects([ExportedObject(kind, ds) for kind, ds in objects],  # type: ignore[arg-type]
                         directory)


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "analyze", help="analyse one CT series (DICOM folder or NIfTI) and print the JSON result",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("path", type=Path, help="DICOM folder / file, or NIfTI (.nii, .nii.gz)")
    p.add_argument("--json", type=Path, dest="json_out", help="write the JSON result here")
    p.add_argument("--png", type=Path, help="write the mid-sagittal overlay PNG here")
    p.add_argument("--seg", type=Path, help="write the label map (NIfTI) on the input grid here")
    p.add_argument("--dicom-out", type=Path,
                   help="write the DICOM objects the node would send (SR, SEG, SC, KOS) here")
    p.add_argument("--config", type=Path,
                   help="node configuration (UID root, institution) for --dicom-out")
    p.add_argument("--rules", type=Path, help="series selection rules YAML (default: config/)")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.add_argument("--modality", choices=("auto", "CT", "MR"), default="auto",
                   help="analyser to use; auto: from the DICOM headers (MR when the input holds "
                   "MR and no CT), CT for NIfTI")
    p.set_defaults(func=run)


def _progress(stage: str, message: str) -> None:
    print(f"[{stage}] {message}", file=sys.stderr, flush=True)


def write_seg(output: AnalysisOutput, path: Path) -> None:
    import numpy as np
    import SimpleITK as sitk

    from osteo_node.pipeline.sitk_io import to_sitk

    labels = output.labels
    if labels is None:
        raise ValueError("no label map (analysis did not reach segmentation)")
    image = to_sitk(np.asarray(labels.array, dtype=np.uint8), labels.geometry)
    sitk.WriteImage(image, str(path), useCompression=True)


def write_png(output: AnalysisOutput, path: Path) -> None:
    from PIL import Image

    from osteo_node.render.sagittal import render_sagittal_overlay

    if output.volume is None:
        if output.result.status != "analysed":
            raise ValueError("no overlay for a not_analysable result (its reason is in the "
                             "JSON and above)")
        raise ValueError("no image (analysis did not load a volume)")
    rgb = render_sagittal_overlay(output.volume, output.labels, output.result)
    Image.fromarray(rgb).save(path)


def detect_modality(path: Path) -> str:
    """CT unless the DICOM input holds MR images and no CT (NIfTI: CT; use --modality MR)."""
    from pydicom import dcmread
    from pydicom.errors import InvalidDicomError

    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    seen: set[str] = set()
    for f in files:
        if f.name.endswith((".nii", ".nii.gz")):
            return "CT"
        try:
            ds = dcmread(f, stop_before_pixels=True, specific_tags=["Modality"])
        except (InvalidDicomError, OSError, ValueError):
            continue
        seen.add(str(ds.get("Modality", "")).upper())
        if "CT" in seen:
            return "CT"
    return "MR" if "MR" in seen else "CT"


class _UsageError(ValueError):
    """The command line cannot be served; the message is printed and the exit status is 2."""


def _make_analyser(modality: str, args: argparse.Namespace) -> Analyser:
    """The analyser for ``modality`` with the command line's rules and progress settings."""
    from osteo_node.pipeline.ct.analyser import CTAnalyser
    from osteo_node.pipeline.registry import analyser_for, supported_modalities
    from osteo_node.pipeline.stages.select import SelectionRules

    progress = None if args.quiet else _progress
    analyser: Analyser | None
    if modality == "CT":
        analyser = CTAnalyser(
            selection_rules=SelectionRules.load(args.rules) if args.rules else None,
            progress=progress,
        )
    elif modality == "MR":
        if args.rules:
            raise _UsageError("--rules holds CT series selection rules; MR selection uses its "
                              "built-in rules (osteo_node.pipeline.mr.select.MRSelectionRules)")
        from osteo_node.pipeline.mr.analyser import MRAnalyser

        analyser = MRAnalyser(progress=progress)
    else:
        analyser = analyser_for(modality)
    if analyser is None:
        raise _UsageError(f"no analyser for modality {modality} "
                          f"(supported: {', '.join(supported_modalities())})")
    return analyser


def _write_files(output: AnalysisOutput, args: argparse.Namespace) -> None:
    """``--seg`` and ``--png``: a file that cannot be written is a warning, not a failure."""
    for flag, target, writer in (("--seg", args.seg, write_seg), ("--png", args.png, write_png)):
        if target is None:
            continue
        try:
            writer(output, target)
            _progress("write", f"{flag} {target}")
        except (ValueError, OSError, RuntimeError) as exc:
            print(f"warning: {flag} not written: {exc}", file=sys.stderr)


def _write_dicom_out(output: AnalysisOutput, args: argparse.Namespace) -> bool:
    """``--dicom-out``: the DICOM objects the node would send; False when they were not written."""
    from osteo_node.config import ConfigError, load_settings

    try:
        results = load_settings(args.config).results if args.config else None
        args.dicom_out.mkdir(parents=True, exist_ok=True)
        written = export_dicom(output, args.dicom_out, results)
        for f in written:
            _progress("write", f"--dicom-out {f}")
        if not written:
            _progress("write", "--dicom-out: nothing to send (not analysable)")
    except (ConfigError, ValueError, OSError) as exc:
        print(f"error: --dicom-out not written: {exc}", file=sys.stderr)
        return False
    return True


def run(args: argparse.Namespace) -> int:
    path: Path = args.path
    if not path.exists():
        print(f"error: {path} does not exist", file=sys.stderr)
        return 2
    modality = args.modality if args.modality != "auto" else detect_modality(path)
    try:
        analyser = _make_analyser(modality, args)
    except _UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not args.quiet:
        _progress("select", f"modality {modality}: analyser {analyser.name}")
    output = analyser.analyse([path])
    result = output.result
    status = 0 if result.status == "analysed" else 3
    _write_files(output, args)
    if args.dicom_out is not None and not _write_dicom_out(output, args):
        status = 1
    text = json.dumps(result.to_json(), indent=2)
    if args.json_out is not None:
        args.json_out.write_text(text + "\n", encoding="utf-8")
    else:
        print(text)
    if result.status != "analysed":
        print(f"not analysable: {result.reason}", file=sys.stderr)
    return status
