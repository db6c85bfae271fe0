"""Measurement geometry parameters shared by the height and trabecular-ROI measurements."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class MeasureParams:
    """Measurement geometry (methodology, not clinical thresholds); see ct_screening.yaml."""

    height_inset_fraction: float = 0.15
    sample_step_mm: float = 0.5
    slab_half_width_mm: float = 2.0
    line_half_width_mm: float = 1.0
    height_gap_bridge_mm: float = 3.0
    stability_tilt_deg: float = 5.0
    stability_shift_mm: float = 2.0
    roi_margin_mm: float = 3.0
    roi_depth_fraction: float = 0.5
    roi_min_margin_mm: float = 1.5
    roi_min_volume_mm3: float = 500.0
    vein_posterior_fraction: float = 0.3
    vein_half_width_fraction: float = 0.35

    @classmethod
    def from_mapping(cls, data: dict[str, Any] | None) -> MeasureParams:
        data = data or {}
        return cls(**{
            k: float(v["value"] if isinstance(v, dict) else v)
            for k, v in data.items() if k in cls.__dataclass_fields__
        })

    @classmethod
    def default(cls) -> MeasureParams:
        from osteo_node.clinical_data import load

        return cls.from_mapping(load("ct_screening").get("measurement"))
