"""Level naming from anatomical anchors (pure logic: rib flags + sacrum, cranial -> caudal)."""

from __future__ import annotations

from osteo_node.pipeline.ct.level_names import (
    VERSE_VALUES,
    BodyInstance,
    assign_levels,
    is_c2,
    rib_flags,
)


def test_verse_numbering() -> None:
    assert VERSE_VALUES["C1"] == 1
    assert VERSE_VALUES["C7"] == 7
    assert VERSE_VALUES["T1"] == 8
    assert VERSE_VALUES["T12"] == 19
    assert VERSE_VALUES["L1"] == 20
    assert VERSE_VALUES["L5"] == 24
    assert VERSE_VALUES["L6"] == 25
    assert VERSE_VALUES["S1"] == 26


def test_sacrum_and_last_rib_agree() -> None:
    # T10, T11, T12 bear ribs; five rib-free vertebrae; sacrum below
    a = assign_levels([True, True, True, False, False, False, False, False], sacrum=True)
    assert a.names == ["T10", "T11", "T12", "L1", "L2", "L3", "L4", "L5"]
    assert a.anchor == "sacrum+rib"
    assert min(a.confidence) >= 0.85
    assert a.confidence[2] >= a.confidence[0]  # closest to the anchor is most certain


def test_six_lumbar_type_vertebrae_are_reported_as_transitional() -> None:
    a = assign_levels([True, True, False, False, False, False, False, False], sacrum=True)
    assert a.names == ["T11", "T12", "L1", "L2", "L3", "L4", "L5", "L6"]
    assert max(a.confidence) <= 0.5
    assert any("transitional" in n for n in a.notes)


def test_four_lumbar_type_vertebrae_are_reported_as_transitional() -> None:
    a = assign_levels([True, True, False, False, False, False], sacrum=True)
    assert a.names[:3] == ["T11", "T12", "L1"]
    assert max(a.confidence) <= 0.5
    assert any("4 rib-free" in n for n in a.notes)


def test_last_rib_only() -> None:
    a = assign_levels([True] * 9 + [False, False], sacrum=False)
    assert a.names[8] == "T12"
    assert a.names[0] == "T4"
    assert a.names[-1] == "L2"
    assert a.anchor == "rib"
    assert 0.5 < a.confidence[8] <= 0.85


def test_first_and_last_rib_must_span_twelve_vertebrae() -> None:
    ok = assign_levels([False] + [True] * 12 + [False], sacrum=False)
    assert ok.names[1] == "T1"
    assert ok.names[12] == "T12"
    assert min(ok.confidence) > 0.5
    short = assign_levels([False] + [True] * 11 + [False], sacrum=False)
    assert max(short.confidence) <= 0.5
    assert any("expected 12" in n for n in short.notes)


def test_sacrum_only_counts_up_and_flags_missing_t12_rib() -> None:
    a = assign_levels([False] * 7, sacrum=True)
    assert a.names == ["T11", "T12", "L1", "L2", "L3", "L4", "L5"]
    assert a.anchor == "sacrum"
    assert max(a.confidence) <= 0.5  # no rib at the vertebra counted as T12
    assert any("no rib" in n for n in a.notes)
    b = assign_levels([False] * 5, sacrum=True)
    assert b.names == ["L1", "L2", "L3", "L4", "L5"]
    assert b.confidence[-1] == 0.8


def test_first_rib_gives_t1_when_no_lower_anchor() -> None:
    # C6, C7 rib-free, then rib-bearing down to the end of the field of view
    a = assign_levels([False, False, True, True, True, True], sacrum=False)
    assert a.names == ["C6", "C7", "T1", "T2", "T3", "T4"]
    assert a.anchor == "t1"


def test_no_anchor_is_a_low_confidence_guess() -> None:
    a = assign_levels([True, True], sacrum=False)
    assert a.anchor == "none"
    assert max(a.confidence) < 0.3
    assert any("guess" in n for n in a.notes)
    b = assign_levels([False, False, False], sacrum=False)
    assert b.anchor == "none"
    assert max(b.confidence) < 0.3


def test_nothing_found() -> None:
    a = assign_levels([], sacrum=False)
    assert a.names == []
    assert a.notes


