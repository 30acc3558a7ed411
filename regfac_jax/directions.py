"""Directions from Gram matrices: the generalized symmetric eigenproblem ``A n = lambda B n``.

ReSeFa's direction for a region maximises the generalized Rayleigh quotient ``n^T A n / n^T B n`` of the
foreground Gram ``A`` against the background Gram ``B``. We solve it in closed form the numerically sound way:

1. regularise ``B`` (it is rank-deficient whenever the image has fewer background rows than latent dimensions, and
   nearly so in practice): ``B + delta I``;
2. whiten with the Cholesky factor ``B + delta I = L L^T``: ``C = L^{-1} A L^{-T}`` (two triangular solves);
3. ``eigh(C) = (lambda, Y)`` and ``V = L^{-T} Y``, so ``V^T (B + delta I) V = I`` and ``A V = (B + delta I) V diag(lambda)``.

The paper's code instead forms ``inv(B) @ A`` and calls a non-symmetric ``eig``; that is kept as
``method='official'`` (host numpy, as the paper ran it) for comparison and reproduction.

Output layout follows the paper's ``.npy`` files: directions as rows ``[k, d]``, unit norm, eigenvalues descending.
"""
from __future__ import annotations

import warnings
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

Regularization = Literal["auto", "paper", "none"]

#: The paper's coefficient: ``B + tau * trace(B) * I``.
PAPER_TAU = 1e-3


def default_rtol(dtype) -> float:
    """Scale-free default: eigen-directions of B below ``rtol * mean eigenvalue`` are treated as round-off.

    ``sqrt(eps)`` of the dtype (3.5e-4 in float32, 1.5e-8 in float64): a Gram accumulated from float32 Jacobians
    carries relative errors of that order in its small eigenvalues, so resolving below it only amplifies noise.
    """
    return float(np.sqrt(np.finfo(np.dtype(dtype)).eps))


def regularization_amount(B: jax.Array, regularization: Regularization | float = "auto",
                          tau: float | None = None, A: jax.Array | None = None) -> jax.Array:
    """The ``delta`` added to B's diagonal.

    Args:
      B: ``[d, d]`` symmetric positive semi-definite.
      regularization: 'auto' (``tau * trace(B) / d``, tau defaulting to :func:`default_rtol`), 'paper'
        (``tau * trace(B)``, tau defaulting to the paper's 1e-3), 'none' (0), or an absolute float.
      tau: overrides the coefficient of 'auto' or 'paper'.
      A: the foreground Gram; when given, 'auto' and 'paper' never return less than ``rtol^2 * trace(A) / d``
        (nor less than ``sqrt(tiny)``), so that a zero B (an edit that leaves the background untouched) still gives
        finite directions instead of NaN.
    """
    d = B.shape[-1]
    trace = jnp.trace(B, axis1=-2, axis2=-1)
    rtol = default_rtol(B.dtype)
    if regularization == "none":
        return jnp.zeros_like(trace)
    if isinstance(regularization, (int, float)) and not isinstance(regularization, bool):
        if regularization < 0:
            raise ValueError(f"regularization must be >= 0, got {regularization}.")
        return jnp.full_like(trace, regularization)
    if regularization == "auto":
        delta = (rtol if tau is None else tau) * trace / d
    elif regularization == "paper":
        delta = (PAPER_TAU if tau is None else tau) * trace
    else:
        raise ValueError(f"regularization must be 'auto', 'paper', 'none' or a float; got {regularization!r}.")
    floor = jnp.sqrt(jnp.finfo(B.dtype).tiny)
    if A is not None:
        floor = jnp.maximum(floor, rtol ** 2 * jnp.trace(A, axis1=-2, axis2=-1) / d)
    return jnp.maximum(delta, floor)


def _check_pair(A, B):
    if A.ndim < 2 or A.shape[-1] != A.shape[-2] or A.shape != B.shape:
        raise ValueError(f"A and B must be square matrices of the same shape [..., d, d]; got {A.shape} and {B.shape}.")


def _is_concrete(x) -> bool:
    return not isinstance(x, jax.core.Tracer)


def _warn_if_singular(B, delta):
    """Eager-mode diagnostics: NaNs are an error, a (near-)singular B a warning."""
    Bn = np.asarray(B, np.float64)
    if not np.all(np.isfinite(Bn)):
        raise FloatingPointError("B contains NaN or inf; check the Jacobians (regfac_jax.jacobian reports the sample).")
    ev = np.linalg.eigvalsh(Bn.reshape((-1,) + Bn.shape[-2:]))
    top = np.maximum(ev[:, -1:], np.finfo(np.float64).tiny)
    rank = (ev > top * default_rtol(np.dtype(B.dtype)) * 1e-2).sum(-1)
    d = Bn.shape[-1]
    if np.any(rank < d):
        warnings.warn(
            f"B is singular or nearly so (numerical rank {rank.min()} of {d}); it is regularised by adding "
            f"delta * I with delta = {np.asarray(delta).max():.3g}. Pass regularization=... to choose delta.",
            RuntimeWarning, stacklevel=3)


