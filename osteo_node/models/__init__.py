"""Shipped ONNX models: manifest (model.json), checksum verification, ONNX Runtime sessions.

The CT model is opened with ``load_model``; any model (the MR one too) goes through
``open_session`` (sha256 check, CUDA-else-CPU provider, provider logged).
"""

from __future__ import annotations

from pathlib import Path

from osteo_node.models.manifest import (
    ModelError,
    ModelManifest,
    load_manifest,
    verify_checksum,
    verify_file,
)
from osteo_node.models.runtime import OnnxModel, available_cores, load_model, open_session
from osteo_node.resources import resource_path

__all__ = [
    "ModelError",
    "ModelManifest",
    "OnnxModel",
    "available_cores",
    "default_ct_model_dir",
    "load_manifest",
    "load_model",
    "open_session",
    "verify_checksum",
    "verify_file",
]


def default_ct_model_dir() -> Path:
    """``$OSTEO_CT_MODEL_DIR`` or the repository's ``ai_models/ct_sagittal``."""
    return resource_path("ai_models/ct_sagittal", "OSTEO_CT_MODEL_DIR")
