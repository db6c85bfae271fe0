"""Guessed level names are not presented as fact in the analysis JSON, the SC, the KOS and the SR.

- The rule: one threshold in clinical_data/ct_screening.yaml against the confidences that
  pipeline/ct/levels.py gives (anchored names vs transitional anatomy vs no anchor).
- The REAL CT analyser on the 20 real CT slices (reference labels injected as the segmentation:
  a fake for the model, which this test is not about) with the confidence levels.py gives when
  no anatomical anchor is in view (CONF_GUESS_RIBS: the lowest rib-bearing vertebra assumed to
  be T12, "levels are a guess") and with an anchored one (CONF_AGREE): JSON, SR (dciodvfy,
  highdicom round trip), SC pixels.
- The KOS needs a flagged result: the exporters' fixture result (real images, invented grades)
  with the same two confidences, level_uncertain decided by the same rule.
"""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest

from osteo_node.clinical_data import load
from osteo_node.exporters.common import LEVEL_CAVEAT
from osteo_node.exporters.kos import KeyImagesKOS
from osteo_node.exporters.publish import build_objects, write_objects
from osteo_node.exporters.sr import read_report
from osteo_node.pipeline.ct import level_names as lv
from osteo_node.pipeline.results import AnalysisOutput, ModelInfo
from osteo_node.pipeline.stages.grade import GradingRules, level_uncertain
from osteo_node.pipeline.types import LabelVolume, Volume
from osteo_node.render.sagittal import CAVEAT_COLOUR
from tests.exporters.conftest import TOTALSEG_LEVELS, _fill_uids, labels_on_grid
from tests.render.text_pixels import find_text

RULES = GradingRules.default()


def with_level_confidence(output: AnalysisOutput, confidence: float) -> AnalysisOutput:
    """The output with every level named at ``confidence``, uncertainty by THE rule."""
    r = output.result
    unsure = level_uncertain(confidence, RULES)
    vertebrae = [dataclasses.replace(v, level_confidence=confidence, level_uncertain=unsure)
                 for v in r.vertebrae]
    assert r.findings is not None
    findings = dataclasses.replace(r.findings, density_level_uncertain=unsure)
    return AnalysisOutput(dataclasses.replace(r, vertebrae=vertebrae, findings=findings),
                          output.volume, output.labels)


# ---------------------------------------------------------------- the rule


def test_threshold_is_data_and_separates_anchored_from_guessed_names() -> None:
    q = load("ct_screening")["quality"]["min_level_confidence"]
    assert RULES.min_level_confidence == q["value"] and "levels.py" in q["note"]
    anchored = (lv.CONF_AGREE, lv.CONF_RIB_ONLY, lv.CONF_SACRUM_ONLY, lv.CONF_T1_ONLY)
    doubtful = (lv.CONF_TRANSITIONAL, lv.CONF_GUESS_RIBS, lv.CONF_GUESS_NONE, lv.CONF_FLOOR)
    assert not any(level_uncertain(c, RULES) for c in anchored)
    assert all(level_uncertain(c, RULES) for c in doubtful)
    # real assignments: no anchor -> every name uncertain; sacrum + last rib agree -> none;
    # transitional anatomy (6 rib-free vertebrae above the sacrum) -> every name uncertain
    guess = lv.assign_levels([False] * 4, sacrum=False)
    assert all(level_uncertain(c, RULES) for c in guess.confidence)
    agree = lv.assign_levels([True, True, False, False, False, False, False], sacrum=True)
    assert agree.anchor == "sacrum+rib" and not any(level_uncertain(c, RULES)
                                                    for c in agree.confidence)
    transitional = lv.assign_levels([True, *[False] * 6], sacrum=True)
    assert "transitional" in transitional.notes[0]
    assert all(level_uncertain(c, RULES) for c in transitional.confidence)


# ---------------------------------------------------------------- real analyser


def _analyse(shared_data: Path, tmp: Path, confidence: float) -> AnalysisOutput:
    import osteo_node.pipeline.ct.analyser as analyser_mod

    base = shared_data / "ct" / "totalseg_example"
    paths = _fill_uids(base / "dicom", tmp)

    def reference_segmentation(volume: Volume) -> analyser_mod.Segmentation:
        lab = labels_on_grid(base / "dicom_seg_reference.nii.gz", volume)
        arr = np.zeros_like(lab.array)
        verse = {"T11": 18, "T12": 19}
        for level, ts_value in TOTALSEG_LEVELS.items():
            arr[lab.array == ts_value] = verse[level]
        labels = LabelVolume(arr, volume.geometry, verse, {k: confidence for k in verse})
        return analyser_mod.Segmentation(labels, arr.copy(), ModelInfo(
            "reference-labels", "test", "0" * 64, "none"))

    out = analyser_mod.CTAnalyser(reference_segmentation).analyse(paths)
    assert out.result.status == "analysed", out.result.reason
    return out


