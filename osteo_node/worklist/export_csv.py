"""CSV export of the FLS worklist (one line per row, all columns, UTF-8, RFC 4180 quoting)."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from osteo_node.worklist.store import FIELDS, WorklistRow

COLUMNS = FIELDS
# Free-text columns that may carry text from DICOM headers or users: a leading = + - @ TAB CR
# would be run as a formula by spreadsheet programs (CSV injection); such cells are written
# with a leading apostrophe, which parse_csv removes again.
TEXT_COLUMNS = frozenset({"patient_id", "patient_name", "accession_number", "findings_summary",
                          "status_changed_by", "status_note", "vcf_levels"})
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _cell(column: str, value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value)
    if column in TEXT_COLUMNS and (text.startswith(FORMULA_START) or text.startswith("'")):
        return "'" + text
    return text


def to_csv(rows: Sequence[WorklistRow]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(COLUMNS)
    for row in rows:
        writer.writerow([_cell(c, getattr(row, c)) for c in COLUMNS])
    return buf.getvalue()


#: Columns whose empty cell is the empty string (every other column: None).
_EMPTY_IS_TEXT = frozenset({"patient_id", "patient_name", "patient_birth_date", "patient_sex",
                            "study_date", "accession_number", "vcf_levels", "findings_summary",
                            "red_flags", "modality"})


def _boolean(text: str) -> bool:
    return {"true": True, "false": False}[text]


#: How a non-empty cell becomes the column's value (columns not listed stay text).
_CONVERTERS: dict[str, Callable[[str], Any]] = {
    "id": int,
    "max_genant_grade": int,
    "density_hu": float,
    "osteoporosis_suspected": _boolean,
    "level_uncertain": _boolean,
    "created_at": datetime.fromisoformat,
    "updated_at": datetime.fromisoformat,
    "status_changed_at": datetime.fromisoformat,
}


def _parse(column: str, text: str) -> Any:
    if column in TEXT_COLUMNS and text.startswith("'"):
        return text[1:]
    if text == "" and column not in _EMPTY_IS_TEXT:
        return None
    convert = _CONVERTERS.get(column)
    return text if convert is None else convert(text)


def parse_csv(text: str) -> list[WorklistRow]:
    """Read a CSV written by :func:`to_csv` back into rows (round trip)."""
    reader = csv.reader(io.StringIO(text))
    header = next(reader)
    if tuple(header) != COLUMNS:
        raise ValueError(f"unexpected CSV columns {header}")
    return [WorklistRow(**{c: _parse(c, v) for c, v in zip(COLUMNS, line, strict=True)})
            for line in reader]
