"""BigGAN-deep port: parity with pytorch-pretrained-biggan 0.1.1 (fixtures and, when installed, the
package), standing-statistics interpolation, spectral-norm folding, noise, class names, Jacobian
functions, bad input."""

from __future__ import annotations

import json

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from parity import F32_JACOBIAN_TOL, PARITY_TOL, kink_residual, max_abs

from converters import ConversionError, convert_state_dict
from converters import biggan as conv
from regfac_jax.models import biggan as bg

TRUNCATIONS = (0.4, 0.455, 1.0)


# --------------------------------------------------------------------------------------------------
# Fixture model
# --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fx(fixtures_dir):
    d = fixtures_dir / "biggan"
    return {
        "dir": d,
        "config": json.loads((d / "config.json").read_text()),
        "meta": json.loads((d / "meta.json").read_text()),
        "params": dict(np.load(d / "params.npz")),
        "io": dict(np.load(d / "io.npz")),
    }


@pytest.fixture(scope="module")
def gen(fx):
    return conv.convert(fx["params"], conv.read_config(fx["dir"]))


@pytest.mark.parametrize("i", range(len(TRUNCATIONS)))
def test_fixture_images_match_official(gen, fx, i):
    io = fx["io"]
    t = float(io["truncation"][i])
    assert t == TRUNCATIONS[i]
    img = np.asarray(gen.generate(io["z_trunc"][i], io["class_vector"], t))
    assert img.shape == (4, 32, 32, 3) and img.dtype == np.float32
    ref = io["img"][i].transpose(0, 2, 3, 1)
    # Both sides run float32; each is ~1e-5 away from a float64 evaluation of the same network
    # (measured: official 1.2e-5, ours 9e-6 at t=0.4): the batch norms divide by standing std's well
    # below 1, amplifying rounding. The ports' shared PARITY_TOL (1e-4) leaves margin over that yet
    # catches any wrong statistics row (those move pixels by > 1e-2).
    assert max_abs(img, ref) <= PARITY_TOL


def test_generator_properties(gen, fx):
    cfg = fx["config"]
    assert gen.kind == "biggan"
    assert (gen.img_resolution, gen.img_channels) == (cfg["output_dim"], 3)
    assert gen.z_dim == gen.latent_dim == cfg["z_dim"] and gen.num_classes == cfg["num_classes"]
    # spectral norm folded: no u/v/orig anywhere, weights stored under 'weight'
    flat = jax.tree_util.tree_flatten_with_path(gen.params)[0]
    keys = [".".join(k.key for k in path) for path, _ in flat]
    assert not any(k.endswith(("weight_orig", "weight_u", "weight_v")) for k in keys)
    assert "generator.layers.4.snconv1x1_theta.weight" in keys and "generator.gen_z.bias" in keys
    buf = jax.tree_util.tree_flatten_with_path(gen.buffers)[0]
    assert all(path[-1].key in ("running_means", "running_vars") for path, _ in buf)


def test_param_tree_matches_module_init(gen):
    """The converted tree has exactly the structure and shapes the Linen module creates."""
    z = jnp.zeros((1, gen.z_dim))
    c = jnp.zeros((1, gen.num_classes))
    shapes = jax.eval_shape(lambda: gen.net.init(jax.random.key(0), z, c, gen.stats(1.0)))
    got = jax.tree_util.tree_map(lambda a: a.shape, {"params": gen.params, "buffers": gen.buffers})
    want = jax.tree_util.tree_map(lambda a: a.shape, shapes)
    assert got == want


def test_stats_index_matches_official_meta(fx):
    n_stats = fx["config"]["n_stats"]
    table = fx["meta"]["batchnorm_index_for_truncation"]
    assert table, "meta.json lists no truncations"
    for t, want in table.items():
        start, coef = bg.stats_index(float(t), n_stats)
        assert start == want["start_idx"]
        assert coef == pytest.approx(want["coef"], abs=1e-12)  # both are the same float64 modf