def test_missed_vertebra_is_counted_across_the_gap() -> None:
    from osteo_node.pipeline.ct.level_names import missing_between

    # bodies every 25 mm, one missing between the 2nd and 3rd (a 50 mm gap)
    along = [300.0, 275.0, 225.0, 200.0, 175.0, 150.0]
    missing = missing_between(along)
    assert missing == [0, 0, 1, 0, 0, 0]
    a = assign_levels([True, True, True, True, True, False], sacrum=False, missing=missing)
    assert a.names == ["T7", "T8", "T10", "T11", "T12", "L1"]
    assert a.confidence[0] < a.confidence[2]  # beyond the gap: lower confidence
    assert missing_between([300.0, 275.0, 250.0, 225.0]) == [0, 0, 0, 0]


def _bodies(heights_slices: list[int], fov: tuple[int, ...] = ()) -> list[BodyInstance]:
    """Bodies cranial -> caudal with the given heights (3 mm slices), stacked without gaps;
    ``fov``: indices cut by the scan (the first one, if listed, by the top)."""
    out: list[BodyInstance] = []
    top = sum(heights_slices)
    for n, h in enumerate(heights_slices):
        k1 = top - 1
        k0 = top - h
        out.append(BodyInstance(n + 1, (float(k0 + k1) / 2, 10.0, 10.0), (k0, k1), 20.0,
                                n in fov, cut_cranially=n == 0 and n in fov))
        top = k0
    return out


def test_a_body_taller_than_those_below_makes_the_names_above_uncertain() -> None:
    """The chest series' 'T8' (30 mm over 27/21/24 mm bodies): two vertebrae in one segment,
    so the names counted across it from the last rib may be one level off."""
    from osteo_node.pipeline.ct.level_names import CONF_TRANSITIONAL, merged_body_check

    ribs = [True] * 6 + [False]
    a = assign_levels(ribs, sacrum=False)
    assert a.anchor == "rib" and a.names[5] == "T12"
    checked = merged_body_check(_bodies([5, 5, 10, 9, 7, 8, 8]), a, 3.0)
    assert checked.names == a.names
    assert all(c <= CONF_TRANSITIONAL for c in checked.confidence[:3])  # tall "T9" and above
    assert checked.confidence[3:] == a.confidence[3:]
    assert any("may be two vertebrae" in n for n in checked.notes)


def test_the_lowest_tall_body_decides_how_far_the_names_are_uncertain() -> None:
    """Names are counted up from the anchor: a tall body low in the column makes every name
    above it uncertain, whatever a tall body higher up does (the chest series with model 1.3.0:
    a 24 mm 'T5' over 15 mm bodies, and the 30 mm 'T8' over 27/21/24 mm bodies)."""
    from osteo_node.pipeline.ct.level_names import CONF_TRANSITIONAL, merged_body_check

    a = assign_levels([True] * 8 + [False], sacrum=False)
    checked = merged_body_check(_bodies([6, 8, 5, 5, 10, 9, 7, 8, 8]), a, 3.0)
    assert all(c <= CONF_TRANSITIONAL for c in checked.confidence[:5])  # tall 'T8' and above
    assert checked.confidence[5:] == a.confidence[5:]
    assert any(n.startswith(f"{a.names[4]} is 30 mm tall") for n in checked.notes)


def test_bodies_growing_caudally_keep_their_confidence() -> None:
    from osteo_node.pipeline.ct.level_names import merged_body_check

    a = assign_levels([True, True, True, False, False, False, False, False], sacrum=True)
    assert merged_body_check(_bodies([7, 7, 8, 8, 9, 9, 10, 10]), a, 3.0) == a


def test_unknown_rib_status_is_no_anchor() -> None:
    """A vertebra whose rib status is not known (None) cannot anchor T1 or T12 next to it."""
    # the partial vertebra at the top of a thoracolumbar slab, then a rib-bearing one
    a = assign_levels([None, True], sacrum=False)
    assert a.anchor == "none"
    assert a.names == ["T11", "T12"]  # the lowest rib-bearing vertebra assumed T12, a guess
    assert max(a.confidence) < 0.3
    assert assign_levels([False, True], sacrum=False).anchor == "t1"  # a real rib-free one
    # unknown below the last rib: no T12 anchor either
    assert assign_levels([True, True, None], sacrum=False).anchor == "none"
    assert assign_levels([True, True, False], sacrum=False).anchor == "rib"


