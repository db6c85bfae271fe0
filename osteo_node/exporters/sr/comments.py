"""Free-text comments of the SR: the decision-support disclaimer, the level caveat and one line
per pathological-fracture red flag."""

from __future__ import annotations

from collections.abc import Sequence

import highdicom as hd
from pydicom.sequence import Sequence as DicomSequence

from osteo_node.exporters.codes import CodeBook
from osteo_node.pipeline.results import AnalysisResult


def red_flag_reasons(result: AnalysisResult) -> list[str]:
    """Pathological-fracture red flags of the patient assessment built from this result (the
    same assessment the FLS worklist uses; the node has no clinical record of its own)."""
    from osteo_node.clinical.assessment import build_assessment

    if result.status != "analysed":
        return []
    return [f.reason for f in build_assessment(None, None, result.to_json()).red_flags]


def disclaimer_container(text: str, book: CodeBook, red_flags: Sequence[str] = (),
                         caveat: str | None = None) -> hd.sr.ContainerContentItem:
    """Free-text comments: the decision-support disclaimer, the level caveat (uncertain level
    names), then one line per red flag."""
    from osteo_node.clinical.red_flags import action

    container = hd.sr.ContainerContentItem(
        name=book.concept("qualitative_evaluations"),
        relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
    )
    lines = [text, *([caveat] if caveat else []),
             *(f"Red flag: {r} - {action()}." for r in red_flags)]
    container.ContentSequence = DicomSequence([hd.sr.TextContentItem(
        name=book.concept("comment"), value=line[:1024],
        relationship_type=hd.sr.RelationshipTypeValues.CONTAINS) for line in lines])
    return container
