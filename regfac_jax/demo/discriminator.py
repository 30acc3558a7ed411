"""A small StyleGAN2-style discriminator (the 'resnet' architecture of stylegan2-ada-pytorch), for
training the shipped demo generator.

Structure, for ``img_resolution`` R: a 1x1 ``fromrgb`` convolution, then one residual block per
resolution R, R/2, ..., 8 (3x3 conv, 3x3 conv with FIR down-sampling, a 1x1 down-sampling shortcut,
outputs summed with gain sqrt(1/2)), then the 4x4 epilogue (minibatch standard deviation, 3x3 conv,
dense, dense to one logit). Equalised learning rate: weights are stored N(0, 1) and scaled by
``1 / sqrt(fan_in)`` at run time; leaky ReLU with slope 0.2 and gain sqrt(2). Unconditional only.
Channels at resolution r are ``min(channel_base // r, channel_max)``, as in the generator.

Images are NHWC in [-1, 1]; the output is one real-valued logit per image, ``[N, 1]``.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from regfac_jax.ops.bias_act import bias_act
from regfac_jax.ops.upfirdn2d import setup_filter, upfirdn2d

_DIMS = ("NHWC", "HWIO", "NHWC")
# [1, 3, 3, 1] / 8, applied along rows then columns
_FILTER = setup_filter([1, 3, 3, 1], separable=True)


def blur(x: jax.Array, pad: int, down: int = 1) -> jax.Array:
    """Separable [1, 3, 3, 1] / 8 low-pass filter with ``pad`` zeros on every side, keeping every
    ``down``-th pixel.

    Runs on :func:`regfac_jax.ops.upfirdn2d` (shifted sums, which XLA runs far faster on CPU than a
    depthwise convolution).

    Args:
      x: [N, H, W, C].
    Returns:
      [N, (H + 2 * pad - 4) // down + 1, (W + 2 * pad - 4) // down + 1, C].
    """
    return upfirdn2d(x, _FILTER, down=down, padding=pad)


def channels_at(res: int, channel_base: int, channel_max: int) -> int:
    """Feature maps at resolution ``res``."""
    return max(1, min(channel_base // res, channel_max))


class Conv(nn.Module):
    """Equalised-lr convolution with optional 2x FIR down-sampling, bias and leaky ReLU."""

    features: int
    kernel: int
    down: bool = False
    use_bias: bool = True
    activation: str = "lrelu"

    @nn.compact
    def __call__(self, x: jax.Array, gain: float = 1.0) -> jax.Array:
        """x [N, H, W, C] -> [N, H', W', features] with H' = H // 2 when ``down``."""
        c_in, k = x.shape[-1], self.kernel
        weight = self.param("weight", nn.initializers.normal(1.0), (k, k, c_in, self.features))
        w = weight * (1.0 / math.sqrt(c_in * k * k))
        if self.down and k == 1:
            x = blur(x, 1, down=2)
            x = lax.conv_general_dilated(x, w, (1, 1), "VALID", dimension_numbers=_DIMS)
        elif self.down:
            x = blur(x, k // 2 + 1)  # blur first, then a stride-2 valid conv lands on H // 2
            x = lax.conv_general_dilated(x, w, (2, 2), "VALID", dimension_numbers=_DIMS)
        else:
            x = lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=_DIMS)
        b = self.param("bias", nn.initializers.zeros, (self.features,)) if self.use_bias else None
        act_gain = math.sqrt(2.0) if self.activation == "lrelu" else 1.0
        return bias_act(x, b, act=self.activation, gain=act_gain * gain)


class Dense(nn.Module):
    """Equalised-lr dense layer with optional leaky ReLU."""

    features: int
    activation: str = "linear"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """x [N, D] -> [N, features]."""
        weight = self.param("weight", nn.initializers.normal(1.0), (x.shape[-1], self.features))
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        x = x @ (weight * (1.0 / math.sqrt(x.shape[-1])))
        return bias_act(x, bias, act=self.activation)


def minibatch_std(x: jax.Array, group_size: int = 4) -> jax.Array:
    """Appends one channel: the mean over features of the per-group standard deviation.

    Sample ``i`` is grouped with samples ``i + k * (N // G)`` (G = min(group_size, N), which must
    divide N).

    Args:
      x: [N, H, W, C].
    Returns:
      [N, H, W, C + 1].
    """
    n, h, w, c = x.shape
    g = min(group_size, n)
    if n % g:
        raise ValueError(
            f"The batch size {n} must be a multiple of the minibatch-std group size {g}."
        )
    y = x.reshape(g, n // g, h, w, c)
    y = jnp.sqrt(jnp.var(y, axis=0) + 1e-8)  # [N/G, H, W, C]
    y = jnp.mean(y, axis=(1, 2, 3))  # [N/G]
    # back to [N, 1, 1, 1], sample i -> group i % (N/G)
    y = jnp.tile(y, g)[:, None, None, None]
    return jnp.concatenate([x, jnp.broadcast_to(y, (n, h, w, 1))], axis=-1)


class Discriminator(nn.Module):
    """images [N, R, R, C] -> logits [N, 1]."""

    img_resolution: int = 32
    channel_base: int = 1024
    channel_max: int = 64
    mbstd_group: int = 4

    @nn.compact
    def __call__(self, img: jax.Array) -> jax.Array:
        res = self.img_resolution
        if img.ndim != 4 or img.shape[1:3] != (res, res):
            raise ValueError(
                f"Discriminator expects images [N, {res}, {res}, C]; got {tuple(img.shape)}."
            )

        def ch(r):
            return channels_at(r, self.channel_base, self.channel_max)

        x = Conv(ch(res), 1, name="fromrgb")(img)
        r = res
        while r > 4:
            y = Conv(
                ch(r // 2), 1, down=True, use_bias=False, activation="linear", name=f"b{r}_skip"
            )(x, gain=math.sqrt(0.5))
            x = Conv(ch(r), 3, name=f"b{r}_conv0")(x)
            x = Conv(ch(r // 2), 3, down=True, name=f"b{r}_conv1")(x, gain=math.sqrt(0.5))
            x = x + y
            r //= 2
        x = minibatch_std(x, self.mbstd_group)
        x = Conv(ch(4), 3, name="b4_conv")(x)
        x = Dense(ch(4), activation="lrelu", name="b4_fc")(x.reshape(x.shape[0], -1))
        return Dense(1, name="b4_out")(x)
