"""Forward-mode Jacobians and region Grams on a small smooth generator, the official fixture, and
bad input."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

from regfac_jax import directions, jacobian, regions
from regfac_jax.jacobian import JacobianOptions
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
    fd = np.stack(
        [
            (np.asarray(fn(z + h * e)) - np.asarray(fn(z - h * e))) / (2 * h)
            for e in np.eye(z.shape[0])
        ],
        axis=-1,
    )
    # Central differences: truncation error O(h^2 |f'''|) ~ 1e-10 and cancellation error O(eps / h)
    # ~ 1e-11.
    np.testing.assert_allclose(J, fd, rtol=0, atol=1e-8 * np.abs(J).max())


def _numpy_grams(J, masks):
    """Reference Grams from a full Jacobian [H, W, C, d] by explicit row selection (numpy,
    float64)."""
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


@pytest.mark.parametrize("strategy", ["materialize", "transpose", "blocked", "auto"])
@pytest.mark.parametrize("chunk", [1, 4, 6])
def test_chunked_grams_equal_grams_of_full_jacobian(x64, strategy, chunk):
    fn, zs = _toy(jnp.float64)
    masks = _masks(8)
    A, B = jacobian.region_grams(
        fn, zs, masks, JacobianOptions(tangent_chunk=chunk, strategy=strategy), per_sample=True
    )
    assert A.shape == B.shape == (3, 2, 6, 6)
    for i in range(3):
        rA, rB = _numpy_grams(np.asarray(jacobian.jacobian(fn, zs[i])), masks)
        # float64 sums of a few hundred products: round-off level.
        np.testing.assert_allclose(A[i], rA, rtol=1e-11, atol=1e-14 * np.abs(rA).max())
        np.testing.assert_allclose(B[i], rB, rtol=1e-11, atol=1e-14 * np.abs(rB).max())
    Am, Bm = jacobian.region_grams(
        fn, zs, masks, JacobianOptions(tangent_chunk=chunk, strategy=strategy)
    )
    # The same n float64 Grams, summed in the same order; only the division by n may round
    # differently: jax's linalg-test bar for n terms, 2 * n * eps, elementwise.
    rtol = 2 * zs.shape[0] * np.finfo(np.float64).eps
    np.testing.assert_allclose(Am, np.mean(A, 0), rtol=rtol)
    np.testing.assert_allclose(Bm, np.mean(B, 0), rtol=rtol)


def test_float32_strategies_agree():
    fn, zs = _toy(jnp.float32, d=8, res=16)
    masks = _masks(16)
    a1, b1 = jacobian.region_grams(fn, zs, masks, JacobianOptions(strategy="materialize"))
    a2, b2 = jacobian.region_grams(
        fn, zs, masks, JacobianOptions(strategy="transpose", tangent_chunk=3)
    )
    # Two float32 summation orders over 768 rows: ~1e-6 relative to the largest entry.
    np.testing.assert_allclose(a1, a2, atol=1e-5 * np.abs(a1).max())
    np.testing.assert_allclose(b1, b2, atol=1e-5 * np.abs(b1).max())


def test_official_preprocess():
    rng = np.random.default_rng(1)
    # Small integers: every sum is exact in float32, so the test checks the indexing and nothing
    # else.
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
    A, B = jacobian.region_grams(fn, z, mask, JacobianOptions(preprocess="official"))
    J = np.asarray(jax.jacfwd(fn)(z))[::2, ::2].sum(axis=2, keepdims=True)
    rA, rB = _numpy_grams(J, mask[None])
    # float64 sums of P = 256 * 256 products in other orders: the n * eps bar of jax's linalg tests
    # with n = P (1.5e-11; about 20 eps seen), elementwise.
    rtol = J[..., 0].size * np.finfo(np.float64).eps
    np.testing.assert_allclose(A, rA, rtol=rtol)
    np.testing.assert_allclose(B, rB, rtol=rtol)
    with pytest.raises(regions.RegionError, match="does not match the image size"):
        jacobian.region_grams(
            fn, z, regions.preset_mask("ffhq", "eyes", 512), JacobianOptions(preprocess="official")
        )


def test_fixture_jacobian_grams_and_directions(fixtures_dir, x64):
    data = np.load(fixtures_dir / "stylegan2" / "jacobian.npz")
    J = np.transpose(data["jacobian"], (1, 2, 0, 3))  # [C, H, W, d] -> [H, W, C, d]
    H, W, C, d = J.shape
    Jflat = jnp.asarray(J.reshape(-1, d))
    w0 = jnp.asarray(data["w"])

    # a linear map whose Jacobian is exactly the official one: we must reproduce numpy's Grams
    def fn(w):
        return (Jflat @ (w - w0)).reshape(H, W, C)

    mask = regions.box_mask((128, 128, 96, 128), H)
    A, B = jacobian.region_grams(fn, w0, mask, JacobianOptions(tangent_chunk=7))
    rA, rB = _numpy_grams(J, mask[None])
    # float64 sums of 3072 products in other orders: ~2 eps of the largest entry, and up to ~1200
    # eps (2.6e-13) relative on entries whose products cancel; rtol 1e-11 with atol 1e-13 of the
    # largest entry covers both.
    np.testing.assert_allclose(A, rA, rtol=1e-11, atol=1e-13 * np.abs(rA).max())
    np.testing.assert_allclose(B, rB, rtol=1e-11, atol=1e-13 * np.abs(rB).max())
    evals, dirs = directions.generalized_eigh(A[0], B[0], regularization="paper")
    Breg = rB[0] + 1e-3 * np.trace(rB[0]) * np.eye(d)
    w_ref, v_ref = scipy.linalg.eigh(rA[0], Breg)
    # Two backward-stable float64 solvers (whitening vs LAPACK's sygvd) on Grams that differ by
    # round-off, B's condition ~43: each eigenvalue relative to itself agrees to ~60 eps; 1e-9 also
    # holds where LAPACKs differ.
    np.testing.assert_allclose(evals, w_ref[::-1], rtol=1e-9)
    top = v_ref[:, -1] / np.linalg.norm(v_ref[:, -1])
    # The top eigenvalue is separated by a relative gap of 0.27, so its direction is as
    # well-conditioned as the eigenvalues: |cos| = 1 to round-off (seen exactly 1); 1e-9 as for the
    # eigenvalues.
    assert abs(float(np.dot(dirs[0], top))) > 1 - 1e-9


# Compile-only memory analysis at the paper's scale: d = 512, 3 regions (6 weight rows), an 8 GiB
# budget. One configuration stays in the default suite; each costs two to four 1024^2 compiles
# (about 1-4 minutes on 2 cores).
_PAPER_CASES = [("stylegan2-f", None)] + [
    pytest.param(name, pre, marks=pytest.mark.slow)
    for name, pre in [
        ("stylegan2-f", "official"),
        ("stylegan3-t", None),
        ("stylegan3-t", "official"),
        ("stylegan3-r", None),
        ("stylegan3-r", "official"),
    ]
]


@pytest.mark.parametrize("name,preprocess", _PAPER_CASES)
def test_auto_plan_fits_8gib_at_1024(name, preprocess):
    from benchmarks import paper_configs

    # ShapeDtypeStruct weights: nothing large is allocated
    gen = paper_configs.abstract_generator(name, 1024)
    latent = jax.ShapeDtypeStruct((512,), jnp.float32)
    rows = 1024 * 1024 * 3 if preprocess is None else 256 * 256
    weights = jax.ShapeDtypeStruct((6, rows), jnp.float32)
    budget = 8 << 30
    plan = jacobian.plan_grams(
        gen.latent_fn("w"),
        latent,
        weights,
        JacobianOptions(preprocess=preprocess, memory_budget=budget),
    )
    assert plan.strategy in jacobian.STRATEGIES
    assert plan.limit_bytes == jacobian.memory_limit(budget)
    # XLA's own analysis of the kernel auto returns (and would run): within the budget.
    assert plan.peak_bytes == jacobian.analysed_peak(plan.compiled) <= budget, plan
    if plan.strategy == "blocked":  # the tangent block it keeps is part of that peak
        assert plan.block * rows * 4 < plan.peak_bytes


def test_auto_plan_is_cached_and_fails_clearly():
    fn, zs = _toy(d=8, res=16)
    weights = jnp.asarray(jacobian.mask_weights(_masks(16), 3))
    plan = jacobian.plan_grams(fn, zs[0], weights, JacobianOptions(memory_budget=1 << 30))
    # cheapest: everything at once
    assert plan.strategy == "blocked" and plan.block == 8 and plan.tangent_chunk == 8
    assert jacobian.plan_grams(fn, zs[0], weights, JacobianOptions(memory_budget=1 << 30)) is plan
    with pytest.raises(MemoryError, match="No Jacobian strategy fits"):
        jacobian.plan_grams(fn, zs[0], weights, JacobianOptions(memory_budget=1000))


@pytest.mark.parametrize("chunk,block", [(1, 1), (2, 3), (3, 4), (2, 6)])
def test_blocked_grams_equal_materialized(x64, chunk, block):
    fn, zs = _toy(jnp.float64)
    weights = jnp.asarray(jacobian.mask_weights(_masks(8), 3))
    want = jacobian.weighted_grams(fn, zs[0], weights, JacobianOptions(6, strategy="materialize"))
    got = jacobian.weighted_grams(
        fn, zs[0], weights, JacobianOptions(chunk, strategy="blocked", block=block)
    )
    # float64, the same products summed in another order: round-off level.
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-13 * np.abs(want).max())


def test_precision_option():
    fn, zs = _toy(jnp.float32, d=8, res=16)
    masks = _masks(16)
    a1, b1 = jacobian.region_grams(fn, zs, masks, JacobianOptions(strategy="blocked"))
    a2, b2 = jacobian.region_grams(
        fn, zs, masks, JacobianOptions(strategy="blocked", precision="default")
    )
    # 'default' may use TF32/bf16 passes on GPU/TPU (relative error up to ~1e-2 with bf16); on CPU
    # it is float32.
    np.testing.assert_allclose(a2, a1, atol=2e-2 * np.abs(a1).max())
    np.testing.assert_allclose(b2, b1, atol=2e-2 * np.abs(b1).max())
    with pytest.raises(ValueError, match="precision must be one of"):
        jacobian.region_grams(fn, zs, masks, JacobianOptions(precision="fast"))


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
    with pytest.raises(ValueError, match="strategy must be"):
        jacobian.region_grams(
            fn, zs, regions.box_mask((128, 128, 64, 64), 8), JacobianOptions(strategy="fast")
        )


# --------------------------------------------------------------------------------------------------
# JacobianOptions: validation, the launchers' configs, and compile-cache reuse
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "field,value,message",
    [
        (
            "strategy",
            "fast",
            r"JacobianOptions\.strategy must be 'auto' or one of \('materialize', "
            r"'transpose', "
            r"'blocked'\), got 'fast'",
        ),
        (
            "precision",
            "fast",
            r"JacobianOptions\.precision must be one of \['default', 'highest'\], "
            r"got 'fast'",
        ),
        ("tangent_chunk", 0, r"JacobianOptions\.tangent_chunk must be an integer >= 1; got 0"),
        ("tangent_chunk", 2.5, r"JacobianOptions\.tangent_chunk must be an integer >= 1; got 2\.5"),
        ("block", 0, r"JacobianOptions\.block must be an integer >= 1, or None for all d; got 0"),
        (
            "memory_budget",
            -1,
            r"JacobianOptions\.memory_budget must be an integer >= 1, or None for "
            r"the device's",
        ),
        (
            "preprocess",
            "resize",
            r"JacobianOptions\.preprocess must be None, 'official' or a callable",
        ),
    ],
)
def test_options_refuse_bad_values_naming_the_field(field, value, message):
    with pytest.raises(ValueError, match=message):
        JacobianOptions(**{field: value})


def test_loose_settings_are_refused_with_the_way_to_pass_them():
    fn, zs = _toy()
    with pytest.raises(
        TypeError,
        match=r"options must be a jacobian\.JacobianOptions \(e\.g\. "
        r"JacobianOptions\(",
    ):
        jacobian.region_grams(fn, zs, _masks(8), 16)
    with pytest.raises(TypeError, match="unexpected keyword argument 'tangent_chunk'"):
        jacobian.region_grams(fn, zs, _masks(8), tangent_chunk=16)


def test_options_are_frozen_hashable_and_normalised():
    opts = JacobianOptions(tangent_chunk=np.int64(8), block=np.int32(4))
    # numpy ints from configs become ints
    assert type(opts.tangent_chunk) is int and type(opts.block) is int
    assert opts == JacobianOptions(tangent_chunk=8, block=4) and hash(opts) == hash(
        JacobianOptions(8, block=4)
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        opts.strategy = "blocked"


def test_options_from_the_launchers_configs():
    from experiments.configs import base, ffhq_stylegan2

    cfg = base.base_config()
    assert JacobianOptions.from_config(cfg.jacobian) == JacobianOptions(
        tangent_chunk=cfg.jacobian.tangent_chunk,
        preprocess=None,
        strategy=cfg.jacobian.strategy,
        memory_budget=int(cfg.jacobian.memory_budget_gib * 2**30),
    )  # 'none' -> None, GiB -> bytes
    tiny = ffhq_stylegan2.get_config("tiny")
    opts = JacobianOptions.from_config(tiny.jacobian)
    assert opts.tangent_chunk == tiny.jacobian.tangent_chunk == 32 and opts.memory_budget == 8 << 30
    tiny.jacobian.preprocess, tiny.jacobian.memory_budget_gib = "official", None
    assert JacobianOptions.from_config(tiny.jacobian).preprocess == "official"
    # None: the device's limit or 8 GiB
    assert JacobianOptions.from_config(tiny.jacobian).memory_budget is None
    tiny.jacobian.strategy = "fastest"
    with pytest.raises(ValueError, match=r"JacobianOptions\.strategy must be"):
        JacobianOptions.from_config(tiny.jacobian)


def test_equal_options_reuse_the_compiled_kernel():
    import chex

    params = toy.init_toy(jax.random.key(0), latent_dim=6, resolution=8, channels=4)
    chex.clear_trace_counter()
    fn = jax.tree_util.Partial(chex.assert_max_traces(toy.toy_apply, n=1), params)
    zs = jax.random.normal(jax.random.key(1), (2, 6))
    weights = jnp.asarray(jacobian.mask_weights(_masks(8), 3))
    # Built twice: equal, not the same object. 'materialize' traces the generator once per
    # compilation.
    for z in zs:
        jacobian.weighted_grams(
            fn, z, weights, JacobianOptions(tangent_chunk=3, strategy="materialize")
        )
    # other options: a new compilation
    with pytest.raises(AssertionError, match="traced > 1 times"):
        jacobian.weighted_grams(
            fn, zs[0], weights, JacobianOptions(tangent_chunk=2, strategy="materialize")
        )
    chex.clear_trace_counter()
