"""Image Jacobians by forward mode, and the per-region Gram matrices ReSeFa needs.

For a generator ``g(latent [d]) -> image [H, W, C]`` the Jacobian has ``P = H * W * C`` rows and ``d`` columns;
with few inputs and many outputs forward mode is the right tool: one Jacobian-vector product per latent direction,
batched over tangents with ``vmap``. ``jax.linearize`` runs the primal pass once per sample and keeps its residuals,
so every tangent chunk only pays for the linear part.

For region masks ``m_r`` (``[R, H, W]``, soft or binary) the Grams are, per sample,

    A_r = sum_p m_p J_p J_p^T / sum_p m_p        B_r = sum_p (1 - m_p) J_p J_p^T / sum_p (1 - m_p)

with ``p`` running over pixels *and channels* (a mask value applies to every channel of its pixel), i.e. the
paper code's normalisation by the number of Jacobian rows in the region. One linearisation serves every region.

Memory strategy (``strategy=``):

* ``'materialize'``: the Jacobian ``[d, P]`` is assembled from tangent chunks of ``tangent_chunk`` columns, then
  each Gram is one matrix product. Peak memory about ``2 * d * P`` floats plus the primal residuals. Fastest when
  it fits (every image up to 256x256x3 with d = 512 needs under 1 GiB).
* ``'transpose'``: never holds the Jacobian. For each tangent chunk ``V`` (``[k, d]``) it forms ``U = J V`` by
  forward mode, then the Gram columns ``J^T (w_r * U)`` by transposing the same linear map (reverse mode through
  the stored residuals). Peak memory is the primal residuals plus ``O(k * P * (2R + 1))`` floats, independent
  of ``d``. At 1024x1024x3 with d = 512 the materialised Jacobian alone would be 6 GiB; this path stays within a
  small multiple of one forward pass (see ``tests/test_jacobian.py::test_memory_bound_1024``, which compiles the
  1024x1024 case and checks XLA's own memory analysis against 8 GiB). It costs about ``2R`` reverse passes per
  tangent chunk on top of the forward ones.
* ``'auto'`` (default): 'materialize' when ``2 * d * P * itemsize <= memory_budget`` bytes, else 'transpose'.

Preprocessing (``preprocess=``): None (per-channel Jacobian of the raw image), ``'official'`` (the paper's code:
images larger than 256 are resized to 256 by nearest neighbour and their channels summed; smaller ones are used as
they are), or any callable ``[H, W, C] -> [H', W', C']``.
"""
from __future__ import annotations

import functools
from typing import Callable, Literal

import jax
import jax.numpy as jnp
import numpy as np
from jax.tree_util import Partial

from regfac_jax import regions

Preprocess = None | Literal["official"] | Callable[[jax.Array], jax.Array]
HIGHEST = jax.lax.Precision.HIGHEST


# ----------------------------------------------------------------------------------------------------------
# Preprocessing
# ----------------------------------------------------------------------------------------------------------
def official_preprocess(image: jax.Array, size: int = 256) -> jax.Array:
    """The paper code's reduction: ``[H, W, C]`` larger than ``size`` -> nearest resize to ``size``, channels summed
    (``[size, size, 1]``); images of ``size`` or less are returned unchanged."""
    h, w, _ = image.shape
    if h <= size and w <= size:
        return image
    rows = (jnp.arange(size) * h) // size  # nearest neighbour, as torch's default interpolate picks it
    cols = (jnp.arange(size) * w) // size
    return jnp.sum(image[rows][:, cols], axis=-1, keepdims=True)


def _apply_preprocess(image, preprocess: Preprocess):
    if preprocess is None:
        return image
    if preprocess == "official":
        return official_preprocess(image)
    if callable(preprocess):
        return preprocess(image)
    raise ValueError(f"preprocess must be None, 'official' or a callable; got {preprocess!r}.")


def _as_partial(fn) -> Partial:
    """Wraps ``fn`` so it can be passed *into* jit: a Partial's bound arrays become traced arguments."""
    return fn if isinstance(fn, Partial) else Partial(fn)


