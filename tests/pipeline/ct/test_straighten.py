"""The straightened column: exact index <-> patient mapping, sampling and its inverse."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from osteo_node.pipeline.ct.column import find_canal
from osteo_node.pipeline.ct.straighten import frame_for, sample, sample_labels, unstraighten
from osteo_node.pipeline.stages.volume import load_nifti

EX = "ct/totalseg_example/example_ct.nii.gz"


@pytest.fixture(scope="module")
def example(shared_data: Path) -> tuple:  # type: ignore[type-arg]
    vol = load_nifti(shared_data / EX).volume
    canal = find_canal(vol)
    assert canal is not None
    return vol, frame_for(canal, vol)


def test_index_and_patient_coordinates_are_inverse(example: tuple) -> None:  # type: ignore[type-arg]
    _, frame = example
    rng = np.random.default_rng(0)
    idx = rng.uniform(0, [frame.nz - 1, frame.nu - 1, frame.nv - 1], size=(50, 3))
    lps = frame.lps_of(idx[:, 0], idx[:, 1], idx[:, 2])
    np.testing.assert_allclose(frame.index_of(lps), idx, atol=1e-9)
    # the canal is the origin of (u, v) on every row
    x, y = frame.canal.at(frame.z_of(idx[:, 0]))
    back = frame.index_of(np.stack([x, y, frame.z_of(idx[:, 0])], axis=1))
    np.testing.assert_allclose(frame.u_of(back[:, 1]), 0.0, atol=1e-9)


def test_sampling_and_its_inverse_agree_with_the_image(example: tuple) -> None:  # type: ignore[type-arg]
    """HU sampled on the straightened grid and put back on the input grid equal the input
    where the input lies inside the straightened tube (linear interpolation twice, 3 mm input
    at 1.5 mm: the mean absolute difference stays small)."""
    vol, frame = example
    s = sample(vol, frame)
    assert s.shape == frame.shape
    (back,) = unstraighten([(s, 1)], frame, vol.geometry, vol.array.shape)
    inside = back != 0
    assert inside.sum() > 50_000
    diff = np.abs(back[inside] - vol.array[inside])
    assert float(np.median(diff)) < 15.0


def test_labels_survive_the_round_trip(example: tuple, shared_data: Path) -> None:  # type: ignore[type-arg]
    from osteo_node.pipeline.ct.references import reference_on

    vol, frame = example
    ref = reference_on(vol, shared_data / "ct/totalseg_example/example_ct_vertebrae.nii.gz")
    s = sample_labels(ref, vol.geometry, frame)
    (back,) = unstraighten([(s, 0)], frame, vol.geometry, vol.array.shape)
    l1 = ref == 31
    assert (back[l1] == 31).mean() > 0.95
