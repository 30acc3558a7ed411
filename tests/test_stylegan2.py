"""StyleGAN2 port: parity with the official fixtures, the two modulation paths, options and bad
input."""

from __future__ import annotations

import copy
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from parity import F32_JACOBIAN_TOL, PARITY_TOL, kink_residual, max_abs, nchw

from converters import ConversionError, convert_state_dict
from converters.stylegan2 import state_dict_layout
from regfac_jax.models.stylegan2 import (
    DEFAULT_MODULATION,
    MODULATIONS,
    init_variables,
    parse_config,
)
from regfac_jax.ops import setup_filter


@pytest.fixture(scope="module")
def fixture(fixtures_dir):
    folder = fixtures_dir / "stylegan2"
    config = json.loads((folder / "config.json").read_text())["init_kwargs"]
    state_dict = dict(np.load(folder / "params.npz"))
    gen = convert_state_dict("stylegan2", state_dict, config)
    return dict(
        gen=gen,
        config=config,
        state_dict=state_dict,
        io=dict(np.load(folder / "io.npz")),
        jac=dict(np.load(folder / "jacobian.npz")),
    )


# ---- parity with the official outputs ------------------------------------------------------------


def test_sizes_follow_the_config(fixture):
    gen = fixture["gen"]
    assert (gen.num_ws, gen.w_dim, gen.z_dim, gen.c_dim) == (8, 32, 32, 0)
    assert (gen.img_resolution, gen.img_channels, gen.latent_dim, gen.kind) == (
        32,
        3,
        32,
        "stylegan2",
    )
    assert gen.params["synthesis"]["b8"]["conv0"]["weight"].shape == (3, 3, 64, 64)  # HWIO
    assert gen.params["synthesis"]["b8"]["conv0"]["affine"]["weight"].shape == (32, 64)  # [in, out]
    assert gen.buffers["mapping"]["w_avg"].shape == (32,)
    assert "noise_const" not in gen.params["synthesis"]["b8"]["conv0"]


def test_mapping_parity(fixture):
    gen, io = fixture["gen"], fixture["io"]
    assert max_abs(gen.mapping(io["z"], io["c"]), io["ws"]) <= PARITY_TOL
    assert (
        max_abs(
            gen.mapping(io["z"], io["c"], truncation_psi=float(io["trunc_psi"])), io["ws_trunc"]
        )
        <= PARITY_TOL
    )


@pytest.mark.parametrize("modulation", MODULATIONS)
def test_synthesis_parity(fixture, modulation):
    gen, io = fixture["gen"], fixture["io"]
    assert (
        max_abs(nchw(gen.synthesis(io["ws"], modulation=modulation)), io["img_from_ws"])
        <= PARITY_TOL
    )


def test_generate_parity(fixture):
    gen, io = fixture["gen"], fixture["io"]
    assert max_abs(nchw(gen.generate(io["z"], io["c"])), io["img"]) <= PARITY_TOL
    assert (
        max_abs(
            nchw(gen.generate(io["z"], io["c"], truncation_psi=float(io["trunc_psi"]))),
            io["img_trunc"],
        )
        <= PARITY_TOL
    )


def test_truncation_cutoff(fixture):
    gen, io = fixture["gen"], fixture["io"]
    ws = np.asarray(gen.mapping(io["z"], truncation_psi=0.7, truncation_cutoff=3))
    # The official x[:, :3] = lerp(...): the first 3 layers are truncated, the rest untouched.
    assert max_abs(ws[:, :3], io["ws_trunc"][:, :3]) <= PARITY_TOL
    assert max_abs(ws[:, 3:], io["ws"][:, 3:]) <= PARITY_TOL
    assert max_abs(io["ws_trunc"][:, 3:], io["ws"][:, 3:]) > 1e-2  # the check above could fail
    np.testing.assert_array_equal(
        np.asarray(gen.mapping(io["z"], truncation_psi=0.7, truncation_cutoff=0)),
        np.asarray(gen.mapping(io["z"])),
    )


# ---- Jacobians -----------------------------------------------------------------------------------


