"""Boxes, presets, masks from files and label maps, mask algebra; edits in W, W+ and Z."""

import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from regfac_jax import edit, regions


def test_box_matches_the_paper_convention_on_256():
    m = regions.preset_mask("ffhq", "eyes", 256)  # [120, 128, 20, 115]
    rows, cols = np.nonzero(m)
    assert (rows.min(), rows.max() + 1) == (120 - 10, 120 - 10 + 20)
    assert (cols.min(), cols.max() + 1) == (128 - 57, 128 - 57 + 115)
    assert m.sum() == 20 * 115


def test_box_scales_with_resolution():
    m256 = regions.preset_mask("ffhq", "mouth", 256)
    m1024 = regions.preset_mask("ffhq", "mouth", 1024)
    assert m1024.sum() == 16 * m256.sum()
    # Nearest down-sampling of the 1024 mask gives back the 256 one exactly (edges scale by 4).
    np.testing.assert_array_equal(m1024[::4, ::4], m256)


def test_every_preset_is_inside_the_image():
    for dataset in regions.PRESETS:
        for name in regions.preset_names(dataset):
            assert regions.preset_mask(dataset, name, 64).any()


def test_bad_boxes_and_presets():
    with pytest.raises(regions.RegionError, match="outside"):
        regions.box_mask((10, 128, 40, 40), 256)
    with pytest.raises(regions.RegionError, match="available: .*eyes"):
        regions.preset_mask("ffhq", "wheels", 256)
    with pytest.raises(regions.RegionError, match="datasets with presets"):
        regions.preset_mask("lsun_cat", "eyes", 256)
    with pytest.raises(regions.RegionError, match="non-positive"):
        regions.box_mask((128, 128, 0, 10), 256)


def test_mask_from_file_any_size(tmp_path):
    arr = np.zeros((100, 100), np.uint8)
    arr[25:75, 50:100] = 255
    Image.fromarray(arr).save(tmp_path / "m.png")
    m = regions.mask_from_file(tmp_path / "m.png", 20)
    assert m.shape == (20, 20)
    np.testing.assert_array_equal(m[5:15, 10:20], 1)
    assert m.sum() == 100
    soft = regions.mask_from_file(tmp_path / "m.png", 20, soft=True)
    assert 0 < soft.min() + 1 and soft.max() <= 1
    with pytest.raises(regions.RegionError, match="does not exist"):
        regions.mask_from_file(tmp_path / "missing.png", 20)


def test_mask_from_labels_and_algebra():
    lm = np.zeros((8, 8), np.int32)
    lm[:4] = 3
    lm[:, :2] = 7
    m = regions.mask_from_labels(lm, [3], 8)
    assert m.sum() == 4 * 6
    both = regions.mask_from_labels(lm, [3, 7], 8)
    np.testing.assert_array_equal(both, regions.union(m, regions.mask_from_labels(lm, [7], 8)))
    np.testing.assert_array_equal(regions.difference(both, m), regions.mask_from_labels(lm, [7], 8))
    np.testing.assert_array_equal(regions.intersection(both, m), m)
    with pytest.raises(regions.RegionError, match="None of the labels"):
        regions.mask_from_labels(lm, [5], 8)


def test_validate_masks():
    with pytest.raises(regions.RegionError, match="values"):
        regions.validate_masks(np.full((4, 4), 2.0), (4, 4))
    out = regions.validate_masks(np.eye(4), (4, 4))
    assert out.shape == (1, 4, 4)


def test_edit_ws_layers_and_broadcast():
    ws = np.zeros((2, 8, 4), np.float32)
    n = np.array([[1, 0, 0, 0]], np.float32)  # the paper's (1, w_dim) layout broadcasts over layers
    out = edit.edit_ws(ws, n, edit.step_range(-10, 10, 3), layers=[4, 5, 6, 7])
    assert out.shape == (2, 3, 8, 4)
    np.testing.assert_array_equal(out[:, :, :4], 0)
    np.testing.assert_array_equal(out[0, :, 4:, 0], [[-10] * 4, [0] * 4, [10] * 4])
    per_layer = np.arange(32, dtype=np.float32).reshape(8, 4)
    np.testing.assert_array_equal(edit.edit_ws(ws, per_layer, [1.0])[0, 0], per_layer)
    np.testing.assert_array_equal(edit.edit_ws(ws, per_layer.reshape(-1), [1.0])[0, 0], per_layer)


def test_edit_bad_input(tmp_path):
    ws = jnp.zeros((1, 8, 4))
    with pytest.raises(ValueError, match="does not fit"):
        edit.edit_ws(ws, np.ones((3, 2)), [1.0])
    with pytest.raises(ValueError, match="beyond"):
        edit.edit_ws(ws, np.ones(4), [1.0], layers=[8])
    with pytest.raises(ValueError, match="does not fit"):
        edit.edit_latent(jnp.zeros((1, 5)), np.ones(4), [1.0])
    np.save(tmp_path / "d.npy", np.ones((3, 256), np.float32))
    with pytest.raises(ValueError, match="do not fit"):
        edit.load_directions(tmp_path / "d.npy", 512)


def test_edit_latent():
    z = jnp.zeros((2, 3))
    out = edit.edit_latent(z, jnp.array([0.0, 1.0, 0.0]), [-1.0, 2.0])
    np.testing.assert_array_equal(out[1, :, 1], [-1.0, 2.0])
