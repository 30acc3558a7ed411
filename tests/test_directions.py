"""The whitened generalized eigen-solver against scipy, on well-posed and rank-deficient problems."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

from regfac_jax import directions


def _backward_error(A, B, evals, V):
    """LAPACK's measure: max_i |A v_i - l_i B v_i| / ((|A| + |l_i| |B|) |v_i|) (2-norms)."""
    r = A @ V - (B @ V) * evals[None, :]
    scale = (np.linalg.norm(A, 2) + np.abs(evals) * np.linalg.norm(B, 2)) * np.linalg.norm(V, axis=0)
    return float(np.max(np.linalg.norm(r, axis=0) / scale))


def _spd_pair(seed, d=12, rank_b=None, dtype=np.float64):
    rng = np.random.default_rng(seed)
    ja = rng.normal(size=(3 * d, d))
    jb = rng.normal(size=(rank_b or 3 * d, d))
    return (ja.T @ ja).astype(dtype), (jb.T @ jb).astype(dtype)


def test_matches_scipy_float64(x64):
    A, B = _spd_pair(0)
    evals, dirs = directions.generalized_eigh(jnp.asarray(A), jnp.asarray(B), regularization="none",
                                             b_orthonormal=True)
    ref = scipy.linalg.eigh(A, B, eigvals_only=True)[::-1]
    evals, V = np.asarray(evals), np.asarray(dirs).T
    # Well-conditioned 12x12 problem in float64: agreement to round-off (relative 1e-10 is ~1e5 eps).
    np.testing.assert_allclose(evals, ref, rtol=1e-10)
    resid = np.abs(A @ V - B @ V @ np.diag(evals)).max() / np.abs(A).max()
    assert resid <= 1e-10
    np.testing.assert_allclose(V.T @ B @ V, np.eye(A.shape[0]), atol=1e-10)
    assert np.all(np.diff(evals) <= 0)  # descending


def test_unit_rows_and_rayleigh_quotients(x64):
    A, B = _spd_pair(1)
    evals, dirs = directions.generalized_eigh(A, B, regularization="none")
    np.testing.assert_allclose(np.linalg.norm(dirs, axis=1), 1.0, atol=1e-12)
    # The Rayleigh quotient of each unit direction is its eigenvalue (it is scale-free).
    np.testing.assert_allclose(directions.rayleigh_quotient(A, B, dirs), evals, rtol=1e-10)
    # And the top direction maximises it: no random direction beats it.
    rng = np.random.default_rng(2)
    rand = rng.normal(size=(200, A.shape[0]))
    assert np.max(directions.rayleigh_quotient(A, B, rand)) <= evals[0] * (1 + 1e-12)


def test_rank_deficient_b_is_regularised_with_warning(x64):
    A, B = _spd_pair(3, d=12, rank_b=5)  # B has rank 5 of 12
    with pytest.warns(RuntimeWarning, match="singular"):
        evals, dirs = directions.generalized_eigh(A, B)
    assert np.all(np.isfinite(evals)) and np.all(np.isfinite(dirs))
    delta = float(directions.regularization_amount(jnp.asarray(B)))
    Breg = B + delta * np.eye(12)
    ref = scipy.linalg.eigh(A, Breg, eigvals_only=True)[::-1]
    # Same problem, solved by scipy after the same regularisation; the spread of eigenvalues is ~1/delta, so
    # agreement is relative to the largest one.
    np.testing.assert_allclose(evals, ref, rtol=1e-8, atol=1e-10 * ref[0])
    # With delta ~ 1.5e-8 * mean eigenvalue, cond(B + delta I) ~ 1e9, and any Cholesky-based solver (scipy's sygvd
    # included) has a backward error of order eps * cond there: compare ours with scipy's on the same problem.
    w_ref, v_ref = scipy.linalg.eigh(A, Breg)
    ours = _backward_error(A, Breg, np.asarray(evals), np.asarray(dirs).T)
    assert ours <= 10 * max(_backward_error(A, Breg, w_ref, v_ref), 1e-14)


