"""The shipped MR model: sha256-verified loading, manifest, ONNX Runtime inference shapes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from structlog.testing import capture_logs

from osteo_node.models.manifest import ModelError, sha256_of
from osteo_node.pipeline.mr.model import BodyModel, default_model_dir


def test_model_loads_with_verified_sha256() -> None:
    model = BodyModel.load()
    manifest = json.loads((default_model_dir() / "model.json").read_text())
    assert sha256_of(default_model_dir() / manifest["file"]) == manifest["sha256"]
    assert model.manifest.sha256 == manifest["sha256"]
    assert model.provider in ("CPUExecutionProvider", "CUDAExecutionProvider")
    info = model.info
    assert (info.name, info.version) == (manifest["name"], manifest["version"])
    assert info.execution_provider == model.provider
    size = (default_model_dir() / manifest["file"]).stat().st_size
    assert size < 10_000_000


def test_opened_by_the_shared_model_runtime() -> None:
    """The MR session comes from osteo_node.models.open_session, like the CT one: the same
    'model.loaded' record (model, version, sha256 prefix, the provider really got, threads)."""
    with capture_logs() as logs:
        model = BodyModel.load(threads=1)
    loaded = [e for e in logs if e["event"] == "model.loaded"]
    assert len(loaded) == 1
    rec = loaded[0]
    assert rec["model"] == model.manifest.name
    assert rec["version"] == model.manifest.version
    assert rec["sha256"] == model.manifest.sha256[:12]
    assert rec["provider"] == model.provider == model._session.get_providers()[0]
    assert rec["threads"] == 1


def test_dynamic_spatial_axes() -> None:
    model = BodyModel.load()
    for shape in ((1, 96, 64), (3, 256, 176)):
        out = model.predict(np.zeros(shape, dtype=np.float32))
        assert out.shape == shape
        assert np.all((out >= 0) & (out <= 1))


def test_tampered_model_is_refused(tmp_path: Path) -> None:
    src = default_model_dir()
    for name in ("model.json", "model.onnx"):
        shutil.copy(src / name, tmp_path / name)
    data = bytearray((tmp_path / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tmp_path / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(ModelError, match="sha256 mismatch"):
        BodyModel.load(tmp_path)


def test_sha256_mismatch_in_manifest_is_refused(tmp_path: Path) -> None:
    shutil.copy(default_model_dir() / "model.onnx", tmp_path / "model.onnx")
    raw = json.loads((default_model_dir() / "model.json").read_text())
    raw["sha256"] = "0" * 64
    (tmp_path / "model.json").write_text(json.dumps(raw))
    with pytest.raises(ModelError, match="sha256 mismatch"):
        BodyModel.load(tmp_path)


def test_missing_model_is_refused(tmp_path: Path) -> None:
    shutil.copy(default_model_dir() / "model.json", tmp_path / "model.json")
    with pytest.raises(ModelError, match="not found"):
        BodyModel.load(tmp_path)
    with pytest.raises(ModelError, match="manifest"):
        BodyModel.load(tmp_path / "nowhere")
