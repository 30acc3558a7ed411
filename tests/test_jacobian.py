"""Forward-mode Jacobians and region Grams on a small smooth generator, the official fixture, and bad input."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

from regfac_jax import directions, jacobian, regions
from regfac_jax.models import toy


def _toy(dtype=jnp.float32, d=6, res=8, seed=0):
    params = toy.init_toy(jax.random.key(seed), latent_dim=d, resolution=res, channels=4)
    params = jax.tree_util.tree_map(lambda a: a.astype(dtype), params)
    return toy.toy_latent_fn(params), jax.random.normal(jax.random.key(seed + 1), (3, d), dtype)


def test_jacfwd_equals_jacrev_and_finite_differences(x64):
    fn, zs = _toy(jnp.float64)
    z = zs[0]
    J = np.asarray(jacobian.jacobian(fn, z, tangent_chunk=4))  # chunk 4 of d=6: exercises padding
    Jrev = np.asarray(jax.jacrev(fn)(z))
    # Same float64 derivative by two modes: agreement to round-off.
    np.testing.assert_allclose(J, Jrev, rtol=0, atol=1e-12 * np.abs(J).max())
    h = 1e-5
    fd = np.stack([(np.asarray(fn(z + h * e)) - np.asarray(fn(z - h * e))) / (2 * h)
                   for e in np.eye(z.shape[0])], axis=-1)
    # Central differences: truncation error O(h^2 |f'''|) ~ 1e-10 and cancellation error O(eps / h) ~ 1e-11.
    np.testing.assert_allclose(J, fd, rtol=0, atol=1e-8 * np.abs(J).max())


def _numpy_grams(J, masks):
    """Reference Grams from a full Jacobian [H, W, C, d] by explicit row selection (numpy, float64)."""
    H, W, C, d = J.shape
    rows = J.reshape(H * W, C, d).astype(np.float64)
    A, B = [], []
    for m in masks.reshape(masks.shape[0], -1):
        wf = np.repeat(m, C) / (C * m.sum())
        wb = np.repeat(1 - m, C) / (C * (1 - m).sum())
        R = rows.reshape(-1, d)
        A.append(R.T @ (wf[:, None] * R))
        B.append(R.T @ (wb[:, None] * R))
    return np.stack(A), np.stack(B)


def _masks(res):
    binary = regions.box_mask((96, 128, 64, 96), res)
    rng = np.random.default_rng(0)
    soft = np.clip(rng.uniform(-0.5, 1.5, size=(res, res)), 0, 1).astype(np.float32)
    return np.stack([binary, soft])


@pytest.mark.parametrize("strategy", ["materialize", "transpose"])
@pytest.mark.parametrize("chunk", [1, 4, 6])
def test_chunked_grams_equal_grams_of_full_jacobian(x64, strategy, chunk):
    fn, zs = _toy(jnp.float64)
    masks = _masks(8)
    A, B = jacobian.region_grams(fn, zs, masks, tangent_chunk=chunk, strategy=strategy, per_sample=True)
    assert A.shape == B.shape == (3, 2, 6, 6)
    for i in range(3):
        rA, rB = _numpy_grams(np.asarray(jacobian.jacobian(fn, zs[i])), masks)
        # float64 sums of a few hundred products: round-off level.
        np.testing.assert_allclose(A[i], rA, rtol=1e-11, atol=1e-14 * np.abs(rA).max())
        np.testing.assert_allclose(B[i], rB, rtol=1e-11, atol=1e-14 * np.abs(rB).max())
    Am, Bm = jacobian.region_grams(fn, zs, masks, tangent_chunk=chunk, strategy=strategy)
    np.testing.assert_allclose(Am, np.mean(A, 0), rtol=1e-12)
    np.testing.assert_allclose(Bm, np.mean(B, 0), rtol=1e-12)


def test_float32_strategies_agree():
    fn, zs = _toy(jnp.float32, d=8, res=16)
    masks = _masks(16)
    a1, b1 = jacobian.region_grams(fn, zs, masks, strategy="materialize")
    a2, b2 = jacobian.region_grams(fn, zs, masks, strategy="transpose", tangent_chunk=3)
    # Two float32 summation orders over 768 rows: ~1e-6 relative to the largest entry.
    np.testing.assert_allclose(a1, a2, atol=1e-5 * np.abs(a1).max())
    np.testing.assert_allclose(b1, b2, atol=1e-5 * np.abs(b1).max())


def test_official_preprocess():
    rng = np.random.default_rng(1)
    # Small integers: every sum is exact in float32, so the test checks the indexing and nothing else.
    big = jnp.asarray(rng.integers(-50, 50, size=(512, 512, 3)), jnp.float32)
    out = np.asarray(jacobian.official_preprocess(big))
    # torch's nearest interpolation picks source index floor(i * in / out): every second pixel here.
    np.testing.assert_array_equal(out[..., 0], np.asarray(big)[::2, ::2].sum(-1))
    assert out.shape == (256, 256, 1)
    small = jnp.asarray(rng.normal(size=(64, 64, 3)), jnp.float32)
    np.testing.assert_array_equal(jacobian.official_preprocess(small), small)


def test_official_mode_grams_on_a_large_image(x64):
    params = toy.init_toy(jax.random.key(2), latent_dim=4, resolution=512, channels=2)
    params = jax.tree_util.tree_map(lambda a: a.astype(jnp.float64), params)
    fn = toy.toy_latent_fn(params)
    z = jax.random.normal(jax.random.key(3), (4,), jnp.float64)
    mask = regions.preset_mask("ffhq", "eyes", 256)  # the paper's masks live on the 256 grid
    A, B = jacobian.region_grams(fn, z, mask, preprocess="official")
    J = np.asarray(jax.jacfwd(fn)(z))[::2, ::2].sum(axis=2, keepdims=True)
    rA, rB = _numpy_grams(J, mask[None])
    np.testing.assert_allclose(A, rA, rtol=1e-10)
    np.testing.assert_allclose(B, rB, rtol=1e-10)
    with pytest.raises(regions.RegionError, match="does not match the image size"):
        jacobian.region_grams(fn, z, regions.preset_mask("ffhq", "eyes", 512), preprocess="official")


def test_fixture_jacobian_grams_and_directions(fixtures_dir, x64):
    data = np.load(fixtures_dir / "stylegan2" / "jacobian.npz")
    J = np.transpose(data["jacobian"], (1, 2, 0, 3))  # [C, H, W, d] -> [H, W, C, d]
    H, W, C, d = J.shape
    Jflat = jnp.asarray(J.reshape(-1, d))
    w0 = jnp.asarray(data["w"])
    # A linear map whose Jacobian is exactly the official one: our machinery must reproduce numpy's Grams.
    fn = lambda w: (Jflat @ (w - w0)).reshape(H, W, C)  # noqa: E731
    mask = regions.box_mask((128, 128, 96, 128), H)
    A, B = jacobian.region_grams(fn, w0, mask, tangent_chunk=7)
    rA, rB = _numpy_grams(J, mask[None])
    np.testing.assert_allclose(A, rA, rtol=1e-11, atol=1e-13 * np.abs(rA).max())
    np.testing.assert_allclose(B, rB, rtol=1e-11, atol=1e-13 * np.abs(rB).max())
    evals, dirs = directions.generalized_eigh(A[0], B[0], regularization="paper")
    Breg = rB[0] + 1e-3 * np.trace(rB[0]) * np.eye(d)
    w_ref, v_ref = scipy.linalg.eigh(rA[0], Breg)
    np.testing.assert_allclose(evals, w_ref[::-1], rtol=1e-9)
    top = v_ref[:, -1] / np.linalg.norm(v_ref[:, -1])
    assert abs(float(np.dot(dirs[0], top))) > 1 - 1e-9


@pytest.mark.parametrize("strategy", ["materialize", "transpose"])
def test_memory_bound_1024(strategy):
    """The 1024x1024x3, d=512 case compiled (not run): XLA's memory analysis must stay under 8 GiB for 'transpose'
    (what 'auto' picks there), while 'materialize' is shown to need more than the Jacobian itself (6 GiB)."""
    params = toy.init_toy(jax.random.key(0), latent_dim=512, resolution=1024, channels=4)
    fn = toy.toy_latent_fn(params)
    latent = jax.ShapeDtypeStruct((512,), jnp.float32)
    weights = jax.ShapeDtypeStruct((2, 1024 * 1024 * 3), jnp.float32)
    assert jacobian.choose_strategy(512, 1024 * 1024 * 3, 4, 2 << 30) == "transpose"
    compiled = jacobian.weighted_grams.lower(fn, latent, weights, 8, None, strategy).compile()
    mem = compiled.memory_analysis()
    peak = mem.temp_size_in_bytes + mem.argument_size_in_bytes + mem.output_size_in_bytes
    jac_bytes = 512 * 1024 * 1024 * 3 * 4
    if strategy == "transpose":
        assert peak < 8 * 2 ** 30, f"peak {peak / 2**30:.2f} GiB"
        assert peak < jac_bytes / 2  # far below the Jacobian itself
    else:
        assert peak > jac_bytes


def test_bad_input():
    fn, zs = _toy()
    with pytest.raises(regions.RegionError, match="does not match"):
        jacobian.region_grams(fn, zs, np.ones((16, 16), np.float32))
    with pytest.raises(regions.RegionError, match="empty"):
        jacobian.region_grams(fn, zs, np.zeros((8, 8), np.float32))
    with pytest.raises(regions.RegionError, match="whole image"):
        jacobian.region_grams(fn, zs, np.ones((8, 8), np.float32))
    with pytest.raises(ValueError, match="latent dimension"):
        jacobian.region_grams(fn, jnp.zeros((2, 5)), regions.box_mask((128, 128, 64, 64), 8))
    bad = zs.at[2, 0].set(jnp.nan)
    with pytest.raises(FloatingPointError, match="Sample 2"):
        jacobian.region_grams(fn, bad, regions.box_mask((128, 128, 64, 64), 8))
