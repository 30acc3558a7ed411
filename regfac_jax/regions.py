"""Image regions: the paper's boxes and presets, masks from files and label maps, and mask algebra.

Boxes use the paper's convention ``[center_row, center_col, height, width]`` on a 256x256 grid: the
box covers rows ``center_row - height // 2`` up to (excluding) ``+ height`` and likewise for
columns. On other resolutions the box edges are scaled by ``resolution / 256`` and rounded, so on a
256 grid a box is exactly the paper's.

Masks are float32 arrays ``[H, W]`` with values in [0, 1] (binary or soft); a stack of R regions is
``[R, H, W]``.
"""

from __future__ import annotations

import os
from typing import Mapping, Sequence

import numpy as np

from regfac_jax import errors

GRID = 256

#: The presets of the paper's code, ``{dataset: {region: [center_row, center_col, height, width]}}``
#: on a 256 grid.
PRESETS: Mapping[str, Mapping[str, tuple[int, int, int, int]]] = {
    "ffhq": {  # aligned faces (FFHQ, MetFaces)
        "eyes": (120, 128, 20, 115),
        "left_eye": (120, 95, 20, 38),
        "right_eye": (120, 159, 20, 38),
        "nose": (142, 131, 40, 46),
        "mouth": (184, 127, 30, 70),
        "chin": (217, 130, 42, 110),
        "eyebrow": (126, 105, 15, 118),
    },
    "ffhqu": {  # unaligned FFHQ with StyleGAN3, each for its own input transform
        "eyesr2": (134, 116, 30, 115),
        "eyesr3": (64, 128, 26, 115),
        "eyest0": (70, 88, 30, 115),
        "eyest3": (108, 142, 26, 115),
    },
    "faces": {  # the shipped demo model's procedural faces (regfac_jax.demo.faces); disjoint boxes
        "hair": (56, 128, 100, 176),
        "eyes": (128, 128, 40, 128),
        "nose": (162, 128, 28, 32),
        "mouth": (198, 128, 44, 96),
    },
    "biggan": {
        "center0": (120, 120, 80, 80),
        "center1": (120, 120, 130, 130),
        "center2": (120, 120, 200, 200),
        "left_side": (128, 64, 256, 128),
        "top_side": (64, 128, 128, 256),
        "head0": (89, 115, 49, 70),
        "head1": (93, 110, 48, 70),
    },
}


class RegionError(errors.UserError, ValueError):
    """A region or mask that cannot be used (empty, outside the image, wrong size, ...)."""


def box_bounds(
    box: Sequence[float], resolution: int, grid: int = GRID
) -> tuple[int, int, int, int]:
    """Returns ``(row0, row1, col0, col1)`` (half-open) of a paper-convention box at ``resolution``.

    Raises:
      RegionError: if the box has a non-positive size or reaches outside the ``grid`` x ``grid``
        image.
    """
    if len(box) != 4:
        raise RegionError(f"A box is [center_row, center_col, height, width]; got {list(box)}.")
    cr, cc, h, w = (int(round(v)) for v in box)
    if h <= 0 or w <= 0:
        raise RegionError(f"Box {list(box)} has a non-positive height or width.")
    r0, c0 = cr - h // 2, cc - w // 2
    r1, c1 = r0 + h, c0 + w
    if r0 < 0 or c0 < 0 or r1 > grid or c1 > grid:
        raise RegionError(
            f"Box {list(box)} covers rows {r0}..{r1} and columns {c0}..{c1}, outside the "
            f"{grid}x{grid} grid the paper's boxes are defined on; move or shrink it."
        )
    s = resolution / grid
    return (int(round(r0 * s)), int(round(r1 * s)), int(round(c0 * s)), int(round(c1 * s)))


