"""MR bodies go through the shared CT grading, also with relative (unnamed) labels."""

from __future__ import annotations

from osteo_node.pipeline.mr.analyser import grade_bodies
from osteo_node.pipeline.results import Heights
from osteo_node.pipeline.stages.grade import GradingRules

NORMAL = Heights(27.0, 26.0, 27.5)
WEDGE = Heights(17.0, 22.0, 27.0)  # anterior 37 % lower than posterior: Genant 2


def test_named_and_relative_labels_grade_the_same() -> None:
    rules = GradingRules.default()
    heights = [NORMAL, NORMAL, WEDGE, NORMAL, None]
    named = grade_bodies(["L1", "L2", "L3", "L4", "L5"], heights, rules)
    relative = grade_bodies(["V1", "V2", "V3", "V4", "V5"], heights, rules)
    assert [g.genant_grade for g in named] == [g.genant_grade for g in relative]
    assert named[2].morphology == "wedge"
    assert named[2].genant_grade == 2
    assert named[0].genant_grade == 0
    assert named[4].genant_grade is None  # not measurable (e.g. cut by the field of view)
