"""The demo model's training pieces (init, discriminator, losses, EMA), the shipped generator, and
the demo."""

from __future__ import annotations

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from converters import stylegan2 as sg2_converter
from regfac_jax import demo
from regfac_jax.demo import discriminator as disc
from regfac_jax.demo import faces, training
from regfac_jax.ops.upfirdn2d import setup_filter, upfirdn2d

TINY = demo.demo_generator_config(tiny=True)


# --------------------------------------------------------------------------------------------------
# Training pieces
# --------------------------------------------------------------------------------------------------
def _shapes(tree):
    return jax.tree.map(lambda a: tuple(np.shape(a)), tree)


def test_init_stylegan2_has_the_converters_tree():
    config = demo.demo_generator_config()
    rng = np.random.default_rng(0)
    sd = {
        key: rng.standard_normal(shape).astype(np.float32)
        for key, shape, _ in sg2_converter.state_dict_layout(config)
    }
    converted = sg2_converter.convert(sd, config)
    params, buffers = training.init_stylegan2(jax.random.key(0), config)
    assert _shapes(params) == _shapes(converted.params)
    assert _shapes(buffers) == _shapes(converted.buffers)
    # The official initial values.
    assert float(jnp.abs(buffers["mapping"]["w_avg"]).max()) == 0.0
    b8 = params["synthesis"]["b8"]
    assert float(jnp.abs(b8["conv0"]["affine"]["bias"] - 1).max()) == 0.0
    assert (
        float(jnp.abs(b8["conv0"]["bias"]).max()) == 0.0
        and float(b8["conv0"]["noise_strength"]) == 0.0
    )
    w = np.asarray(b8["conv1"]["weight"])
    # 9 * 64 * 64 draws from N(0, 1): the std is within 1% with overwhelming odds
    assert abs(w.std() - 1) < 0.05
    fc = np.asarray(params["mapping"]["fc0"]["weight"])
    assert abs(fc.std() * 0.01 - 1) < 0.05  # stored N(0, 1) / lr_multiplier (0.01); 4096 draws


def test_blur_matches_upfirdn2d():
    x = jax.random.normal(jax.random.key(0), (2, 8, 8, 3))
    f = jnp.asarray(setup_filter([1, 3, 3, 1]))
    for pad in (1, 2):
        ref = upfirdn2d(x, f, padding=(pad, pad, pad, pad))
        # Same products summed in another order: float32 round-off only.
        np.testing.assert_allclose(disc.blur(x, pad), ref, atol=1e-6)


def test_minibatch_std_against_a_loop():
    x = np.random.default_rng(0).standard_normal((8, 4, 4, 3)).astype(np.float32)
    out = np.asarray(disc.minibatch_std(jnp.asarray(x), 4))
    assert out.shape == (8, 4, 4, 4)
    np.testing.assert_array_equal(out[..., :3], x)
    for i in range(8):
        # N/G = 2 groups: sample i goes with i % 2
        group = x[[j for j in range(8) if j % 2 == i % 2]]
        expected = np.sqrt(group.var(axis=0) + 1e-8).mean()
        np.testing.assert_allclose(out[i, ..., 3], expected, rtol=1e-5)  # float32 mean of 48 values
    with pytest.raises(ValueError, match="multiple of the minibatch-std group"):
        disc.minibatch_std(jnp.zeros((6, 4, 4, 3)), 4)


def test_discriminator_shapes_and_errors():
    d = disc.Discriminator(img_resolution=16, channel_base=128, channel_max=16)
    params = d.init(jax.random.key(0), jnp.zeros((4, 16, 16, 3)))
    assert d.apply(params, jnp.ones((8, 16, 16, 3))).shape == (8, 1)
    with pytest.raises(ValueError, match=r"expects images \[N, 16, 16, C\]"):
        d.apply(params, jnp.ones((4, 32, 32, 3)))


def test_r1_penalty_of_a_linear_discriminator():
    c = jax.random.normal(jax.random.key(1), (4, 4, 3))
    r1 = training.r1_penalty(
        lambda p, x: jnp.sum(x * p, axis=(1, 2, 3)), c, jnp.zeros((3, 4, 4, 3))
    )
    # dD/dx = c for every sample, so the penalty is |c|^2 (float32 sum of 48 squares).
    np.testing.assert_allclose(r1, float(jnp.sum(c**2)) * np.ones(3), rtol=1e-6)


def test_ema_beta_follows_the_official_schedule():
    cfg = training.TrainConfig(batch_size=16, ema_kimg=10.0, ema_rampup=0.05)
    # Step 0: ema_nimg = 16 * 0.05 images; late: 10k images.
    np.testing.assert_allclose(training.ema_beta(jnp.asarray(0), cfg), 0.5 ** (16 / 0.8), rtol=1e-5)
    np.testing.assert_allclose(
        training.ema_beta(jnp.asarray(10**6), cfg), 0.5 ** (16 / 1e4), rtol=1e-6
    )