def test_stats_interpolation_weights_go_to_the_far_neighbour(fx):
    """The package weights row ``start`` by ``coef`` (the fraction past it) and row ``start + 1`` by
    ``1 - coef``."""
    rows, w = bg.stats_selection(0.455, 51)  # 0.455 / 0.02 = 22.75
    # float64 modf rounding only
    assert rows.tolist() == [22, 23] and np.allclose(w, [0.75, 0.25], atol=1e-12)
    table = fx["params"]["generator.layers.0.bn_0.running_means"]
    mixed = np.asarray(bg.mix_stats(jnp.asarray(table), rows, jnp.asarray(w, jnp.float32)))
    manual = 0.75 * table[22] + 0.25 * table[23]
    assert np.abs(mixed - manual).max() <= 1e-6  # float32 products of O(1) values
    # exact rows when coef == 0: row 20 for 0.4 and the last row for 1.0, with weight exactly 1
    for t, row in ((0.4, 20), (1.0, 50)):
        rows, w = bg.stats_selection(t, 51)
        assert rows.tolist() == [row, row] and w.tolist() == [1.0, 0.0]
    # the division by the step is the package's, quirks included: 0.3 / 0.1 = 2.9999999999999996, so
    # row 2 gets (almost) all the weight, not row 3
    rows, w = bg.stats_selection(0.3, 11)
    assert rows.tolist() == [2, 3] and w[0] > 1 - 1e-12


def test_spectral_sigma_matches_official(fx):
    sigmas = fx["meta"]["spectral_norm"]["sigma_uv_and_true"]
    p = fx["params"]
    for name, (sigma_uv, _) in sigmas.items():
        got = conv.spectral_sigma(
            p[f"{name}.weight_orig"], p[f"{name}.weight_u"], p[f"{name}.weight_v"]
        )
        assert got == pytest.approx(sigma_uv, rel=1e-12)  # same float64 dot product; measured 2e-16


def test_folded_weight(gen, fx):
    p = fx["params"]
    name = "generator.layers.0.conv_1"
    sigma = conv.spectral_sigma(
        p[f"{name}.weight_orig"], p[f"{name}.weight_u"], p[f"{name}.weight_v"]
    )
    want = np.transpose(p[f"{name}.weight_orig"].astype(np.float64) / sigma, (2, 3, 1, 0))
    got = gen.params["generator"]["layers"]["0"]["conv_1"]["weight"]
    assert got.dtype == np.float32
    # one float32 rounding (2^-24 relative)
    assert np.abs(got - want).max() <= 1e-7 * np.abs(want).max()


# --------------------------------------------------------------------------------------------------
# Jacobian functions
# --------------------------------------------------------------------------------------------------
def test_latent_fns_agree_with_generate_and_each_other(gen, fx):
    io = fx["io"]
    z, c, t = io["z_trunc"][1][0], io["class_vector"][0], 0.455
    e = np.asarray(gen.embed(c[None]))[0]
    img = np.asarray(gen.generate(z[None], c[None], t))[0]
    g_z = gen.latent_fn("z", class_vector=c, truncation=t)
    g_c = gen.latent_fn("class", z=z, truncation=t)
    g_zc = gen.latent_fn("z+class", truncation=t)
    assert all(isinstance(g, jax.tree_util.Partial) for g in (g_z, g_c, g_zc))
    rng = np.random.RandomState(0)
    v, u = (rng.randn(gen.z_dim).astype(np.float32) for _ in range(2))
    zero = np.zeros_like(v)

    @jax.jit  # one program for all directional derivatives: compiling is the slow part on CPU
    def jvps(g_z, g_c, g_zc, z, e, v, u):
        x = jnp.concatenate([z, e])
        return (
            jax.jvp(g_z, (z,), (v,)),
            jax.jvp(g_c, (e,), (u,)),
            jax.jvp(g_zc, (x,), (jnp.concatenate([v, zero]),)),
            jax.jvp(g_zc, (x,), (jnp.concatenate([zero, u]),)),
        )

    (y_z, d_z), (y_c, d_c), (y_zc, d_zc_z), (_, d_zc_c) = jax.tree_util.tree_map(
        np.asarray, jvps(g_z, g_c, g_zc, z, e, v, u)
    )
    for y in (y_z, y_c, y_zc):
        assert y.shape == (32, 32, 3)
        # same float32 network; only the embedding product is evaluated separately
        assert np.abs(y - img).max() <= 1e-5
    scale = np.abs(d_zc_z).max() + np.abs(d_zc_c).max()
    # the derivatives are far from 0, so the relative comparisons below can fail
    assert scale > 1e-3
    # 'z' and 'class' are the two halves of 'z+class': same float32 program up to the concatenation.
    # (A ReLU kink flip between the two would show here; these are single directional derivatives,
    # so the rank-1 argument of tests/parity.py does not apply. Both primal passes agree to ~1 ulp,
    # so a flip needs a ReLU input within ~1 ulp of zero at this fixed point: rare, and then this
    # test names the point to move.)
    assert np.abs(d_z - d_zc_z).max() <= 1e-5 * scale
    assert np.abs(d_c - d_zc_c).max() <= 1e-5 * scale


