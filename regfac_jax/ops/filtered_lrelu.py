"""Filtered leaky ReLU (StyleGAN3's alias-free nonlinearity) for NHWC images, fused for speed.

Semantics are those of the official reference path (bias, then ``upfirdn2d`` up, ``bias_act`` lrelu,
then ``upfirdn2d`` down), per channel:

1. add the per-channel bias ``b``;
2. upsample by inserting ``up - 1`` zeros after every pixel;
3. pad with ``padding = (x0, x1, y0, y1)`` zeros (negative values crop);
4. convolve with the up filter ``fu`` scaled by ``up ** 2`` (so the DC gain survives the zero
   insertion), keeping only outputs whose footprint lies inside the padded image;
5. multiply by ``gain``, apply the leaky ReLU with ``slope``, clamp to ``[-clamp, clamp]``;
6. convolve with the down filter ``fd`` (valid outputs only) and keep every ``down``-th pixel.

How it is fused (the products are exactly those of the reference; only the order of the additions
differs, and the inserted zeros are never multiplied):

* the up filter runs polyphase: each of the ``up`` output phases is a short correlation of the
  original (not zero-inserted) input with every ``up``-th tap, and the phases are interleaved;
  padding and cropping become a zero pad of, or an offset into, the original input;
* the down filter is evaluated only at the kept pixels (strided slices), never at the discarded
  ones;
* 1-D filters are applied separably (along x, then along y, as the reference does); StyleGAN3-R's
  radial 2-D down filter directly;
* every filter is a sum of shifted slices times taps, which XLA fuses into loops. On CPU this runs
  40-80x faster than the separate passes of the reference path built on XLA's depthwise convolutions
  (which are slow there); see ``benchmarks/bench_stylegan3.py``.
"""

from __future__ import annotations

import functools
import math
import operator
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from regfac_jax.ops.bias_act import bias_act
from regfac_jax.ops.upfirdn2d import filter_size, parse_padding, upfirdn2d


def output_size(
    in_size: tuple[int, int], fu, fd, up: int, down: int, padding: int | Sequence[int]
) -> tuple[int, int]:
    """(height, width) of :func:`filtered_lrelu`'s output for an input of (height, width)
    ``in_size``."""
    px0, px1, py0, py1 = parse_padding(padding)
    fu_w, fu_h = filter_size(fu)
    fd_w, fd_h = filter_size(fd)
    out_h = (in_size[0] * up + py0 + py1 - (fu_h - 1) - (fd_h - 1) + down - 1) // down
    out_w = (in_size[1] * up + px0 + px1 - (fu_w - 1) - (fd_w - 1) + down - 1) // down
    return out_h, out_w


def _prepare(f, dtype, gain: float, flip_filter: bool) -> jax.Array:
    """Filter scaled by ``gain ** (ndim / 2)``, cast to ``dtype`` and flipped unless
    ``flip_filter``.

    lax convolutions correlate; flipping the taps turns them into the reference's true convolution.
    """
    f = jnp.asarray(f)
    f = (f * (gain ** (f.ndim / 2))).astype(dtype)
    return f if flip_filter else jnp.flip(f, axis=tuple(range(f.ndim)))


def _slice(x: jax.Array, axis: int, start: int, length: int, stride: int = 1) -> jax.Array:
    """``length`` elements of x along ``axis`` from ``start`` with ``stride``."""
    return lax.slice_in_dim(x, start, start + stride * (length - 1) + 1, stride=stride, axis=axis)


def _fir_down(x: jax.Array, g: jax.Array, axis: int, down: int) -> jax.Array:
    """Valid correlation of x with taps g [k] along ``axis``, evaluated only at every ``down``-th
    output."""
    k = g.shape[0]
    m = (x.shape[axis] - k) // down + 1
    terms = (_slice(x, axis, t, m, down) * g[t] for t in range(k))
    return functools.reduce(operator.add, terms)


def _fir_down_2d(x: jax.Array, g: jax.Array, down: int) -> jax.Array:
    """Valid 2-D correlation of x [N, H, W, C] with g [kh, kw], evaluated only at the kept
    pixels."""
    kh, kw = g.shape
    mh, mw = (x.shape[1] - kh) // down + 1, (x.shape[2] - kw) // down + 1
    terms = (
        _slice(_slice(x, 1, ty, mh, down), 2, tx, mw, down) * g[ty, tx]
        for ty in range(kh)
        for tx in range(kw)
    )
    return functools.reduce(operator.add, terms)