def _whitened_eigh(A, B, delta, b_orthonormal: bool):
    d = A.shape[-1]
    A = 0.5 * (A + A.T)
    Breg = 0.5 * (B + B.T) + delta * jnp.eye(d, dtype=B.dtype)
    L = jnp.linalg.cholesky(Breg)
    # C = L^{-1} A L^{-T}, by two triangular solves (never an explicit inverse).
    X = jax.scipy.linalg.solve_triangular(L, A, lower=True)
    C = jax.scipy.linalg.solve_triangular(L, X.T, lower=True)
    C = 0.5 * (C + C.T)
    evals, Y = jnp.linalg.eigh(C)
    V = jax.scipy.linalg.solve_triangular(L.T, Y, lower=False)  # columns, B-orthonormal
    order = jnp.argsort(-evals)
    evals, V = evals[order], V[:, order]
    if not b_orthonormal:
        V = V / jnp.linalg.norm(V, axis=0, keepdims=True)
    # A deterministic sign: the largest-magnitude entry of each direction is positive.
    idx = jnp.argmax(jnp.abs(V), axis=0)
    V = V * jnp.sign(V[idx, jnp.arange(d)])[None, :]
    return evals, V.T


def generalized_eigh(A, B, *, k: int | None = None, regularization: Regularization | float = "auto",
                     tau: float | None = None, b_orthonormal: bool = False,
                     method: Literal["whiten", "official"] = "whiten"):
    """Solves ``A n = lambda B n`` for symmetric A and symmetric positive semi-definite B.

    Args:
      A: ``[..., d, d]`` foreground Gram (symmetric).
      B: ``[..., d, d]`` background Gram (symmetric PSD; regularised as described in the module doc).
      k: keep the top ``k`` directions (default all ``d``).
      regularization: see :func:`regularization_amount`.
      tau: coefficient for 'auto' / 'paper' regularization.
      b_orthonormal: return directions with ``n^T (B + delta I) n = 1`` instead of unit norm.
      method: 'whiten' (ours: Cholesky whitening + ``eigh``; works under ``jit``/``vmap``, float32/float64) or
        'official' (the paper's ``eig(inv(B) @ A)`` on the host, real parts, sorted; eager only).

    Returns:
      ``(eigenvalues [..., k], directions [..., k, d])``: eigenvalues descending, directions as rows (the
      paper's ``.npy`` layout), each unit norm (or B-orthonormal), sign fixed so the largest entry is positive.
    """
    A = jnp.asarray(A)
    B = jnp.asarray(B)
    _check_pair(A, B)
    delta = regularization_amount(B, regularization, tau, A)
    if method == "official":
        return _official(A, B, delta, k)
    if method != "whiten":
        raise ValueError(f"method must be 'whiten' or 'official', got {method!r}.")
    if _is_concrete(B):
        _warn_if_singular(B, delta)
    fn = lambda a, b, dl: _whitened_eigh(a, b, dl, b_orthonormal)  # noqa: E731
    for _ in range(A.ndim - 2):
        fn = jax.vmap(fn)
    evals, dirs = fn(A, B, delta)
    if _is_concrete(evals) and not bool(jnp.all(jnp.isfinite(evals))):
        raise FloatingPointError("The eigen-solve produced NaN: A or B holds non-finite values, or B + delta I is "
                                 "not positive definite (use regularization='auto' or a larger tau).")
    if k is not None:
        evals, dirs = evals[..., :k], dirs[..., :k, :]
    return evals, dirs


def _official(A, B, delta, k):
    """The paper's solver: ``eig(inv(B + delta I) @ A)``, real parts, descending; rows, unit norm."""
    A = np.asarray(A, np.float64)
    B = np.asarray(B, np.float64)
    delta = np.asarray(delta, np.float64)
    batch = A.shape[:-2]
    A2, B2, d2 = A.reshape((-1,) + A.shape[-2:]), B.reshape((-1,) + B.shape[-2:]), delta.reshape(-1)
    out_e, out_v = [], []
    for a, b, dl in zip(A2, B2, d2):
        m = np.linalg.inv(b + dl * np.eye(b.shape[0])) @ a
        ev, vec = np.linalg.eig(m)
        ev, vec = np.real(ev), np.real(vec)
        order = np.argsort(-ev)
        v = vec[:, order].T
        v = v / np.linalg.norm(v, axis=1, keepdims=True)
        out_e.append(ev[order])
        out_v.append(v)
    evals = np.stack(out_e).reshape(batch + (A.shape[-1],))
    dirs = np.stack(out_v).reshape(batch + A.shape[-2:])
    if k is not None:
        evals, dirs = evals[..., :k], dirs[..., :k, :]
    return evals, dirs


def rayleigh_quotient(A, B, directions) -> jax.Array:
    """``n^T A n / n^T B n`` for each row ``n`` of ``directions`` ``[k, d]`` -> ``[k]``."""
    n = jnp.asarray(directions)
    num = jnp.einsum("kd,de,ke->k", n, A, n)
    den = jnp.einsum("kd,de,ke->k", n, B, n)
    return num / den

