"""Helpers for CT pipeline tests: real series copied (symlinked) into tmp folders and edited.

Only header edits of REAL slices are made (no synthetic images): duplicated positions, missing
rescale tags, removed slices, crops; everything lives under pytest's tmp_path.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset

from osteo_node.pipeline.ct.analyser import Segmentation
from osteo_node.pipeline.types import Volume

CHEST = "ct/chest_ct_series/dicom"
J2K = "ct/totalseg_example/dicom"


def link_series(src: Path, dst: Path, keep: Callable[[int], bool] = lambda n: True,
                names: Callable[[int, Path], str] | None = None) -> list[Path]:
    """Symlink the files of ``src`` (sorted) into ``dst``; ``keep(n)`` filters by index."""
    dst.mkdir(parents=True, exist_ok=True)
    out = []
    for n, f in enumerate(sorted(p for p in src.iterdir() if p.is_file())):
        if not keep(n):
            continue
        target = dst / (names(n, f) if names else f.name)
        target.symlink_to(f)
        out.append(target)
    return out


def rewrite(path: Path, edit: Callable[[Dataset], None], dst: Path | None = None) -> Path:
    """Replace a (symlinked) file by an edited real copy."""
    ds = pydicom.dcmread(path)
    edit(ds)
    target = dst or path
    if target.is_symlink():
        target.unlink()
    ds.save_as(target, enforce_file_format=True)
    return target


def segment_must_not_run(volume: Volume) -> Segmentation:
    raise AssertionError("segmentation should not be reached for this input")
