"""StyleGAN3 (T and R) port: parity with the official PyTorch outputs, Jacobians, the op and bad
input.

The reference numbers come from the shared fixtures (official NVlabs/stylegan3 code on CPU; see
their README). Images there are NCHW; this port is NHWC, so references are transposed before
comparing. Every comparison is a max-abs error.
"""

from __future__ import annotations

import functools
import json
import math
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from parity import F32_JACOBIAN_TOL, PARITY_TOL, kink_residual, max_abs

from converters import ConversionError, convert_state_dict
from converters import stylegan3 as sg3_converter
from regfac_jax.models import stylegan3 as sg3
from regfac_jax.ops.bias_act import bias_act
from regfac_jax.ops.filtered_lrelu import filtered_lrelu
from regfac_jax.ops.upfirdn2d import upfirdn2d

MODELS = ["stylegan3_t", "stylegan3_r"]


def _nhwc(a: np.ndarray) -> np.ndarray:
    return np.transpose(np.asarray(a), (0, 2, 3, 1))


@pytest.fixture(scope="module", params=MODELS)
def model(request, fixtures_dir):
    folder = fixtures_dir / request.param
    config = json.loads((folder / "config.json").read_text())
    state_dict = dict(np.load(folder / "params.npz"))
    gen = convert_state_dict("stylegan3", state_dict, config["init_kwargs"])
    return types.SimpleNamespace(
        name=request.param,
        folder=folder,
        config=config,
        state_dict=state_dict,
        gen=gen,
        io=dict(np.load(folder / "io.npz")),
    )


@functools.lru_cache(maxsize=None)
def _jacobian_reference(folder) -> dict:
    return dict(np.load(folder / "jacobian.npz"))


# ---- derivation of the architecture from the config ----------------------------------------------


def test_derived_layers_match_official(model):
    derived = model.config["derived"]
    spec = model.gen.spec
    assert spec.num_ws == derived["num_ws"] == model.gen.num_ws
    assert list(model.gen.layer_names) == derived["layer_names"]
    assert (
        spec.input.channels,
        [spec.input.size] * 2,
        spec.input.sampling_rate,
        spec.input.bandwidth,
    ) == (
        derived["input"]["channels"],
        derived["input"]["size"],
        derived["input"]["sampling_rate"],
        derived["input"]["bandwidth"],
    )
    for layer in spec.layers:
        ours = dict(
            in_channels=layer.in_channels,
            out_channels=layer.out_channels,
            in_size=[layer.in_size] * 2,
            out_size=[layer.out_size] * 2,
            conv_kernel=layer.conv_kernel,
            up_factor=layer.up_factor,
            down_factor=layer.down_factor,
            up_taps=layer.up_taps,
            down_taps=layer.down_taps,
            down_radial=layer.down_radial,
            padding=list(layer.padding),
            is_torgb=layer.is_torgb,
            is_critically_sampled=layer.is_critically_sampled,
        )
        assert ours == derived["layers"][layer.name], layer.name


# Facts read off the official constructor for the released 1024x1024 configs
# (stylegan3-t/r-ffhq-1024x1024).
_OFFICIAL_1024 = {
    "t": (
        dict(channel_base=32768, channel_max=512),
        [
            "L0_36_512",
            "L1_36_512",
            "L2_52_512",
            "L3_52_512",
            "L4_84_512",
            "L5_148_512",
            "L6_148_512",
            "L7_276_323",
            "L8_276_203",
            "L9_532_128",
            "L10_1044_81",
            "L11_1044_51",
            "L12_1044_32",
            "L13_1024_32",
            "L14_1024_3",
        ],
        [9, 9, -6, 9, -6, -6, 9, -6, 9, -6, -6, 9, 9, -11, 0],
    ),
    "r": (
        dict(channel_base=65536, channel_max=1024, conv_kernel=1, use_radial_filters=True),
        [
            "L0_36_1024",
            "L1_36_1024",
            "L2_52_1024",
            "L3_52_1024",
            "L4_84_1024",
            "L5_148_1024",
            "L6_148_1024",
            "L7_276_645",
            "L8_276_406",
            "L9_532_256",
            "L10_1044_161",
            "L11_1044_102",
            "L12_1044_64",
            "L13_1024_64",
            "L14_1024_3",
        ],
        [11, 11, -2, 11, -2, -2, 11, -2, 11, -2, -2, 11, 11, -9, 0],
    ),
}


