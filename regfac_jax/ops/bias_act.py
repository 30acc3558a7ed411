"""Bias + activation + gain + clamp, with the default gains of the official StyleGAN code.

Semantics (the official ``bias_act`` reference path): ``y = clamp(act(x + b) * gain, -clamp,
clamp)``, where ``gain`` defaults to the activation's own gain (sqrt(2) for relu/lrelu/swish, 1
otherwise), ``alpha`` (the leaky-relu slope) defaults to 0.2 for lrelu, and ``clamp=None`` (or
negative) disables clamping.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class Activation:
    """One activation function with its default shape parameter and output gain."""

    func: Callable[[jax.Array, float], jax.Array]
    def_alpha: float
    def_gain: float


def _lrelu(x, alpha):
    # `x > 0` (not >=): at exactly 0 the derivative is alpha, as in PyTorch's leaky_relu backward.
    return jnp.where(x > 0, x, x * jnp.asarray(alpha, x.dtype))


ACTIVATIONS: dict[str, Activation] = {
    "linear": Activation(lambda x, a: x, 0.0, 1.0),
    "relu": Activation(lambda x, a: jnp.maximum(x, 0), 0.0, math.sqrt(2)),
    "lrelu": Activation(_lrelu, 0.2, math.sqrt(2)),
    "tanh": Activation(lambda x, a: jnp.tanh(x), 0.0, 1.0),
    "sigmoid": Activation(lambda x, a: jax.nn.sigmoid(x), 0.0, 1.0),
    "elu": Activation(lambda x, a: jax.nn.elu(x), 0.0, 1.0),
    "selu": Activation(lambda x, a: jax.nn.selu(x), 0.0, 1.0),
    "softplus": Activation(lambda x, a: jax.nn.softplus(x), 0.0, 1.0),
    "swish": Activation(lambda x, a: jax.nn.sigmoid(x) * x, 0.0, math.sqrt(2)),
}


def activation_gain(act: str) -> float:
    """The default output gain of activation ``act`` (e.g. sqrt(2) for 'lrelu')."""
    return _spec(act).def_gain


def _spec(act: str) -> Activation:
    if act not in ACTIVATIONS:
        raise ValueError(f"Unknown activation {act!r}; expected one of {sorted(ACTIVATIONS)}.")
    return ACTIVATIONS[act]


def bias_act(
    x: jax.Array,
    b: jax.Array | None = None,
    act: str = "linear",
    alpha: float | None = None,
    gain: float | None = None,
    clamp: float | None = None,
    dim: int = -1,
) -> jax.Array:
    """Adds a bias, applies an activation, scales by a gain and clamps.

    Args:
      x: activations of any shape, e.g. [N, H, W, C] (NHWC) or [N, C].
      b: bias [x.shape[dim]] or None; cast to x's dtype.
      act: 'linear' | 'relu' | 'lrelu' | 'tanh' | 'sigmoid' | 'elu' | 'selu' | 'softplus' | 'swish'.
      alpha: activation shape parameter (leaky-relu slope); None = the activation's default.
      gain: output scale; None = the activation's default gain.
      clamp: clamp the output to [-clamp, clamp]; None (or a negative value) disables clamping.
      dim: the axis of ``x`` that ``b`` runs along (default: the last, channels in NHWC).
    Returns:
      Array of x's shape and dtype.
    """
    spec = _spec(act)
    alpha = float(spec.def_alpha if alpha is None else alpha)
    gain = float(spec.def_gain if gain is None else gain)
    if b is not None:
        dim = dim % x.ndim
        if b.ndim != 1 or b.shape[0] != x.shape[dim]:
            raise ValueError(
                f"bias must have shape [{x.shape[dim]}] (x.shape[{dim}]), got {tuple(b.shape)}."
            )
        x = x + b.astype(x.dtype).reshape([-1 if i == dim else 1 for i in range(x.ndim)])
    x = spec.func(x, alpha)
    if gain != 1:
        x = x * gain
    if clamp is not None and clamp >= 0:
        x = jnp.clip(x, -clamp, clamp)
    return x
