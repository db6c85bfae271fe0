"""Recognise the MR weighting of a series from its header (pure function of a pydicom Dataset).

Evidence, in order: diffusion markers (ImageType, SequenceName, description); inversion
recovery (InversionTime, ScanningSequence "IR", Siemens "tir" sequence names, "STIR"/"TIRM" in
the description) split by inversion time into STIR (short TI), T1-weighted IR (intermediate)
and FLAIR (long TI); spin-echo timing (RepetitionTime/EchoTime); finally the words T1/T2/PD in
SeriesDescription/ProtocolName. The cut-offs are the conventional textbook timing ranges for
1.5-3 T, used only to name the contrast (not clinical thresholds).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pydicom.dataset import Dataset

STIR_TI_MS = (80.0, 300.0)
FLAIR_MIN_TI_MS = 1500.0
T2_MIN_TE_MS = 60.0
T2_MIN_TR_MS = 1500.0
T1_MAX_TE_MS = 30.0
T1_MAX_TR_MS = 1000.0
GRE_MAX_TR_MS = 100.0
GRE_T1_MIN_FLIP_DEG = 20.0

_DIFFUSION_TYPES = {"DIFFUSION", "ADC", "TRACEW", "FA", "EXP", "EADC"}


@dataclass(frozen=True)
class SequenceInfo:
    weighting: str  # "T1", "T2", "STIR", "PD", "FLAIR", "DWI", "GRE", "unknown"
    evidence: str


def _float(ds: Dataset, keyword: str) -> float | None:
    value = ds.get(keyword)
    if value is None or str(value).strip() == "":
        return None
    try:
        return float(value if not isinstance(value, list | tuple) else value[0])
    except (TypeError, ValueError):
        return None


def _strs(ds: Dataset, keyword: str) -> list[str]:
    value = ds.get(keyword)
    if value is None:
        return []
    if isinstance(value, str):
        return [value.upper()]
    try:
        return [str(v).upper() for v in value]
    except TypeError:
        return [str(value).upper()]


def _word(text: str, word: str) -> bool:
    return re.search(rf"(?<![a-z0-9]){word}(?![a-z0-9])", text) is not None


@dataclass(frozen=True)
class _Header:
    """The header fields the weighting is read from."""

    desc: str  # SeriesDescription + ProtocolName, lower case
    seq_name: str  # SequenceName, lower case
    scanning: list[str]  # ScanningSequence values, upper case
    image_type: set[str]
    tr: float | None
    te: float | None
    ti: float | None
    flip: float | None

    @classmethod
    def of(cls, ds: Dataset) -> _Header:
        return cls(
            desc=" ".join(
                str(ds.get(k, "") or "") for k in ("SeriesDescription", "ProtocolName")
            ).lower(),
            seq_name=str(ds.get("SequenceName", "") or "").lower(),
            scanning=_strs(ds, "ScanningSequence"),
            image_type=set(_strs(ds, "ImageType")),
            tr=_float(ds, "RepetitionTime"),
            te=_float(ds, "EchoTime"),
            ti=_float(ds, "InversionTime"),
            flip=_float(ds, "FlipAngle"),
        )

    @property
    def timing(self) -> str:
        return ", ".join(
            f"{name} {v:g} ms"
            for name, v in (("TR", self.tr), ("TE", self.te), ("TI", self.ti)) if v is not None
        )


def _diffusion(h: _Header) -> SequenceInfo | None:
    if (
        h.image_type & _DIFFUSION_TYPES
        or re.search(r"ep_b\d|diff", h.seq_name)
        or any(_word(h.desc, w) for w in ("dwi", "adc", "diffusion", "trace"))
    ):
        return SequenceInfo("DWI", "diffusion-weighted (ImageType/SequenceName/description)")
    return None


def _inversion_recovery(h: _Header) -> SequenceInfo | None:
    """STIR by description, else inversion recovery named by its inversion time."""
    timing = h.timing
    ti = h.ti
    is_ir = "IR" in h.scanning or "tir" in h.seq_name or (ti is not None and ti > 0)
    if _word(h.desc, "stir") or _word(h.desc, "tirm"):
        return SequenceInfo("STIR", f"description says STIR/TIRM{'; ' + timing if timing else ''}")
    if not (is_ir and ti is not None and ti > 0):
        return None
    if STIR_TI_MS[0] <= ti <= STIR_TI_MS[1]:
        return SequenceInfo("STIR", f"inversion recovery with short TI ({timing})")
    if ti >= FLAIR_MIN_TI_MS:
        return SequenceInfo("FLAIR", f"inversion recovery with long TI ({timing})")
    return SequenceInfo("T1", f"T1-weighted inversion recovery ({timing})")


def _gradient_echo(h: _Header, tr: float, timing: str) -> SequenceInfo | None:
    if "GR" in h.scanning and "SE" not in h.scanning and tr < GRE_MAX_TR_MS:
        if h.flip is not None and h.flip >= GRE_T1_MIN_FLIP_DEG:
            return SequenceInfo("T1", f"spoiled gradient echo, flip {h.flip:g} deg ({timing})")
        return SequenceInfo("GRE", f"gradient echo, low flip angle ({timing})")
    return None


def _by_timing(h: _Header) -> SequenceInfo | None:
    """Gradient echo, then spin-echo weighting from TR/TE."""
    tr, te, timing = h.tr, h.te, h.timing
    if tr is None or te is None:
        return None
    gre = _gradient_echo(h, tr, timing)
    if gre is not None:
        return gre
    if te >= T2_MIN_TE_MS and tr >= T2_MIN_TR_MS:
        return SequenceInfo("T2", f"long TR, long TE ({timing})")
    if te <= T1_MAX_TE_MS and tr <= T1_MAX_TR_MS:
        return SequenceInfo("T1", f"short TR, short TE ({timing})")
    if tr >= T2_MIN_TR_MS and te <= T1_MAX_TE_MS:
        return SequenceInfo("PD", f"long TR, short TE ({timing})")
    return None


def _by_description(h: _Header) -> SequenceInfo:
    for word, weighting in (("t2", "T2"), ("t1", "T1"), ("pd", "PD"), ("stir", "STIR")):
        if _word(h.desc, word) or re.search(rf"(?<![a-z0-9]){word}[a-z_]", h.desc):
            return SequenceInfo(weighting, f"description says {word.upper()}")
    return SequenceInfo("unknown", f"timing not conclusive ({h.timing or 'no TR/TE/TI'})")


def classify_sequence(ds: Dataset) -> SequenceInfo:
    """The weighting of an MR series and the header evidence for it."""
    h = _Header.of(ds)
    for rule in (_diffusion, _inversion_recovery, _by_timing):
        info = rule(h)
        if info is not None:
            return info
    return _by_description(h)
