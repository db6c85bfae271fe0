"""Rib heads are attributed to the vertebra whose body spans their height (pure logic), and on
real CT the rib-bearing vertebrae are found."""

from __future__ import annotations

from osteo_node.pipeline.ct.ribs import RibEvidence, evidence_by_level


def test_a_rib_head_at_the_disc_belongs_to_the_vertebra_below_it() -> None:
    """Bodies 1 (caudal, k 0-20) and 2 (k 20-40), upper bounds extended by 3 k above the
    upper disc as the caller does: ribs 2-10 sit on the disc above their own vertebra."""
    intervals = {1: (-1.0, 23.0), 2: (20.0, 43.0)}
    ev = evidence_by_level([(21.5, 30.0, 2), (21.0, -30.0, 2)], intervals)
    assert ev[1] == RibEvidence(1, 1, touching_above=2) and ev[2] == RibEvidence(0, 0)
    # a head in the middle of the upper body is its own rib
    assert evidence_by_level([(30.0, 25.0, 1)], intervals)[2] == RibEvidence(1, 0)


def test_the_twelfth_rib_passing_l1_is_not_a_rib_of_l1() -> None:
    """The head of the twelfth rib lies on T12's body; the rib's shaft passes the first lumbar
    transverse process lower down but its head is what counts."""
    intervals = {1: (-1.0, 23.0), 2: (20.0, 43.0)}  # 1 = L1, 2 = T12
    ev = evidence_by_level([(32.0, 28.0, 1), (33.0, -28.0, 1)], intervals)
    assert not ev[1].bears_ribs and ev[2].bears_ribs


def test_heads_outside_every_body_go_to_the_nearest_vertebra() -> None:
    ev = evidence_by_level([(50.0, 20.0, 2)], {1: (-1.0, 23.0), 2: (20.0, 43.0)})
    assert ev[2] == RibEvidence(1, 0)


def test_a_head_at_the_disc_touching_the_vertebra_above_is_recorded_as_such() -> None:
    intervals = {1: (-1.0, 23.0), 2: (20.0, 43.0)}
    ev = evidence_by_level([(21.5, 30.0, 2), (21.0, -30.0, 2)], intervals)
    assert ev[1].only_at_disc_above and not ev[2].bears_ribs
    ev = evidence_by_level([(10.0, 30.0, 1), (21.0, -30.0, 2)], intervals)
    assert ev[1].bears_ribs and not ev[1].only_at_disc_above  # one head on its own body