def test_one_training_step_moves_everything():
    cfg = training.TrainConfig(batch_size=4, d_channel_base=128, d_channel_max=16)
    state = training.init_state(jax.random.key(0), TINY, cfg)
    gen = training.ema_generator(state, TINY)
    reals = jnp.asarray(faces.faces(0, 4, 16))
    new, m = training.train_step(state, reals, jax.random.key(1), gen, cfg, True)
    assert int(new.step) == 1
    assert all(np.isfinite(float(v)) for v in m.values()) and float(m["r1"]) > 0

    def moved(a, b):
        return float(jnp.abs(a - b).max()) > 0

    def conv(st):
        return st.g_params["synthesis"]["b8"]["conv1"]["weight"]

    assert moved(new.d_params["b4_out"]["weight"], state.d_params["b4_out"]["weight"])
    assert moved(conv(new), conv(state))
    assert moved(new.g_buffers["mapping"]["w_avg"], state.g_buffers["mapping"]["w_avg"])
    # beta(step 0) ~ 1e-6: the EMA copy jumps (almost) onto the new weights.
    ema, g = new.ema_params["mapping"]["fc0"]["weight"], new.g_params["mapping"]["fc0"]["weight"]
    assert float(jnp.abs(ema - g).max()) < 1e-3 * float(jnp.abs(g).max())


# --------------------------------------------------------------------------------------------------
# The shipped generator and the export format
# --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def shipped():
    return demo.load_demo_generator()


def test_shipped_generator_loads_and_makes_faces(shipped):
    assert shipped.kind == "stylegan2" and shipped.img_resolution == 32
    assert shipped.demo_info["steps"] > 0 and "command" in shipped.demo_info
    imgs = np.asarray(
        shipped.generate(
            jax.random.normal(jax.random.key(0), (8, shipped.z_dim)), truncation_psi=0.7
        )
    )
    assert imgs.shape == (8, 32, 32, 3) and np.isfinite(imgs).all()
    # Faces have a skin-coloured centre: red above blue at the cheeks, as in every procedural face.
    cheeks = faces.region_statistics(imgs)["cheeks"]
    assert np.mean(cheeks[:, 0] > cheeks[:, 2]) >= 0.75


def test_export_roundtrip_and_checksums(tmp_path, shipped):
    out = demo.export_generator(shipped, tmp_path / "g", {"steps": 1})
    again = demo.load_demo_generator(out)
    for a, b in zip(jax.tree.leaves(shipped.params), jax.tree.leaves(again.params), strict=True):
        # float32 stored as float32: exact
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    data = bytearray((out / demo.GENERATOR_FILE).read_bytes())
    data[-10] ^= 0xFF
    (out / demo.GENERATOR_FILE).write_bytes(bytes(data))
    with pytest.raises(ValueError, match="does not match its SHA256SUMS"):
        demo.load_demo_generator(out)
    with pytest.raises(FileNotFoundError, match="missing"):
        demo.load_demo_generator(tmp_path / "nowhere")


# --------------------------------------------------------------------------------------------------
# The demo, reduced
# --------------------------------------------------------------------------------------------------
def test_reduced_demo_writes_its_outputs(tmp_path, shipped):
    cfg = demo.DemoConfig(
        num_discovery=2,
        num_eval=4,
        num_ganspace=256,
        calibration_iters=8,
        robustness=False,
        grid_samples=2,
        grid_steps=3,
        rpca_max_iter=50,
    )
    report = demo.run_demo(tmp_path / "run", cfg, gen=shipped, progress=False)
    locality = json.loads((tmp_path / "run" / "locality.json").read_text())
    assert set(locality) == set(cfg.regions)
    for region, shares in locality.items():
        assert set(shares) == {"resefa", "lowrankgan", "jacobian_eig", "sefa", "ganspace"}
        assert all(0.0 <= v <= 1.0 for v in shares.values())
        for name in (f"compare_{region}.png", f"resefa_{region}.png", f"resefa_{region}.gif"):
            assert (tmp_path / "run" / name).stat().st_size > 0
    assert "resefa" in report["table"]
    # Same settings: allowed; different settings: refused unless overwrite.
    other = dataclasses.replace(cfg, num_discovery=3)
    with pytest.raises(FileExistsError, match="different settings"):
        demo.run_demo(tmp_path / "run", other, gen=shipped, progress=False, write_images=False)
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "x.txt").write_text("x")
    with pytest.raises(FileExistsError, match="holds no run.json"):
        demo.run_demo(tmp_path / "junk", cfg, gen=shipped, progress=False)


def test_demo_config_from_the_launchers_config():
    from experiments.configs import demo as demo_config

    settings = demo_config.get_config("tiny").to_dict()
    del settings["overwrite"]  # the launcher's own setting
    cfg = demo.DemoConfig.from_config({**settings, "regions": " eyes, mouth ,"})
    assert cfg.regions == ("eyes", "mouth") and cfg.num_discovery == 2 and not cfg.robustness
    defaults = demo_config.get_config().to_dict()
    del defaults["overwrite"]
    assert demo.DemoConfig.from_config(defaults) == demo.DemoConfig()
    with pytest.raises(ValueError, match=r"num_discover.*DemoConfig takes"):
        demo.DemoConfig.from_config({"num_discover": 8})
