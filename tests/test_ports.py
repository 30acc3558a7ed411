"""Properties every StyleGAN port shares, written once and run over the table of ports.

Each port is checked against the Jacobians that the official PyTorch code computed on its reference
fixture (``../shared/fixtures/<name>/jacobian.npz``: float64 and float32 d image / d w at one w, and
d image / d w+). Fixture images are NCHW; Jacobians here are laid out like the fixtures,
``[C, H, W, latent]``.
"""

from __future__ import annotations

import dataclasses
import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from parity import F32_JACOBIAN_TOL, kink_residual, max_abs

from converters import convert_state_dict


@dataclasses.dataclass(frozen=True)
class Port:
    """One row of the table: which fixture, which converter, and the port's measured float64
    agreement."""

    kind: str
    # float64 Jacobian vs the official float64 one, relative to max |J|. Both run in float64, so
    # only summation order differs: measured 1.7e-15 (StyleGAN2), 7e-12 (StyleGAN3-T) and 7e-11
    # (StyleGAN3-R, whose official pass summed its radial filters row by row, see the fixture
    # README; its float64 conditioning is worse). Each bar keeps >= 10x headroom over the
    # measurement and is far below float32 rounding (~1e-7), so a float32 step anywhere in the
    # float64 path fails it.
    f64_jacobian_tol: float
    # d image / d w+ costs num_ws times the w Jacobian; StyleGAN3's full w+ check (16 layers of w)
    # runs in float32 (compared up to kink flips) and only with -m slow;
    # test_wplus_directional_derivatives covers it by default.
    wplus_dtype: type
    # Whether the fixture's jacobian_wplus was computed in float64 (then stored as float32): the
    # StyleGAN3-R one was computed in float32 by the official code, so only the kink-aware full
    # comparison applies to it.
    wplus_reference_f64: bool


PORTS = {
    "stylegan2": Port("stylegan2", 1e-10, np.float64, True),
    "stylegan3_t": Port("stylegan3", 1e-9, np.float32, True),
    "stylegan3_r": Port("stylegan3", 1e-9, np.float32, False),
}


@pytest.fixture(scope="module", params=sorted(PORTS))
def port(request, fixtures_dir):
    folder = fixtures_dir / request.param
    row = PORTS[request.param]
    config = json.loads((folder / "config.json").read_text())["init_kwargs"]
    gen = convert_state_dict(row.kind, dict(np.load(folder / "params.npz")), config)
    return row, gen, dict(np.load(folder / "jacobian.npz"))


@functools.partial(jax.jit, static_argnames="space")
def _image_and_jacobian(fn, latent, space="w"):
    del space  # part of the cache key only: w and w+ functions of one generator compile separately
    tangents = jnp.eye(latent.shape[0], dtype=latent.dtype)
    return jax.vmap(lambda t: jax.jvp(fn, (latent,), (t,)), out_axes=(None, 0))(tangents)


def _jacobian(gen, latent, space="w"):
    """Image ``[C, H, W]`` and d image / d latent ``[C, H, W, latent]`` in forward mode (what
    jax.jacfwd does)."""
    img, jac = _image_and_jacobian(gen.latent_fn(space), latent, space=space)
    return np.transpose(np.asarray(img), (2, 0, 1)), np.transpose(np.asarray(jac), (3, 1, 2, 0))


def test_jacobian_float64(port, x64):
    row, gen, ref = port
    img, jac = _jacobian(gen, jnp.asarray(ref["w"], jnp.float64))
    assert img.dtype == jac.dtype == np.float64  # float64 w runs the whole network in float64
    # ... and float32 w stays float32 with float64 enabled (no constant promotes it; checked abstractly).
    assert (
        jax.eval_shape(gen.latent_fn("w"), jnp.zeros(gen.w_dim, jnp.float32)).dtype == jnp.float32
    )
    # Images of magnitude <= 5 in float64 against float64: measured <= 5e-15; float32 anywhere would
    # give ~1e-7.
    assert max_abs(img, ref["img"]) <= 1e-9
    assert max_abs(jac, ref["jacobian"]) <= row.f64_jacobian_tol * np.abs(ref["jacobian"]).max()


