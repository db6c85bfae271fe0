"""The SR's regions and lines can be drawn where the numbers came from (issue 17, point 1).

The trabecular ROI is a closed SCOORD polyline on the source slice of the ROI's largest section,
each height a SCOORD3D polyline between its endplates. Read back from the written SR (through
highdicom) and drawn on the source image grid, the ROI coincides with the ROI the HU were taken
from; the lines are where the result says and as long as the reported heights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from scipy import ndimage

from osteo_node.exporters.publish import build_objects
from osteo_node.exporters.sr.parse import read_report
from osteo_node.pipeline.results import AnalysisOutput
from osteo_node.pipeline.stages.roi_outline import fill_outline, pixel_outline

pytestmark = pytest.mark.shared_data


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / (a.sum() + b.sum()))


def test_roi_region_and_height_lines_read_back_from_the_sr(ct20_output: AnalysisOutput,
                                                           tmp_path: Path) -> None:
    objects = build_objects(ct20_output, uid_root=None, job_key="regions")
    sr = next(o.dataset for o in objects if o.kind == "sr")
    path = tmp_path / "sr.dcm"
    sr.save_as(path)
    parsed = read_report(pydicom.dcmread(path))
    volume, labels = ct20_output.volume, ct20_output.labels
    assert volume is not None and labels is not None
    uid_to_k = {s.sop_instance_uid: k for k, s in enumerate(volume.sources)}
    result = {v.level: v for v in ct20_output.result.vertebrae}
    for level, pv in parsed.vertebrae.items():
        v = result[level]
        # the ROI the fixture's HU come from: the label eroded by 3 voxels
        roi = ndimage.binary_erosion(labels.array == labels.levels[level], iterations=3)
        assert pv.roi_region is not None, level
        sop_uid, points = pv.roi_region
        k = uid_to_k[sop_uid]
        assert k == int(np.argmax(roi.sum(axis=(1, 2))))  # the ROI's largest section
        assert np.allclose(points[0], points[-1])  # closed
        drawn = fill_outline([(float(x), float(y)) for x, y in points[:-1]], roi.shape[1:])
        assert _dice(drawn, roi[k]) >= 0.95, (level, _dice(drawn, roi[k]))
        assert pv.values["hu_mean"] == pytest.approx(v.trabecular_hu.mean)  # type: ignore[union-attr]
        # the lines: where the result says, as long as the reported heights
        assert v.heights_mm is not None
        assert set(pv.height_lines) == {ln.name for ln in v.height_lines} == {
            "anterior", "middle", "posterior"}
        for ln in v.height_lines:
            got = np.asarray(pv.height_lines[ln.name], dtype=np.float64)
            assert np.allclose(got, [ln.top_mm, ln.bottom_mm], atol=1e-3)
            length = float(np.linalg.norm(got[0] - got[1]))
            assert length == pytest.approx(getattr(v.heights_mm, ln.name), abs=0.01)
            assert pv.values[f"{ln.name}_height"] == pytest.approx(getattr(v.heights_mm, ln.name))


def test_pixel_outline_encloses_exactly_the_pixels() -> None:
    """The outline of real-looking regions (random blobs, holes, parts touching at a corner)
    filled again gives the region back (holes filled, corner contacts joined)."""
    rng = np.random.default_rng(7)
    for _ in range(100):
        m = ndimage.binary_opening(rng.random((30, 40)) > 0.45)
        if not m.any():
            continue
        lab, _ = ndimage.label(m)
        sizes = np.bincount(lab.ravel())
        sizes[0] = 0
        region = ndimage.binary_fill_holes(lab == sizes.argmax())
        drawn = fill_outline([(float(c), float(r)) for c, r in pixel_outline(m)], m.shape)
        assert (drawn >= region).all()  # every pixel of the region inside
        assert _dice(drawn, region) >= 0.97
    square = np.zeros((6, 6), dtype=bool)
    square[1:4, 2:5] = True
    assert pixel_outline(square) == [(2, 1), (5, 1), (5, 4), (2, 4)]