def w_jacobian(gen, w, modulation=DEFAULT_MODULATION):
    """d image [H, W, C] / d w [w_dim] with w in every layer -> [C, H, W, w_dim] (the fixture
    layout)."""
    if modulation == DEFAULT_MODULATION:
        fn = gen.latent_fn("w")
    else:

        def fn(v):
            ws = jnp.broadcast_to(v, (1, gen.num_ws, gen.w_dim))
            return gen.synthesis_apply(gen.params, gen.buffers, ws, modulation=modulation)[0]

    return np.asarray(jax.jit(jax.jacfwd(fn))(w)).transpose(2, 0, 1, 3)


def rel(a, b, ref) -> float:
    return max_abs(a, b) / float(np.max(np.abs(ref)))


@pytest.mark.parametrize("modulation", [m for m in MODULATIONS if m != DEFAULT_MODULATION])
def test_other_modulation_path_jacobian_float64(fixture, x64, modulation):
    # The default path's Jacobians (float64, float32, w+) are checked with every port's in
    # tests/test_ports.py.
    jac = fixture["jac"]
    # Measured 1.7e-15 relative; 1e-10 is still ~1e5 x float64 rounding and far below float32's
    # ~1e-7.
    assert (
        rel(
            w_jacobian(fixture["gen"], jnp.asarray(jac["w"]), modulation),
            jac["jacobian"],
            jac["jacobian"],
        )
        <= 1e-10
    )


# ---- the two modulation paths --------------------------------------------------------------------


def test_modulation_paths_agree(fixture):
    gen, io = fixture["gen"], fixture["io"]
    key = jax.random.key(3)
    imgs = [
        gen.synthesis(io["ws"] * 1.3, noise_mode="random", key=key, modulation=m)
        for m in MODULATIONS
    ]
    # Same mathematics, different float32 summation order: a few ulp of O(5) pixels.
    assert max_abs(*imgs) <= 1e-5
    # (test_jacobian_float64 checks both paths' float64 Jacobians against the official one to
    # 1e-10.) Two correct float32 paths may land on different sides of a leaky-ReLU kink (at ws[1,
    # 0], for example, one activation lies within float32 rounding of 0, and nudging w there by 1e-6
    # changes J by 1.7e-2 of max |J| at a handful of pixels), so compare up to kink flips, as in
    # test_jacobian_float32.
    w = jnp.asarray(fixture["jac"]["w"], jnp.float32)
    jacs = [w_jacobian(gen, w, m) for m in MODULATIONS]
    assert kink_residual(jacs[0], jacs[1], np.abs(jacs[0]).max()) <= F32_JACOBIAN_TOL


def test_latent_fn_uses_the_synthesis_pass(fixture):
    gen, io = fixture["gen"], fixture["io"]
    ws = io["ws"][2]
    want = gen.synthesis(io["ws"][2:3])[0]
    # Same computation compiled as different XLA programs (fusion changes float32 rounding): ~1 ulp
    # of O(5).
    assert max_abs(gen.latent_fn("w")(jnp.asarray(ws[0])), want) <= 1e-5
    layers_fn = gen.latent_fn("w", layers=[4, 5], base_ws=ws)  # all rows of ws are equal at psi 1
    assert max_abs(layers_fn(jnp.asarray(ws[0])), want) <= 1e-5


# ---- noise modes ---------------------------------------------------------------------------------


def zero_noise_strength(params):
    params = jax.tree.map(lambda a: a, params)
    for block in params["synthesis"].values():
        for layer in block.values():
            if isinstance(layer, dict) and "noise_strength" in layer:
                layer["noise_strength"] = jnp.zeros_like(layer["noise_strength"])
    return params


def test_noise_modes(fixture):
    gen, io = fixture["gen"], fixture["io"]
    ws = jnp.asarray(io["ws"])
    apply = jax.jit(gen.synthesis_apply, static_argnames=("noise_mode",))
    none = apply(gen.params, gen.buffers, ws, noise_mode="none")
    silent = zero_noise_strength(gen.params)
    # 'none' equals 'const' with every noise strength zeroed (x + 0); only XLA fusion rounding
    # differs (~1 ulp).
    assert max_abs(none, apply(silent, gen.buffers, ws, noise_mode="const")) <= 1e-5
    # the noise matters, so the checks below can fail
    assert max_abs(none, gen.synthesis(ws)) > 1e-2
    r1 = gen.synthesis(ws, noise_mode="random", key=jax.random.key(0))
    r2 = gen.synthesis(ws, noise_mode="random", key=jax.random.key(0))
    r3 = gen.synthesis(ws, noise_mode="random", key=jax.random.key(1))
    np.testing.assert_array_equal(np.asarray(r1), np.asarray(r2))
    # Different draws differ by O(noise strength); 1e-2 is far above any rounding, so these can only
    # pass for real.
    assert (
        max_abs(r1, r3) > 1e-2
        and max_abs(r1, none) > 1e-2
        and max_abs(r1, gen.synthesis(ws)) > 1e-2
    )
    # With zero strength, random noise has no effect: the random draw is the only difference.
    assert (
        max_abs(apply(silent, gen.buffers, ws, noise_mode="random", key=jax.random.key(0)), none)
        <= 1e-5
    )
    with pytest.raises(ValueError, match="PRNG key"):
        gen.synthesis(ws, noise_mode="random")
    with pytest.raises(ValueError, match="noise_mode"):
        gen.synthesis_apply(gen.params, gen.buffers, ws, noise_mode="fixed")


