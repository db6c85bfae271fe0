"""The FLS worklist row, its CSV and its FHIR export say when a level name is a guess.

Result: the exporters' fixture (real CT slices, invented grades: T12 Genant 2, osteoporosis
suspected at T12) with every level named at the confidence levels.py gives when no anchor is
in view, or at an anchored one; level_uncertain decided by the one rule (grade.level_uncertain).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Column, Engine, Integer, MetaData, String, Table, insert, inspect

from osteo_node.exporters.common import LEVEL_CAVEAT
from osteo_node.pipeline.ct import level_names as lv
from osteo_node.pipeline.results import AnalysisOutput
from osteo_node.store.db import make_engine
from osteo_node.store.schema import SchemaError, upgrade
from osteo_node.worklist import export_csv, fhir, store
from tests.exporters.test_level_uncertain import with_level_confidence

pytestmark = pytest.mark.shared_data


@pytest.fixture()
def engine(tmp_path: Path) -> Iterator[Engine]:
    e = make_engine(f"sqlite:///{tmp_path / 'node.db'}")
    upgrade(e)
    yield e
    e.dispose()


def _row(engine: Engine, output: AnalysisOutput) -> store.WorklistRow:
    row_id = store.add_from_result(engine, output)
    assert row_id is not None
    (row,) = store.list_rows(engine)
    return row


def _csv_record(row: store.WorklistRow) -> dict[str, str]:
    text = export_csv.to_csv([row])
    assert export_csv.parse_csv(text) == [row]  # round trip
    (record,) = csv.DictReader(io.StringIO(text))
    return record


def _observations(row: store.WorklistRow) -> dict[str, dict[str, Any]]:
    bundle = json.loads(fhir.bundle_json([row], patient_system="urn:oid:1.2.826.0.1.3680043.9"))
    fhir.parse_bundle(json.dumps(bundle))  # validates
    obs = {}
    for e in bundle["entry"]:
        res = e["resource"]
        if res["resourceType"] == "Observation":
            obs[res["code"]["coding"][0]["code"]] = res
        elif res["resourceType"] == "DiagnosticReport":
            obs["report"] = res
    return obs


def test_guessed_levels_on_row_csv_and_fhir(engine: Engine, ct20_output: AnalysisOutput) -> None:
    row = _row(engine, with_level_confidence(ct20_output, lv.CONF_GUESS_RIBS))
    assert row.level_uncertain is True
    assert row.findings_summary.startswith(
        "vertebral deformity T12? grade 2 wedge; osteoporosis suspected (T12? ")
    assert f"{LEVEL_CAVEAT} (T11, T12)" in row.findings_summary
    assert [v["level_uncertain"] for v in row.vertebrae] == [True, True]
    record = _csv_record(row)
    assert record["level_uncertain"] == "true" and record["density_level"] == "T12"
    assert LEVEL_CAVEAT in record["findings_summary"]
    obs = _observations(row)
    density = obs["112031"]
    assert density["bodySite"]["text"] == "T12? (level uncertain)"
    assert density["bodySite"]["coding"][0]["code"] == "23215003"  # still coded as T12
    assert f"{LEVEL_CAVEAT} (T12?)" in [n["text"] for n in density["note"]]
    assert obs["GENANT"]["bodySite"]["text"] == "T12? (level uncertain)"
    assert LEVEL_CAVEAT in obs["report"]["conclusion"]


def test_anchored_levels_without_caveat(engine: Engine, ct20_output: AnalysisOutput) -> None:
    row = _row(engine, with_level_confidence(ct20_output, lv.CONF_AGREE))
    assert row.level_uncertain is False
    assert "?" not in row.findings_summary and "uncertain" not in row.findings_summary
    assert row.findings_summary.startswith(
        "vertebral deformity T12 grade 2 wedge; osteoporosis suspected (T12 ")
    record = _csv_record(row)
    assert record["level_uncertain"] == "false"
    obs = _observations(row)
    assert obs["112031"]["bodySite"]["text"] == "T12"
    assert not [n for n in obs["112031"]["note"] if "uncertain" in n["text"]]
    assert "uncertain" not in obs["report"]["conclusion"]


def test_not_assessed_is_empty_not_false(engine: Engine, ct20_output: AnalysisOutput) -> None:
    # the hand-written fixture result does not assess level names (like MR results)
    row = _row(engine, ct20_output)
    assert row.level_uncertain is None
    assert _csv_record(row)["level_uncertain"] == ""


def test_existing_table_gets_the_new_column(tmp_path: Path) -> None:
    """A worklist table made before level_uncertain existed is brought up to date by the schema
    step (adopting a database made before migrations) and its rows read back as not
    assessed."""
    e = make_engine(f"sqlite:///{tmp_path / 'old.db'}")
    old = MetaData()
    legacy = Table(store.fls_worklist.name, old, *(
        Column(c.name, c.type, primary_key=c.primary_key, nullable=c.nullable,
               default=c.default.arg if c.default is not None else None)  # type: ignore[attr-defined]
        for c in store.fls_worklist.columns if c.name != "level_uncertain"))
    old.create_all(e)
    now = datetime.now(UTC)
    with e.begin() as conn:
        conn.execute(insert(legacy).values(study_instance_uid="1.2.3", series_instance_uid="1.2.4",
                                           trigger="positive", created_at=now, updated_at=now))
    assert "level_uncertain" not in {c["name"] for c in inspect(e).get_columns(legacy.name)}
    assert upgrade(e).adopted
    assert "level_uncertain" in {c["name"] for c in inspect(e).get_columns(legacy.name)}
    assert not upgrade(e).adopted  # once
    (row,) = store.list_rows(e)
    assert row.series_instance_uid == "1.2.4" and row.level_uncertain is None
    e.dispose()


def test_incompatible_table_is_refused(tmp_path: Path) -> None:
    e = make_engine(f"sqlite:///{tmp_path / 'odd.db'}")
    Table(store.fls_worklist.name, MetaData(), Column("id", Integer, primary_key=True),
          Column("note", String(10))).create(e)
    with pytest.raises(SchemaError, match="required columns"):
        upgrade(e)
    e.dispose()

