"""Procedural cartoon faces with local, known factors of variation: ground truth for region-based
editing.

Every face is drawn from eleven independent factors, each uniform in [0, 1] (colours are points in a
palette interpolated continuously), and each factor changes pixels only inside a known region:

==============  =====================================  ==========
factor          what it changes                        region
==============  =====================================  ==========
eye_size        size of both eye whites and irises     eyes
iris_colour     iris colour (brown ... blue ... green) eyes
gaze            horizontal iris position               eyes
mouth_width     lip width                              mouth
mouth_open      height of the dark open mouth          mouth
lip_colour      lip colour (pale pink ... dark red)    mouth
nose_length     length of the nose                     nose
hair_colour     hair colour (black ... blond ... red)  hair
hair_length     how far the fringe reaches down        hair
skin_tone       colour of the face                     face
background      background colour                      background
==============  =====================================  ==========

The eyes, mouth, nose and hair regions are disjoint boxes (:data:`REGION_BOXES`, in the paper's
``[center_row, center_col, height, width]`` convention on a 256 grid, so
:func:`regfac_jax.regions.box_mask` builds their masks at any resolution). Skin tone and background
are global distractors.

Rendering is vectorised numpy: shapes are painted on a ``supersample``-times finer grid and
box-filtered down, which anti-aliases edges. Images are ``[N, H, W, 3]`` float32 in [-1, 1] (the
GAN's value range). The same seed always gives the same faces.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from regfac_jax import regions

#: Factor names, in the order they are drawn from the random stream.
FACTORS: tuple[str, ...] = (
    "eye_size",
    "iris_colour",
    "gaze",
    "mouth_width",
    "mouth_open",
    "lip_colour",
    "nose_length",
    "hair_colour",
    "hair_length",
    "skin_tone",
    "background",
)

#: The region each factor lives in.
FACTOR_REGION: Mapping[str, str] = {
    "eye_size": "eyes",
    "iris_colour": "eyes",
    "gaze": "eyes",
    "mouth_width": "mouth",
    "mouth_open": "mouth",
    "lip_colour": "mouth",
    "nose_length": "nose",
    "hair_colour": "hair",
    "hair_length": "hair",
    "skin_tone": "face",
    "background": "background",
}

#: Local regions as ``[center_row, center_col, height, width]`` on a 256 grid (disjoint from each
#: other): hair rows 6..106 cols 40..216; eyes rows 108..148 cols 64..192; nose rows 148..176 cols
#: 112..144; mouth rows 176..220 cols 80..176. Stored with the other presets in
#: :data:`regfac_jax.regions.PRESETS`.
REGION_BOXES: Mapping[str, tuple[int, int, int, int]] = regions.PRESETS["faces"]

# Geometry in normalised image coordinates (row y and column x in [0, 1]).
_FACE = dict(cy=0.56, cx=0.5, ry=0.36, rx=0.29)
_HAIR = dict(cy=0.41, cx=0.5, ry=0.36, rx=0.33)
_EYE_Y, _EYE_X = 0.50, (0.375, 0.625)
_MOUTH_Y = 0.773
_NOSE_TOP = 0.59

# Colour palettes (RGB in [0, 1]); a factor in [0, 1] walks along the palette piecewise linearly.
_SKIN = np.array([[0.98, 0.86, 0.74], [0.90, 0.72, 0.56], [0.72, 0.52, 0.36], [0.45, 0.30, 0.20]])
_HAIR_COLOURS = np.array(
    [
        [0.08, 0.06, 0.05],
        [0.40, 0.24, 0.12],
        [0.92, 0.80, 0.45],
        [0.78, 0.30, 0.10],
        [0.70, 0.70, 0.72],
    ]
)
_IRIS = np.array([[0.40, 0.22, 0.08], [0.20, 0.45, 0.85], [0.20, 0.62, 0.30], [0.50, 0.52, 0.58]])
_LIPS = np.array([[0.95, 0.62, 0.64], [0.85, 0.25, 0.30], [0.50, 0.08, 0.14]])
_BACKGROUND = np.array(
    [
        [0.30, 0.55, 0.85],
        [0.55, 0.85, 0.55],
        [0.95, 0.85, 0.40],
        [0.85, 0.45, 0.55],
        [0.50, 0.40, 0.75],
    ]
)
_WHITE = np.array([0.97, 0.97, 0.97])
_DARK = np.array([0.12, 0.03, 0.05])
_PUPIL = np.array([0.02, 0.02, 0.02])


def sample_factors(seed: int, num: int) -> dict[str, np.ndarray]:
    """Draws ``num`` faces' factors, each ``[num]`` uniform in [0, 1], from
    ``numpy.random.default_rng(seed)``."""
    if num < 0:
        raise ValueError(f"num must be >= 0, got {num}.")
    u = np.random.default_rng(seed).random((num, len(FACTORS)))
    return {name: u[:, i].astype(np.float32) for i, name in enumerate(FACTORS)}


def palette(colours: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Piecewise-linear walk along ``colours`` ``[K, 3]`` at positions ``t`` ``[N]`` in [0, 1] ->
    ``[N, 3]``."""
    pos = np.clip(t, 0.0, 1.0) * (len(colours) - 1)
    lo = np.minimum(np.floor(pos).astype(int), len(colours) - 2)
    frac = (pos - lo)[:, None]
    return colours[lo] * (1 - frac) + colours[lo + 1] * frac


