"""The procedural faces: determinism, value range, and factors that stay inside their known
regions."""

from __future__ import annotations

import numpy as np
import pytest

from regfac_jax import regions
from regfac_jax.demo import faces


def test_same_seed_same_faces_and_range():
    a, b = faces.faces(3, 8, 32), faces.faces(3, 8, 32)
    assert a.shape == (8, 32, 32, 3) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)  # exact: pure numpy on the same inputs
    assert np.abs(faces.faces(4, 8, 32) - a).max() > 0.1
    assert a.min() >= -1.0 and a.max() <= 1.0


@pytest.mark.parametrize("resolution", [32, 64])
@pytest.mark.parametrize(
    "factor", [f for f, r in faces.FACTOR_REGION.items() if r in faces.REGION_BOXES]
)
def test_local_factor_changes_only_its_region(factor, resolution):
    footprint = faces.factor_footprint(factor, resolution, num=32)
    mask = regions.box_mask(faces.REGION_BOXES[faces.FACTOR_REGION[factor]], resolution)
    # Exactly zero outside: painting is elementwise, so untouched pixels come out bit-identical.
    assert footprint[mask == 0].max() == 0.0
    assert footprint[mask > 0].max() > 0.05, "the factor must visibly change its region"


def test_regions_are_disjoint():
    masks = faces.region_masks(64, tuple(faces.REGION_BOXES))
    assert masks.sum(axis=0).max() == 1.0


def test_global_factors_are_not_local():
    for factor in ("skin_tone", "background"):
        footprint = faces.factor_footprint(factor, 32, num=16)
        assert (footprint > 0).mean() > 0.3


def test_batches_resume_where_they_stopped():
    stream = faces.batches(7, 4, 32)
    first = [next(stream) for _ in range(3)]
    resumed = next(faces.batches(7, 4, 32, start=2))
    np.testing.assert_array_equal(first[2], resumed)
    assert np.abs(first[0] - first[1]).max() > 0.1


def test_region_statistics_shapes_and_values():
    imgs = faces.faces(0, 16, 32)
    stats = faces.region_statistics(imgs)
    assert set(stats) == set(faces.REGION_BOXES) | {"background", "cheeks"}
    for v in stats.values():
        assert v.shape == (16, 4) and np.isfinite(v).all()
    # A uniform image has its colour as the mean and zero spread (float32 rounding only).
    flat = np.full((2, 32, 32, 3), 0.25, np.float32)
    s = faces.region_statistics(flat)["eyes"]
    np.testing.assert_allclose(s, [[0.25, 0.25, 0.25, 0.0]] * 2, atol=1e-6)


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="missing"):
        faces.render({"gaze": np.zeros(2)})
    with pytest.raises(regions.RegionError, match="Unknown face region"):
        faces.region_masks(32, ("ears",))
    with pytest.raises(ValueError, match="Unknown factor"):
        faces.factor_footprint("freckles")
    with pytest.raises(ValueError, match=r"\[N, R, R, 3\]"):
        faces.region_statistics(np.zeros((2, 32, 32)))
