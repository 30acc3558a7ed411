"""Pieces the StyleGAN2 and StyleGAN3 ports share: the mapping network's normalisation and
truncation arithmetic, and the equalised-learning-rate dense layer (mapping ``fc*``/``embed`` and
every ``affine``).

Both official codebases define these identically; here they are written once and imported by both
ports.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from regfac_jax.ops.bias_act import bias_act
from regfac_jax.ops.precision import matmul_precision as _prec


def normalize_2nd_moment(x: jax.Array, eps: float = 1e-8) -> jax.Array:
    """x [N, D] divided by its root mean square over D (unit mean square per row)."""
    return x * lax.rsqrt(jnp.mean(jnp.square(x), axis=1, keepdims=True) + eps)


def torch_lerp(start: jax.Array, end: jax.Array, weight: jax.Array) -> jax.Array:
    """``start + weight * (end - start)``, evaluated from the nearer end as ``torch.lerp`` does.

    Args:
      start, end, weight: broadcastable arrays (truncation: w_avg [w_dim], ws [N, k, w_dim], psi
        []).
    Returns:
      The broadcast shape; exactly ``end`` at weight 1 and exactly ``start`` at weight 0.
    """
    diff = end - start
    return jnp.where(jnp.abs(weight) < 0.5, start + weight * diff, end - diff * (1 - weight))


class FullyConnectedLayer(nn.Module):
    """Equalised-learning-rate dense layer: weight [in, out] * lr/sqrt(in), bias [out] * lr,
    activation.

    The initialiser draws weight ~ N(0, 1/lr^2) and bias = ``bias_init``, as the official
    constructor does; converted checkpoints replace both (StyleGAN3 only ever uses the shapes).
    """

    in_features: int
    out_features: int
    activation: str = "linear"
    lr_multiplier: float = 1.0
    bias_init: float = 0.0

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """x [N, in] -> [N, out] in x's dtype."""

        def init_weight(key):
            shape = (self.in_features, self.out_features)
            return jax.random.normal(key, shape, jnp.float32) / self.lr_multiplier

        def init_bias(_key):
            return jnp.full((self.out_features,), self.bias_init, jnp.float32)

        weight = self.param("weight", init_weight)
        bias = self.param("bias", init_bias)
        w = weight.astype(x.dtype) * (self.lr_multiplier / math.sqrt(self.in_features))
        b = bias.astype(x.dtype)
        if self.lr_multiplier != 1:
            b = b * self.lr_multiplier
        x = jnp.matmul(x, w, precision=_prec())
        if self.activation == "linear":
            return x + b
        return bias_act(x, b, act=self.activation)
