"""``osteo-node evaluate-mr`` on a held-out real case (scores written as JSON)."""

from __future__ import annotations

import json
from pathlib import Path

from osteo_node.cli.main import main


def test_evaluate_mr_cli_scores_a_validation_case(shared_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "scores.json"
    rc = main(["evaluate-mr", "--data", str(shared_data), "--cases", "vb3_25", "--thick", "4",
               "--json", str(out)])
    assert rc == 0
    doc = json.loads(out.read_text())
    summary = doc["summary"]
    assert summary["cases"] == 1
    assert summary["bodies"] == 5
    assert summary["found_fraction"] == 1.0
    assert summary["mean_body_dice"] >= 0.88
    assert summary["thick_mm"] == 4
    bodies = doc["cases"][0]["bodies"]
    assert [b["reference_level"] for b in bodies] == ["L1", "L2", "L3", "L4", "L5"]
    assert all(set(b["height_errors_mm"]) == {"anterior", "middle", "posterior"} for b in bodies)


def test_evaluate_mr_cli_missing_data_is_an_error(tmp_path: Path) -> None:
    assert main(["evaluate-mr", "--data", str(tmp_path)]) == 2