def box_mask(box: Sequence[float], resolution: int, grid: int = GRID) -> np.ndarray:
    """Binary mask ``[resolution, resolution]`` of a paper-convention box given on a ``grid``
    grid."""
    r0, r1, c0, c1 = box_bounds(box, resolution, grid)
    mask = np.zeros((resolution, resolution), np.float32)
    mask[r0:r1, c0:c1] = 1.0
    if not mask.any():
        raise RegionError(f"Box {list(box)} is empty at resolution {resolution}.")
    return mask


def preset_names(dataset: str) -> list[str]:
    """The region presets defined for ``dataset``."""
    if dataset not in PRESETS:
        raise RegionError(
            f"No region presets for dataset {dataset!r}; datasets with presets: {sorted(PRESETS)}."
        )
    return sorted(PRESETS[dataset])


def preset_box(dataset: str, region: str) -> tuple[int, int, int, int]:
    """The paper's box for ``region`` of ``dataset`` (on the 256 grid)."""
    names = preset_names(dataset)
    if region not in PRESETS[dataset]:
        raise RegionError(
            f"Region preset {region!r} does not exist for dataset {dataset!r}; "
            f"available: {', '.join(names)}."
        )
    return PRESETS[dataset][region]


def preset_mask(dataset: str, region: str, resolution: int) -> np.ndarray:
    """Binary mask ``[resolution, resolution]`` of a named preset region."""
    return box_mask(preset_box(dataset, region), resolution)


def _resize(array: np.ndarray, resolution: int, nearest: bool) -> np.ndarray:
    from PIL import Image  # local import keeps the module import cheap

    img = Image.fromarray(np.asarray(array, np.float32), mode="F")
    method = Image.Resampling.NEAREST if nearest else Image.Resampling.BILINEAR
    return np.asarray(img.resize((resolution, resolution), method), np.float32)


def mask_from_array(
    array, resolution: int, soft: bool = False, threshold: float = 0.5
) -> np.ndarray:
    """A mask from an image-like array ``[h, w]`` or ``[h, w, c]`` of any size, resized to
    ``resolution``.

    Values are scaled to [0, 1] (uint8 by 255; other inputs must already lie in [0, 1]). Binary
    masks (``soft=False``) are resized by nearest neighbour, then thresholded; soft masks
    bilinearly.
    """
    a = np.asarray(array)
    if a.ndim == 3:
        a = a[..., :3].mean(axis=-1) if a.shape[-1] >= 3 else a[..., 0]
    if a.ndim != 2:
        raise RegionError(f"A mask image must be [h, w] or [h, w, c]; got shape {a.shape}.")
    a = (
        a.astype(np.float32) / 255.0
        if np.asarray(array).dtype == np.uint8
        else a.astype(np.float32)
    )
    if not np.all(np.isfinite(a)) or a.min() < 0 or a.max() > 1:
        raise RegionError("Mask values must be finite and in [0, 1] (or uint8 0..255).")
    out = _resize(a, resolution, nearest=not soft)
    if not soft:
        out = (out >= threshold).astype(np.float32)
    return np.clip(out, 0.0, 1.0)


def _read_array_file(path: str | os.PathLike, what: str, grey: bool) -> np.ndarray:
    """A ``.npy`` array or an image (PNG, ...; converted to 8-bit grey if ``grey``, else its raw
    values, e.g. a palette image's indices); non-finite values are refused, naming the file."""
    from PIL import Image

    if not os.path.isfile(path):
        raise RegionError(f"{what} file {os.fspath(path)!r} does not exist.")
    if os.fspath(path).endswith(".npy"):
        try:
            arr = np.load(path, allow_pickle=False)
        except ValueError as err:
            raise RegionError(
                f"{os.fspath(path)}: not a plain numeric .npy array ({err})."
            ) from None
        if not np.issubdtype(arr.dtype, np.number) and arr.dtype != bool:
            raise RegionError(
                f"{os.fspath(path)}: a {what} must be numeric; got dtype {arr.dtype}."
            )
        if not np.all(np.isfinite(arr)):
            raise RegionError(
                f"{os.fspath(path)}: the {what} holds {int((~np.isfinite(arr)).sum())} NaN or inf "
                "values; fix or replace the file."
            )
        return arr
    with Image.open(path) as img:
        return np.asarray(img.convert("L") if grey else img)