def test_rank_deficient_b_with_paper_regularisation(x64):
    A, B = _spd_pair(3, d=12, rank_b=5)
    with pytest.warns(RuntimeWarning, match="singular"):
        evals, dirs = directions.generalized_eigh(A, B, regularization="paper")
    Breg = B + 1e-3 * np.trace(B) * np.eye(12)
    # cond(B + 1e-3 trace(B) I) ~ 1e3: the backward error is at round-off (1e-10 leaves ~1e5 eps of slack).
    assert _backward_error(A, Breg, np.asarray(evals), np.asarray(dirs).T) <= 1e-10
    np.testing.assert_allclose(evals, scipy.linalg.eigh(A, Breg, eigvals_only=True)[::-1], rtol=1e-10)


def test_zero_b_gives_no_nans():
    A, _ = _spd_pair(4, dtype=np.float32)
    with pytest.warns(RuntimeWarning):
        evals, dirs = directions.generalized_eigh(A, np.zeros_like(A), regularization="auto")
    # trace(B) = 0 makes the scale-free delta 0 as well: the solver must not return NaN silently.
    assert np.all(np.isfinite(evals)) and np.all(np.isfinite(dirs))


def test_float32_residual():
    A, B = _spd_pair(5, dtype=np.float32)
    evals, dirs = directions.generalized_eigh(A, B, regularization="none", b_orthonormal=True)
    V = np.asarray(dirs, np.float64).T
    resid = np.abs(A @ V - B @ V @ np.diag(np.asarray(evals, np.float64))).max() / np.abs(A).max()
    # float32 with condition number ~10: residual a few hundred eps relative.
    assert resid <= 1e-4


def test_jit_equals_eager_and_vmap_equals_loop():
    pairs = [_spd_pair(s, dtype=np.float32) for s in range(3)]
    As = jnp.stack([p[0] for p in pairs])
    Bs = jnp.stack([p[1] for p in pairs])
    eager = [directions.generalized_eigh(a, b) for a, b in zip(As, Bs)]
    jitted = jax.jit(lambda a, b: directions.generalized_eigh(a, b))
    vmapped = jax.vmap(lambda a, b: directions.generalized_eigh(a, b))(As, Bs)
    batched = directions.generalized_eigh(As, Bs)
    for i, (ev, v) in enumerate(eager):
        jv, jd = jitted(As[i], Bs[i])
        # Same float32 program compiled in different contexts: identical up to a few ulps of reassociation.
        np.testing.assert_allclose(jv, ev, rtol=1e-5)
        np.testing.assert_allclose(jd, v, atol=1e-5)
        np.testing.assert_allclose(vmapped[0][i], ev, rtol=1e-5)
        np.testing.assert_allclose(vmapped[1][i], v, atol=1e-5)
        np.testing.assert_allclose(batched[1][i], v, atol=1e-5)


def test_official_method_finds_the_same_top_direction(x64):
    A, B = _spd_pair(6)
    ev_o, d_o = directions.generalized_eigh(A, B, method="official", regularization="paper")
    ev_w, d_w = directions.generalized_eigh(A, B, regularization="paper")
    np.testing.assert_allclose(ev_o, ev_w, rtol=1e-8)
    # Directions are defined up to sign; the official ones are unit rows like ours.
    assert abs(float(np.dot(d_o[0], d_w[0]))) > 1 - 1e-10


def test_bad_input():
    with pytest.raises(ValueError, match="same shape"):
        directions.generalized_eigh(np.eye(3), np.eye(4))
    with pytest.raises(FloatingPointError, match="NaN"):
        directions.generalized_eigh(np.eye(3), np.full((3, 3), np.nan))
    with pytest.raises(ValueError, match="regularization"):
        directions.generalized_eigh(np.eye(3), np.eye(3), regularization="bogus")