@pytest.mark.parametrize("which", sorted(_OFFICIAL_1024))
def test_derivation_of_released_1024_configs(which):
    extra, names, pad_lo = _OFFICIAL_1024[which]
    config = dict(z_dim=512, w_dim=512, c_dim=0, img_resolution=1024, img_channels=3, **extra)
    spec = sg3.derive_synthesis(config)
    assert [layer.name for layer in spec.layers] == names
    assert [layer.padding[0] for layer in spec.layers] == pad_lo
    shapes = sg3_converter.expected_shapes(config)
    assert len(shapes) == 114  # the official state_dict of these models has 114 entries
    if which == "t":
        assert shapes["synthesis.L10_1044_81.weight"] == (81, 128, 3, 3)
        assert shapes["synthesis.L10_1044_81.down_filter"] == (12,)
    else:
        assert shapes["synthesis.L10_1044_161.weight"] == (161, 256, 1, 1)
        assert shapes["synthesis.L10_1044_161.down_filter"] == (12, 12)  # radial
        # critically sampled: not radial
        assert shapes["synthesis.L12_1044_64.down_filter"] == (12,)
    assert "synthesis.L14_1024_3.up_filter" not in shapes  # single-tap filters have no buffer


# ---- forward parity ------------------------------------------------------------------------------


def test_mapping(model):
    io = model.io
    assert max_abs(model.gen.mapping(io["z"]), io["ws"]) <= PARITY_TOL
    assert (
        max_abs(model.gen.mapping(io["z"], truncation_psi=float(io["trunc_psi"])), io["ws_trunc"])
        <= PARITY_TOL
    )


def test_images(model):
    io, gen = model.io, model.gen
    img = gen.synthesis(io["ws"])
    assert (
        img.shape == (4, gen.img_resolution, gen.img_resolution, gen.img_channels)
        and img.dtype == jnp.float32
    )
    assert max_abs(img, _nhwc(io["img_from_ws"])) <= PARITY_TOL
    assert max_abs(gen.generate(io["z"]), _nhwc(io["img"])) <= PARITY_TOL
    assert (
        max_abs(
            gen.generate(io["z"], truncation_psi=float(io["trunc_psi"])), _nhwc(io["img_trunc"])
        )
        <= PARITY_TOL
    )


def test_transformed_images(model):
    io, gen = model.io, model.gen
    # The fixture's buffer is the inverse of gen_images.py's matrix for translate (0.1, -0.05), 10
    # degrees; 1e-6: the stored buffer is that float64 inverse rounded to float32 (half an ulp <=
    # 6e-8 here).
    assert max_abs(np.linalg.inv(sg3.transform_matrix((0.1, -0.05), 10.0)), io["transform"]) <= 1e-6
    ref = _nhwc(io["img_transformed"])
    assert max_abs(gen.synthesis(io["ws"], transform=io["transform"]), ref) <= PARITY_TOL
    moved = gen.with_transform(io["transform"])
    assert max_abs(moved.synthesis(io["ws"]), ref) <= PARITY_TOL
    np.testing.assert_array_equal(gen.transform, np.eye(3))  # the original generator is unchanged
    # The transform really matters: the untransformed image differs from the reference by far more
    # than 1e-4.
    assert max_abs(gen.synthesis(io["ws"]), ref) > 100 * PARITY_TOL


# ---- Jacobians -----------------------------------------------------------------------------------


def _image_and_jacobian(gen, w) -> tuple[np.ndarray, np.ndarray]:
    """Image [C, H, W] and d image / d w [C, H, W, w_dim] (w in every layer), laid out like the
    fixtures.

    Forward mode over the one-hot tangents (what ``jax.jacfwd`` does), keeping the image from the
    same pass.
    """
    g = gen.latent_fn("w")
    tangents = jnp.eye(w.shape[0], dtype=w.dtype)
    fn = jax.jit(
        lambda g, w: jax.vmap(lambda t: jax.jvp(g, (w,), (t,)), out_axes=(None, 0))(tangents)
    )
    img, jac = fn(g, w)
    return np.transpose(np.asarray(img), (2, 0, 1)), np.transpose(np.asarray(jac), (3, 1, 2, 0))


# (Every port's float64, float32 and w+ Jacobians are checked in tests/test_ports.py.)