def test_rib_flags_top_cut_vertebra_without_ribs_is_unknown() -> None:
    """Ribs attach to the upper part of a vertebra: a vertebra cut by the top of the scan that
    shows no rib is not known to be rib-free; one cut by the bottom shows its upper part."""
    bodies = _bodies([3, 8, 2], fov=(0, 2))  # k 10-12 (top cut), 2-9, 0-1 (bottom cut)
    assert rib_flags(bodies, {1: False, 2: True, 3: False}) == [None, True, False]
    # a rib seen is evidence wherever the vertebra is cut
    assert rib_flags(bodies, {1: True, 2: True, 3: False}) == [True, True, False]
    # labels without rib evidence (no entry) count as rib-free unless cut at the top
    assert rib_flags(bodies, {}) == [None, False, False]


def test_c2_on_top_anchors_a_neck_scan_and_agrees_with_the_first_rib() -> None:
    """A neck CT (s0003: C1-T4 in view) has neither sacrum nor last rib: the topmost body,
    complete and twice as tall as the ones below (the dens), with the skull base above it, is
    C2; the first rib-bearing vertebra 7 levels below confirms it."""
    bodies = _bodies([12, 6, 6, 6, 6, 7, 7, 7, 7])  # C2 (dens) then C3.. (1.5 mm rows)
    assert is_c2(bodies, space_above_mm=40.0, spacing=1.5)
    assert not is_c2(bodies, space_above_mm=2.0, spacing=1.5)  # scan ends: no skull seen
    assert not is_c2(_bodies([6, 6, 6, 6, 7]), space_above_mm=40.0, spacing=1.5)  # not tall
    assert not is_c2(_bodies([12, 6, 6, 6], fov=(0,)), space_above_mm=40.0, spacing=1.5)
    ribs = [False] * 6 + [True] * 3
    a = assign_levels(ribs, sacrum=False, c2_on_top=True)
    assert a.anchor == "c2"
    assert a.names == ["C2", "C3", "C4", "C5", "C6", "C7", "T1", "T2", "T3"]
    assert a.confidence[0] > 0.9 and min(a.confidence) > 0.8  # C2 and T1 agree
    # a rib found one level too high (a cervical rib, or a missed vertebra): uncertain
    b = assign_levels([False] * 5 + [True] * 4, sacrum=False, c2_on_top=True)
    assert b.names[0] == "C2" and max(b.confidence) <= 0.5
    # caudal anchors win when in view
    assert assign_levels([True] * 3 + [False], sacrum=False, c2_on_top=True).anchor == "rib"


def test_a_thin_slab_crossed_by_ribs_without_a_rib_head_is_guessed_thoracolumbar() -> None:
    """No anchor and no rib head (the 20-slice contrast slab), but ribs cross the scan: the
    lowest vertebra is guessed T12 rather than L1, still a labelled guess."""
    a = assign_levels([None, False], sacrum=False, ribs_in_view=True)
    assert a.names == ["T11", "T12"] and a.anchor == "none" and max(a.confidence) < 0.3
    b = assign_levels([None, False], sacrum=False)
    assert b.names == ["L1", "L2"] and b.anchor == "none"


def test_the_last_rib_at_the_disc_above_goes_to_the_vertebra_above_when_the_sacrum_agrees() -> None:
    """s0009 (T11-S1): both heads of the twelfth rib lie at the T12/L1 disc and touch T12, the
    height rule gave them to L1, and L1 looked like the last rib-bearing vertebra with 4
    lumbar below it (transitional anatomy). Counted as T12's ribs, sacrum and rib agree."""
    from osteo_node.pipeline.ct.level_names import last_rib_at_disc

    flags: list[bool | None] = [True, True, True, False, False, False, False]  # T11 .. L5
    at_disc = [False, False, True, False, False, False, False]
    pos = list(range(7))
    fixed, note = last_rib_at_disc(flags, at_disc, True, pos)
    assert fixed == [True, True, False, False, False, False, False] and note
    names = assign_levels(fixed, sacrum=True).names
    assert names == ["T11", "T12", "L1", "L2", "L3", "L4", "L5"]
    # heads on the vertebra's own body, or no sacrum to agree with: left as found
    assert last_rib_at_disc(flags, [False] * 7, True, pos) == (flags, None)
    assert last_rib_at_disc(flags, at_disc, False, pos) == (flags, None)
    # with 5 rib-free vertebrae below it the anchors agree already
    five = [True, True, False, False, False, False, False, False]
    assert last_rib_at_disc(five, [False, True, *[False] * 6], True, list(range(8))) == (
        five, None)
