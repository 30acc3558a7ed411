"""A small convolutional generator for tests and benchmarks of the method (not a GAN port).

``latent [d] -> dense -> 4x4xC -> (nearest x2 up-sample, 3x3 conv, softplus) ... -> 1x1 conv ->
tanh``: smooth everywhere, so finite differences are meaningful, and cheap to compile at any
power-of-two resolution.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax.tree_util import Partial

from regfac_jax.ops.precision import matmul_precision as _prec


def init_toy(
    key, latent_dim: int = 16, resolution: int = 32, channels: int = 8, img_channels: int = 3
) -> dict:
    """Random parameters of a toy generator; ``resolution`` a power of two >= 4."""
    n_up = int(round(math.log2(resolution))) - 2
    if n_up < 0 or 4 * 2**n_up != resolution:
        raise ValueError(f"resolution must be a power of two >= 4, got {resolution}.")
    keys = jax.random.split(key, n_up + 3)
    params = {
        "dense": jax.random.normal(keys[0], (latent_dim, 16 * channels)) / math.sqrt(latent_dim),
        "bias": 0.1 * jax.random.normal(keys[1], (16 * channels,)),
        "convs": [
            jax.random.normal(k, (3, 3, channels, channels)) / math.sqrt(9 * channels)
            for k in keys[2:-1]
        ],
        "to_rgb": jax.random.normal(keys[-1], (channels, img_channels)) / math.sqrt(channels),
    }
    return params


def toy_apply(params: dict, latent: jax.Array) -> jax.Array:
    """``latent [d]`` -> image ``[H, W, C]``; computes in the latent's dtype."""
    dt = latent.dtype
    ch = params["to_rgb"].shape[0]
    x = jnp.dot(latent, params["dense"].astype(dt), precision=_prec()) + params["bias"].astype(dt)
    x = jax.nn.softplus(x).reshape(1, 4, 4, ch)
    for w in params["convs"]:
        x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
        x = jax.lax.conv_general_dilated(
            x,
            w.astype(dt),
            (1, 1),
            "SAME",
            precision=_prec(),
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
        )
        x = jax.nn.softplus(x) - 0.5
    return jnp.tanh(jnp.dot(x[0], params["to_rgb"].astype(dt), precision=_prec()))


def toy_latent_fn(params: dict) -> Partial:
    """The pure ``g(latent) -> image`` with the weights as Partial leaves."""
    return Partial(toy_apply, params)