# the measure's power: one model shows it
@pytest.mark.parametrize("model", ["stylegan3_t"], indirect=True)
def test_kink_residual_catches_a_wrong_op(model, monkeypatch):
    """The float32 measure can fail: a slightly wrong filtered leaky ReLU gain is caught, a kink
    flip is not."""
    ref = _jacobian_reference(model.folder)
    scale = np.abs(ref["jacobian"]).max()
    official = ref["jacobian_f32"].astype(np.float64)
    # A rank-1 change the size of a real kink flip (1e-3 of max |J|) is what the measure exists to
    # forgive ...
    rng = np.random.default_rng(0)
    g, h = rng.standard_normal(official.shape[:3]), rng.standard_normal(official.shape[3])
    flipped = official + 1e-3 * scale * np.einsum(
        "chw,d->chwd", g / np.abs(g).max(), h / np.abs(h).max()
    )
    assert kink_residual(flipped, official, scale) <= F32_JACOBIAN_TOL

    # ... while a 0.01% gain error in the port's activation, which changes J in every direction, is not forgiven.
    def wrong_gain(*args, gain=1.0, **kwargs):
        return filtered_lrelu(*args, gain=gain * 1.0001, **kwargs)

    monkeypatch.setattr(sg3, "filtered_lrelu", wrong_gain)
    off = _image_and_jacobian(model.gen, jnp.asarray(ref["w"], jnp.float32))[1]
    assert kink_residual(off, official, scale) > 10 * F32_JACOBIAN_TOL


# ---- the filtered leaky ReLU op ------------------------------------------------------------------


def _np_fir(
    x: np.ndarray, f: np.ndarray, axis: int, up: int, down: int, pad0: int, pad1: int
) -> np.ndarray:
    """Reference semantics along one axis: zero insertion, pad/crop, true convolution, keep every
    down-th."""
    x = np.moveaxis(x, axis, -1)
    z = np.zeros(x.shape[:-1] + (x.shape[-1] * up,))
    z[..., ::up] = x
    z = np.concatenate([np.zeros(z.shape[:-1] + (max(pad0, 0),)), z[..., max(-pad0, 0) :]], -1)
    z = np.concatenate(
        [z[..., : z.shape[-1] - max(-pad1, 0)], np.zeros(z.shape[:-1] + (max(pad1, 0),))], -1
    )
    n = z.shape[-1] - len(f) + 1
    y = sum(z[..., t : t + n] * f[len(f) - 1 - t] for t in range(len(f)))
    return np.moveaxis(y[..., ::down], -1, axis)


def _np_fir2d(x: np.ndarray, f: np.ndarray, down: int) -> np.ndarray:
    kh, kw = f.shape
    h, w = x.shape[1] - kh + 1, x.shape[2] - kw + 1
    y = sum(
        x[:, i : i + h, j : j + w] * f[kh - 1 - i, kw - 1 - j] for i in range(kh) for j in range(kw)
    )
    return y[:, ::down, ::down]


def _np_filtered_lrelu(x, fu, fd, b, up, down, pad, gain, slope, clamp):
    x = x + b
    fu = np.ones(1) if fu is None else fu
    x = _np_fir(x, fu * up, 2, up, 1, pad[0], pad[1])
    x = _np_fir(x, fu * up, 1, up, 1, pad[2], pad[3])
    x = np.clip(np.where(x > 0, x, x * slope) * gain, -clamp, clamp)
    if fd is None:
        return x[:, ::down, ::down]
    if fd.ndim == 2:
        return _np_fir2d(x, fd, down)
    return _np_fir(_np_fir(x, fd, 2, 1, down, 0, 0), fd, 1, 1, down, 0, 0)


# (H, W, up, down, up taps, down taps, padding (x0, x1, y0, y1), radial): every kind of StyleGAN3
# layer (e.g. (11, 10, ...) at the margins, (-2, -5, ...) where the size grows, (-9, -10, ...) at
# the crop, ToRGB) plus odd factors, odd tap counts and asymmetric padding.
_CASES = [
    (36, 36, 2, 2, 12, 12, (11, 10, 11, 10), False),
    (20, 20, 4, 2, 24, 12, (-2, -5, -2, -5), True),
    (30, 30, 2, 2, 12, 12, (-9, -10, -9, -10), False),
    (8, 8, 1, 1, 1, 1, (0, 0, 0, 0), False),
    (10, 11, 2, 1, 4, 1, (3, -1, 2, 0), False),
    (13, 9, 3, 2, 5, 4, (1, 2, -3, 4), True),
    (9, 9, 3, 1, 2, 1, (0, 1, 2, 0), False),
]


