"""Latent directions from ReSeFa and the methods it is measured against, in one place and one
layout.

Every function returns directions as rows ``[k, d]`` (unit norm), best first, like
:func:`regfac_jax.directions.generalized_eigh`. The region-aware methods take the per-region Gram
matrices that :func:`regfac_jax.jacobian.region_grams` computes, so they all see the same Jacobians:

* :func:`sefa`          -- closed-form factorisation of the style-affine weights (region-agnostic): eigenvectors of
                           ``W W^T`` where ``W`` ``[d, sum C]`` stacks every edited layer's affine
                           weight with unit columns.
* :func:`ganspace`      -- principal components of sampled latents (region-agnostic).
* :func:`jacobian_eig`  -- eigenvectors of the foreground Gram ``A`` alone (region-aware, no background term).
* :func:`lowrankgan`    -- robust PCA (principal component pursuit) of ``A`` and of the background Gram ``B``; the
                           principal subspace of low-rank(``A``) projected onto the null space of
                           low-rank(``B``).
* :func:`resefa`        -- the generalized eigenvectors of ``A n = lambda B n`` (largest first).

:data:`METHODS` names them; :data:`REGION_AWARE` says which need Grams.
"""

from __future__ import annotations

from typing import Sequence

import jax.numpy as jnp
import numpy as np

from regfac_jax import directions as directions_lib

METHODS = ("resefa", "lowrankgan", "jacobian_eig", "sefa", "ganspace")
REGION_AWARE = ("resefa", "lowrankgan", "jacobian_eig")


def _unit_rows(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, np.float64)
    norm = np.linalg.norm(v, axis=1, keepdims=True)
    if np.any(norm == 0):
        raise FloatingPointError(
            "A direction came out as the zero vector; the inputs are degenerate."
        )
    return (v / norm).astype(np.float32)


