"""regfac_jax.ops against direct float64 numpy references written from the definitions."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from regfac_jax.ops import bias_act, downsample2d, filter2d, setup_filter, upfirdn2d, upsample2d

# float32 ops on O(1) data with at most ~16 filter taps per output: rounding is a few ulp of 1
# (~1e-7); 1e-5 leaves headroom yet would catch any misplaced tap, wrong pad or wrong gain (errors
# of order 1e-1).
TOL32 = 1e-5


def np_upfirdn2d(x, f, up=(1, 1), down=(1, 1), pad=(0, 0, 0, 0), flip_filter=False, gain=1.0):
    """Loop reference on NHWC float64, following the four steps literally."""
    (upx, upy), (downx, downy), (px0, px1, py0, py1) = up, down, pad
    x = np.asarray(x, np.float64)
    n, h, w, c = x.shape
    u = np.zeros((n, h * upy, w * upx, c))
    u[:, ::upy, ::upx] = x
    u = np.pad(u, ((0, 0), (max(py0, 0), max(py1, 0)), (max(px0, 0), max(px1, 0)), (0, 0)))
    u = u[:, max(-py0, 0) : u.shape[1] - max(-py1, 0), max(-px0, 0) : u.shape[2] - max(-px1, 0)]
    f = np.asarray(f, np.float64)
    if f.ndim == 1:
        f = np.outer(f, f)  # separable = outer product of the taps
    f = f * gain
    if not flip_filter:
        f = f[::-1, ::-1]
    fh, fw = f.shape
    oh, ow = u.shape[1] - fh + 1, u.shape[2] - fw + 1
    out = np.zeros((n, oh, ow, c))
    for i in range(fh):
        for j in range(fw):
            out += u[:, i : i + oh, j : j + ow] * f[i, j]
    return out[:, ::downy, ::downx]


RNG = np.random.RandomState(0)
X = RNG.randn(2, 9, 10, 3).astype(np.float32)
F_ASYM = RNG.rand(3, 4).astype(np.float32) + 0.1  # asymmetric: catches a missing or extra flip
F_SEP = setup_filter([1, 2, 5, 3, 1, 4, 2, 1], separable=True)  # asymmetric 8 taps, separable


@pytest.mark.parametrize(
    "f", [F_ASYM, F_SEP, setup_filter([1, 3, 3, 1])], ids=["2d_asym", "separable", "binomial"]
)
@pytest.mark.parametrize(
    "up,down,pad",
    [
        ((1, 1), (1, 1), (0, 0, 0, 0)),
        ((2, 2), (1, 1), (2, 1, 2, 1)),
        ((1, 1), (2, 2), (1, 2, 0, 3)),
        ((2, 3), (3, 2), (3, -1, -2, 4)),  # anisotropic factors and negative (cropping) padding
        ((4, 4), (2, 2), (-3, 5, 4, -2)),
    ],
)
@pytest.mark.parametrize("flip_filter", [False, True])
def test_upfirdn2d_matches_loop_reference(f, up, down, pad, flip_filter):
    got = upfirdn2d(
        jnp.asarray(X), f, up=up, down=down, padding=pad, flip_filter=flip_filter, gain=1.7
    )
    want = np_upfirdn2d(X, f, up, down, pad, flip_filter, gain=1.7)
    assert got.shape == want.shape
    assert np.max(np.abs(np.asarray(got) - want)) < TOL32


def test_upfirdn2d_float64_and_identity_filter(x64):
    x = RNG.randn(1, 4, 3, 2)
    got = upfirdn2d(jnp.asarray(x), None, up=2, padding=(1, 0, -1, 2))
    assert got.dtype == jnp.float64
    # float64 throughout: only summation rounding of a handful of O(1) terms remains.
    assert (
        np.max(
            np.abs(
                np.asarray(got) - np_upfirdn2d(x, np.ones((1, 1)), (2, 2), (1, 1), (1, 0, -1, 2))
            )
        )
        < 1e-14
    )


@pytest.mark.parametrize(
    "op,kwargs,shape,up,pad,gain",
    [
        (upsample2d, {}, (2, 18, 20, 3), (2, 2), (2, 1, 2, 1), 4.0),
        (downsample2d, {}, (2, 4, 5, 3), (1, 1), (1, 1, 1, 1), 1.0),
        (filter2d, {}, (2, 9, 10, 3), (1, 1), (2, 1, 2, 1), 1.0),
        (upsample2d, {"padding": (1, -1, 0, 2)}, (2, 20, 20, 3), (2, 2), (3, 0, 2, 3), 4.0),
    ],
)
def test_resampling_conveniences(op, kwargs, shape, up, pad, gain):
    f = setup_filter([1, 3, 3, 1])
    got = op(jnp.asarray(X), f, **kwargs)
    assert got.shape == shape
    down = (2, 2) if op is downsample2d else (1, 1)
    assert np.max(np.abs(np.asarray(got) - np_upfirdn2d(X, f, up, down, pad, gain=gain))) < TOL32


def test_upsample_downsample_keep_dc():
    f = setup_filter([1, 3, 3, 1])
    ones = jnp.ones((1, 8, 8, 1))
    # interior pixels of a constant image keep their value (DC gain 1); float32 rounding only.
    assert np.max(np.abs(np.asarray(upsample2d(ones, f))[0, 2:-2, 2:-2] - 1)) < 1e-6
    assert np.max(np.abs(np.asarray(downsample2d(ones, f))[0, 1:-1, 1:-1] - 1)) < 1e-6


def test_setup_filter():
    f = setup_filter([1, 3, 3, 1])
    assert f.shape == (4, 4) and f.dtype == np.float32
    np.testing.assert_array_equal(f, np.outer([1, 3, 3, 1], [1, 3, 3, 1]).astype(np.float32) / 64)
    assert setup_filter(np.ones(8)).shape == (8,)  # >= 8 taps: separable by default
    np.testing.assert_array_equal(
        setup_filter([1, 2], normalize=False, flip_filter=True, gain=4),
        # flipped outer product, gain^(2/2)
        np.array([[16, 8], [8, 4]], np.float32),
    )
    assert setup_filter(None).shape == (1, 1)


def test_upfirdn2d_is_linear_under_jit_and_jacfwd():
    f = jnp.asarray(F_ASYM)
    fn = jax.jit(lambda x: upfirdn2d(x, f, up=2, down=1, padding=(1, 2, 2, 1)))
    x = jnp.asarray(X[:1, :3, :3, :1])
    jac = jax.jacfwd(fn)(x)  # [out..., in...]
    # A linear map's Jacobian applied to x reproduces the output; float32 sums of <= 12 products.
    recon = jnp.tensordot(jac, x, axes=4)
    assert np.max(np.abs(np.asarray(recon - fn(x)))) < TOL32


def test_upfirdn2d_bad_input():
    with pytest.raises(ValueError, match="NHWC"):
        upfirdn2d(jnp.zeros((4, 4, 3)), None)
    with pytest.raises(ValueError, match="up must be"):
        upfirdn2d(jnp.zeros((1, 4, 4, 3)), None, up=0)
    with pytest.raises(ValueError, match="smaller than"):
        upfirdn2d(jnp.zeros((1, 4, 4, 3)), jnp.ones((3, 3)), padding=-2)


def np_act(x, act, alpha):
    return {
        "linear": x,
        "relu": np.maximum(x, 0),
        "lrelu": np.where(x > 0, x, alpha * x),
        "tanh": np.tanh(x),
        "sigmoid": 1 / (1 + np.exp(-x)),
        "elu": np.where(x > 0, x, np.expm1(x)),
        "selu": 1.0507009873554805 * np.where(x > 0, x, 1.6732632423543772 * np.expm1(x)),
        "softplus": np.log1p(np.exp(x)),
        "swish": x / (1 + np.exp(-x)),
    }[act]


@pytest.mark.parametrize(
    "act,def_gain",
    [
        ("linear", 1),
        ("relu", math.sqrt(2)),
        ("lrelu", math.sqrt(2)),
        ("tanh", 1),
        ("sigmoid", 1),
        ("elu", 1),
        ("selu", 1),
        ("softplus", 1),
        ("swish", math.sqrt(2)),
    ],
)
def test_bias_act_default_gains(act, def_gain):
    x = RNG.randn(2, 3, 4, 5).astype(np.float32)
    b = RNG.randn(5).astype(np.float32)
    want = np_act(x.astype(np.float64) + b, act, 0.2) * def_gain
    # float32 transcendental functions on O(1) values: a few ulp (~1e-6); 1e-5 still catches any
    # wrong gain.
    assert (
        np.max(np.abs(np.asarray(bias_act(jnp.asarray(x), jnp.asarray(b), act=act)) - want)) < TOL32
    )


def test_bias_act_options():
    x = (RNG.randn(4, 6) * 3).astype(np.float32)
    b = RNG.randn(4).astype(np.float32)
    got = bias_act(
        jnp.asarray(x), jnp.asarray(b), act="lrelu", alpha=0.1, gain=0.5, clamp=1.0, dim=0
    )
    want = np.clip(np_act(x + b[:, None].astype(np.float64), "lrelu", 0.1) * 0.5, -1, 1)
    assert np.max(np.abs(np.asarray(got) - want)) < TOL32
    assert np.max(np.abs(np.asarray(got))) <= 1.0
    with pytest.raises(ValueError, match="Unknown activation"):
        bias_act(jnp.asarray(x), act="gelu")
    with pytest.raises(ValueError, match="bias must have shape"):
        bias_act(jnp.asarray(x), jnp.ones(4))


@pytest.mark.parametrize(
    "up,down,fd2d,pad",
    [
        (2, 2, False, (3, 4, 5, 2)),
        (4, 2, True, (7, 6, 5, 8)),
        (2, 1, False, (1, 2, -1, 3)),
        (1, 1, False, (2, 2, 2, 2)),
        (1, 2, True, (3, 3, 4, 1)),
    ],
)
@pytest.mark.parametrize("tile_rows", [1, 2, 3])
def test_filtered_lrelu_strips_equal_one_pass(up, down, fd2d, pad, tile_rows):
    from regfac_jax.ops.filtered_lrelu import filtered_lrelu

    rng = np.random.RandomState(3)
    x = jnp.asarray(rng.randn(2, 13, 11, 3).astype(np.float32))
    b = jnp.asarray(rng.randn(3).astype(np.float32))
    # asymmetric taps: a misaligned strip would show
    fu = jnp.asarray(rng.rand(6).astype(np.float32))
    fd = jnp.asarray(rng.rand(5, 5).astype(np.float32) if fd2d else rng.rand(7).astype(np.float32))
    kwargs = dict(up=up, down=down, padding=pad, clamp=1.5)
    want = filtered_lrelu(x, fu, fd, b, **kwargs)
    got = filtered_lrelu(x, fu, fd, b, tile_rows=tile_rows, **kwargs)
    assert got.shape == want.shape
    # Strips run the same products per output pixel; only XLA's fusion may differ: float32 rounding
    # of O(1) sums.
    assert np.max(np.abs(np.asarray(got) - np.asarray(want))) < TOL32