def test_latent_fn_reuses_compilation_across_truncations(gen, fx):
    c = fx["io"]["class_vector"][0]

    @jax.jit
    @chex.assert_max_traces(n=1)  # a second truncation must reuse the compiled program
    def image(g, x):
        return g(x)

    z = jnp.asarray(fx["io"]["z"][0])
    a = image(gen.latent_fn("z", class_vector=c, truncation=0.4), z)
    b = image(gen.latent_fn("z", class_vector=c, truncation=0.455), z)
    # different statistics really were used
    assert np.abs(np.asarray(a) - np.asarray(b)).max() > 1e-3


def test_float64_follows_z(gen, fx, x64):
    io = fx["io"]
    img = gen.generate(io["z_trunc"][0].astype(np.float64), io["class_vector"], 0.4)
    assert img.dtype == jnp.float64
    ref = io["img"][0].transpose(0, 2, 3, 1)
    assert max_abs(img, ref) <= PARITY_TOL  # the official float32 output is ~1.2e-5 from float64
    g = gen.latent_fn("z", class_vector=io["class_vector"][0], truncation=0.4)
    assert jax.eval_shape(g, jnp.zeros((gen.z_dim,), jnp.float64)).dtype == jnp.float64


# --------------------------------------------------------------------------------------------------
# Noise, classes
# --------------------------------------------------------------------------------------------------
def test_truncated_noise_numpy_reproduces_fixture(fx):
    pytest.importorskip("scipy")
    io = fx["io"]
    z = bg.truncated_noise_numpy(4, 16, 1.0, seed=1)
    np.testing.assert_array_equal(z, io["z"])
    for i, t in enumerate(io["truncation"]):
        # bit-exact with a Python-float truncation (numpy then multiplies in float32, as the package
        # does); the fixture README's "computed in float64, then cast" does not reproduce 15 of the
        # 64 values at t=0.4
        z_t = bg.truncated_noise_numpy(4, 16, float(t), seed=1)
        assert z_t.dtype == np.float32
        np.testing.assert_array_equal(z_t, io["z_trunc"][i])


def test_truncated_noise_numpy_matches_package():
    utils = pytest.importorskip("pytorch_pretrained_biggan.utils")
    for n, d, t, seed in ((3, 7, 0.5, 0), (2, 128, 1.0, 42), (5, 4, 0.37, 9)):
        np.testing.assert_array_equal(
            bg.truncated_noise_numpy(n, d, t, seed), utils.truncated_noise_sample(n, d, t, seed)
        )


