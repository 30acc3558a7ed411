"""How local is an edit? In-region share of the change energy, change outside the region, calibrated
steps.

For a generator ``g``, a latent ``w``, a unit direction ``n``, a step ``a`` and a region mask ``m``
``[H, W]``:

    delta(a)   = g(w + a n) - g(w)                                  [H, W, C]
    E_in(a)    = sum_p m_p delta_p^2        E_out(a) = sum_p (1 - m_p) delta_p^2      (p over pixels and channels)
    share(a)   = E_in / (E_in + E_out)                              the in-region share of the change energy
    rms_in(a)  = sqrt(E_in / (C * sum m))   rms_out(a) = sqrt(E_out / (C * sum (1 - m)))

Edits are symmetric: every quantity is measured at ``+a`` and ``-a`` and the energies are averaged,
so the sign a method happens to give its direction does not matter. Steps are **calibrated** per
sample so that every method changes the region by the same amount (``rms_in = target``), found by
bisection on ``log a``: comparing methods at equal foreground change is what makes their shares and
out-of-region changes comparable.

First-order version (for scoring many candidates cheaply): with the per-region Grams of
:func:`regfac_jax.jacobian.region_grams` (``A`` averaged over region rows, ``B`` over background
rows), ``share_lin(n) = |m| n^T A n / (|m| n^T A n + |1 - m| n^T B n)``, where ``|m|`` counts region
rows.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from regfac_jax import jacobian


@jax.jit
def _render(fn, latents):
    return jax.vmap(fn)(latents)


def render(fn: Callable, latents, chunk: int = 256) -> jax.Array:
    """Images of ``latents`` ``[N, d]`` under ``fn(latent [d]) -> [H, W, C]``: ``[N, H, W, C]`` (in
    chunks)."""
    fn = jacobian.as_partial(fn)
    latents = jnp.asarray(latents)
    parts = [_render(fn, latents[i : i + chunk]) for i in range(0, latents.shape[0], chunk)]
    return jnp.concatenate(parts) if len(parts) > 1 else parts[0]


def energies(delta, mask) -> tuple[jax.Array, jax.Array]:
    """``(E_in, E_out)`` of changes ``delta`` ``[..., H, W, C]`` for ``mask`` ``[H, W]`` -> two
    ``[...]``."""
    sq = jnp.sum(jnp.square(delta), axis=-1)
    m = jnp.asarray(mask, sq.dtype)
    return jnp.sum(sq * m, axis=(-2, -1)), jnp.sum(sq * (1 - m), axis=(-2, -1))


def _symmetric_energies(fn, latents, base, direction, steps, mask):
    """Mean over the edits ``+a``/``-a`` of (E_in, E_out), per sample ``[N]``."""
    n = jnp.asarray(direction, latents.dtype)
    shifted = jnp.concatenate([latents + steps[:, None] * n, latents - steps[:, None] * n])
    delta = render(fn, shifted) - jnp.concatenate([base, base])
    e_in, e_out = energies(delta, mask)
    half = latents.shape[0]
    return 0.5 * (e_in[:half] + e_in[half:]), 0.5 * (e_out[:half] + e_out[half:])


def _check(latents, direction, mask):
    latents = jnp.asarray(latents)
    if latents.ndim != 2:
        raise ValueError(f"latents must be [N, d]; got shape {latents.shape}.")
    n = np.asarray(direction, np.float32).reshape(-1)
    if n.shape[0] != latents.shape[1]:
        raise ValueError(
            f"direction has {n.shape[0]} entries but latents have width {latents.shape[1]}."
        )
    if not np.isfinite(n).all() or np.linalg.norm(n) == 0:
        raise ValueError("direction must be finite and non-zero.")
    m = np.asarray(mask, np.float32)
    if m.ndim != 2 or m.sum() <= 0 or (1 - m).sum() <= 0:
        raise ValueError("mask must be [H, W] with both region and background pixels.")
    return latents, jnp.asarray(n / np.linalg.norm(n)), m


def calibrate_steps(
    fn,
    latents,
    direction,
    mask,
    target_rms: float = 0.2,
    lo: float = 1e-3,
    hi: float = 1e3,
    iters: int = 16,
    base=None,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample steps ``a`` with ``rms_in(±a) = target_rms``, by bisection on ``log a`` in
    ``[lo, hi]``.

    Args:
      fn: ``g(latent [d]) -> image [H, W, C]``.
      latents: ``[N, d]``.
      direction: ``[d]`` (normalised here).
      mask: ``[H, W]`` region mask.
      target_rms: the foreground RMS change every edit is calibrated to (image units).
      lo, hi: the bracket for ``a``.
      iters: bisection steps (the final relative precision is ``(hi / lo) ** (0.5 ** iters)``).
      base: ``render(fn, latents)`` when already computed.
    Returns:
      ``(steps [N], reached [N] bool)``; where even ``hi`` stays below the target, the step is
      ``hi`` and ``reached`` is False.
    """
    latents, n, m = _check(latents, direction, mask)
    base = render(fn, latents) if base is None else base
    fg_rows = float(m.sum()) * base.shape[-1]
    log_lo = jnp.full((latents.shape[0],), np.log(lo), latents.dtype)
    log_hi = jnp.full((latents.shape[0],), np.log(hi), latents.dtype)
    e_in, _ = _symmetric_energies(fn, latents, base, n, jnp.exp(log_hi), m)
    reached = np.asarray(jnp.sqrt(e_in / fg_rows) >= target_rms)
    for _ in range(iters):
        mid = 0.5 * (log_lo + log_hi)
        e_in, _ = _symmetric_energies(fn, latents, base, n, jnp.exp(mid), m)
        above = jnp.sqrt(e_in / fg_rows) >= target_rms
        log_hi = jnp.where(above, mid, log_hi)
        log_lo = jnp.where(above, log_lo, mid)
    steps = np.where(reached, np.exp(np.asarray(0.5 * (log_lo + log_hi))), hi)
    return steps.astype(np.float32), reached