def _fir_up(x: jax.Array, g: jax.Array, axis: int, up: int, pad0: int, pad1: int) -> jax.Array:
    """Zero insertion by ``up``, padding (pad0, pad1) and valid correlation with g [k] along
    ``axis``, polyphase.

    Output j of the reference reads zero-inserted sample j + t - pad0 =: up * i (input i) for the
    taps t = u*i - (j - pad0). Writing j - pad0 = up * a + r, phase r uses only the taps t = t_r +
    up * s with t_r = -r mod up, and reads input a + c_r + s (c_r = (r + t_r) / up): a short
    correlation of the un-upsampled input per phase. The phases are then interleaved; no inserted
    zero is ever multiplied.
    """
    n, k = x.shape[axis], g.shape[0]
    length = n * up + pad0 + pad1 - k + 1
    # floor((-pad0) / up), ceil((length - pad0) / up)
    a_lo, a_hi = (-pad0) // up, -((pad0 - length) // up)
    count = a_hi - a_lo
    phases = []
    for r in range(up):
        t_r = (-r) % up
        c_r = (r + t_r) // up
        phases.append((t_r, c_r, len(range(t_r, k, up))))
    lo = max(0, -a_lo)
    hi = max(0, a_hi - 1 + max(c + s - 1 for _, c, s in phases) - (n - 1))
    xp = jnp.pad(x, [(lo, hi) if d == axis else (0, 0) for d in range(x.ndim)])
    outs = []
    for t_r, c_r, taps in phases:
        if taps == 0:  # a phase that no tap reaches (filter shorter than up) is all zeros
            outs.append(jnp.zeros_like(_slice(xp, axis, 0, count)))
            continue
        terms = (
            _slice(xp, axis, a_lo + c_r + s + lo, count) * g[t_r + up * s] for s in range(taps)
        )
        outs.append(functools.reduce(operator.add, terms))
    y = jnp.stack(outs, axis=axis + 1)
    y = y.reshape(*x.shape[:axis], count * up, *x.shape[axis + 1 :])
    return _slice(y, axis, -pad0 - up * a_lo, length)


def _upsample(
    x: jax.Array, fu: jax.Array, up: int, padding: tuple[int, int, int, int]
) -> jax.Array:
    """Steps 2-4: zero insertion, padding and the up filter (along x, then along y, as the
    reference)."""
    px0, px1, py0, py1 = padding
    if fu.ndim == 2:  # never used by StyleGAN3 (its up filters are 1-D); the plain op is exact
        return upfirdn2d(x, fu, up=up, padding=padding, gain=1, flip_filter=True)
    x = _fir_up(x, fu, 2, up, px0, px1)
    return _fir_up(x, fu, 1, up, py0, py1)


def _downsample(x: jax.Array, fd, down: int) -> jax.Array:
    """Step 6: the down filter evaluated only at the kept pixels."""
    if fd is None:
        return x[:, ::down, ::down, :]
    if fd.ndim == 2:
        return _fir_down_2d(x, fd, down)
    return _fir_down(_fir_down(x, fd, 2, down), fd, 1, down)


def _check(x, b, up, down, gain, slope, clamp) -> None:
    if x.ndim != 4:
        raise ValueError(
            f"filtered_lrelu expects NHWC images [N, H, W, C], got shape {tuple(x.shape)}."
        )
    if b is not None and (b.ndim != 1 or b.shape[0] != x.shape[-1]):
        raise ValueError(
            f"bias must have shape [{x.shape[-1]}] (the channel count), got {tuple(b.shape)}."
        )
    for name, v in (("up", up), ("down", down)):
        if not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}.")
    if not gain > 0 or not slope >= 0 or (clamp is not None and not clamp >= 0):
        raise ValueError(
            f"need gain > 0, slope >= 0 and clamp None or >= 0; got gain={gain}, slope={slope}, "
            f"clamp={clamp}."
        )


def _checked_output_size(x: jax.Array, fu, fd, up: int, down: int, pads) -> tuple[int, int]:
    """:func:`output_size` of x [N, H, W, C]; refuses a padding that leaves no output pixel."""
    out_h, out_w = output_size(x.shape[1:3], fu, fd, up, down, pads)
    if out_h < 1 or out_w < 1:
        raise ValueError(
            f"filtered_lrelu: padding {pads} leaves no output for a "
            f"{x.shape[1]}x{x.shape[2]} input "
            f"with up={up}, down={down} and filters of {filter_size(fu)} / {filter_size(fd)} taps "
            "(width, height)."
        )
    return out_h, out_w