def test_jacobian_float32(port):
    _, gen, ref = port
    _, jac = _jacobian(gen, jnp.asarray(ref["w"], jnp.float32))
    assert jac.dtype == np.float32
    scale = np.abs(ref["jacobian"]).max()
    # Against the official float32 and float64 Jacobians, up to kink flips (rank-1 each;
    # tests/parity.py says why a plain entrywise bound holds on one CPU and fails on another). The
    # official float32 Jacobian of StyleGAN3-T is itself one flip (1.05e-3 of max |J|) away from the
    # float64 one, and which side of that kink our float32 lands on depends on the instruction set.
    # Measured residuals: 1.1e-6 (StyleGAN2), 1.5e-6 (T) and 6.7e-7 (R) vs the official float32;
    # 7e-7, 1.7e-6 and 1.1e-6 vs float64.
    assert kink_residual(jac, ref["jacobian_f32"], scale) <= F32_JACOBIAN_TOL
    assert kink_residual(jac, ref["jacobian"], scale) <= F32_JACOBIAN_TOL


@pytest.mark.parametrize(
    "port",
    [
        pytest.param(name, marks=[pytest.mark.slow] if PORTS[name].kind == "stylegan3" else [])
        for name in sorted(PORTS)
    ],
    indirect=True,
)
def test_jacobian_wplus(port, x64):
    row, gen, ref = port
    wp = jnp.broadcast_to(jnp.asarray(ref["w"], row.wplus_dtype), (gen.num_ws, gen.w_dim)).reshape(
        -1
    )
    # [C, H, W, num_ws * w_dim], layer-major
    _, got = _jacobian(gen, wp, space="wplus")
    want = ref["jacobian_wplus"].reshape(got.shape)
    scale = np.abs(ref["jacobian_wplus"]).max()
    by_layer_sum = got.reshape(*got.shape[:3], gen.num_ws, gen.w_dim).sum(axis=3)
    if row.wplus_dtype == np.float64:
        # The reference was computed in float64 but stored as float32: rounding each entry costs at
        # most 2^-24 (6e-8) of its magnitude, so of max |J|; our float64 error is ~1e-15 on top.
        # Measured 3.7e-8.
        assert max_abs(got, want) <= 1e-7 * scale
        # Summing over layers gives the w Jacobian (chain rule), to float64 summation rounding.
        assert (
            max_abs(by_layer_sum, ref["jacobian"])
            <= row.f64_jacobian_tol * np.abs(ref["jacobian"]).max()
        )
    else:
        # float32 against a float32-stored reference (computed in float64 for T, in float32 for R):
        # up to kink flips, as in test_jacobian_float32.
        assert kink_residual(got, want, scale) <= F32_JACOBIAN_TOL
        assert (
            kink_residual(by_layer_sum, ref["jacobian"], np.abs(ref["jacobian"]).max())
            <= F32_JACOBIAN_TOL
        )


@pytest.mark.parametrize(
    "port", [name for name in sorted(PORTS) if PORTS[name].wplus_reference_f64], indirect=True
)
def test_wplus_directional_derivatives(port, x64):
    """Each layer's w reaches its own layer: float64 derivatives along random w+ tangents vs the
    reference's."""
    _, gen, ref = port
    wp = jnp.broadcast_to(jnp.asarray(ref["w"]), (gen.num_ws, gen.w_dim)).reshape(-1)
    tangents = np.random.default_rng(0).standard_normal((3, wp.shape[0]))
    jvps = jax.jit(jax.vmap(lambda f, t: jax.jvp(f, (wp,), (t,))[1], in_axes=(None, 0)))
    got = np.asarray(jvps(gen.latent_fn("wplus"), jnp.asarray(tangents))).transpose(0, 3, 1, 2)
    want = np.einsum(
        "chwk,nk->nchw",
        ref["jacobian_wplus"].reshape(*got.shape[1:], -1).astype(np.float64),
        tangents,
    )
    # The reference entries are float64 values stored as float32 (each off by <= 2^-24 of itself),
    # so J t is off by <= 6e-8 * sum_k |J_k t_k| <= 6e-8 * max |J| * ||t||_1; float64 rounding adds
    # ~1e-15. Equal rows of w+ (every other test) cannot see a layer receiving another layer's w;
    # random tangents can.
    bound = 6e-8 * np.abs(ref["jacobian_wplus"]).max() * np.abs(tangents).sum(axis=1)
    assert np.all(np.abs(got - want).max(axis=(1, 2, 3)) <= bound)
