"""ONNX Runtime sessions for the shipped models (CT and MR).

``open_session(onnx_path, sha256, ...)`` verifies the ONNX file's sha256 and opens a session
preferring the CUDA execution provider when the installed onnxruntime offers it
(onnxruntime-gpu), else the CPU provider. The provider the session *really* got
(``session.get_providers()[0]``) is logged and reported in ``ModelInfo``. Every model is opened
through it: ``load_model(model_dir)`` for the CT model (``model.json`` read by
``manifest.load_manifest``), ``osteo_node.pipeline.mr.model.BodyModel.load`` for the MR model
(its own 2D manifest).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import structlog
from numpy.typing import NDArray

from osteo_node.models.manifest import ModelError, ModelManifest, load_manifest, verify_file
from osteo_node.pipeline.results import ModelInfo

log = structlog.get_logger(__name__)

PREFERRED_PROVIDERS = ("CUDAExecutionProvider", "CPUExecutionProvider")


def available_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


@dataclass
class OnnxModel:
    """A verified model with its ONNX Runtime session."""

    manifest: ModelManifest
    session: Any  # onnxruntime.InferenceSession
    provider: str

    @property
    def info(self) -> ModelInfo:
        m = self.manifest
        return ModelInfo(name=m.name, version=m.version, sha256=m.sha256,
                         execution_provider=self.provider)

    def run(self, x: NDArray[np.float32]) -> NDArray[np.float32]:
        """Run on one normalised input ``[1, 1, k, j, i]``; returns logits ``[1, C, k, j, i]``."""
        name = self.session.get_inputs()[0].name
        out = self.session.run(None, {name: np.ascontiguousarray(x, dtype=np.float32)})
        return np.asarray(out[0], dtype=np.float32)


def choose_providers(available: list[str]) -> list[str]:
    chosen = [p for p in PREFERRED_PROVIDERS if p in available]
    if not chosen:
        raise ModelError(f"no usable ONNX Runtime execution provider among {available}")
    return chosen


def open_session(
    onnx_path: Path, sha256: str, *, name: str, version: str, threads: int | None = None
) -> tuple[Any, str]:
    """Verify ``onnx_path`` against ``sha256`` and open an ONNX Runtime session on it.

    Returns the session and the execution provider it really got; raises ModelError on any
    problem (missing file, checksum mismatch, no usable provider, unreadable model).
    """
    import onnxruntime as ort

    verify_file(onnx_path, sha256)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or available_cores()
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    providers = choose_providers(list(ort.get_available_providers()))
    try:
        session = ort.InferenceSession(str(onnx_path), sess_options=opts, providers=providers)
    except Exception as exc:  # onnxruntime raises its own exception types
        raise ModelError(f"ONNX Runtime cannot open {onnx_path}: {exc}") from exc
    provider = str(session.get_providers()[0])
    if provider != providers[0]:
        log.warning("model.provider_fallback", model=name, wanted=providers[0], got=provider)
    log.info("model.loaded", model=name, version=version, sha256=sha256[:12], provider=provider,
             threads=opts.intra_op_num_threads)
    return session, provider


def load_model(model_dir: Path, *, threads: int | None = None) -> OnnxModel:
    """Load ``model_dir/model.json`` + its ONNX file; raises ModelError on any problem."""
    manifest = load_manifest(Path(model_dir) / "model.json")
    session, provider = open_session(manifest.onnx_path, manifest.sha256, name=manifest.name,
                                     version=manifest.version, threads=threads)
    return OnnxModel(manifest=manifest, session=session, provider=provider)
