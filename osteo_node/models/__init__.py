"""Shipped ONNX models: manifest (model.json), checksum verification, ONNX Runtime sessions."""

from __future__ import annotations

from pathlib import Path

from osteo_node.models.manifest import ModelError, ModelManifest, load_manifest, verify_checksum
from osteo_node.models.runtime import OnnxModel, available_cores, load_model
from osteo_node.resources import resource_path

__all__ = [
    "ModelError",
    "ModelManifest",
    "OnnxModel",
    "available_cores",
    "default_ct_model_dir",
    "load_manifest",
    "load_model",
    "verify_checksum",
]


def default_ct_model_dir() -> Path:
    """``$OSTEO_CT_MODEL_DIR`` or the repository's ``ai_models/ct_vertebrae``."""
    return resource_path("ai_models/ct_vertebrae", "OSTEO_CT_MODEL_DIR")
