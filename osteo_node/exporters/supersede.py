"""Superseding the results of an earlier generation of the same series (issue 16, 4).

When more images of a series arrive after it was analysed (an interrupted transfer resumed,
images added), the node analyses the series again: a new *generation*. Its results replace the
earlier ones in PACS in the two ways DICOM and IHE define:

- the new SR lists the earlier SR in its **Predecessor Documents Sequence** (PS3.3 C.17.2,
  "a prior version of this document": viewers show the newest of the chain);
- a **rejection note** (Key Object Selection, document title (113001, DCM, "Rejected for
  Quality Reasons"), IHE RAD Imaging Object Change Management) references every earlier SR,
  SEG, SC and KOS: a PACS that supports IOCM hides them; on one that does not, the note is a
  visible record of which objects are superseded.

Everything here is pure: the worker (:mod:`osteo_node.worker.supersede`) finds the earlier
objects and sends the note where the earlier objects went.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import highdicom as hd
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence

from osteo_node.exporters import codes as codes_mod
from osteo_node.exporters.common import (
    MANUFACTURER,
    PATIENT_ATTRS,
    PATIENT_OPTIONAL,
    STUDY_ATTRS,
    STUDY_OPTIONAL,
    ExportError,
    safe_get,
)
from osteo_node.exporters.uids import UidFactory

REJECTION_SERIES_NUMBER = 9905
REJECTION_DESCRIPTION = "osteo-node superseded results (rejection note)"
#: the image kinds (referenced with the IMAGE value type; the others as COMPOSITE)
IMAGE_KINDS = frozenset({"seg", "sc"})


@dataclass(frozen=True)
class PriorObject:
    """A result object of an earlier generation, as the outbox recorded it."""

    kind: str
    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str


def _reference(p: PriorObject) -> Dataset:
    """A minimal dataset standing for a prior object in highdicom's KOS constructors (only its
    UIDs are written; Rows/Columns only make highdicom pick the IMAGE value type for images)."""
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = p.sop_class_uid, p.sop_instance_uid
    ds.StudyInstanceUID, ds.SeriesInstanceUID = p.study_instance_uid, p.series_instance_uid
    if p.kind in IMAGE_KINDS:
        ds.Rows = ds.Columns = 1
    return ds


def predecessor_sequence(priors: Sequence[PriorObject]) -> DicomSequence:
    """Predecessor Documents Sequence (a Hierarchical SOP Instance Reference Macro) of the
    prior SRs: study -> series -> instances."""
    studies: dict[str, dict[str, list[PriorObject]]] = {}
    for p in priors:
        if p.kind == "sr":
            studies.setdefault(p.study_instance_uid, {}).setdefault(
                p.series_instance_uid, []).append(p)
    items = []
    for study, series in sorted(studies.items()):
        study_item = Dataset()
        study_item.StudyInstanceUID = study
        series_items = []
        for series_uid, objs in sorted(series.items()):
            s = Dataset()
            s.SeriesInstanceUID = series_uid
            refs = []
            for o in sorted(objs, key=lambda o: o.sop_instance_uid):
                r = Dataset()
                r.ReferencedSOPClassUID, r.ReferencedSOPInstanceUID = (o.sop_class_uid,
                                                                       o.sop_instance_uid)
                refs.append(r)
            s.ReferencedSOPSequence = DicomSequence(refs)
            series_items.append(s)
        study_item.ReferencedSeriesSequence = DicomSequence(series_items)
        items.append(study_item)
    return DicomSequence(items)


def with_predecessors(sr: Dataset, priors: Sequence[PriorObject]) -> Dataset:
    """``sr`` with the earlier SRs of the same study as its predecessors (in place)."""
    same_study = [p for p in priors if p.study_instance_uid == sr.StudyInstanceUID]
    seq = predecessor_sequence(same_study)
    if len(seq):
        sr.PredecessorDocumentsSequence = seq
    return sr


@dataclass(frozen=True)
class RejectionNote:
    """IOCM rejection note for the ``rejected`` objects, in the study of ``template`` (a new
    result object whose patient/study attributes are copied). ``uids`` is the new job's
    factory: a re-run of the same job makes the same note."""

    template: Dataset
    rejected: Sequence[PriorObject]
    uids: UidFactory
    reason: str = "superseded by the analysis of the complete series"

    def __post_init__(self) -> None:
        if not self.rejected:
            raise ExportError("a rejection note needs at least one rejected object")
        study = str(self.template.StudyInstanceUID)
        if any(p.study_instance_uid != study for p in self.rejected):
            raise ExportError("a rejection note references objects of its own study only")

    def build(self) -> hd.ko.KeyObjectSelectionDocument:
        book = codes_mod.load()
        refs = [_reference(p) for p in sorted(self.rejected, key=lambda p: p.sop_instance_uid)]
        for ref in refs:  # highdicom inherits patient and study from the evidence
            for kw in (*PATIENT_ATTRS, *PATIENT_OPTIONAL, *STUDY_ATTRS, *STUDY_OPTIONAL):
                value = safe_get(self.template, kw)
                if value is not None:
                    setattr(ref, kw, value)
        content = hd.ko.KeyObjectSelection(
            document_title=book.concept("rejection_title"), referenced_objects=refs,
            description=self.reason[:1024])
        kos = hd.ko.KeyObjectSelectionDocument(
            evidence=refs, content=content,
            series_instance_uid=self.uids.uid("rejection-series"),
            series_number=REJECTION_SERIES_NUMBER,
            sop_instance_uid=self.uids.uid("rejection-instance"), instance_number=1,
            manufacturer=str(safe_get(self.template, "Manufacturer") or MANUFACTURER),
            institution_name=safe_get(self.template, "InstitutionName"))
        kos.SeriesDescription = REJECTION_DESCRIPTION
        for kw in ("ManufacturerModelName", "SoftwareVersions"):
            value = safe_get(self.template, kw)
            if value is not None:
                setattr(kos, kw, value)
        return kos