def filtered_lrelu(
    x: jax.Array,
    fu: jax.Array | None = None,
    fd: jax.Array | None = None,
    b: jax.Array | None = None,
    up: int = 1,
    down: int = 1,
    padding: int | Sequence[int] = 0,
    gain: float = math.sqrt(2),
    slope: float = 0.2,
    clamp: float | None = None,
    flip_filter: bool = False,
    tile_rows: int | None = None,
) -> jax.Array:
    """Bias, upsample, leaky ReLU, clamp and downsample a batch of NHWC images (see the module
    docstring).

    Args:
      x: images [N, H, W, C]; the whole computation runs in x's dtype (filters and bias are cast).
      fu: up filter [taps] (separable), [fh, fw] or None (a single unit tap).
      fd: down filter [taps] (separable), [fh, fw] or None (a single unit tap).
      b: per-channel bias [C] or None.
      up: integer upsampling factor (both axes).
      down: integer downsampling factor (both axes).
      padding: int, (px, py) or (x0, x1, y0, y1), in upsampled pixels; negative values crop.
      gain: scale applied before the leaky ReLU (and before the clamp).
      slope: leaky ReLU slope for negative values (1 makes the nonlinearity the identity).
      clamp: clamp after the activation to [-clamp, clamp]; None disables it.
      flip_filter: False = true convolution with the filters (official default), True = correlation.
      tile_rows: output rows computed per strip (``lax.map`` over strips), so that only a strip of
        the upsampled intermediate exists at a time; the arithmetic per output pixel is unchanged.
        None: strips of about :data:`TILE_BYTES` of upsampled intermediate when the whole would be
        larger than that, else one pass.
    Returns:
      [N, out_h, out_w, C] with (out_h, out_w) = :func:`output_size` of (H, W).
    """
    _check(x, b, up, down, gain, slope, clamp)
    pads = parse_padding(padding)
    out_h, out_w = _checked_output_size(x, fu, fd, up, down, pads)
    if b is not None:
        x = bias_act(x, b)
    fu = _prepare(jnp.ones((1,), jnp.float32) if fu is None else fu, x.dtype, up**2, flip_filter)
    fd = None if fd is None else _prepare(fd, x.dtype, 1.0, flip_filter)
    act = functools.partial(bias_act, act="lrelu", alpha=slope, gain=gain, clamp=clamp)
    rows = _tile_rows(x, fu, fd, int(up), int(down), pads, out_h, tile_rows)
    if rows >= out_h:
        x = _downsample(act(_upsample(x, fu, int(up), pads)), fd, int(down))
    else:
        x = _tiled(x, fu, fd, int(up), int(down), pads, out_h, rows, act)
    # internal consistency of the size algebra
    assert x.shape[1:3] == (out_h, out_w), (x.shape, out_h, out_w)
    return x


TILE_BYTES = 64 << 20  # upsampled intermediate per strip when filtered_lrelu tiles by itself


def _tile_rows(x, fu, fd, up: int, down: int, pads, out_h: int, tile_rows: int | None) -> int:
    """Output rows per strip: a multiple of up / gcd(up, down), so every strip starts on the same
    phase."""
    unit = up // math.gcd(up, down)
    if tile_rows is None:
        row_bytes = (
            x.shape[0] * (x.shape[2] * up + pads[0] + pads[1]) * x.shape[3] * x.dtype.itemsize
        )
        if row_bytes * (out_h * down + filter_size(fu)[1] + filter_size(fd)[1]) <= TILE_BYTES:
            return out_h
        tile_rows = max(1, TILE_BYTES // (row_bytes * down))
    return max(unit, int(tile_rows) // unit * unit)


def _tiled(x, fu, fd, up: int, down: int, pads, out_h: int, rows: int, act) -> jax.Array:
    """The pipeline on strips of ``rows`` output rows, ``lax.map`` over strips (module docstring's
    steps 2-6).

    In the zero-inserted, padded row domain Z (z = py0 + up * i for input row i), output row o reads
    Z rows [o * down, o * down + kd + ku - 1). A strip starting at o0 (a multiple of ``rows``)
    therefore needs input rows from ceil((o0 * down - py0) / up) on; since rows * down is a multiple
    of up, every strip sees the same local padding and the same number of input rows, and runs the
    untiled code on them.
    """
    px0, px1, py0, py1 = pads
    ku, kd = filter_size(fu)[1], filter_size(fd)[1]
    span = (rows - 1) * down + kd + ku - 1  # Z rows one strip reads
    first = -((py0 - 0) // up)  # ceil(-py0 / up): the first input row of strip 0
    lead = py0 + up * first  # local padding before that row (0 <= lead < up)
    count = (span - lead + up - 1) // up  # input rows a strip reads
    trail = span - lead - count * up  # local padding after them (<= 0: crops inserted zeros)
    n_strips = -(-out_h // rows)
    step = rows * down // up  # input rows between strip starts
    lo = max(0, -first)
    hi = max(0, first + (n_strips - 1) * step + count - x.shape[1])
    xp = jnp.pad(x, ((0, 0), (lo, hi), (0, 0), (0, 0)))

    def strip(i):
        xs = lax.dynamic_slice_in_dim(xp, first + lo + i * step, count, axis=1)
        return _downsample(act(_upsample(xs, fu, up, (px0, px1, lead, trail))), fd, down)

    y = lax.map(strip, jnp.arange(n_strips))  # [n_strips, N, rows, out_w, C]
    y = jnp.moveaxis(y, 0, 1).reshape(x.shape[0], n_strips * rows, *y.shape[3:])
    return y[:, :out_h]