def _symmetric_eig_desc(m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues descending and eigenvectors as rows of a symmetric matrix (float64 on the
    host)."""
    m = np.asarray(m, np.float64)
    evals, vecs = np.linalg.eigh(0.5 * (m + m.T))
    order = np.argsort(-evals)
    return evals[order], vecs[:, order].T


def _check_gram(m, name: str) -> np.ndarray:
    m = np.asarray(m, np.float64)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(
            f"{name} must be one Gram matrix [d, d]; got shape {m.shape}. Pass one region's Gram "
            "(A[r], B[r]) from region_grams."
        )
    if not np.all(np.isfinite(m)):
        raise FloatingPointError(f"{name} holds NaN or inf.")
    return m


# --------------------------------------------------------------------------------------------------
# Region-agnostic baselines
# --------------------------------------------------------------------------------------------------
def style_affine_weights(
    params: dict, layers: Sequence[int] | None = None, num_ws: int | None = None
) -> np.ndarray:
    """The style-affine weights of a StyleGAN2 params tree, stacked ``[w_dim, sum of channels]``.

    Args:
      params: the generator's ``params``
        (``params['synthesis']['b*'][conv0|conv1|torgb]['affine']['weight']``, each ``[w_dim, C]``).
      layers: indices of the per-layer w vectors whose affines to include (None: all).
      num_ws: the generator's num_ws (needed to check ``layers``).
    """
    blocks = sorted(params["synthesis"], key=lambda name: int(name[1:]))
    mats, idx = [], 0
    for name in blocks:
        block = params["synthesis"][name]
        convs = [c for c in ("conv0", "conv1") if c in block]
        for conv in convs:
            mats.append((idx, block[conv]["affine"]["weight"]))
            idx += 1
        if "torgb" in block:
            # torgb shares the next layer's w index
            mats.append((idx, block["torgb"]["affine"]["weight"]))
    if num_ws is not None and layers is not None:
        bad = [i for i in layers if not 0 <= i < num_ws]
        if bad:
            raise ValueError(f"layers {bad} are outside 0..{num_ws - 1}.")
    chosen = [np.asarray(w, np.float64) for i, w in mats if layers is None or i in set(layers)]
    if not chosen:
        raise ValueError(f"No style-affine layer matches layers={list(layers or [])}.")
    return np.concatenate(chosen, axis=1)


def sefa(params: dict, layers: Sequence[int] | None = None, k: int | None = None) -> np.ndarray:
    """SeFa directions ``[k, w_dim]``: top eigenvectors of ``W W^T`` with ``W`` the stacked,
    column-normalised style-affine weights of ``layers`` (see :func:`style_affine_weights`)."""
    w = style_affine_weights(params, layers)
    w = w / np.linalg.norm(w, axis=0, keepdims=True)
    _, vecs = _symmetric_eig_desc(w @ w.T)
    return _unit_rows(vecs[:k])


def ganspace(latents, k: int | None = None) -> np.ndarray:
    """GANSpace directions ``[k, d]``: principal axes of sampled latents ``[N, d]`` (e.g. mapped
    w)."""
    x = np.asarray(latents, np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"ganspace needs latents [N, d] with N >= 2; got shape {x.shape}.")
    x = x - x.mean(axis=0, keepdims=True)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    return _unit_rows(vt[:k])


# --------------------------------------------------------------------------------------------------
# Region-aware methods (one region's Grams)
# --------------------------------------------------------------------------------------------------
def jacobian_eig(A, k: int | None = None) -> np.ndarray:
    """Eigen-directions of the foreground Gram ``A`` ``[d, d]`` alone -> ``[k, d]`` (largest
    first)."""
    _, vecs = _symmetric_eig_desc(_check_gram(A, "A"))
    return _unit_rows(vecs[:k])


def resefa(A, B, k: int | None = None, **kwargs) -> np.ndarray:
    """ReSeFa directions ``[k, d]``: generalized eigenvectors of ``A n = lambda B n``, largest
    lambda first.

    ``kwargs`` go to :func:`regfac_jax.directions.generalized_eigh` (regularization, tau, method).
    """
    _, dirs = directions_lib.generalized_eigh(
        jnp.asarray(_check_gram(A, "A")), jnp.asarray(_check_gram(B, "B")), k=k, **kwargs
    )
    return _unit_rows(np.asarray(dirs))


def robust_pca(
    m, lamb: float = 1 / 60, max_iter: int = 10000, rtol: float = 1e-7
) -> tuple[np.ndarray, np.ndarray]:
    """Principal component pursuit: ``m = L + S`` with ``L`` low-rank and ``S`` sparse, by ADMM.

    Minimises ``||L||_* + lamb * ||S||_1`` subject to ``L + S = m`` with the augmented-Lagrangian
    penalty ``mu = numel / (4 * ||m||_1)`` (LowRankGAN's settings: ``lamb = 1/60``, stop when
    ``||L + S - m||_F <= rtol * ||m||_F`` or after ``max_iter`` iterations). Runs in float64 on the
    host.

    Args:
      m: ``[p, q]``.
    Returns:
      ``(L, S)``, each ``[p, q]``.
    """
    m = np.asarray(m, np.float64)
    norm1 = np.linalg.norm(m, ord=1)
    if norm1 == 0:
        return np.zeros_like(m), np.zeros_like(m)
    mu = m.size / (4.0 * norm1)
    tol = rtol * np.linalg.norm(m)
    low, sparse, dual = np.zeros_like(m), np.zeros_like(m), np.zeros_like(m)

    def soft(x, t):  # soft thresholding: the proximal operator of t * |x|_1
        return np.sign(x) * np.maximum(np.abs(x) - t, 0.0)

    for _ in range(max_iter):
        u, s, vt = np.linalg.svd(m - sparse - dual / mu, full_matrices=False)
        low = (u * soft(s, 1.0 / mu)) @ vt
        sparse = soft(m - low - dual / mu, lamb / mu)
        residual = low + sparse - m
        dual = dual + mu * residual
        if np.linalg.norm(residual) <= tol:
            break
    return low, sparse


def lowrankgan(
    A, B, k: int | None = None, lamb: float = 1 / 60, max_iter: int = 10000, num_relax: int = 0
) -> np.ndarray:
    """LowRankGAN directions ``[k, d]``: the foreground's principal directions projected onto the
    background's null space.

    ``L_A``, ``L_B`` = low-rank parts of ``A``, ``B`` (:func:`robust_pca`); the principal directions
    are the ``rank(L_A)`` leading right singular vectors of ``L_A``; the null space is spanned by
    the right singular vectors of ``L_B`` beyond ``max(1, rank(L_B) - num_relax)`` (at most
    ``d - 1`` of them are dropped, so it is never empty). Each principal direction is projected onto
    it and normalised; directions that lie entirely in the background's range (projection below 1e-9
    of unit length, where the original code would divide by zero) are dropped, so fewer than ``k``
    rows can come back.

    Raises:
      FloatingPointError: every principal direction lies in the background's range.
    """
    a, b = _check_gram(A, "A"), _check_gram(B, "B")
    d = a.shape[0]
    low_a, _ = robust_pca(a, lamb, max_iter)
    low_b, _ = robust_pca(b, lamb, max_iter)
    rank_a = max(1, int(np.linalg.matrix_rank(low_a)))
    rank_b = int(np.linalg.matrix_rank(low_b))
    principal = np.linalg.svd(low_a)[2][:rank_a]  # [rank_a, d]
    null = np.linalg.svd(low_b)[2][min(max(1, rank_b - num_relax), d - 1) :]  # [d - rank_b, d]
    projected = principal @ null.T @ null
    projected = projected[np.linalg.norm(projected, axis=1) > 1e-9]
    if projected.shape[0] == 0:
        raise FloatingPointError(
            "LowRankGAN: every principal direction of the foreground lies in the background's "
            "range, so nothing is left after projecting onto its null space; raise num_relax."
        )
    return _unit_rows(projected[:k])


def region_directions(
    method: str, A=None, B=None, *, params=None, latents=None, layers=None, k: int | None = None
) -> np.ndarray:
    """Dispatches by method name (see :data:`METHODS`); region-aware methods need one region's ``A``
    and ``B``, 'sefa' needs ``params``, 'ganspace' needs ``latents`` ``[N, d]``."""
    if method == "resefa":
        return resefa(A, B, k)
    if method == "lowrankgan":
        return lowrankgan(A, B, k)
    if method == "jacobian_eig":
        return jacobian_eig(A, k)
    if method == "sefa":
        if params is None:
            raise ValueError("sefa needs the generator's params.")
        return sefa(params, layers, k)
    if method == "ganspace":
        if latents is None:
            raise ValueError("ganspace needs sampled latents [N, d].")
        return ganspace(latents, k)
    raise ValueError(f"Unknown method {method!r}; expected one of {', '.join(METHODS)}.")
