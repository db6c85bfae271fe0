"""Storage SOP classes and transfer syntaxes the node accepts as C-STORE SCP."""

from __future__ import annotations

from pydicom.uid import (
    JPEG2000,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)

#: Every transfer syntax offered for every storage SOP class. The dataset is stored as
#: received, so no codec is needed to accept a syntax.
TRANSFER_SYNTAXES: tuple[str, ...] = (
    ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian, JPEGBaseline8Bit, JPEGExtended12Bit, JPEGLossless, JPEGLosslessSV1,
    JPEGLSLossless, JPEGLSNearLossless, JPEG2000Lossless, JPEG2000, RLELossless,
)

SECONDARY_CAPTURE: tuple[str, ...] = (
    "1.2.840.10008.5.1.4.1.1.7",  # Secondary Capture Image Storage
    "1.2.840.10008.5.1.4.1.1.7.1",  # Multi-frame Single Bit SC
    "1.2.840.10008.5.1.4.1.1.7.2",  # Multi-frame Grayscale Byte SC
    "1.2.840.10008.5.1.4.1.1.7.3",  # Multi-frame Grayscale Word SC
    "1.2.840.10008.5.1.4.1.1.7.4",  # Multi-frame True Color SC
)

#: modality -> storage SOP classes offered when that modality is accepted.
BY_MODALITY: dict[str, tuple[str, ...]] = {
    "CT": ("1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.2.1"),  # CT, Enhanced CT
    "MR": ("1.2.840.10008.5.1.4.1.1.4", "1.2.840.10008.5.1.4.1.1.4.1"),  # MR, Enhanced MR
    "CR": ("1.2.840.10008.5.1.4.1.1.1",),
    "DX": ("1.2.840.10008.5.1.4.1.1.1.1", "1.2.840.10008.5.1.4.1.1.1.1.1"),  # pres., processing
    "OT": SECONDARY_CAPTURE,
    "SEG": ("1.2.840.10008.5.1.4.1.1.66.4",),
    "SR": ("1.2.840.10008.5.1.4.1.1.88.11", "1.2.840.10008.5.1.4.1.1.88.22",
           "1.2.840.10008.5.1.4.1.1.88.33", "1.2.840.10008.5.1.4.1.1.88.34"),
    "KO": ("1.2.840.10008.5.1.4.1.1.88.59",),
}

#: SOP classes whose instances carry no pixel data (documents).
NON_IMAGE: frozenset[str] = frozenset({*BY_MODALITY["SR"], *BY_MODALITY["KO"]})


def storage_sop_classes(modalities: tuple[str, ...]) -> tuple[str, ...]:
    """Storage SOP classes offered for ``modalities`` (Secondary Capture always)."""
    out: list[str] = []
    for uid in (*(u for m in modalities for u in BY_MODALITY.get(m, ())), *SECONDARY_CAPTURE):
        if uid not in out:
            out.append(uid)
    return tuple(out)
