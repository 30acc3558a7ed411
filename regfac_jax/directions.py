"""Directions from Gram matrices: the generalized symmetric eigenproblem ``A n = lambda B n``.

ReSeFa's direction for a region maximises the generalized Rayleigh quotient ``n^T A n / n^T B n`` of
the foreground Gram ``A`` against the background Gram ``B``. We solve it in closed form the
numerically sound way (``method='whiten'``, the default):

1. regularise ``B`` (it is rank-deficient whenever the image has fewer background rows than latent
   dimensions, and nearly so in practice): ``B + delta I``, ``delta`` from
   :func:`regularization_amount` ('auto' by default);
2. whiten with the Cholesky factor ``B + delta I = L L^T``: ``C = L^{-1} A L^{-T}`` (two triangular
   solves);
3. ``eigh(C) = (lambda, Y)`` and ``V = L^{-T} Y``, so ``V^T (B + delta I) V = I`` and
   ``A V = (B + delta I) V diag(lambda)``.

The paper's code (``compute_direction.py`` of genforce/resefa) instead forms ``inv(B) . A`` with
numpy and calls the non-symmetric ``eig``. Both of its runs are reproduced flag for flag, on the
host, for reproduction and comparison:

* ``method='official'``, the script's default run: **no regularisation at all**; ``A`` and ``B`` in
  float32 (the paper's Grams come from float32 Jacobians), so ``inv`` and ``eig`` run in float32
  LAPACK.
* ``method='official_full_rank'``, the script's ``--full_rank`` run: ``B + tau * trace(B) * I`` with
  ``tau = 1e-3`` (its ``--tao``); the trace of the float32 ``B`` is taken in float32, and adding
  numpy's float64 identity makes the regularised ``B``, ``inv`` and ``eig`` float64.

In both, eigenvalues are the real parts sorted descending (``argsort`` of their negation), and
directions are the real parts of ``eig``'s eigenvectors as rows. ``eig`` returns unit columns, so
every row is unit norm except the real part of a complex-conjugate pair (a round-off artefact of the
non-symmetric solve), which the paper keeps as it is; nothing is renormalised and the sign is
whatever LAPACK returns (no convention), as in the paper's files.

Output layout follows the paper's ``.npy`` files: directions as rows ``[k, d]``, eigenvalues
descending. Sign conventions: 'whiten' makes the largest-magnitude entry of each direction positive;
the official methods keep LAPACK's signs (compare them with ``|cos|``).
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
    """Scale-free default: eigen-directions of B below ``rtol * mean eigenvalue`` are treated as
    round-off.

    ``sqrt(eps)`` of the dtype (3.5e-4 in float32, 1.5e-8 in float64): a Gram accumulated from
    float32 Jacobians carries relative errors of that order in its small eigenvalues, so resolving
    below it only amplifies noise.
    """
    return float(np.sqrt(np.finfo(np.dtype(dtype)).eps))


def regularization_amount(
    B: jax.Array,
    regularization: Regularization | float = "auto",
    tau: float | None = None,
    A: jax.Array | None = None,
) -> jax.Array:
    """The ``delta`` added to B's diagonal.

    Args:
      B: ``[d, d]`` symmetric positive semi-definite.
      regularization: 'auto' (``tau * trace(B) / d``, tau defaulting to :func:`default_rtol`),
        'paper' (``tau * trace(B)``, tau defaulting to the paper's 1e-3), 'none' (0), or an absolute
        float.
      tau: overrides the coefficient of 'auto' or 'paper'.
      A: the foreground Gram; when given, 'auto' and 'paper' never return less than
        ``rtol^2 * trace(A) / d`` (nor less than ``sqrt(tiny)``), so that a zero B (an edit that
        leaves the background untouched) still gives finite directions instead of NaN.
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
        raise ValueError(
            f"regularization must be 'auto', 'paper', 'none' or a float; got {regularization!r}."
        )
    floor = jnp.sqrt(jnp.finfo(B.dtype).tiny)
    if A is not None:
        floor = jnp.maximum(floor, rtol**2 * jnp.trace(A, axis1=-2, axis2=-1) / d)
    return jnp.maximum(delta, floor)


def _check_pair(A, B):
    if A.ndim < 2 or A.shape[-1] != A.shape[-2] or A.shape != B.shape:
        raise ValueError(
            "A and B must be square matrices of the same shape [..., d, d]; got "
            f"{A.shape} and {B.shape}."
        )


def _is_concrete(x) -> bool:
    return not isinstance(x, jax.core.Tracer)


def _warn_if_singular(B, delta):
    """Eager-mode diagnostics: NaNs are an error, a (near-)singular B a warning."""
    Bn = np.asarray(B, np.float64)
    if not np.all(np.isfinite(Bn)):
        raise FloatingPointError(
            "B contains NaN or inf; check the Jacobians (regfac_jax.jacobian reports the sample)."
        )
    ev = np.linalg.eigvalsh(Bn.reshape((-1,) + Bn.shape[-2:]))
    top = np.maximum(ev[:, -1:], np.finfo(np.float64).tiny)
    rank = (ev > top * default_rtol(np.dtype(B.dtype)) * 1e-2).sum(-1)
    d = Bn.shape[-1]
    if np.any(rank < d):
        warnings.warn(
            f"B is singular or nearly so (numerical rank {rank.min()} of {d}); it is regularised "
            "by adding "
            f"delta * I with delta = {np.asarray(delta).max():.3g}. Pass regularization=... to "
            "choose delta.",
            RuntimeWarning,
            stacklevel=3,
        )


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


def _batched_whitened_eigh(A, B, delta, b_orthonormal: bool):
    """:func:`_whitened_eigh` over the batch axes of A, B [..., d, d]; refuses a NaN result."""

    def fn(a, b, dl):  # one [d, d] pair; vmapped below over every leading batch axis
        return _whitened_eigh(a, b, dl, b_orthonormal)

    for _ in range(A.ndim - 2):
        fn = jax.vmap(fn)
    evals, dirs = fn(A, B, delta)
    if _is_concrete(evals) and not bool(jnp.all(jnp.isfinite(evals))):
        raise FloatingPointError(
            "The eigen-solve produced NaN: A or B holds non-finite values, or B + delta I is "
            "not positive definite (use regularization='auto' or a larger tau)."
        )
    return evals, dirs


Method = Literal["whiten", "official", "official_full_rank"]
METHODS = ("whiten", "official", "official_full_rank")


def generalized_eigh(
    A,
    B,
    *,
    k: int | None = None,
    regularization: Regularization | float | None = None,
    tau: float | None = None,
    b_orthonormal: bool = False,
    method: Method = "whiten",
):
    """Solves ``A n = lambda B n`` for symmetric A and symmetric positive semi-definite B.

    Args:
      A: ``[..., d, d]`` foreground Gram (symmetric).
      B: ``[..., d, d]`` background Gram (symmetric PSD).
      k: keep the top ``k`` directions (default all ``d``).
      regularization: 'whiten' only (default 'auto'), see :func:`regularization_amount`. The
        official methods fix their own and refuse any other: 'official' never regularises,
        'official_full_rank' adds ``tau * trace(B) * I``.
      tau: coefficient of 'auto' / 'paper' (whiten), or the paper's ``--tao`` of
        'official_full_rank' (1e-3).
      b_orthonormal: ('whiten' only) directions with ``n^T (B + delta I) n = 1`` instead of unit
        norm.
      method: 'whiten' (ours: Cholesky whitening + ``eigh``; works under ``jit``/``vmap``,
        float32/float64), 'official' (the paper script's default run) or 'official_full_rank' (its
        ``--full_rank`` run); the official ones run numpy on the host, eager only (module
        docstring).

    Returns:
      ``(eigenvalues [..., k], directions [..., k, d])``: eigenvalues descending, directions as rows
      (the paper's ``.npy`` layout). 'whiten': each unit norm (or B-orthonormal), sign fixed so the
      largest-magnitude entry is positive. Official methods: numpy arrays exactly as the paper's
      script computes them (float32 for 'official', float64 for 'official_full_rank'; LAPACK's
      signs).

    Raises:
      ValueError: bad shapes, an unknown method, or a regularisation the chosen official method does
        not have.
      FloatingPointError: non-finite input or output.
      numpy.linalg.LinAlgError: ('official') B is exactly singular, where the paper's script fails
        as well.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}.")
    A = jnp.asarray(A)
    B = jnp.asarray(B)
    _check_pair(A, B)
    if method != "whiten":
        _check_official_options(method, regularization, tau, b_orthonormal)
        return _official(
            A, B, k, full_rank=method == "official_full_rank", tau=PAPER_TAU if tau is None else tau
        )
    regularization = "auto" if regularization is None else regularization
    delta = regularization_amount(B, regularization, tau, A)
    if _is_concrete(B):
        _warn_if_singular(B, delta)

    evals, dirs = _batched_whitened_eigh(A, B, delta, b_orthonormal)
    if k is not None:
        evals, dirs = evals[..., :k], dirs[..., :k, :]
    return evals, dirs


def _check_official_options(method: str, regularization, tau, b_orthonormal: bool) -> None:
    """The official methods reproduce the paper's two runs exactly; other settings have no paper
    equivalent."""
    allowed = ("none",) if method == "official" else ("paper",)
    if regularization is not None and regularization not in allowed:
        raise ValueError(
            f"method={method!r} reproduces the paper's "
            f"{'default' if method == 'official' else '--full_rank'} run, "
            f"which {'never regularises' if method == 'official' else 'adds tau * trace(B) * I'}; "
            f"got regularization={regularization!r}. Leave regularization unset, use "
            "method='official_full_rank' "
            "(B + tau * trace(B) * I) or method='whiten' with the regularization you want."
        )
    if method == "official" and tau is not None:
        raise ValueError(
            "method='official' has no tau (the paper's default run adds no ridge); use "
            "method='official_full_rank' for the paper's --full_rank --tao TAU."
        )
    if tau is not None and not tau >= 0:
        raise ValueError(f"tau must be >= 0, got {tau}.")
    if b_orthonormal:
        raise ValueError(
            f"b_orthonormal applies to method='whiten' only; {method!r} returns eig's unit vectors."
        )


def _paper_solve(a: np.ndarray, b: np.ndarray, full_rank: bool, tau: float):
    """One ``[d, d]`` pair the way the paper's script solves it; ``a``, ``b`` float32 -> (values
    [d], rows [d, d])."""
    if full_rank:
        # trace of the float32 Gram in float32, then (paper's numpy 1.21) a float64 coefficient
        # times numpy's float64 identity: the regularised B, inv and eig are float64.
        b = b + (tau * np.float64(np.trace(b))) * np.identity(b.shape[0])
    try:
        m = np.linalg.inv(b).dot(a)
    except np.linalg.LinAlgError as err:
        raise np.linalg.LinAlgError(
            "B is exactly singular, so the paper's default run (inv(B) . A, no regularisation) "
            "fails here too; use "
            "method='official_full_rank' (the paper's --full_rank) or method='whiten'."
        ) from err
    values, vectors = np.linalg.eig(m)
    values, rows = np.real(values), np.real(vectors).T
    order = np.argsort(-values)
    return values[order], rows[order]


def _official(A, B, k, full_rank: bool, tau: float):
    """The paper's solver over every leading batch index (see the module docstring)."""
    A32 = np.asarray(A, np.float32)
    B32 = np.asarray(B, np.float32)
    if not (np.all(np.isfinite(A32)) and np.all(np.isfinite(B32))):
        raise FloatingPointError(
            "A or B contains NaN or inf (or overflows float32, the paper's dtype); check the "
            "Jacobians (regfac_jax.jacobian reports the sample)."
        )
    batch, d = A32.shape[:-2], A32.shape[-1]
    solved = [
        _paper_solve(a, b, full_rank, tau)
        for a, b in zip(A32.reshape(-1, d, d), B32.reshape(-1, d, d), strict=True)
    ]
    evals = np.stack([e for e, _ in solved]).reshape(batch + (d,))
    dirs = np.stack([v for _, v in solved]).reshape(batch + (d, d))
    if not (np.all(np.isfinite(evals)) and np.all(np.isfinite(dirs))):
        raise FloatingPointError(
            "The paper's eig(inv(B) . A) produced NaN or inf: B is too close to singular for "
            "it; use method='official_full_rank' or method='whiten'."
        )
    if k is not None:
        evals, dirs = evals[..., :k], dirs[..., :k, :]
    return evals, dirs


def rayleigh_quotient(A, B, directions) -> jax.Array:
    """``n^T A n / n^T B n`` for each row ``n`` of ``directions`` ``[k, d]`` -> ``[k]``."""
    n = jnp.asarray(directions)
    num = jnp.einsum("kd,de,ke->k", n, A, n)
    den = jnp.einsum("kd,de,ke->k", n, B, n)
    return num / den
