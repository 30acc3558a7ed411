"""FIR resampling of NHWC images: upsample by zero insertion, pad/crop, FIR filter, downsample.

Semantics follow the official StyleGAN ``upfirdn2d`` reference path, per channel:

1. upsample by inserting ``up - 1`` zeros after every pixel (also after the last one);
2. pad with zeros by ``padding = (x0, x1, y0, y1)`` pixels, where a negative amount crops;
3. convolve with the FIR filter ``f`` (true convolution; ``flip_filter=True`` gives correlation),
   keeping only outputs whose footprint lies inside the padded image;
4. keep every ``down``-th pixel.

The filter is scaled by ``gain ** (f.ndim / 2)`` (so a separable 1-D filter applied twice scales by
``gain``) and cast to the input's dtype, so float64 inputs run entirely in float64. All functions
are pure ``jnp``/``lax`` and work under ``jit``, ``vmap``, ``jacfwd`` and ``grad``.
"""

from __future__ import annotations

import functools
import operator
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

IntPair = int | Sequence[int]


def _scaling(s: IntPair, what: str) -> tuple[int, int]:
    """int or (sx, sy) -> (sx, sy), both >= 1."""
    sx, sy = (s, s) if isinstance(s, (int, np.integer)) else tuple(s)
    if int(sx) != sx or int(sy) != sy or sx < 1 or sy < 1:
        raise ValueError(
            f"{what} must be a positive int or a pair (x, y) of positive ints, got {s!r}."
        )
    return int(sx), int(sy)


def parse_padding(padding: int | Sequence[int]) -> tuple[int, int, int, int]:
    """int, (px, py) or (x0, x1, y0, y1) -> (x0, x1, y0, y1) as Python ints."""
    if isinstance(padding, (int, np.integer)):
        padding = (padding, padding)
    pads = tuple(padding)
    if len(pads) not in (2, 4) or any(int(p) != p for p in pads):
        raise ValueError(
            f"padding must be an int, (x, y) or (x0, x1, y0, y1) of ints, got {padding!r}."
        )
    pads = tuple(int(p) for p in pads)
    return (pads[0], pads[0], pads[1], pads[1]) if len(pads) == 2 else pads  # type: ignore[return-value]


def filter_size(f) -> tuple[int, int]:
    """(width, height) of a filter: [fh, fw] (2-D), [taps] (separable) or None (identity, 1x1)."""
    if f is None:
        return 1, 1
    if f.ndim not in (1, 2):
        raise ValueError(f"FIR filter must be [fh, fw] or [taps], got shape {tuple(f.shape)}.")
    return int(f.shape[-1]), int(f.shape[0])


def setup_filter(
    f,
    normalize: bool = True,
    flip_filter: bool = False,
    gain: float = 1,
    separable: bool | None = None,
) -> np.ndarray:
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


class _AxisPlan(NamedTuple):
    """How one axis of :func:`upfirdn2d` runs as polyphase shifted slices (see
    :func:`_axis_plan`)."""

    pad_lo: int  # zeros added before the input (>= 0)
    pad_hi: int  # zeros added after the input (>= 0)
    # per output phase r: (first tap, input offset, number of taps)
    phases: tuple[tuple[int, int, int], ...]
    count: int  # outputs per phase
    stride: int  # stride of the slices (``down`` when up == 1, else 1)
    crop: int  # after interleaving the phases: first kept output ...
    length: int  # ... how many follow ...
    down: int  # ... and the stride among them (1 when the slices already strode)