def output_shape(fn, latent, preprocess: Preprocess = None) -> tuple[int, ...]:
    """Shape of ``preprocess(fn(latent))``, checked to be an image ``[H, W, C]``, without running the generator."""
    latent = jnp.asarray(latent)
    if latent.ndim != 1:
        raise ValueError(f"A single latent must be a vector [d]; got shape {latent.shape}.")
    try:
        out = jax.eval_shape(lambda x: _apply_preprocess(fn(x), preprocess), latent)
    except (TypeError, ValueError) as err:
        raise ValueError(f"The generator function rejected a latent of shape {latent.shape} ({err}). Check the "
                         f"latent dimension against the generator's latent_dim and the chosen latent space.") from err
    if len(out.shape) != 3:
        raise ValueError(f"The generator function must return one image [H, W, C]; it returned shape {out.shape}.")
    return tuple(out.shape)


# ----------------------------------------------------------------------------------------------------------
# Kernels (jitted; the generator arrives as a Partial pytree so its weights are arguments, not constants)
# ----------------------------------------------------------------------------------------------------------
def _tangent_basis(d: int, chunk: int, dtype):
    k = max(1, min(chunk, d))
    n = -(-d // k)
    return jnp.eye(n * k, d, dtype=dtype).reshape(n, k, d), n * k


def _linearized(fn, latent, preprocess):
    flat = lambda x: _apply_preprocess(fn(x), preprocess).reshape(-1)  # noqa: E731
    return jax.linearize(flat, latent)


@functools.partial(jax.jit, static_argnames=("tangent_chunk", "preprocess"))
def _jacobian_rows(fn, latent, tangent_chunk: int, preprocess):
    """``J^T`` as ``[d, P]`` from chunks of ``tangent_chunk`` JVPs."""
    _, f_jvp = _linearized(fn, latent, preprocess)
    basis, d_pad = _tangent_basis(latent.shape[0], tangent_chunk, latent.dtype)
    rows = jax.lax.map(jax.vmap(f_jvp), basis)  # [n_chunks, k, P]
    return rows.reshape(d_pad, -1)[: latent.shape[0]]


@functools.partial(jax.jit, static_argnames=("tangent_chunk", "preprocess", "strategy"))
def weighted_grams(fn, latent, weights, tangent_chunk: int, preprocess, strategy: str):
    """``G_m = J^T diag(weights_m) J`` for every row of ``weights`` ``[M, P]`` -> ``[M, d, d]``."""
    d = latent.shape[0]
    _, f_jvp = _linearized(fn, latent, preprocess)
    basis, d_pad = _tangent_basis(d, tangent_chunk, latent.dtype)
    if strategy == "materialize":
        jt = jax.lax.map(jax.vmap(f_jvp), basis).reshape(d_pad, -1)[:d]  # [d, P]
        grams = jax.lax.map(lambda w: jnp.matmul(jt * w, jt.T, precision=HIGHEST), weights)
    elif strategy == "transpose":
        f_vjp = jax.linear_transpose(f_jvp, latent)
        pull = lambda u: f_vjp(u)[0]  # noqa: E731  [P] -> [d]

        def chunk_columns(v):  # v [k, d] -> [M, k, d]: columns of every G_m for these tangents
            u = jax.vmap(f_jvp)(v)  # [k, P]
            return jax.vmap(lambda w: jax.vmap(pull)(u * w))(weights)

        cols = jax.lax.map(chunk_columns, basis)  # [n_chunks, M, k, d]
        grams = jnp.moveaxis(cols, 1, 0).reshape(weights.shape[0], d_pad, d)[:, :d]
    else:
        raise ValueError(f"strategy must be 'materialize' or 'transpose', got {strategy!r}.")
    return 0.5 * (grams + jnp.swapaxes(grams, -1, -2))


# ----------------------------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------------------------
def jacobian(fn, latent, *, tangent_chunk: int | None = None, preprocess: Preprocess = None) -> jax.Array:
    """The full Jacobian of ``preprocess(fn(latent))``, ``[H, W, C, d]`` (for small images).

    Args:
      fn: pure ``g(latent [d]) -> image [H, W, C]`` (e.g. ``generator.latent_fn('w')``).
      latent: ``[d]``.
      tangent_chunk: tangents per batched JVP (default: all ``d`` at once).
      preprocess: see the module docstring.
    """
    latent = jnp.asarray(latent)
    shape = output_shape(fn, latent, preprocess)
    chunk = latent.shape[0] if tangent_chunk is None else int(tangent_chunk)
    rows = _jacobian_rows(_as_partial(fn), latent, chunk, preprocess)
    return jnp.moveaxis(rows, 0, -1).reshape(shape + (latent.shape[0],))


def mask_weights(masks: np.ndarray, channels: int) -> np.ndarray:
    """Row weights ``[2R, H*W*C]``: normalised foreground masks then normalised backgrounds."""
    r = masks.shape[0]
    fore = np.repeat(masks.reshape(r, -1), channels, axis=1)
    back = 1.0 - fore
    fore = fore / fore.sum(axis=1, keepdims=True)
    back = back / back.sum(axis=1, keepdims=True)
    return np.concatenate([fore, back], axis=0)


def choose_strategy(d: int, num_rows: int, itemsize: int, memory_budget: int) -> str:
    """'materialize' if the Jacobian (twice, for the weighted product) fits ``memory_budget`` bytes."""
    return "materialize" if 2 * d * num_rows * itemsize <= memory_budget else "transpose"


def region_grams(fn, latents, masks, *, tangent_chunk: int = 64, per_sample: bool = False,
                 preprocess: Preprocess = None, strategy: str = "auto", memory_budget: int = 2 << 30,
                 progress: bool = False):
    """Foreground and background Gram matrices of every region, from one Jacobian per sample.

    Args:
      fn: pure ``g(latent [d]) -> image [H, W, C]``; a ``jax.tree_util.Partial`` (as generators' ``latent_fn``
        return) keeps its weights out of the compiled program.
      latents: ``[N, d]`` (or ``[d]`` for one sample).
      masks: ``[R, H', W']`` or ``[H', W']`` at the resolution of the (preprocessed) image, values in [0, 1].
      tangent_chunk: tangents per batched JVP: the memory/speed knob.
      per_sample: return ``[N, R, d, d]`` instead of the mean over samples.
      preprocess: None, 'official' or a callable (module docstring).
      strategy: 'auto', 'materialize' or 'transpose' (module docstring).
      memory_budget: bytes the materialised Jacobian may take under 'auto'.
      progress: show a progress bar over samples.

    Returns:
      ``(A, B)``: ``[R, d, d]`` each, averaged over samples (or ``[N, R, d, d]`` with ``per_sample``).

    Raises:
      ValueError / regions.RegionError: bad latents or masks (wrong size, empty region, no background).
      FloatingPointError: a sample's Jacobian holds NaN or inf (the message names the sample).
    """
    latents = jnp.asarray(latents)
    if latents.ndim == 1:
        latents = latents[None]
    if latents.ndim != 2 or latents.shape[0] == 0:
        raise ValueError(f"latents must be [N, d] with N >= 1; got shape {latents.shape}.")
    h, w, c = output_shape(fn, latents[0], preprocess)
    m = regions.validate_masks(masks, (h, w))
    weights = jnp.asarray(mask_weights(m, c), latents.dtype)
    d, r = latents.shape[1], m.shape[0]
    if strategy == "auto":
        strategy = choose_strategy(d, h * w * c, latents.dtype.itemsize, memory_budget)
    fn = _as_partial(fn)
    samples = range(latents.shape[0])
    if progress:
        from tqdm.auto import tqdm
        samples = tqdm(samples, desc="Jacobian Grams", unit="sample")
    total, per = None, []
    for i in samples:
        g = weighted_grams(fn, latents[i], weights, int(tangent_chunk), preprocess, strategy)
        if not bool(jnp.all(jnp.isfinite(g))):
            raise FloatingPointError(f"Sample {i}: the Jacobian holds NaN or inf (latent {i} of {latents.shape[0]}); "
                                     "check that latent and the generator's weights for non-finite values.")
        if per_sample:
            per.append(g)
        total = g if total is None else total + g
    if per_sample:
        grams = jnp.stack(per).reshape(latents.shape[0], 2, r, d, d)
        return grams[:, 0], grams[:, 1]
    grams = (total / latents.shape[0]).reshape(2, r, d, d)
    return grams[0], grams[1]