def _ellipse(y, x, cy, cx, ry, rx):
    """Inside-mask of axis-aligned ellipses; ``y, x`` ``[1, S, S]``, the rest ``[N, 1, 1]`` or
    scalars."""
    return ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 <= 1.0


def _paint(canvas, inside, colour):
    """canvas ``[N, S, S, 3]`` takes ``colour`` ``[N, 3]`` where ``inside`` ``[N, S, S]``."""
    return np.where(inside[..., None], colour[:, None, None, :], canvas)


def _col(v):
    return np.asarray(v, np.float64)[:, None, None]


def _draw_hair(canvas, y, x, f):
    # curves down towards the temples
    fringe = _col(0.25 + 0.14 * f["hair_length"]) + 0.10 * (x - 0.5) ** 2
    inside = _ellipse(y, x, _HAIR["cy"], _HAIR["cx"], _HAIR["ry"], _HAIR["rx"]) & (y <= fringe)
    return _paint(canvas, inside, palette(_HAIR_COLOURS, f["hair_colour"]))


def _draw_eyes(canvas, y, x, f):
    rx = _col(0.045 + 0.035 * f["eye_size"])
    ry = 0.62 * rx
    iris_r = 0.52 * ry + 0.012
    shift = _col(f["gaze"] - 0.5) * 1.2 * (rx - iris_r)
    iris = palette(_IRIS, f["iris_colour"])
    for cx in _EYE_X:
        white = _ellipse(y, x, _EYE_Y, cx, ry, rx)
        canvas = _paint(canvas, white, np.broadcast_to(_WHITE, iris.shape))
        iris_in = white & _ellipse(y, x, _EYE_Y, cx + shift, iris_r, iris_r)
        canvas = _paint(canvas, iris_in, iris)
        pupil = iris_in & _ellipse(y, x, _EYE_Y, cx + shift, 0.45 * iris_r, 0.45 * iris_r)
        canvas = _paint(canvas, pupil, np.broadcast_to(_PUPIL, iris.shape))
    return canvas


def _draw_nose(canvas, y, x, f, skin):
    length = _col(0.035 + 0.05 * f["nose_length"])
    t = (y - _NOSE_TOP) / length  # 0 at the top, 1 at the tip
    inside = (t >= 0) & (t <= 1) & (np.abs(x - 0.5) <= 0.008 + 0.035 * t)
    return _paint(canvas, inside, 0.72 * skin)


def _draw_mouth(canvas, y, x, f):
    rx = _col(0.07 + 0.09 * f["mouth_width"])
    open_ry = _col(0.004 + 0.035 * f["mouth_open"])
    lips = _ellipse(y, x, _MOUTH_Y, 0.5, open_ry + 0.022, rx)
    canvas = _paint(canvas, lips, palette(_LIPS, f["lip_colour"]))
    inner = _ellipse(y, x, _MOUTH_Y, 0.5, open_ry, 0.8 * rx)
    return _paint(canvas, inner, np.broadcast_to(_DARK, (canvas.shape[0], 3)))