# ---- random-weight models: conditional, orig, resnet ---------------------------------------------


def tiny_config(architecture="skip", c_dim=0, resolution=16, **synthesis):
    return {
        "z_dim": 8,
        "w_dim": 16,
        "c_dim": c_dim,
        "img_resolution": resolution,
        "img_channels": 3,
        "mapping_kwargs": {"num_layers": 2},
        "synthesis_kwargs": {
            "channel_base": 256,
            "channel_max": 32,
            "num_fp16_res": 0,
            "conv_clamp": 256,
            "architecture": architecture,
            **synthesis,
        },
    }


def random_state_dict(config, seed=0):
    """An official-layout state_dict with random values (filters as the official code designs
    them)."""
    rng = np.random.RandomState(seed)
    filt = setup_filter(config["synthesis_kwargs"].get("resample_filter", [1, 3, 3, 1]))
    sd = {}
    for key, shape, _ in state_dict_layout(config):
        value = np.asarray(rng.randn(*shape), np.float32)
        if key.endswith("resample_filter"):  # the official conv1 keeps the default filter
            value = setup_filter([1, 3, 3, 1]) if key.endswith("conv1.resample_filter") else filt
        # stored / lr_multiplier (0.01), as the official init does
        elif key.startswith("mapping.fc"):
            value = value * (100 if key.endswith("weight") else 10)
        elif key.endswith("affine.bias"):  # official bias_init=1, perturbed
            value = 1 + 0.1 * value
        elif key.endswith(("noise_strength", ".bias")):
            value = 0.1 * value
        sd[key] = value
    return sd


@pytest.mark.parametrize(
    "config",
    [
        tiny_config("orig"),
        tiny_config("resnet"),
        tiny_config("skip", c_dim=5),
        tiny_config(
            "resnet",
            c_dim=3,
            resolution=8,
            conv_clamp=None,
            use_noise=False,
            resample_filter=[1, 2, 1],
        ),
    ],
    ids=["orig", "resnet", "skip_conditional", "resnet_conditional_noclamp_nonoise_filter121"],
)
def test_random_weight_models(config):
    gen = convert_state_dict("stylegan2", random_state_dict(config), config)
    res, n = config["img_resolution"], 3
    assert gen.num_ws == 2 * int(np.log2(res)) - 2
    z = np.random.RandomState(1).randn(n, 8).astype(np.float32)
    c = (
        np.eye(max(config["c_dim"], 1), dtype=np.float32)[[0, 1, 2]][:, : config["c_dim"]]
        if config["c_dim"]
        else None
    )
    ws = gen.mapping(z, c, truncation_psi=0.5)
    assert ws.shape == (n, gen.num_ws, 16)
    imgs = [gen.synthesis(ws, modulation=m) for m in MODULATIONS]
    assert imgs[0].shape == (n, res, res, 3) and bool(jnp.all(jnp.isfinite(imgs[0])))
    # float32 summation order
    assert max_abs(*imgs) <= 1e-4 * max(1.0, float(jnp.max(jnp.abs(imgs[0]))))
    # deterministic
    np.testing.assert_array_equal(np.asarray(gen.synthesis(ws)), np.asarray(gen.synthesis(ws)))
    eager = gen.synthesis_apply(gen.params, gen.buffers, ws)
    scale = max(1.0, float(jnp.max(jnp.abs(eager))))
    # eager (un-jitted) apply equals the jitted one up to XLA fusion differences (float32 summation
    # order)
    assert max_abs(eager, imgs[MODULATIONS.index(DEFAULT_MODULATION)]) <= 1e-4 * scale
    if config["c_dim"]:
        other = gen.mapping(z, np.roll(c, 1, axis=1), truncation_psi=0.5)
        assert max_abs(ws, other) > 1e-3  # the label changes w
        with pytest.raises(ValueError, match="conditional"):
            gen.mapping(z)
    # layout: orig/resnet have a single toRGB, resnet a shortcut per upsampling block
    blocks = gen.params["synthesis"]
    assert ("torgb" in blocks["b8"]) == (
        config["synthesis_kwargs"]["architecture"] == "skip" or res == 8
    )
    assert ("skip" in blocks["b8"]) == (config["synthesis_kwargs"]["architecture"] == "resnet")