def test_truncated_noise_jax():
    z = bg.truncated_noise(0, 4000, 32, 0.5)
    assert z.shape == (4000, 32) and z.dtype == jnp.float32
    # |z| <= 2 * truncation, float32 rounding of the product
    assert float(jnp.abs(z).max()) <= 1.0 + 1e-6
    np.testing.assert_array_equal(z, bg.truncated_noise(jax.random.key(0), 4000, 32, 0.5))
    # std of N(0,1) truncated to [-2, 2] is 0.87962...; 128k samples give a standard error of ~0.002
    assert abs(float(jnp.std(z)) / 0.5 - 0.87962) < 0.01
    assert float(jnp.mean(jnp.abs(z) > 0.99)) > 1e-3  # resampled inside, not clipped: no pile-up...
    assert float(jnp.mean(jnp.abs(z) >= 1.0 - 1e-7)) < 1e-3  # ...at the bounds


def test_class_vector_names_and_indices():
    v = bg.class_vector(["golden retriever", 207, "Golden_Retriever", "tench"], 1000)
    assert v.shape == (4, 1000) and v.dtype == np.float32
    assert v.argmax(1).tolist() == [207, 207, 207, 0] and v.sum(1).tolist() == [1, 1, 1, 1]
    assert (
        bg.class_index("great white shark") == 2 and bg.class_index("Carcharodon carcharias") == 2
    )
    assert len(bg.imagenet_classes()) == 1000 and bg.imagenet_classes()[207][0] == "n02099601"


def test_class_name_errors():
    with pytest.raises(ValueError, match="golden retriever"):
        bg.class_vector(["golden retreiver"])
    with pytest.raises(ValueError, match=r"ambiguous.*134.*517"):
        bg.class_vector(["crane"])
    with pytest.raises(ValueError, match="outside 0..9"):
        bg.class_vector([207], 10)
    with pytest.raises(ValueError, match="outside 0..9"):
        bg.class_vector(["golden retriever"], 10)
    with pytest.raises(ValueError, match="int index or a name"):
        bg.class_vector([2.5])


def test_interpolate_classes():
    path = bg.interpolate_classes("tench", 207, 5)
    assert path.shape == (5, 1000)
    assert path[0].argmax() == 0 and path[-1].argmax() == 207
    # float32 of 0.5 is exact; slack for sums
    np.testing.assert_allclose(path[2, [0, 207]], [0.5, 0.5], atol=1e-7)
    # float32 rounding of a convex combination
    np.testing.assert_allclose(path.sum(1), 1.0, atol=1e-6)
    soft = bg.interpolate_classes(np.eye(4)[1], np.eye(4)[3], 3, num_classes=4)
    np.testing.assert_allclose(soft[1], [0, 0.5, 0, 0.5], atol=1e-7)
    with pytest.raises(ValueError, match="4 entries"):
        bg.interpolate_classes(np.ones(5), np.ones(4), 3, num_classes=4)
    with pytest.raises(ValueError, match="steps >= 2"):
        bg.interpolate_classes(0, 1, 1)


# --------------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("t", [0.0, -0.1, 1.5, "a", None])
def test_bad_truncation(gen, fx, t):
    io = fx["io"]
    with pytest.raises(ValueError, match=r"truncation"):
        gen.generate(io["z"], io["class_vector"], t)


def test_bad_shapes(gen, fx):
    io = fx["io"]
    with pytest.raises(ValueError, match=r"class_vector must have shape \[N, 10\]"):
        gen.generate(io["z"], np.ones((4, 1000)), 0.5)
    with pytest.raises(ValueError, match="4 rows but z has 3"):
        gen.generate(io["z"][:3], io["class_vector"], 0.5)
    with pytest.raises(ValueError, match=r"z must have shape \[N, 16\]"):
        gen.generate(np.ones((4, 128)), io["class_vector"], 0.5)
    with pytest.raises(ValueError, match="needs class_vector"):
        gen.latent_fn("z")
    with pytest.raises(ValueError, match="needs z"):
        gen.latent_fn("class")
    with pytest.raises(ValueError, match="Unknown latent space"):
        gen.latent_fn("w")
    with pytest.raises(ValueError, match=r"class_vector must have shape \[N, 10\]"):
        gen.latent_fn("z", class_vector=np.ones(1000))


