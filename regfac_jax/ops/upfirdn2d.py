"""FIR resampling of NHWC images: upsample by zero insertion, pad/crop, FIR filter, downsample.

Semantics follow the official StyleGAN ``upfirdn2d`` reference path, per channel:

1. upsample by inserting ``up - 1`` zeros after every pixel (also after the last one);
2. pad with zeros by ``padding = (x0, x1, y0, y1)`` pixels, where a negative amount crops;
3. convolve with the FIR filter ``f`` (true convolution; ``flip_filter=True`` gives correlation), keeping
   only outputs whose footprint lies inside the padded image;
4. keep every ``down``-th pixel.

The filter is scaled by ``gain ** (f.ndim / 2)`` (so a separable 1-D filter applied twice scales by ``gain``)
and cast to the input's dtype, so float64 inputs run entirely in float64. All functions are pure ``jnp``/``lax``
and work under ``jit``, ``vmap``, ``jacfwd`` and ``grad``.
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

_HIGHEST = lax.Precision.HIGHEST
_DIMS = ("NHWC", "HWIO", "NHWC")

IntPair = int | Sequence[int]


def _scaling(s: IntPair, what: str) -> tuple[int, int]:
    """int or (sx, sy) -> (sx, sy), both >= 1."""
    sx, sy = (s, s) if isinstance(s, (int, np.integer)) else tuple(s)
    if int(sx) != sx or int(sy) != sy or sx < 1 or sy < 1:
        raise ValueError(f"{what} must be a positive int or a pair (x, y) of positive ints, got {s!r}.")
    return int(sx), int(sy)


def _padding(p: int | Sequence[int]) -> tuple[int, int, int, int]:
    """int, (px, py) or (x0, x1, y0, y1) -> (x0, x1, y0, y1)."""
    if isinstance(p, (int, np.integer)):
        p = (p, p)
    p = tuple(int(v) for v in p)
    if len(p) == 2:
        p = (p[0], p[0], p[1], p[1])
    if len(p) != 4:
        raise ValueError(f"padding must be an int, (x, y) or (x0, x1, y0, y1), got {p!r}.")
    return p  # type: ignore[return-value]


def filter_size(f) -> tuple[int, int]:
    """(width, height) of a filter: [fh, fw] (2-D), [taps] (separable) or None (identity, 1x1)."""
    if f is None:
        return 1, 1
    if f.ndim not in (1, 2):
        raise ValueError(f"FIR filter must be [fh, fw] or [taps], got shape {tuple(f.shape)}.")
    return int(f.shape[-1]), int(f.shape[0])


def setup_filter(f, normalize: bool = True, flip_filter: bool = False, gain: float = 1,
                 separable: bool | None = None) -> np.ndarray:
    """Prepares a FIR filter for :func:`upfirdn2d`, like the official ``setup_filter``.

    Args:
      f: filter taps: [fh, fw], [taps], a scalar (impulse) or None (identity).
      normalize: divide by the sum so that a constant (DC) signal keeps its magnitude.
      flip_filter: flip the filter.
      gain: overall magnitude scale.
      separable: return [taps] (applied along both axes) rather than the outer product [taps, taps];
        None picks separable for 1-D filters with at least 8 taps.
    Returns:
      float32 numpy array [taps] or [fh, fw].
    """
    f = np.asarray(1.0 if f is None else f, np.float32)
    if f.size == 0:
        raise ValueError("FIR filter must have at least one tap.")
    if f.ndim == 0:
        f = f[None]
    if f.ndim > 2:
        raise ValueError(f"FIR filter must be 0-, 1- or 2-D, got shape {f.shape}.")
    if separable is None:
        separable = f.ndim == 1 and f.size >= 8
    if f.ndim == 1 and not separable:
        f = np.outer(f, f)
    if f.ndim != (1 if separable else 2):
        raise ValueError("a 2-D filter cannot be made separable.")
    if normalize:
        f = f / f.sum()
    if flip_filter:
        f = np.flip(f, axis=tuple(range(f.ndim)))
    f = f * np.float32(gain ** (f.ndim / 2))
    return np.ascontiguousarray(f, dtype=np.float32)


def _depthwise(x: jax.Array, k: jax.Array, strides: tuple[int, int]) -> jax.Array:
    """Valid correlation of every channel of x [N, H, W, C] with the same 2-D kernel k [kh, kw]."""
    c = x.shape[-1]
    kernel = jnp.broadcast_to(k[:, :, None, None], (*k.shape, 1, c))
    return lax.conv_general_dilated(x, kernel, window_strides=strides, padding="VALID", dimension_numbers=_DIMS,
                                    feature_group_count=c, precision=_HIGHEST)


def upfirdn2d(x: jax.Array, f, up: IntPair = 1, down: IntPair = 1, padding: int | Sequence[int] = 0,
              flip_filter: bool = False, gain: float = 1) -> jax.Array:
    """Upsamples, pads, FIR-filters and downsamples a batch of NHWC images.

    Args:
      x: images [N, H, W, C] (any float dtype; the computation runs in that dtype).
      f: FIR filter [fh, fw] (2-D), [taps] (separable, applied along x then y) or None (identity).
      up: upsampling factor, int or (x, y).
      down: downsampling factor, int or (x, y).
      padding: int, (px, py) or (x0, x1, y0, y1) in upsampled pixels; negative values crop.
      flip_filter: False = convolution (official default), True = correlation.
      gain: overall signal gain (the filter is scaled by gain ** (f.ndim / 2)).
    Returns:
      [N, (H * up_y + y0 + y1 - fh) // down_y + 1, (W * up_x + x0 + x1 - fw) // down_x + 1, C].
    """
    if x.ndim != 4:
        raise ValueError(f"upfirdn2d expects NHWC images [N, H, W, C], got shape {tuple(x.shape)}.")
    upx, upy = _scaling(up, "up")
    downx, downy = _scaling(down, "down")
    px0, px1, py0, py1 = _padding(padding)
    f = jnp.ones((1, 1), jnp.float32) if f is None else jnp.asarray(f)
    fw, fh = filter_size(f)
    out_h = x.shape[1] * upy + py0 + py1 - fh
    out_w = x.shape[2] * upx + px0 + px1 - fw
    if out_h < 0 or out_w < 0:
        raise ValueError(f"upfirdn2d: padding {(px0, px1, py0, py1)} leaves the {x.shape[1]}x{x.shape[2]} image "
                         f"(upsampled x{upy}, x{upx}) smaller than the {fh}x{fw} filter.")

    # Zero insertion and padding/cropping in one lax.pad: interior zeros, then (possibly negative) edges.
    zero = jnp.zeros((), x.dtype)
    x = lax.pad(x, zero, [(0, 0, 0), (py0, py1 + upy - 1, upy - 1), (px0, px1 + upx - 1, upx - 1), (0, 0, 0)])

    f = (f * (gain ** (f.ndim / 2))).astype(x.dtype)
    if not flip_filter:  # lax convolutions correlate; flipping the taps turns that into a convolution
        f = jnp.flip(f, axis=tuple(range(f.ndim)))
    if f.ndim == 2:
        return _depthwise(x, f, (downy, downx))
    x = _depthwise(x, f[None, :], (1, downx))
    return _depthwise(x, f[:, None], (downy, 1))


def filter2d(x: jax.Array, f, padding: int | Sequence[int] = 0, flip_filter: bool = False,
             gain: float = 1) -> jax.Array:
    """FIR-filters x [N, H, W, C] keeping its size (plus ``padding``, relative to the output)."""
    px0, px1, py0, py1 = _padding(padding)
    fw, fh = filter_size(None if f is None else jnp.asarray(f))
    p = (px0 + fw // 2, px1 + (fw - 1) // 2, py0 + fh // 2, py1 + (fh - 1) // 2)
    return upfirdn2d(x, f, padding=p, flip_filter=flip_filter, gain=gain)


def upsample2d(x: jax.Array, f, up: IntPair = 2, padding: int | Sequence[int] = 0, flip_filter: bool = False,
               gain: float = 1) -> jax.Array:
    """Upsamples x [N, H, W, C] to [N, H * up, W * up, C] (plus ``padding``), preserving the DC gain."""
    upx, upy = _scaling(up, "up")
    px0, px1, py0, py1 = _padding(padding)
    fw, fh = filter_size(None if f is None else jnp.asarray(f))
    p = (px0 + (fw + upx - 1) // 2, px1 + (fw - upx) // 2, py0 + (fh + upy - 1) // 2, py1 + (fh - upy) // 2)
    return upfirdn2d(x, f, up=(upx, upy), padding=p, flip_filter=flip_filter, gain=gain * upx * upy)


def downsample2d(x: jax.Array, f, down: IntPair = 2, padding: int | Sequence[int] = 0, flip_filter: bool = False,
                 gain: float = 1) -> jax.Array:
    """Downsamples x [N, H, W, C] to [N, H // down, W // down, C] (plus ``padding``, relative to the input)."""
    downx, downy = _scaling(down, "down")
    px0, px1, py0, py1 = _padding(padding)
    fw, fh = filter_size(None if f is None else jnp.asarray(f))
    p = (px0 + (fw - downx + 1) // 2, px1 + (fw - downx) // 2, py0 + (fh - downy + 1) // 2, py1 + (fh - downy) // 2)
    return upfirdn2d(x, f, down=(downx, downy), padding=p, flip_filter=flip_filter, gain=gain)