def test_init_variables_match_the_converter_layout():
    config = tiny_config("resnet", c_dim=2)
    params, buffers = jax.eval_shape(lambda key: init_variables(config, key), jax.random.key(0))
    gen = convert_state_dict("stylegan2", random_state_dict(config), config)

    def shapes(tree):
        return jax.tree.map(lambda a: tuple(a.shape), tree)

    assert shapes(params) == shapes(gen.params) and shapes(buffers) == shapes(gen.buffers)


def test_float64_follows_ws(fixture, x64):
    gen, io = fixture["gen"], fixture["io"]
    img = gen.synthesis(jnp.asarray(io["ws"], jnp.float64))
    assert img.dtype == jnp.float64
    assert max_abs(nchw(img), io["img_from_ws"]) <= PARITY_TOL


# ---- bad config / state_dict ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "mutate,match",
    [
        (lambda c: c.update(img_resolution=48), "power of two"),
        (lambda c: c.update(channel_base=1024), "unknown"),
        (lambda c: c["synthesis_kwargs"].update(architecture="dense"), "architecture"),
        (lambda c: c["mapping_kwargs"].update(mapping_layers=8), "mapping_kwargs"),
        (lambda c: c.pop("w_dim"), "missing"),
        (lambda c: c.update(z_dim=-1), "z_dim"),
    ],
)
def test_bad_config(fixture, mutate, match):
    config = copy.deepcopy(fixture["config"])
    mutate(config)
    with pytest.raises(ConversionError, match=match):
        convert_state_dict("stylegan2", fixture["state_dict"], config)


def test_stylegan3_config_is_refused(fixtures_dir):
    config = json.loads((fixtures_dir / "stylegan3_t" / "config.json").read_text())["init_kwargs"]
    with pytest.raises(ValueError, match="stylegan3"):
        parse_config(config)


def test_bad_state_dict(fixture):
    sd, config = fixture["state_dict"], fixture["config"]
    missing = {k: v for k, v in sd.items() if k != "synthesis.b8.conv0.weight"}
    with pytest.raises(
        ConversionError,
        match=r"missing keys \(1\): synthesis.b8.conv0.weight "
        r"\(64, 64, 3, 3\)",
    ):
        convert_state_dict("stylegan2", missing, config)
    with pytest.raises(ConversionError, match=r"unexpected keys \(1\): synthesis.b8.extra"):
        convert_state_dict("stylegan2", {**sd, "synthesis.b8.extra": np.zeros(3)}, config)
    wrong = {**sd, "mapping.fc1.weight": np.zeros((32, 31), np.float32)}
    with pytest.raises(
        ConversionError,
        match=r"mapping.fc1.weight: checkpoint has \(32, 31\), "
        r"expected \(32, 32\)",
    ):
        convert_state_dict("stylegan2", wrong, config)
    half = {**sd, "synthesis.b4.const": sd["synthesis.b4.const"].astype(np.float16)}
    with pytest.raises(ConversionError, match="float16"):
        convert_state_dict("stylegan2", half, config)
    # a checkpoint of another config (here: another mapping depth) lists every mismatch
    with pytest.raises(ConversionError, match="mapping.fc2"):
        convert_state_dict("stylegan2", sd, {**config, "mapping_kwargs": {"num_layers": 3}})
    nan = {**sd, "mapping.w_avg": np.full(32, np.nan, np.float32)}
    with pytest.raises(ConversionError, match="non-finite"):
        convert_state_dict("stylegan2", nan, config)
