"""The shipped CT model loads only with a matching sha256 and reports its real provider."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from osteo_node.models import (
    ModelError,
    default_ct_model_dir,
    load_manifest,
    load_model,
    open_session,
    verify_checksum,
)
from osteo_node.models.manifest import sha256_of
from osteo_node.models.runtime import choose_providers

MODEL_DIR = default_ct_model_dir()


@pytest.fixture()
def model_copy(tmp_path: Path) -> Path:
    dst = tmp_path / "ct_sagittal"
    dst.mkdir()
    for name in ("model.json", "model.onnx"):
        shutil.copy(MODEL_DIR / name, dst / name)
    return dst


def test_manifest_describes_the_shipped_file() -> None:
    m = load_manifest(MODEL_DIR / "model.json")
    assert m.sha256 == sha256_of(m.onnx_path)
    assert m.spacing_mm > 0
    assert m.labels[0] == "background"
    assert {"vertebral_body", "posterior_elements", "intervertebral_disc", "sacrum"} <= set(
        m.labels.values()
    )
    assert m.onnx_path.stat().st_size < 10_000_000  # "a few MB"
    verify_checksum(m)


def test_load_reports_the_provider_the_session_really_got() -> None:
    model = load_model(MODEL_DIR, threads=1)
    assert model.provider == model.session.get_providers()[0]
    assert model.provider in ort.get_available_providers()
    info = model.info
    assert info.execution_provider == model.provider
    assert info.sha256 == sha256_of(model.manifest.onnx_path)
    assert info.name and info.version


def test_inference_shape_and_dynamic_axes() -> None:
    """The sagittal model takes a batch of planes [n, 3, rows, columns] of any size (multiples
    of the divisor)."""
    model = load_model(MODEL_DIR, threads=1)
    assert len(model.manifest.planes_mm) == 3 and len(model.manifest.patch_size) == 2
    for shape in ((1, 3, 24, 96), (3, 3, 200, 40)):
        x = np.full(shape, -1.0, dtype=np.float32)
        y = model.run(x)
        assert y.shape == (shape[0], len(model.manifest.labels), *shape[2:])
        assert np.isfinite(y).all()


def test_sha256_mismatch_in_manifest_is_refused(model_copy: Path) -> None:
    raw = json.loads((model_copy / "model.json").read_text())
    raw["sha256"] = "0" * 64
    (model_copy / "model.json").write_text(json.dumps(raw))
    with pytest.raises(ModelError, match="sha256 mismatch"):
        load_model(model_copy)


def test_modified_model_file_is_refused(model_copy: Path) -> None:
    data = bytearray((model_copy / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte in the weights
    (model_copy / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(ModelError, match="sha256 mismatch"):
        load_model(model_copy)


def test_missing_files_give_clear_errors(model_copy: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="manifest not found"):
        load_model(tmp_path / "nowhere")
    (model_copy / "model.onnx").unlink()
    with pytest.raises(ModelError, match="model file not found"):
        load_model(model_copy)


def test_bad_manifest_is_refused(model_copy: Path) -> None:
    (model_copy / "model.json").write_text("{not json")
    with pytest.raises(ModelError, match="unreadable"):
        load_model(model_copy)
    (model_copy / "model.json").write_text(json.dumps({"name": "x"}))
    with pytest.raises(ModelError, match="missing"):
        load_model(model_copy)


def test_open_session_verifies_before_opening(model_copy: Path) -> None:
    """The one loader every model goes through (CT via load_model, MR via BodyModel.load)."""
    m = load_manifest(model_copy / "model.json")
    session, provider = open_session(m.onnx_path, m.sha256, name=m.name, version=m.version,
                                     threads=1)
    assert provider == session.get_providers()[0]
    with pytest.raises(ModelError, match="sha256 mismatch"):
        open_session(m.onnx_path, "f" * 64, name=m.name, version=m.version)
    with pytest.raises(ModelError, match="model file not found"):
        open_session(model_copy / "absent.onnx", m.sha256, name=m.name, version=m.version)


def test_provider_preference() -> None:
    assert choose_providers(["CPUExecutionProvider", "CUDAExecutionProvider"]) == [
        "CUDAExecutionProvider",
        "CPUExecutionProvider",
    ]
    assert choose_providers(["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    with pytest.raises(ModelError):
        choose_providers(["SomethingElse"])