# --------------------------------------------------------------------------------------------------
# Converter strictness
# --------------------------------------------------------------------------------------------------
def test_converter_dispatch_and_read_config(fx):
    assert conv.read_config(fx["dir"] / "config.json") == bg.check_config(fx["config"])
    g = convert_state_dict("biggan", fx["params"], fx["config"])
    assert isinstance(g, bg.BigGANGenerator)


def test_converter_missing_unexpected_and_shape(fx):
    sd = dict(fx["params"])
    del sd["generator.layers.4.gamma"]
    sd["generator.extra"] = np.zeros(3, np.float32)
    sd["generator.conv_to_rgb.bias"] = np.zeros(9, np.float32)
    with pytest.raises(ConversionError) as err:
        conv.convert(sd, fx["config"])
    msg = str(err.value)
    assert "missing keys (1): generator.layers.4.gamma" in msg
    assert "unexpected keys (1): generator.extra" in msg
    assert "generator.conv_to_rgb.bias: checkpoint has (9,), expected (8,)" in msg


def test_converter_config_mismatch(fx):
    cfg = dict(fx["config"], channel_width=16)
    with pytest.raises(
        ConversionError,
        match=r"channel_width=8, but the config says "
        r"channel_width=16",
    ):
        conv.convert(fx["params"], cfg)
    with pytest.raises(ConversionError, match=r"z_dim=32, num_classes=10"):
        conv.convert(fx["params"], dict(fx["config"], z_dim=32))
    # attention moved: keys do not line up
    with pytest.raises(ConversionError, match="attention|missing keys"):
        conv.convert(fx["params"], dict(fx["config"], attention_layer_position=2))
    with pytest.raises(ConversionError, match="output_dim=64"):
        conv.convert(fx["params"], dict(fx["config"], output_dim=64))
    with pytest.raises(ConversionError, match="Unknown BigGAN config keys"):
        conv.convert(fx["params"], dict(fx["config"], resolution=32))
    with pytest.raises(ConversionError, match=r"layers\[1\]"):
        bad = [list(r) for r in fx["config"]["layers"]]
        bad[1][1] = 8
        conv.convert(fx["params"], dict(fx["config"], layers=bad))


def test_read_config_errors(tmp_path):
    with pytest.raises(ConversionError, match="not found"):
        conv.read_config(tmp_path)
    (tmp_path / "config.json").write_text("{nope")
    with pytest.raises(ConversionError, match="not valid JSON"):
        conv.read_config(tmp_path)


# --------------------------------------------------------------------------------------------------
# Cross-check with the package itself (random weights, other configs)
# --------------------------------------------------------------------------------------------------
SMALL_CONFIGS = {
    # no attention, up-sampling in the first block, class_embed_dim != z_dim (the package ignores
    # it), 11 rows
    "no_attn": dict(
        output_dim=16,
        z_dim=8,
        class_embed_dim=5,
        channel_width=4,
        num_classes=6,
        layers=[[True, 16, 8], [False, 8, 4], [True, 4, 2], [False, 2, 1]],
        attention_layer_position=9,
        eps=1e-4,
        n_stats=11,
    ),
    # attention before the first block (4x4 px), eps 1e-3, 26 rows (step 0.04)
    "attn_first": dict(
        output_dim=32,
        z_dim=12,
        class_embed_dim=12,
        channel_width=4,
        num_classes=7,
        layers=[[False, 16, 16], [True, 16, 8], [True, 8, 4], [True, 4, 2], [False, 2, 1]],
        attention_layer_position=0,
        eps=1e-3,
        n_stats=26,
    ),
}


def package_model(cfg: dict, seed: int = 0):
    """A random-weight package model (see ``benchmarks.bench_biggan.random_package_model``)."""
    pytest.importorskip("torch")
    pytest.importorskip("pytorch_pretrained_biggan")
    from benchmarks.bench_biggan import random_package_model

    return random_package_model(cfg, seed)