def _axis_plan(n: int, k: int, up: int, down: int, pad0: int, pad1: int) -> _AxisPlan:
    """Polyphase plan for zero insertion by ``up``, padding (pad0, pad1), a k-tap valid correlation,
    keeping every ``down``-th output, along an axis of ``n`` samples.

    Full-rate output j reads zero-inserted sample j + t - pad0 for tap t; only samples at multiples
    of ``up`` are non-zero. Writing j - pad0 = up * a + r, phase r only meets the taps t = t_r + up
    * s (t_r = -r mod up) and reads input a + c_r + s with c_r = (r + t_r) / up: a short correlation
    of the original input per phase. Interleaving the phases gives the full-rate output; no inserted
    zero is ever multiplied. With up == 1 there is a single phase and the slices stride by ``down``
    directly, so dropped outputs are never computed.
    """
    length = n * up + pad0 + pad1 - k + 1
    # floor(-pad0 / up), ceil((length - pad0) / up)
    a_lo, a_hi = (-pad0) // up, -((pad0 - length) // up)
    phases = tuple(
        ((-r) % up, (r + (-r) % up) // up, len(range((-r) % up, k, up))) for r in range(up)
    )
    lo = max(0, -a_lo)
    hi = max(0, a_hi - 1 + max(c + t - 1 for _, c, t in phases) - (n - 1))
    phases = tuple((t, a_lo + c + lo, m) for t, c, m in phases)
    if up == 1:
        return _AxisPlan(
            lo, hi, phases, (length - 1) // down + 1, down, 0, (length - 1) // down + 1, 1
        )
    return _AxisPlan(lo, hi, phases, a_hi - a_lo, 1, -pad0 - up * a_lo, length, down)


def _slices(x: jax.Array, y0: int, x0: int, py: _AxisPlan, px: _AxisPlan) -> jax.Array:
    """``py.count x px.count`` pixels of x [N, H, W, C] from (y0, x0) with the plans' strides."""
    return lax.slice(
        x,
        (0, y0, x0, 0),
        (
            x.shape[0],
            y0 + py.stride * (py.count - 1) + 1,
            x0 + px.stride * (px.count - 1) + 1,
            x.shape[3],
        ),
        (1, py.stride, px.stride, 1),
    )


def _fir(
    x: jax.Array, g: jax.Array, py: _AxisPlan, px: _AxisPlan, up: tuple[int, int]
) -> jax.Array:
    """Applies the plans to x [N, H, W, C] with correlation taps g [kh, kw]: a sum of shifted slices
    per phase."""
    upx, upy = up
    x = jnp.pad(x, ((0, 0), (py.pad_lo, py.pad_hi), (px.pad_lo, px.pad_hi), (0, 0)))
    shape = (x.shape[0], py.count, px.count, x.shape[3])
    rows = []
    for ty, y0, ny in py.phases:
        cols = []
        for tx, x0, nx in px.phases:
            terms = [
                _slices(x, y0 + sy, x0 + sx, py, px) * g[ty + upy * sy, tx + upx * sx]
                for sy in range(ny)
                for sx in range(nx)
            ]
            cols.append(
                functools.reduce(operator.add, terms) if terms else jnp.zeros(shape, x.dtype)
            )
        rows.append(jnp.stack(cols, axis=3))  # [N, count_y, count_x, up_x, C]
    y = jnp.stack(rows, axis=2)  # [N, count_y, up_y, count_x, up_x, C]
    y = y.reshape(shape[0], py.count * upy, px.count * upx, shape[3])
    return lax.slice(
        y,
        (0, py.crop, px.crop, 0),
        (y.shape[0], py.crop + py.length, px.crop + px.length, y.shape[3]),
        (1, py.down, px.down, 1),
    )


def _check_fits(shape, fsize: tuple[int, int], up: tuple[int, int], pads) -> None:
    """Refuses a padding that leaves the upsampled image [N, H, W, C] smaller than the filter."""
    (fw, fh), (upx, upy), (px0, px1, py0, py1) = fsize, up, pads
    out_h = shape[1] * upy + py0 + py1 - fh
    out_w = shape[2] * upx + px0 + px1 - fw
    if out_h < 0 or out_w < 0:
        raise ValueError(
            f"upfirdn2d: padding {(px0, px1, py0, py1)} leaves the {shape[1]}x{shape[2]} image "
            f"(upsampled x{upy}, x{upx}) smaller than the {fh}x{fw} filter."
        )


def _fir_separable(
    x: jax.Array, f: jax.Array, up: tuple[int, int], down: tuple[int, int], pads
) -> jax.Array:
    """Correlation taps f [taps] along x, then along y, of x [N, H, W, C] (pads: x0, x1, y0, y1)."""
    (upx, upy), (downx, downy), (px0, px1, py0, py1) = up, down, pads
    fw, fh = filter_size(f)
    h, w = x.shape[1:3]
    x = _fir(
        x,
        f[None, :],
        _axis_plan(h, 1, 1, 1, 0, 0),
        _axis_plan(w, fw, upx, downx, px0, px1),
        (upx, 1),
    )
    return _fir(
        x,
        f[:, None],
        _axis_plan(h, fh, upy, downy, py0, py1),
        _axis_plan(x.shape[2], 1, 1, 1, 0, 0),
        (1, upy),
    )


def upfirdn2d(
    x: jax.Array,
    f,
    up: IntPair = 1,
    down: IntPair = 1,
    padding: int | Sequence[int] = 0,
    flip_filter: bool = False,
    gain: float = 1,
) -> jax.Array:
    """Upsamples, pads, FIR-filters and downsamples a batch of NHWC images.

    Runs polyphase as sums of shifted (strided) slices times taps, which XLA fuses into loops:
    inserted zeros are never multiplied and dropped outputs never computed. On CPU this is much
    faster than XLA's depthwise convolutions (``benchmarks/bench_paper_scale.py``); the products are
    those of the reference, only the order of the additions differs. Separable filters run along x,
    then along y, as the reference does.

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
    px0, px1, py0, py1 = parse_padding(padding)
    f = jnp.ones((1, 1), jnp.float32) if f is None else jnp.asarray(f)
    _check_fits(x.shape, filter_size(f), (upx, upy), (px0, px1, py0, py1))
    f = (f * (gain ** (f.ndim / 2))).astype(x.dtype)
    # the slices correlate; flipping the taps turns that into the reference's convolution
    if not flip_filter:
        f = jnp.flip(f, axis=tuple(range(f.ndim)))
    if f.ndim == 2:
        fw, fh = filter_size(f)
        h, w = x.shape[1:3]
        py, px = _axis_plan(h, fh, upy, downy, py0, py1), _axis_plan(w, fw, upx, downx, px0, px1)
        return _fir(x, f, py, px, (upx, upy))
    return _fir_separable(x, f, (upx, upy), (downx, downy), (px0, px1, py0, py1))


def filter2d(
    x: jax.Array, f, padding: int | Sequence[int] = 0, flip_filter: bool = False, gain: float = 1
) -> jax.Array:
    """FIR-filters x [N, H, W, C] keeping its size (plus ``padding``, relative to the output)."""
    px0, px1, py0, py1 = parse_padding(padding)
    fw, fh = filter_size(None if f is None else jnp.asarray(f))
    p = (px0 + fw // 2, px1 + (fw - 1) // 2, py0 + fh // 2, py1 + (fh - 1) // 2)
    return upfirdn2d(x, f, padding=p, flip_filter=flip_filter, gain=gain)


def upsample2d(
    x: jax.Array,
    f,
    up: IntPair = 2,
    padding: int | Sequence[int] = 0,
    flip_filter: bool = False,
    gain: float = 1,
) -> jax.Array:
    """Upsamples x [N, H, W, C] to [N, H * up, W * up, C] (plus ``padding``), preserving the DC
    gain."""
    upx, upy = _scaling(up, "up")
    px0, px1, py0, py1 = parse_padding(padding)
    fw, fh = filter_size(None if f is None else jnp.asarray(f))
    p = (
        px0 + (fw + upx - 1) // 2,
        px1 + (fw - upx) // 2,
        py0 + (fh + upy - 1) // 2,
        py1 + (fh - upy) // 2,
    )
    return upfirdn2d(x, f, up=(upx, upy), padding=p, flip_filter=flip_filter, gain=gain * upx * upy)


def downsample2d(
    x: jax.Array,
    f,
    down: IntPair = 2,
    padding: int | Sequence[int] = 0,
    flip_filter: bool = False,
    gain: float = 1,
) -> jax.Array:
    """Downsamples x [N, H, W, C] to [N, H // down, W // down, C] (plus ``padding``, relative to the
    input)."""
    downx, downy = _scaling(down, "down")
    px0, px1, py0, py1 = parse_padding(padding)
    fw, fh = filter_size(None if f is None else jnp.asarray(f))
    p = (
        px0 + (fw - downx + 1) // 2,
        px1 + (fw - downx) // 2,
        py0 + (fh - downy + 1) // 2,
        py1 + (fh - downy) // 2,
    )
    return upfirdn2d(x, f, down=(downx, downy), padding=p, flip_filter=flip_filter, gain=gain)