def mask_from_file(
    path: str | os.PathLike, resolution: int, soft: bool = False, threshold: float = 0.5
) -> np.ndarray:
    """A mask from an image file (PNG, ...; white = region) or a ``.npy`` array in [0, 1], any size,
    resized to ``resolution``.

    Raises:
      RegionError: the file is missing, holds NaN/inf or values outside [0, 1] (the message names
        the file).
    """
    arr = _read_array_file(path, "mask", grey=True)
    try:
        return mask_from_array(arr, resolution, soft=soft, threshold=threshold)
    except RegionError as err:
        raise RegionError(f"{os.fspath(path)}: {err}") from None


def load_label_map(path: str | os.PathLike) -> np.ndarray:
    """A segmentation label map ``[h, w]`` from a ``.npy`` array or an image file (PNG: its raw
    values).

    Raises:
      RegionError: the file is missing or holds NaN/inf (the message names the file).
    """
    return _read_array_file(path, "label map", grey=False)


def mask_from_labels(label_map, labels: Sequence[int], resolution: int) -> np.ndarray:
    """Binary mask of the pixels whose segmentation label is in ``labels``, resized by nearest
    neighbour."""
    lm = np.asarray(label_map)
    if lm.ndim != 2:
        raise RegionError(f"A label map must be [h, w]; got shape {lm.shape}.")
    mask = np.isin(lm, np.asarray(list(labels))).astype(np.float32)
    if not mask.any():
        present = np.unique(lm)[:20].tolist()
        raise RegionError(
            f"None of the labels {list(labels)} occur in the label map (labels present: {present})."
        )
    return mask_from_array(mask, resolution, soft=False)


def union(*masks) -> np.ndarray:
    """Pointwise maximum of masks (works for soft masks)."""
    return np.maximum.reduce([np.asarray(m, np.float32) for m in masks])


def intersection(*masks) -> np.ndarray:
    """Pointwise minimum of masks."""
    return np.minimum.reduce([np.asarray(m, np.float32) for m in masks])


def difference(a, b) -> np.ndarray:
    """``a`` without ``b``: ``clip(a - b, 0, 1)``."""
    return np.clip(np.asarray(a, np.float32) - np.asarray(b, np.float32), 0.0, 1.0)


def validate_masks(masks, image_hw: tuple[int, int]) -> np.ndarray:
    """Checks a mask stack against an image size and returns it as float32 ``[R, H, W]``.

    Raises:
      RegionError: wrong size, values outside [0, 1] or non-finite, an empty region, or a region
        that covers the whole image (leaving no background to keep unchanged).
    """
    m = np.asarray(masks, np.float32)
    if m.ndim == 2:
        m = m[None]
    if m.ndim != 3:
        raise RegionError(f"Masks must be [H, W] or [R, H, W]; got shape {m.shape}.")
    if m.shape[1:] != tuple(image_hw):
        raise RegionError(
            f"Mask size {m.shape[1:]} does not match the image size "
            f"{tuple(image_hw)}; build the mask "
            f"at the generator's (or the preprocessed Jacobian's) resolution."
        )
    if not np.all(np.isfinite(m)) or m.min() < 0 or m.max() > 1:
        raise RegionError("Mask values must be finite and in [0, 1].")
    for r in range(m.shape[0]):
        if m[r].sum() <= 0:
            raise RegionError(f"Region {r} is empty: its mask has no pixel set.")
        if (1.0 - m[r]).sum() <= 0:
            raise RegionError(
                f"Region {r} covers the whole image: there is no background to keep unchanged."
            )
    return m