def locality(fn, latents, direction, mask, target_rms: float = 0.2, **calibration) -> dict:
    """Locality of one direction on held-out samples, at calibrated steps.

    Returns:
      dict of per-sample arrays ``[N]``: 'share' (in-region share of the change energy), 'rms_out'
      and 'rms_in' (RMS change outside / inside the region), 'step' (the calibrated |a|), 'reached'
      (calibration succeeded).
    """
    latents, n, m = _check(latents, direction, mask)
    base = render(fn, latents)
    steps, reached = calibrate_steps(fn, latents, n, m, target_rms, base=base, **calibration)
    e_in, e_out = _symmetric_energies(fn, latents, base, n, jnp.asarray(steps, latents.dtype), m)
    c = base.shape[-1]
    total = e_in + e_out
    return {
        "share": np.asarray(e_in / jnp.maximum(total, 1e-30)),
        "rms_in": np.asarray(jnp.sqrt(e_in / (c * m.sum()))),
        "rms_out": np.asarray(jnp.sqrt(e_out / (c * (1 - m).sum()))),
        "step": steps,
        "reached": reached,
    }


def summarize(result: dict) -> dict:
    """Mean and standard deviation over samples of each per-sample quantity of :func:`locality`."""
    out = {}
    for key in ("share", "rms_out", "rms_in", "step"):
        v = np.asarray(result[key], np.float64)
        out[key] = {"mean": float(v.mean()), "std": float(v.std())}
    out["reached"] = float(np.mean(result["reached"]))
    out["num_samples"] = int(np.asarray(result["share"]).shape[0])
    return out


def linear_share(A, B, mask, directions, channels: int) -> np.ndarray:
    """First-order in-region share of each row of ``directions`` ``[k, d]`` from one region's Grams
    -> ``[k]``."""
    m = np.asarray(mask, np.float64)
    n_fg, n_bg = channels * m.sum(), channels * (1 - m).sum()
    v = np.asarray(directions, np.float64)
    a = np.einsum("kd,de,ke->k", v, np.asarray(A, np.float64), v) * n_fg
    b = np.einsum("kd,de,ke->k", v, np.asarray(B, np.float64), v) * n_bg
    return a / np.maximum(a + b, 1e-300)


def best_of(A, B, mask, candidates, channels: int) -> tuple[int, np.ndarray]:
    """Index and row of the candidate direction with the highest :func:`linear_share`."""
    scores = linear_share(A, B, mask, candidates, channels)
    i = int(np.argmax(scores))
    return i, np.asarray(candidates)[i]


def scaled_box(box, factor: float, grid: int = 256) -> tuple[int, int, int, int]:
    """A paper-convention box grown (``factor`` > 1) about its centre, clipped to the grid."""
    cr, cc, h, w = box
    h2, w2 = min(grid, int(round(h * factor))), min(grid, int(round(w * factor)))
    return _clip_box(cr, cc, h2, w2, grid)


def shifted_box(box, fraction: float, grid: int = 256) -> tuple[int, int, int, int]:
    """The same box moved down and right by ``fraction`` of its height and width, clipped to the
    grid."""
    cr, cc, h, w = box
    return _clip_box(cr + int(round(fraction * h)), cc + int(round(fraction * w)), h, w, grid)


def _clip_box(cr, cc, h, w, grid):
    cr = min(max(cr, h // 2), grid - (h - h // 2))
    cc = min(max(cc, w // 2), grid - (w - w // 2))
    return (int(cr), int(cc), int(h), int(w))


__all__ = [
    "best_of",
    "calibrate_steps",
    "energies",
    "linear_share",
    "locality",
    "render",
    "scaled_box",
    "shifted_box",
    "summarize",
]