def render(
    factors: Mapping[str, np.ndarray], resolution: int = 32, supersample: int = 4
) -> np.ndarray:
    """Draws faces from their factors.

    Args:
      factors: every name in :data:`FACTORS` mapped to ``[N]`` values in [0, 1].
      resolution: output side length (any size >= 16; the demo model uses 32).
      supersample: drawing-grid refinement per output pixel (anti-aliasing).

    Returns:
      ``[N, resolution, resolution, 3]`` float32 images in [-1, 1].
    """
    missing = sorted(set(FACTORS) - set(factors))
    if missing:
        raise ValueError(f"render needs every factor in FACTORS; missing {missing}.")
    if resolution < 16 or supersample < 1:
        raise ValueError(
            f"resolution must be >= 16 and supersample >= 1; got {resolution}, {supersample}."
        )
    f = {k: np.clip(np.asarray(factors[k], np.float64).reshape(-1), 0.0, 1.0) for k in FACTORS}
    n = len(f["background"])
    size = resolution * supersample
    coords = (np.arange(size) + 0.5) / size
    y, x = coords[None, :, None], coords[None, None, :]
    canvas = np.broadcast_to(
        palette(_BACKGROUND, f["background"])[:, None, None], (n, size, size, 3)
    )
    skin = palette(_SKIN, f["skin_tone"])
    canvas = _paint(
        canvas, _ellipse(y, x, _FACE["cy"], _FACE["cx"], _FACE["ry"], _FACE["rx"]), skin
    )
    canvas = _draw_hair(canvas, y, x, f)
    canvas = _draw_eyes(canvas, y, x, f)
    canvas = _draw_nose(canvas, y, x, f, skin)
    canvas = _draw_mouth(canvas, y, x, f)
    img = canvas.reshape(n, resolution, supersample, resolution, supersample, 3).mean(axis=(2, 4))
    return (img * 2.0 - 1.0).astype(np.float32)


def faces(seed: int, num: int, resolution: int = 32) -> np.ndarray:
    """``num`` random faces ``[num, resolution, resolution, 3]`` in [-1, 1], fully determined by
    ``seed``."""
    return render(sample_factors(seed, num), resolution)


def batches(seed: int, batch_size: int, resolution: int = 32, start: int = 0):
    """An endless stream of training batches ``[batch_size, R, R, 3]``.

    Batch ``i`` depends only on ``(seed, i)``, so a resumed run continues the same stream from
    ``start``.
    """
    step = start
    while True:
        yield render(
            sample_factors(
                int(np.random.SeedSequence([seed, step]).generate_state(1)[0]), batch_size
            ),
            resolution,
        )
        step += 1


def region_masks(resolution: int, names=("eyes", "mouth", "hair")) -> np.ndarray:
    """Binary masks ``[R, resolution, resolution]`` of the named :data:`REGION_BOXES`."""
    unknown = [n for n in names if n not in REGION_BOXES]
    if unknown:
        raise regions.RegionError(
            f"Unknown face region(s) {unknown}; available: {sorted(REGION_BOXES)}."
        )
    return np.stack([regions.box_mask(REGION_BOXES[n], resolution) for n in names])


def factor_footprint(factor: str, resolution: int = 32, num: int = 64, seed: int = 0) -> np.ndarray:
    """Where changing one factor changes pixels: ``[R, R]`` mean absolute change over ``num`` faces
    when ``factor`` moves from its drawn value to a fresh random one, all else fixed."""
    if factor not in FACTORS:
        raise ValueError(f"Unknown factor {factor!r}; factors: {', '.join(FACTORS)}.")
    base = sample_factors(seed, num)
    moved = dict(base)
    moved[factor] = sample_factors(seed + 1, num)[factor]
    diff = np.abs(render(moved, resolution) - render(base, resolution))
    return diff.mean(axis=(0, 3))


def region_statistics(images: np.ndarray) -> dict[str, np.ndarray]:
    """Per-region colour statistics of images ``[N, R, R, 3]``: ``{region: [N, 4]}`` (mean R, G, B,
    std).

    Regions are :data:`REGION_BOXES` plus 'background' (the two top corners, 1/8 of the side each)
    and 'cheeks' (skin patches beside the nose). Used to compare generated against real faces factor
    by factor.
    """
    images = np.asarray(images, np.float32)
    if images.ndim != 4 or images.shape[1] != images.shape[2] or images.shape[3] != 3:
        raise ValueError(f"images must be [N, R, R, 3]; got shape {images.shape}.")
    res = images.shape[1]
    masks = {name: regions.box_mask(box, res) for name, box in REGION_BOXES.items()}
    corner = np.zeros((res, res), np.float32)
    k = max(1, res // 8)
    corner[:k, :k] = corner[:k, -k:] = 1
    masks["background"] = corner
    masks["cheeks"] = regions.box_mask((166, 128, 12, 104), res) - regions.box_mask(
        (166, 128, 12, 56), res
    )
    out = {}
    for name, m in masks.items():
        sel = images[:, m > 0]  # [N, P, 3]
        out[name] = np.concatenate([sel.mean(axis=1), sel.std(axis=(1, 2))[:, None]], axis=1)
    return out
