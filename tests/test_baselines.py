"""ReSeFa and the baselines (SeFa, GANSpace, foreground Jacobian eigenvectors, LowRankGAN) and the
locality metric, on synthetic matrices with known answers and on the toy generator."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from regfac_jax import baselines, jacobian, metrics, regions
from regfac_jax.models import toy


def _random_psd(rng, d, rank=None):
    x = rng.standard_normal((d, rank or d))
    return x @ x.T / (rank or d)


def _abs_cos(a, b):
    return abs(float(np.dot(a, b) / np.linalg.norm(a) / np.linalg.norm(b)))


# --------------------------------------------------------------------------------------------------
# Direction finders
# --------------------------------------------------------------------------------------------------
def test_resefa_maximises_the_rayleigh_quotient():
    rng = np.random.default_rng(0)
    A, B = _random_psd(rng, 12), _random_psd(rng, 12) + 0.1 * np.eye(12)
    n = baselines.resefa(A, B, 3)
    assert n.shape == (3, 12)
    # float32 rows normalised in float64
    np.testing.assert_allclose(np.linalg.norm(n, axis=1), 1.0, atol=1e-6)

    def ratio(v):
        return (v @ A @ v) / (v @ B @ v)

    top = ratio(n[0].astype(np.float64))
    # The top generalized eigenvalue from scipy-free numpy: eig(B^-1 A) in float64.
    expected = np.max(np.real(np.linalg.eigvals(np.linalg.solve(B, A))))
    # float32 eigen-solve of a matrix with condition ~1e2: relative error a few 1e-6; 1e-4 leaves
    # margin.
    assert abs(top - expected) / expected < 1e-4
    # top is a float32 direction's quotient, measured 6e-7 below the true maximum: no random
    # direction may beat it by more than that rounding (1e-6, ~8 float32 eps; the random ones
    # measure 78% below).
    for v in rng.standard_normal((200, 12)):
        assert ratio(v) <= top * (1 + 1e-6)


def test_jacobian_eig_is_the_top_eigenvector():
    rng = np.random.default_rng(1)
    A = _random_psd(rng, 10)
    evals, evecs = np.linalg.eigh(A)
    n = baselines.jacobian_eig(A, 2)
    assert _abs_cos(n[0], evecs[:, -1]) > 1 - 1e-6  # float32 rounding of a float64 eigenvector
    assert _abs_cos(n[1], evecs[:, -2]) > 1 - 1e-6


def test_ganspace_finds_the_axis_of_largest_variance():
    rng = np.random.default_rng(2)
    axes = np.linalg.qr(rng.standard_normal((8, 8)))[0]
    x = (rng.standard_normal((4000, 8)) * np.array([5, 2, 1, 1, 1, 1, 1, 1])) @ axes.T + 3.0
    n = baselines.ganspace(x, 2)
    # Sampling error of the leading axis with 4000 samples and a 25:4 variance gap is ~1e-3 in
    # angle.
    assert _abs_cos(n[0], axes[:, 0]) > 0.999
    assert _abs_cos(n[1], axes[:, 1]) > 0.99


def _fake_stylegan2_params(rng, w_dim=6):
    def aff(c):
        return {"affine": {"weight": rng.standard_normal((w_dim, c))}}

    return {
        "synthesis": {
            "b4": {"conv1": aff(5), "torgb": aff(5)},
            "b8": {"conv0": aff(5), "conv1": aff(4), "torgb": aff(4)},
        }
    }


def test_sefa_matches_the_svd_of_the_normalised_affines():
    rng = np.random.default_rng(3)
    params = _fake_stylegan2_params(rng)
    syn = params["synthesis"]
    stack = np.concatenate(
        [
            syn["b4"]["conv1"]["affine"]["weight"],
            syn["b4"]["torgb"]["affine"]["weight"],
            syn["b8"]["conv0"]["affine"]["weight"],
            syn["b8"]["conv1"]["affine"]["weight"],
            syn["b8"]["torgb"]["affine"]["weight"],
        ],
        axis=1,
    )
    stack = stack / np.linalg.norm(stack, axis=0)
    u = np.linalg.svd(stack)[0]  # left singular vectors = eigenvectors of W W^T, independent route
    n = baselines.sefa(params, k=3)
    for i in range(3):
        # float32 eigenvectors of a spectrum with gaps >= 0.2: |cos| within ~8 float32 eps of 1
        # (measured 3e-8).
        assert _abs_cos(n[i], u[:, i]) > 1 - 1e-6
    # Layer selection: w index 0 is b4.conv1 only; index 1 is b8.conv0 and b4.torgb.
    only0 = baselines.style_affine_weights(params, layers=[0])
    np.testing.assert_array_equal(only0, syn["b4"]["conv1"]["affine"]["weight"])
    assert baselines.style_affine_weights(params, layers=[1]).shape == (6, 10)
    with pytest.raises(ValueError, match="No style-affine layer"):
        baselines.style_affine_weights(params, layers=[9])


def test_robust_pca_recovers_low_rank_plus_sparse():
    rng = np.random.default_rng(0)
    d = 40
    u = rng.standard_normal((d, 2))
    low0 = u @ u.T
    sparse0 = np.zeros((d, d))
    idx = rng.random((d, d)) < 0.03
    sparse0[idx] = rng.choice([-5.0, 5.0], idx.sum())
    low, sparse = baselines.robust_pca(low0 + sparse0, lamb=1 / np.sqrt(d))
    # ADMM stops at a residual of 1e-7 * ||M||; the recovered parts carry errors of that order
    # (measured 3e-7).
    assert np.abs(low - low0).max() / np.abs(low0).max() < 1e-5
    assert np.abs(sparse - sparse0).max() < 1e-4
    # ADMM residue (~3e-7) is not rank
    assert np.linalg.matrix_rank(low, tol=1e-6 * np.abs(low0).max()) == 2


def test_lowrankgan_projects_out_the_background_subspace():
    d = 8
    e = np.eye(d)
    # Foreground moves along e0 (strongly) and e1; the background responds to e1 and e2 only.
    A = 4.0 * np.outer(e[0], e[0]) + 3.0 * np.outer(e[1], e[1])
    B = np.outer(e[1], e[1]) + np.outer(e[2], e[2])
    n = baselines.lowrankgan(A, B, 2)
    # The foreground's second principal direction e1 lies in the background's range: projected to
    # zero, dropped.
    assert n.shape == (1, d)
    assert _abs_cos(n[0], e[0]) > 1 - 1e-6  # float32 output of an exact float64 projection
    with pytest.raises(FloatingPointError, match="null space"):
        baselines.lowrankgan(np.outer(e[1], e[1]), B)


def test_region_directions_dispatch_and_errors():
    rng = np.random.default_rng(4)
    A, B = _random_psd(rng, 6), _random_psd(rng, 6) + np.eye(6)
    np.testing.assert_array_equal(
        baselines.region_directions("resefa", A, B, k=1), baselines.resefa(A, B, 1)
    )
    with pytest.raises(ValueError, match="Unknown method"):
        baselines.region_directions("pca", A, B)
    with pytest.raises(ValueError, match="needs the generator's params"):
        baselines.region_directions("sefa")
    with pytest.raises(ValueError, match=r"one Gram matrix \[d, d\]"):
        baselines.resefa(np.zeros((2, 6, 6)), np.zeros((2, 6, 6)))


# --------------------------------------------------------------------------------------------------
# The locality metric
# --------------------------------------------------------------------------------------------------
RES = 8


def _linear_generator():
    """g(w) = reshape(M w): latent 0 paints only rows 0-3, latent 1 only rows 4-7, latent 2
    everything."""
    m = np.zeros((RES, RES, 3, 3), np.float32)
    m[:4, :, :, 0] = 1.0
    m[4:, :, :, 1] = 1.0
    m[:, :, :, 2] = 0.5
    mj = jnp.asarray(m)
    return jax.tree_util.Partial(lambda w: jnp.einsum("hwcd,d->hwc", mj, w))


def test_locality_of_a_linear_generator_is_exact():
    fn = _linear_generator()
    mask = np.zeros((RES, RES), np.float32)
    mask[:4] = 1
    latents = jnp.asarray(np.random.default_rng(0).standard_normal((5, 3)), jnp.float32)
    res = metrics.locality(fn, latents, [1.0, 0.0, 0.0], mask, target_rms=0.3, iters=30)
    # A purely in-region direction: all energy inside, nothing outside (exact zeros in float32).
    np.testing.assert_array_equal(res["share"], 1.0)
    np.testing.assert_array_equal(res["rms_out"], 0.0)
    # rms_in(a) = a for this generator, so the calibrated step is the target; 30 bisection steps on
    # log-range 1e6 leave a relative error of 14 * 2**-30, float32 rounding dominates (~1e-6).
    np.testing.assert_allclose(res["step"], 0.3, rtol=1e-5)
    np.testing.assert_allclose(res["rms_in"], 0.3, rtol=1e-5)
    mixed = metrics.locality(fn, latents, [0.0, 0.0, 1.0], mask, target_rms=0.3, iters=30)
    # The global latent paints half the image inside the mask: share 1/2 exactly up to float32 sums.
    np.testing.assert_allclose(mixed["share"], 0.5, atol=1e-6)
    np.testing.assert_allclose(mixed["rms_out"], 0.3, rtol=1e-5)


def test_calibration_reports_unreachable_targets():
    fn = _linear_generator()
    mask = np.zeros((RES, RES), np.float32)
    mask[:4] = 1
    latents = jnp.zeros((2, 3), jnp.float32)
    steps, reached = metrics.calibrate_steps(
        fn, latents, [0.0, 1.0, 0.0], mask, target_rms=0.3, hi=10.0
    )
    assert not reached.any() and np.all(steps == 10.0)  # latent 1 never touches the region


def test_linear_share_agrees_with_small_edits_on_the_toy_generator():
    params = toy.init_toy(jax.random.key(0), latent_dim=6, resolution=16, channels=4)
    fn = toy.toy_latent_fn(params)
    mask = regions.box_mask((64, 64, 96, 96), 16)
    latents = jnp.asarray(np.random.default_rng(1).standard_normal((1, 6)), jnp.float32)
    A, B = jacobian.region_grams(fn, latents, mask)
    dirs = baselines.resefa(np.asarray(A[0]), np.asarray(B[0]), 6)
    lin = metrics.linear_share(A[0], B[0], mask, dirs, channels=3)
    for i in (0, 3):
        res = metrics.locality(fn, latents, dirs[i], mask, target_rms=1e-3, iters=20)
        # At an RMS change of 1e-3 the second-order term is ~1e-3 of the first; float32 differences
        # of images near 1 limit the energy ratio to ~1e-3 relative as well, hence 1e-2.
        assert abs(res["share"][0] - lin[i]) < 1e-2
    # By construction ReSeFa's first direction has the highest first-order share of all directions.
    others = np.concatenate([baselines.jacobian_eig(np.asarray(A[0]), 6), dirs[1:]])
    assert lin[0] >= metrics.linear_share(A[0], B[0], mask, others, 3).max() - 1e-6


def test_box_perturbations():
    assert metrics.scaled_box((128, 128, 40, 100), 1.2) == (128, 128, 48, 120)
    assert metrics.shifted_box((128, 128, 40, 100), 0.2) == (136, 148, 40, 100)
    # Clipped so the box stays on the grid.
    assert metrics.shifted_box((240, 128, 30, 30), 0.5) == (241, 143, 30, 30)


def test_metric_input_errors():
    fn = _linear_generator()
    mask = np.ones((RES, RES), np.float32)
    with pytest.raises(ValueError, match="both region and background"):
        metrics.locality(fn, jnp.zeros((1, 3)), [1.0, 0, 0], mask)
    with pytest.raises(ValueError, match="entries but latents have width"):
        metrics.locality(fn, jnp.zeros((1, 3)), [1.0, 0], mask * 0.5)
