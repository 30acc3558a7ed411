"""Inversion (W / W+), the LPIPS port and its converter, image-file validation, the invert launcher
and edits of inverted images."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import re
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import converters
from converters import lpips as lpips_conv
from regfac_jax import inversion
from regfac_jax import lpips as lpips_lib

_VGG16_CFG = (
    64,
    64,
    "M",
    128,
    128,
    "M",
    256,
    256,
    256,
    "M",
    512,
    512,
    512,
    "M",
    512,
    512,
    512,
    "M",
)


# --------------------------------------------------------------------------------------------------
# LPIPS: parity with the lpips package
# --------------------------------------------------------------------------------------------------
@pytest.fixture
def lpips_package(monkeypatch):
    """The `lpips` package, imported with a stand-in `torchvision` that builds VGG16's trunk.

    Why a stand-in: `lpips` imports torchvision only to call
    `torchvision.models.vgg16(pretrained=False).features` (an nn.Sequential of 3x3 convs with
    padding 1, in-place ReLUs and 2x2 max-pools, configuration "D"). The torchvision wheels
    available for torch==2.13.0 here are CUDA builds that fail to import next to the CPU torch; the
    trunk is rebuilt below from torch.nn with the same layer indices, so everything the lpips
    package computes (input scaling, slicing at relu1_2..relu5_3, normalisation, linear heads,
    averaging) is its own code.
    """
    torch = pytest.importorskip("torch")
    if importlib.util.find_spec("lpips") is None:
        pytest.fail("the `lpips` package is part of the [test] extra: pip install -e '.[test]'")
    nn = torch.nn

    def vgg16(pretrained=False, **unused):
        assert not pretrained, "the test never asks for downloaded weights"
        layers, cin = [], 3
        for v in _VGG16_CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers += [nn.Conv2d(cin, v, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
                cin = v
        return types.SimpleNamespace(features=nn.Sequential(*layers))

    tv, models = types.ModuleType("torchvision"), types.ModuleType("torchvision.models")
    models.vgg16, tv.models = vgg16, models
    monkeypatch.setitem(sys.modules, "torchvision", tv)
    monkeypatch.setitem(sys.modules, "torchvision.models", models)
    for name in [m for m in sys.modules if m == "lpips" or m.startswith("lpips.")]:
        monkeypatch.delitem(sys.modules, name)
    import lpips

    yield lpips
    for name in [m for m in sys.modules if m == "lpips" or m.startswith("lpips.")]:
        del sys.modules[name]


def _reference_model(lpips, seed=0):
    import torch

    torch.manual_seed(seed)
    # shipped heads, random trunk
    model = lpips.LPIPS(net="vgg", pretrained=True, pnet_rand=True, verbose=False)
    sd = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    vgg = {"features." + k.split(".", 2)[2]: v for k, v in sd.items() if k.startswith("net.slice")}
    # lins.* aliases
    heads = {k: v for k, v in sd.items() if k.startswith("lin") and not k.startswith("lins.")}
    return model, vgg, heads


@pytest.mark.parametrize("shape", [(3, 32, 32), (2, 40, 36)])
def test_lpips_matches_lpips_package(lpips_package, shape):
    import torch

    model, vgg, heads = _reference_model(lpips_package)
    # a full torchvision state_dict: classifier ignored
    vgg["classifier.0.weight"] = np.zeros((4, 4), np.float32)
    params = lpips_conv.convert(vgg, heads)
    rng = np.random.default_rng(1)
    n, h, w = shape
    x0 = rng.uniform(-1, 1, (n, h, w, 3)).astype(np.float32)
    x1 = np.clip(x0 + rng.normal(0, 0.3, x0.shape), -1, 1).astype(np.float32)
    with torch.no_grad():
        ref = model(
            torch.from_numpy(x0.transpose(0, 3, 1, 2)), torch.from_numpy(x1.transpose(0, 3, 1, 2))
        )
    ref = ref.numpy().reshape(n)
    ours = np.asarray(jax.jit(lpips_lib.distance)(params, x0, x1))
    assert np.all(ref > 1e-3)  # a real comparison, not two zeros
    # The bound; both sides are float32 with ~1e-7 relative rounding on distances of order
    # 0.1-1.
    np.testing.assert_allclose(ours, ref, atol=1e-5, rtol=0)


def test_lpips_converter_reads_the_shipped_heads_without_torch(lpips_package):
    _, vgg, heads = _reference_model(lpips_package)
    from converters import torch_pickle

    shipped = torch_pickle.read_state_dict(lpips_conv.default_linear_path())
    assert sorted(shipped) == sorted(heads)
    for k in heads:
        np.testing.assert_array_equal(shipped[k], heads[k])


def test_lpips_converter_names_bad_entries():
    vgg = {
        f"features.{i}.{p}": np.zeros((cout, cin, 3, 3) if p == "weight" else (cout,), np.float32)
        for stage in lpips_lib.STAGES
        for i, cin, cout in stage
        for p in ("weight", "bias")
    }
    heads = {
        f"lin{k}.model.1.weight": np.zeros((1, c, 1, 1), np.float32)
        for k, c in enumerate(lpips_lib.CHANNELS)
    }
    lpips_lib.check_params(lpips_conv.convert(vgg, heads))
    bad = dict(vgg)
    bad["features.2.weight"] = np.zeros((64, 32, 3, 3), np.float32)
    del bad["features.28.bias"]
    with pytest.raises(
        converters.ConversionError, match=r"features\.28\.bias.*\n.*features\.2\.weight"
    ):
        lpips_conv.convert(bad, heads)
    with pytest.raises(converters.ConversionError, match=r"lin4\.model\.1\.weight"):
        lpips_conv.convert(vgg, {k: v for k, v in heads.items() if not k.startswith("lin4")})


def test_lpips_properties():
    params = lpips_lib.init_params(jax.random.key(0))
    x = jax.random.uniform(jax.random.key(1), (2, 16, 16, 1), minval=-1, maxval=1)
    d = jax.jit(lpips_lib.distance)(params, x, x)
    # Unit-norm features that agree to float32 round-off (~1e-7) give squared differences ~1e-14 at
    # most.
    np.testing.assert_allclose(np.asarray(d), 0.0, atol=1e-12)
    # The gradient at identical images (zero feature vectors after ReLU included) must be finite for
    # optimisation.
    g = jax.jit(jax.grad(lambda y: lpips_lib.distance(params, y, x).sum()))(x)
    assert np.isfinite(np.asarray(g)).all()
    with pytest.raises(ValueError, match="at least 16x16"):
        lpips_lib.distance(params, x[:, :8, :8], x[:, :8, :8])
    with pytest.raises(ValueError, match="lin2.weight"):
        lpips_lib.check_params({**params, "lin2": {"weight": jnp.zeros(3)}})


# --------------------------------------------------------------------------------------------------
# Schedules, regulariser, quality measures
# --------------------------------------------------------------------------------------------------
def test_schedules_follow_the_projector_shape():
    t = jnp.linspace(0, 1, 101)
    lr = np.asarray(inversion.lr_ramp(t, rampdown=0.25, rampup=0.05))
    assert lr[0] == 0 and abs(lr[-1]) < 1e-7  # starts and ends at zero
    np.testing.assert_allclose(lr[5:76], 1.0, atol=1e-6)  # flat between the ramps
    assert np.all(np.diff(lr[:6]) > 0) and np.all(np.diff(lr[75:]) < 0)
    scale = np.asarray(inversion.w_noise_scale(t, 2.0, 0.05, 0.75))
    np.testing.assert_allclose(scale[0], 0.1, rtol=1e-6)  # w_std * initial factor
    assert np.all(scale[75:] == 0) and np.all(np.diff(scale[:76]) <= 0)


def test_noise_regularizer_penalises_correlation_only():
    key = jax.random.key(0)
    white = inversion.normalize_noise(jax.random.normal(key, (32, 32)))
    smooth = inversion.normalize_noise(jnp.cumsum(jax.random.normal(key, (32, 32)), axis=1))
    np.testing.assert_allclose(np.mean(np.asarray(white)), 0, atol=1e-6)
    np.testing.assert_allclose(np.mean(np.square(np.asarray(white))), 1, rtol=1e-5)
    # White noise: each lag-1 mean is O(1/R) (squared, O(1/R^2)); a random walk along rows
    # correlates ~1.
    assert (
        float(inversion.noise_regularizer(smooth))
        > 0.5
        > 100 * float(inversion.noise_regularizer(white))
    )
    # The scales visited (32, 16, 8) against a direct numpy evaluation.
    x, ref = np.asarray(smooth, np.float64), 0.0
    while True:
        ref += np.mean(x * np.roll(x, 1, 1)) ** 2 + np.mean(x * np.roll(x, 1, 0)) ** 2
        if x.shape[0] <= 8:
            break
        x = x.reshape(x.shape[0] // 2, 2, x.shape[0] // 2, 2).mean(axis=(1, 3))
    # float32 sums
    np.testing.assert_allclose(float(inversion.noise_regularizer(smooth)), ref, rtol=1e-5)


def test_psnr_and_ssim():
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (2, 24, 20, 3)).astype(np.float32)
    # offset 0.1 on [0, 1]: 10 log10(1/0.01)
    np.testing.assert_allclose(inversion.psnr(x + 0.2, x), 20.0, rtol=1e-6)
    np.testing.assert_allclose(inversion.ssim(x, x), 1.0, rtol=1e-12)
    y = np.clip(x + rng.normal(0, 0.2, x.shape), -1, 1)
    # an independent windowing: sigma 1.5 truncated to radius 5
    from scipy.ndimage import gaussian_filter

    def blur(a):
        return gaussian_filter(a, (0, 1.5, 1.5, 0), truncate=5 / 1.5, mode="constant")[
            :, 5:-5, 5:-5
        ]

    a, b = (x.astype(np.float64) + 1) / 2, (y.astype(np.float64) + 1) / 2
    ma, mb = blur(a), blur(b)
    va, vb, cov = blur(a * a) - ma**2, blur(b * b) - mb**2, blur(a * b) - ma * mb
    ref = (
        (2 * ma * mb + 1e-4) * (2 * cov + 9e-4) / ((ma**2 + mb**2 + 1e-4) * (va + vb + 9e-4))
    ).mean((1, 2, 3))
    np.testing.assert_allclose(inversion.ssim(y, x), ref, rtol=1e-9)  # float64 on both sides
    assert np.all(inversion.ssim(y, x) < 0.99)


# --------------------------------------------------------------------------------------------------
# invert
# --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def demo_gen():
    from regfac_jax import demo

    return demo.load_demo_generator()


def test_invert_wplus_reconstructs_generated_faces(demo_gen):
    gen = demo_gen
    z = np.random.RandomState(7).randn(2, gen.z_dim).astype(np.float32)
    target = np.clip(np.asarray(gen.generate(z)), -1, 1)
    calls = []
    config = inversion.InversionConfig(num_steps=40, w_avg_samples=2000)
    res = inversion.invert(
        gen,
        target,
        config,
        space="wplus",
        seed=3,
        progress=lambda step, loss: calls.append((step, loss)),
    )
    assert [c[0] for c in calls] == [10, 20, 30, 40] and all(np.isfinite(c[1]) for c in calls)
    assert (
        res.ws.shape == (2, gen.num_ws, gen.w_dim) and res.loss.shape == (2,) and res.lpips is None
    )
    w_avg, _, _ = inversion.w_statistics(gen, 2000)
    start = np.asarray(gen.synthesis(np.broadcast_to(w_avg, (2, gen.num_ws, gen.w_dim))))
    # From the mean face to the target: 40 steps gain far more than 6 dB on faces the model can
    # draw.
    assert np.all(inversion.psnr(res.images, target) > inversion.psnr(start, target) + 6)
    # The returned noise maps are normalised and reproduce the reconstructions.
    assert sorted(res.noise) == inversion.noise_names(gen)
    for v in res.noise.values():
        np.testing.assert_allclose(np.mean(np.square(v), axis=(1, 2)), 1, rtol=1e-4)
    # Same program, batch vs one image: equal to float32 round-off (XLA may order the batched sums
    # differently).
    np.testing.assert_allclose(inversion.synthesize(gen, res.ws, res.noise), res.images, atol=1e-5)
    mse = np.mean(np.square(res.images - target), axis=(1, 2, 3))
    np.testing.assert_allclose(res.mse, mse, rtol=1e-4)  # float32 reductions in different orders


@pytest.mark.parametrize("name, space", [("stylegan2", "w"), ("stylegan3_t", "wplus")])
def test_invert_on_fixtures_at_their_sizes(fixtures_dir, monkeypatch, name, space):
    from experiments import pipeline

    monkeypatch.setenv(pipeline.FIXTURES_ENV, str(fixtures_dir))
    gen = pipeline.load_fixture(name)
    with np.load(fixtures_dir / name / "io.npz") as io:
        target = np.clip(io["img"][:1].transpose(0, 2, 3, 1), -1, 1)
    res = inversion.invert(
        gen, target, inversion.InversionConfig(num_steps=3, w_avg_samples=256), space=space
    )
    assert res.ws.shape == (1, gen.num_ws, gen.w_dim) and np.isfinite(res.ws).all()
    assert res.images.shape == target.shape and np.isfinite(res.loss).all()
    assert (res.noise is None) == (gen.kind == "stylegan3")  # StyleGAN3 has no noise inputs
    if space == "w":
        np.testing.assert_array_equal(res.ws, np.broadcast_to(res.ws[:, :1], res.ws.shape))
    # The final loss is the pixel MSE plus 1e5 times the noise penalty of the returned maps (no
    # other default term).
    reg = sum(
        float(inversion.noise_regularizer(jnp.asarray(v[0]))) for v in (res.noise or {}).values()
    )
    # float32 sums in another order
    np.testing.assert_allclose(res.loss, res.mse + 1e5 * reg, rtol=1e-4)


def test_invert_refuses_bad_arrays(demo_gen):
    ok = np.zeros((2, 32, 32, 3), np.float32)
    with pytest.raises(ValueError, match=r"\[N, 32, 32, 3\].*got \(2, 16, 16, 3\)"):
        inversion.check_images(demo_gen, ok[:, :16, :16])
    bad = ok.copy()
    bad[1, 3, 3, 0] = np.nan
    with pytest.raises(ValueError, match=r"images \[1\] contain NaN"):
        inversion.check_images(demo_gen, bad)
    with pytest.raises(ValueError, match="outside \\[-1, 1\\]"):
        inversion.check_images(demo_gen, ok + 3)
    with pytest.raises(ValueError, match="dtype uint8"):
        inversion.check_images(demo_gen, ok.astype(np.uint8))
    with pytest.raises(ValueError, match="space must be"):
        inversion.invert(demo_gen, ok, space="z")


def test_inversion_config_refuses_unknown_and_invalid_settings(demo_gen):
    # defaults: the projector's
    assert inversion.InversionConfig() == inversion.InversionConfig.from_config({})
    with pytest.raises(
        ValueError, match=r"Unknown inversion setting\(s\) \['num_step'\].*num_steps"
    ):
        inversion.InversionConfig.from_config({"num_step": 10})
    bad = [
        ("num_steps", 0, "> 0"),
        ("num_steps", 2.5, "finite int"),
        ("chunk", -1, "> 0"),
        ("learning_rate", float("nan"), "finite float"),
        ("lr_rampup", 0.0, "> 0"),
        ("w_prior", -0.1, ">= 0"),
        ("optimize_noise", "yes", "True or False"),
        ("mse_weight", True, "float"),
    ]
    for name, value, why in bad:
        with pytest.raises(
            ValueError, match=rf"InversionConfig\.{name} must be .*{re.escape(why)}"
        ):
            inversion.InversionConfig(**{name: value})
    # converted, not refused
    assert inversion.InversionConfig(num_steps=np.int64(5), w_prior=1).w_prior == 1.0
    with pytest.raises(TypeError, match="config must be an InversionConfig"):
        inversion.invert(demo_gen, np.zeros((1, 32, 32, 3), np.float32), {"num_steps": 3})


def test_invert_compiles_once_per_compiled_settings(demo_gen, monkeypatch):
    import chex

    counted = jax.jit(chex.assert_max_traces(inversion._chunk_steps, n=1), static_argnums=(0, 1))
    monkeypatch.setattr(inversion, "_run_chunk", counted)
    x = np.zeros((1, 32, 32, 3), np.float32)
    base = inversion.InversionConfig(num_steps=2, chunk=2, w_avg_samples=64)
    inversion.invert(demo_gen, x, base)
    # Step count, learning rate and loss weights are traced: the same program runs them.
    inversion.invert(
        demo_gen, x, dataclasses.replace(base, num_steps=4, learning_rate=0.05, w_prior=0.1)
    )
    # a compiled-in setting (the exploration noise) needs a new program
    with pytest.raises(AssertionError):
        inversion.invert(demo_gen, x, dataclasses.replace(base, initial_noise_factor=0.1))


# --------------------------------------------------------------------------------------------------
# Image files
# --------------------------------------------------------------------------------------------------
def _write_inputs(d):
    from PIL import Image

    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(d / "a_good.png")
    Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(d / "b_big.jpg")
    Image.fromarray(rgb[..., 0]).save(d / "c_gray.png")
    rgba = np.concatenate([rgb, np.full((32, 32, 1), 128, np.uint8)], axis=-1)
    Image.fromarray(rgba).save(d / "d_rgba.png")
    g16 = np.full((32, 32), 1000, np.uint16)
    Image.fromarray(g16).save(d / "e_16bit.png")
    (d / "f_notes.txt").write_text("not an image")
    nan = np.zeros((32, 32, 3), np.float32)
    nan[0, 0, 0] = np.nan
    np.save(d / "g_nan.npy", nan)
    (d / "h_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    return rgb


def test_load_images_keeps_what_it_can_and_says_why(tmp_path, demo_gen):
    rgb = _write_inputs(tmp_path)
    x, files, warnings = inversion.load_images(tmp_path, demo_gen)
    names = [f.rsplit("/", 1)[1] for f in files]
    # order kept
    assert names == ["a_good.png", "b_big.jpg", "c_gray.png", "d_rgba.png", "e_16bit.png"]
    assert x.shape == (5, 32, 32, 3) and x.dtype == np.float32 and np.abs(x).max() <= 1
    np.testing.assert_allclose(x[0], rgb / 127.5 - 1, atol=1e-6)
    text = "\n".join(warnings)
    for name, reason in (
        ("b_big.jpg", "centre-cropped from 64x48"),
        ("b_big.jpg", "resized from 48x48 to 32x32"),
        ("c_gray.png", "grayscale repeated to RGB"),
        ("d_rgba.png", "alpha channel dropped"),
        ("e_16bit.png", "16-bit"),
        ("f_notes.txt", "skipped: not a readable image"),
        ("g_nan.npy", "skipped: contains 1 NaN"),
        ("h_broken.png", "skipped: not a readable image"),
    ):
        assert any(name in w and reason in w for w in warnings), (name, reason, text)
    # 16-bit precision kept (8 bits: 2/255 off)
    np.testing.assert_allclose(x[4], 2 * 1000 / 65535 - 1, atol=1e-6)
    np.testing.assert_array_equal(x[2][..., 0], x[2][..., 1])


def test_load_images_channel_policies(tmp_path, demo_gen):
    from PIL import Image

    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "rgb.png")
    gray_gen = types.SimpleNamespace(img_resolution=32, img_channels=1)
    x, _, warnings = inversion.load_images(tmp_path / "*.png", gray_gen)
    assert x.shape == (1, 32, 32, 1) and "converted to grayscale" in warnings[0]
    with pytest.raises(ValueError, match="2-channel images"):
        inversion.load_images(tmp_path, types.SimpleNamespace(img_resolution=32, img_channels=2))
    (tmp_path / "rgb.png").write_text("no")
    with pytest.raises(ValueError, match="(?s)No usable image.*rgb.png: skipped"):
        inversion.load_images(tmp_path, demo_gen)
    with pytest.raises(FileNotFoundError, match="glob"):
        inversion.load_images(tmp_path / "nothing*.png", demo_gen)


# --------------------------------------------------------------------------------------------------
# The launcher and edits of inverted images
# --------------------------------------------------------------------------------------------------
def test_invert_launcher_then_manipulate_inverted(tmp_path, demo_gen):
    from PIL import Image

    from experiments import invert, pipeline
    from experiments.configs import demo_faces
    from regfac_jax import io_utils, regions
    from regfac_jax.demo import faces

    real = io_utils.to_uint8(faces.faces(20261130, 2, 32))
    src = tmp_path / "photos"
    src.mkdir()
    for i, img in enumerate(real):
        Image.fromarray(img).save(src / f"face{i}.png")
    (src / "readme.txt").write_text("skip me")
    cfg = demo_faces.get_config("tiny")
    # the program test_invert_wplus_reconstructs_generated_faces compiled (2 images)
    cfg.inversion.space = "wplus"
    cfg.inversion.w_avg_samples = 2000
    report = invert.invert_images(cfg, str(src), tmp_path / "inv", progress=False)
    assert set(report) == {"images", "mean_psnr", "mean_ssim", "space", "steps", "seconds"}
    assert [pathlib_name(r["file"]) for r in report["images"]] == ["face0.png", "face1.png"]
    assert report["space"] == "wplus" and report["steps"] == cfg.inversion.num_steps
    assert json.loads((tmp_path / "inv" / "inversion.json").read_text()) == report
    lat = np.load(tmp_path / "inv" / "latents.npz")
    assert lat["ws"].shape == (2, demo_gen.num_ws, demo_gen.w_dim)
    assert [pathlib_name(f) for f in lat["files"]] == ["face0.png", "face1.png"]
    grid = np.asarray(Image.open(tmp_path / "inv" / "reconstructions.png"))
    assert grid.shape[0] > grid.shape[1] / 2  # two rows of input | reconstruction
    recon = inversion.synthesize(
        demo_gen, lat["ws"], {k[6:]: lat[k] for k in lat.files if k.startswith("noise/")}
    )
    np.testing.assert_allclose(
        inversion.psnr(recon, real / 127.5 - 1), [r["psnr"] for r in report["images"]], atol=0.05
    )  # the uint8 rounding of the saved inputs
    # Edit the inverted faces along an eyes direction; the locality report covers them.
    direction = np.random.default_rng(0).normal(size=(1, demo_gen.w_dim)).astype(np.float32)
    io_utils.save_npy(tmp_path / "eyes.npy", direction)
    outputs = pipeline.manipulate(
        cfg,
        tmp_path / "eyes.npy",
        tmp_path / "edit",
        progress=False,
        latents_path=tmp_path / "inv" / "latents.npz",
    )
    assert sum(p.suffix == ".gif" for p in outputs) == 2
    loc = json.loads((tmp_path / "edit" / "locality.json").read_text())
    assert loc["region"] == "eyes" and loc["num_images"] == 2
    mask = regions.preset_mask("faces", "eyes", 32)
    ref = inversion.edit_locality(
        demo_gen,
        lat["ws"],
        direction[0],
        mask,
        {k[6:]: lat[k] for k in lat.files if k.startswith("noise/")},
    )
    np.testing.assert_allclose(
        loc["directions"]["0"]["share"]["mean"], ref["share"].mean(), rtol=1e-6
    )


def pathlib_name(path: str) -> str:
    return path.replace("\\", "/").rsplit("/", 1)[-1]