@pytest.mark.parametrize("name", sorted(SMALL_CONFIGS))
def test_matches_package_random_configs(name):
    torch = pytest.importorskip("torch")
    cfg = SMALL_CONFIGS[name]
    model = package_model(cfg)
    g = conv.convert({k: v.numpy() for k, v in model.state_dict().items()}, cfg)
    rng = np.random.RandomState(0)
    z = (0.5 * rng.randn(3, cfg["z_dim"])).astype(np.float32)
    c = rng.dirichlet(np.ones(cfg["num_classes"]), 3).astype(np.float32)  # soft class vectors
    for t in (0.3, 0.47, 0.98, 1.0):
        with torch.no_grad():
            ref = model(torch.from_numpy(z), torch.from_numpy(c), t).numpy().transpose(0, 2, 3, 1)
        ours = np.asarray(g.generate(z, c, t))
        # a non-degenerate image to compare
        assert 0.2 < ref.std() and (np.abs(ref) < 0.99).mean() > 0.9
        # float32 on both sides; measured <= 7e-7 (these random models are well conditioned)
        assert np.abs(ours - ref).max() <= 1e-5, t


def test_matches_package_float64(fx, x64):
    """Official code in double vs ours in float64: differences come only from our float32 folded
    weights."""
    torch = pytest.importorskip("torch")
    pb = pytest.importorskip("pytorch_pretrained_biggan")
    model = pb.BigGAN(pb.BigGANConfig(**fx["config"]))
    model.load_state_dict({k: torch.from_numpy(v) for k, v in fx["params"].items()})
    model = model.double().eval()
    g = conv.convert(fx["params"], fx["config"])
    io = fx["io"]
    for i, t in enumerate(TRUNCATIONS):
        z = io["z_trunc"][i].astype(np.float64)
        with torch.no_grad():
            ref = model(
                torch.from_numpy(z), torch.from_numpy(io["class_vector"]).double(), t
            ).numpy()
        ours = np.asarray(g.generate(z, io["class_vector"].astype(np.float64), t))
        # W / sigma is rounded to float32 once (relative 6e-8 per weight); through this network that
        # moves pixels by ~1e-6 (measured 4e-8 on the small random configs). Any structural error is
        # orders larger.
        assert np.abs(ours - ref.transpose(0, 2, 3, 1)).max() <= 1e-5


def test_jacobian_matches_torch_func(gen, fx):
    torch = pytest.importorskip("torch")
    pb = pytest.importorskip("pytorch_pretrained_biggan")
    model = pb.BigGAN(pb.BigGANConfig(**fx["config"]))
    model.load_state_dict({k: torch.from_numpy(v) for k, v in fx["params"].items()})
    model.eval()
    io = fx["io"]
    z, c, t = io["z_trunc"][1][0], io["class_vector"][2], 0.455
    with torch.no_grad():
        ref = torch.func.jacfwd(lambda x: model(x[None], torch.from_numpy(c[None]), t)[0])(
            torch.from_numpy(z)
        )
    ref = ref.numpy().transpose(1, 2, 0, 3)  # [3, H, W, z] -> [H, W, 3, z]
    jac = jax.jit(jax.jacfwd(lambda g, x: g(x), argnums=1))
    ours = np.asarray(jac(gen.latent_fn("z", class_vector=c, truncation=t), jnp.asarray(z)))
    scale = np.abs(ref).max()
    # float32 forward-mode on both sides, up to ReLU kink flips that PyTorch and XLA may round to
    # different sides of (rank-1 each, see tests/parity.py); measured ~1e-6 of max |J|. The batch
    # norms amplify rounding (the package's own float32 and float64 images differ by 1.2e-5), hence
    # 10x the other ports' bar.
    assert kink_residual(ours, ref, scale) <= 10 * F32_JACOBIAN_TOL