@pytest.fixture(scope="module")
def guessed(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> AnalysisOutput:
    return _analyse(shared_data, tmp_path_factory.mktemp("guessed"), lv.CONF_GUESS_RIBS)


@pytest.fixture(scope="module")
def anchored(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> AnalysisOutput:
    return _analyse(shared_data, tmp_path_factory.mktemp("anchored"), lv.CONF_AGREE)


@pytest.mark.shared_data
def test_analysis_json_marks_guessed_levels(guessed: AnalysisOutput,
                                            anchored: AnalysisOutput) -> None:
    js = guessed.result.to_json()
    assert [(v["level"], v["level_uncertain"]) for v in js["vertebrae"]] == [
        ("T11", True), ("T12", True)]
    for v in js["vertebrae"]:
        assert any(n.startswith("level uncertain") for n in v["notes"]), v["notes"]
    f = js["findings"]
    assert f["density_level"] == "T12" and f["density_level_uncertain"] is True
    assert "level uncertain: T11, T12" in " ".join(js["warnings"])
    assert any(w.startswith("density level uncertain: the vertebra measured as T12")
               for w in js["warnings"])

    js = anchored.result.to_json()
    assert [v["level_uncertain"] for v in js["vertebrae"]] == [False, False]
    assert js["findings"]["density_level_uncertain"] is False
    text = " ".join(js["warnings"] + [n for v in js["vertebrae"] for n in v["notes"]])
    assert "uncertain" not in text.replace("body outline uncertain", "")


def _objects(output: AnalysisOutput, tmp: Path, key: str) -> dict[str, Path]:
    objs = build_objects(output, uid_root=None, job_key=key)
    return {p.name.split("_")[0]: p for p in write_objects(objs, tmp)}


def _dciodvfy_errors(path: Path) -> list[str]:
    exe = shutil.which("dciodvfy")
    if exe is None:
        return []
    proc = subprocess.run([exe, str(path)], capture_output=True, text=True, timeout=120,
                          check=False)
    return [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.startswith("Error")]


@pytest.mark.shared_data
def test_sr_carries_level_uncertainty(guessed: AnalysisOutput, anchored: AnalysisOutput,
                                      tmp_path: Path) -> None:
    paths = _objects(guessed, tmp_path / "g", "level-guessed")
    ds = pydicom.dcmread(paths["sr"])
    assert not _dciodvfy_errors(paths["sr"])
    parsed = read_report(ds)  # highdicom Comprehensive3DSR.from_dataset round trip
    assert {k: p.level_uncertain for k, p in parsed.vertebrae.items()} == {
        "T11": True, "T12": True}
    assert sorted(parsed.vertebrae) == ["T11", "T12"]  # tracking identifiers keep the names
    assert parsed.density_level == "T12" and parsed.density_level_uncertain is True
    assert parsed.disclaimer is not None and parsed.disclaimer.startswith("Decision support")
    caveats = [c for c in parsed.comments if c.startswith(LEVEL_CAVEAT)]
    assert caveats == [f"{LEVEL_CAVEAT} (T11, T12)"]
    scheme = ds.CodingSchemeIdentificationSequence[0].CodingSchemeDesignator
    assert scheme == "99OSTEO"

    paths = _objects(anchored, tmp_path / "a", "level-anchored")
    parsed = read_report(pydicom.dcmread(paths["sr"]))
    assert {k: p.level_uncertain for k, p in parsed.vertebrae.items()} == {
        "T11": False, "T12": False}
    assert parsed.density_level_uncertain is False
    assert not [c for c in parsed.comments if "uncertain" in c]


@pytest.mark.shared_data
def test_sc_pixels_carry_level_uncertainty(guessed: AnalysisOutput, anchored: AnalysisOutput,
                                           tmp_path: Path, artifacts_dir: Path) -> None:
    from PIL import Image

    title = LEVEL_CAVEAT.split(":")[0]
    for name, output in (("guessed", guessed), ("anchored", anchored)):
        paths = _objects(output, tmp_path / name, f"level-{name}")
        assert not _dciodvfy_errors(paths["sc"])
        rgb = pydicom.dcmread(paths["sc"]).pixel_array
        Image.fromarray(rgb).save(artifacts_dir / f"sc_ct20_levels_{name}.png")
        f = output.result.findings
        assert f is not None and f.l1_hu is not None
        footer = f"{'T12?' if name == 'guessed' else 'T12'} {f.l1_hu:.0f} HU"
        other = f"{'T12' if name == 'guessed' else 'T12?'} {f.l1_hu:.0f} HU"
        assert find_text(rgb, footer, 14, (255, 255, 255)), footer
        assert not find_text(rgb, other, 14, (255, 255, 255)), other
        caveat = find_text(rgb, title, 14, CAVEAT_COLOUR)
        assert len(caveat) == (1 if name == "guessed" else 0)


@pytest.mark.shared_data
def test_kos_description(ct20_output: AnalysisOutput) -> None:
    from osteo_node.exporters.common import ExportSettings
    from osteo_node.exporters.uids import UidFactory

    assert ct20_output.volume is not None
    settings = ExportSettings(uids=UidFactory("kos-level-test", None))
    guessed = with_level_confidence(ct20_output, lv.CONF_GUESS_RIBS)
    kos = KeyImagesKOS(guessed.result, ct20_output.volume, settings).build()
    text = _kos_description(kos)
    assert text.startswith("T12? Genant grade 2; osteoporosis suspected (T12? "), text
    assert f"{LEVEL_CAVEAT} (T11, T12)" in text and "Decision support only" in text

    anchored = with_level_confidence(ct20_output, lv.CONF_AGREE)
    text = _kos_description(KeyImagesKOS(anchored.result, ct20_output.volume, settings).build())
    assert text.startswith("T12 Genant grade 2; osteoporosis suspected (T12 "), text
    assert "?" not in text and "uncertain" not in text


def _kos_description(kos: pydicom.Dataset) -> str:
    texts = [str(item.TextValue) for item in kos.ContentSequence
             if getattr(item, "ValueType", "") == "TEXT"]
    assert len(texts) == 1
    return texts[0]