@pytest.mark.parametrize("case", _CASES)
def test_filtered_lrelu_matches_reference(case, x64):
    h, w, up, down, ku, kd, pad, radial = case
    rng = np.random.default_rng(sum(case[:6]))
    x, b = rng.standard_normal((2, h, w, 3)), rng.standard_normal(3)
    fu = rng.standard_normal(ku) if ku > 1 else None
    fd = (rng.standard_normal((kd, kd) if radial else kd)) if kd > 1 else None

    def j(a):
        return None if a is None else jnp.asarray(a)

    ours = filtered_lrelu(
        j(x), j(fu), j(fd), j(b), up, down, pad, gain=math.sqrt(2), slope=0.2, clamp=1.5
    )
    ref = _np_filtered_lrelu(x, fu, fd, b, up, down, pad, math.sqrt(2), 0.2, 1.5)
    assert ours.shape == ref.shape and ours.dtype == jnp.float64
    # float64, identical products in a different summation order: ~1e-15 (measured <= 2e-13 on sums
    # of ~100 terms of size ~10); a wrong tap, phase or offset gives O(1).
    assert max_abs(ours, ref) <= 1e-11
    # The same through the sibling ops, composed as the official reference path.
    naive = upfirdn2d(bias_act(j(x), j(b)), j(fu), up=up, padding=pad, gain=up**2)
    naive = upfirdn2d(
        bias_act(naive, act="lrelu", alpha=0.2, gain=math.sqrt(2), clamp=1.5), j(fd), down=down
    )
    assert max_abs(ours, naive) <= 1e-11  # same reason


def test_filtered_lrelu_flip_filter(x64):
    rng = np.random.default_rng(3)
    x, fu, fd = (jnp.asarray(rng.standard_normal(s)) for s in ((1, 9, 9, 2), (6,), (5,)))
    flipped = filtered_lrelu(x, fu[::-1], fd[::-1], None, 2, 2, 3, flip_filter=True)
    # exact up to summation order
    assert max_abs(flipped, filtered_lrelu(x, fu, fd, None, 2, 2, 3)) <= 1e-12


def test_filtered_lrelu_bad_input():
    x = jnp.zeros((1, 8, 8, 3))
    with pytest.raises(ValueError, match=r"bias must have shape \[3\]"):
        filtered_lrelu(x, b=jnp.zeros(4))
    with pytest.raises(ValueError, match="NHWC"):
        filtered_lrelu(jnp.zeros((8, 8, 3)))
    with pytest.raises(ValueError, match="leaves no output"):
        filtered_lrelu(x, jnp.ones(4), None, None, 1, 1, padding=-4)
    with pytest.raises(ValueError, match="up must be a positive int"):
        filtered_lrelu(x, up=0)


# ---- unseen and conditional configs --------------------------------------------------------------

_SMALL_COND = dict(
    z_dim=8,
    w_dim=8,
    c_dim=5,
    img_resolution=16,
    img_channels=3,
    channel_base=256,
    channel_max=16,
    num_layers=6,
    mapping_kwargs=dict(num_layers=3),
)


def _random_state_dict(config, seed=0) -> dict:
    rng = np.random.default_rng(seed)
    sd = {
        k: rng.standard_normal(s).astype(np.float32)
        for k, s in sg3_converter.expected_shapes(config).items()
    }
    for key in sd:
        if key.endswith(("magnitude_ema", "_filter")):
            # positive, like a real magnitude EMA and low-pass filters
            sd[key] = np.abs(sd[key]) + 0.5
    sd["synthesis.input.transform"] = np.eye(3, dtype=np.float32)
    return sd


def _np_mapping(sd, z, c, w_avg_psi, num_layers, num_ws):
    """The official mapping (embed, normalise, concatenate, lrelu layers at lr 0.01, broadcast,
    lerp)."""

    def norm(v):
        return v / np.sqrt(np.mean(v**2, axis=1, keepdims=True) + 1e-8)

    y = c @ (sd["mapping.embed.weight"].T / np.sqrt(c.shape[1])) + sd["mapping.embed.bias"]
    x = np.concatenate([norm(z), norm(y)], axis=1)
    for i in range(num_layers):
        wgt, bias = sd[f"mapping.fc{i}.weight"], sd[f"mapping.fc{i}.bias"]
        x = x @ (wgt.T * 0.01 / np.sqrt(wgt.shape[1])) + bias * 0.01
        x = np.where(x > 0, x, 0.2 * x) * np.sqrt(2)
    w_avg, psi = sd["mapping.w_avg"], w_avg_psi
    return np.repeat((w_avg + psi * (x - w_avg))[:, None], num_ws, axis=1)


def test_conditional_model():
    sd = _random_state_dict(_SMALL_COND)
    gen = convert_state_dict("stylegan3", sd, _SMALL_COND)
    assert (gen.num_ws, gen.c_dim, gen.img_resolution) == (8, 5, 16)
    rng = np.random.default_rng(1)
    z, c = rng.standard_normal((3, 8)).astype(np.float32), np.eye(5, dtype=np.float32)[[0, 2, 4]]
    ws = gen.mapping(z, c, truncation_psi=0.6)
    # float32 against a float64 numpy evaluation of the same formula: ~1e-6 of values of size ~1-10.
    assert (
        max_abs(ws, _np_mapping({k: v.astype(np.float64) for k, v in sd.items()}, z, c, 0.6, 3, 8))
        <= 1e-4
    )
    with pytest.raises(ValueError, match="conditional"):
        gen.mapping(z)
    img = gen.synthesis(ws)
    assert img.shape == (3, 16, 16, 3) and bool(jnp.all(jnp.isfinite(img)))
    assert max_abs(img[0], img[1]) > 0  # the label reaches the image


# ---- bad input -----------------------------------------------------------------------------------


def _sg2(fixtures_dir):
    folder = fixtures_dir / "stylegan2"
    return dict(np.load(folder / "params.npz")), json.loads((folder / "config.json").read_text())[
        "init_kwargs"
    ]


def test_stylegan2_checkpoint_is_rejected(fixtures_dir, model):
    sd2, config2 = _sg2(fixtures_dir)
    sg3_config = model.config["init_kwargs"]
    for sd, config in ((sd2, config2), (sd2, sg3_config), (model.state_dict, config2)):
        with pytest.raises(
            ConversionError, match="looks like a StyleGAN2 checkpoint; use kind='stylegan2'"
        ):
            convert_state_dict("stylegan3", sd, config)


def test_config_mismatch_is_reported(model):
    config = dict(model.config["init_kwargs"])
    with pytest.raises(
        ConversionError,
        match=r"shape mismatches "
        r".*synthesis\.L0_36_\d+\.affine\.weight",
    ):
        convert_state_dict("stylegan3", model.state_dict, dict(config, w_dim=16))
    other = {
        "conv_kernel": 1 if config["conv_kernel"] == 3 else 3,
        "use_radial_filters": not config["use_radial_filters"],
    }
    with pytest.raises(ConversionError, match=r"(?s)shape mismatches.*down_filter"):
        convert_state_dict("stylegan3", model.state_dict, dict(config, **other))
    with pytest.raises(ConversionError, match="(?s)missing keys.*unexpected keys"):
        convert_state_dict(
            "stylegan3", model.state_dict, dict(config, channel_max=config["channel_max"] // 2)
        )
    dropped = {k: v for k, v in model.state_dict.items() if k != "mapping.w_avg"}
    with pytest.raises(ConversionError, match=r"missing keys \(1\): mapping\.w_avg"):
        convert_state_dict("stylegan3", dropped, config)
    with pytest.raises(ConversionError, match=r"unexpected keys \(1\): synthesis\.extra"):
        convert_state_dict(
            "stylegan3", dict(model.state_dict, **{"synthesis.extra": np.zeros(1)}), config
        )
    with pytest.raises(ConversionError, match=r"unknown keys \['architecture_typo'\]"):
        convert_state_dict("stylegan3", model.state_dict, dict(config, architecture_typo=1))
    with pytest.raises(ConversionError, match="missing.*img_resolution"):
        convert_state_dict(
            "stylegan3",
            model.state_dict,
            {k: v for k, v in config.items() if k != "img_resolution"},
        )


@pytest.mark.parametrize(
    "matrix, message",
    [
        (np.eye(2), "3x3 affine matrix"),
        (np.array([[1, 0, np.nan], [0, 1, 0], [0, 0, 1]]), "finite"),
        (np.array([[1, 0, 0], [0, 1, 0], [0.1, 0, 1]]), r"last row \[0, 0, 1\]"),
    ],
)
def test_bad_transform_is_rejected(model, matrix, message):
    with pytest.raises(ValueError, match=message):
        model.gen.with_transform(matrix)
    with pytest.raises(ValueError, match=message):
        model.gen.synthesis(model.io["ws"], transform=matrix)


def test_bad_ws_shape(model):
    with pytest.raises(ValueError, match=r"ws must have shape \[N, 16, 32\]"):
        model.gen.synthesis(np.zeros((1, 15, 32), np.float32))
