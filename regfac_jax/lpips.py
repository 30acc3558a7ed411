"""LPIPS perceptual distance (Zhang et al., 2018) on a VGG16 trunk, in JAX.

The distance between two images ``x0, x1`` ``[N, H, W, 3]`` in [-1, 1]:

1. shift and scale each channel to the statistics the VGG trunk expects (:data:`SHIFT`,
   :data:`SCALE`);
2. run VGG16's convolutional trunk and keep the activations after relu1_2, relu2_2, relu3_3, relu4_3
   and relu5_3;
3. normalise every activation vector to unit length over channels;
4. weight the squared difference of the normalised activations per channel with the learned
   non-negative linear head of that stage (one ``[C]`` vector), average over space, and sum over the
   five stages.

Weights (``params``) are a nested dict in this port's layouts, built from PyTorch files by
:mod:`converters.lpips` (torchvision's VGG16 state_dict plus the ``lpips`` package's linear heads)::

    params['features'][str(i)]['weight']   [3, 3, in, out]  (HWIO; i is torchvision's index in vgg16().features)
    params['features'][str(i)]['bias']     [out]
    params[f'lin{k}']['weight']            [C_k]            (k = 0..4)

Nothing is downloaded: without VGG16 weights there is no LPIPS, and callers fall back to pixel
losses.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

#: (torchvision feature index, in channels, out channels) of VGG16's 13 convolutions, grouped by
#: stage; each stage but the first starts with a 2x2 max-pool, each convolution is 3x3 with padding
#: 1 followed by a ReLU.
STAGES: tuple[tuple[tuple[int, int, int], ...], ...] = (
    ((0, 3, 64), (2, 64, 64)),
    ((5, 64, 128), (7, 128, 128)),
    ((10, 128, 256), (12, 256, 256), (14, 256, 256)),
    ((17, 256, 512), (19, 512, 512), (21, 512, 512)),
    ((24, 512, 512), (26, 512, 512), (28, 512, 512)),
)
#: Channels of the five tapped activations (the widths of the linear heads).
CHANNELS: tuple[int, ...] = tuple(stage[-1][2] for stage in STAGES)
#: Per-channel input shift and scale of LPIPS v0.1 for inputs in [-1, 1] (RGB).
SHIFT = np.array([-0.030, -0.088, -0.188], np.float32)
SCALE = np.array([0.458, 0.448, 0.450], np.float32)
#: The smallest image side the trunk accepts (four 2x2 pools leave 1 pixel).
MIN_SIZE = 16

_HIGHEST = lax.Precision.HIGHEST


def init_params(key: jax.Array, lin_scale: float = 0.1) -> dict:
    """Random weights in this module's layout (He-normal convolutions, zero biases, non-negative
    heads).

    Used by tests and for trying the pipeline without ImageNet weights; a random trunk is not a
    perceptual metric.
    """
    params: dict = {"features": {}}
    keys = jax.random.split(key, 14)
    convs = [c for stage in STAGES for c in stage]
    for k, (idx, cin, cout) in zip(keys[:-1], convs, strict=True):
        w = jax.random.normal(k, (3, 3, cin, cout), jnp.float32) * np.sqrt(2.0 / (9 * cin))
        params["features"][str(idx)] = {"weight": w, "bias": jnp.zeros((cout,), jnp.float32)}
    lin_keys = jax.random.split(keys[-1], len(CHANNELS))
    for k, (lk, c) in enumerate(zip(lin_keys, CHANNELS, strict=True)):
        params[f"lin{k}"] = {
            "weight": jnp.abs(jax.random.normal(lk, (c,), jnp.float32)) * lin_scale
        }
    return params


def check_params(params) -> None:
    """Raises ValueError naming every missing or misshaped entry of an LPIPS parameter tree."""
    problems = []
    feats = params.get("features", {}) if isinstance(params, dict) else {}
    for stage in STAGES:
        for idx, cin, cout in stage:
            entry = feats.get(str(idx), {})
            for name, shape in (("weight", (3, 3, cin, cout)), ("bias", (cout,))):
                arr = entry.get(name)
                if arr is None or tuple(np.shape(arr)) != shape:
                    problems.append(
                        f"features.{idx}.{name}: expected {shape}, got "
                        f"{None if arr is None else tuple(np.shape(arr))}"
                    )
    for k, c in enumerate(CHANNELS):
        arr = params.get(f"lin{k}", {}).get("weight") if isinstance(params, dict) else None
        if arr is None or tuple(np.shape(arr)) != (c,):
            problems.append(
                f"lin{k}.weight: expected ({c},), got "
                f"{None if arr is None else tuple(np.shape(arr))}"
            )
    if problems:
        raise ValueError(
            "Not LPIPS/VGG16 parameters (convert them with converters.lpips.load): "
            + "; ".join(problems)
        )


def _conv_relu(x: jax.Array, w: jax.Array, b: jax.Array) -> jax.Array:
    y = lax.conv_general_dilated(
        x,
        w,
        (1, 1),
        ((1, 1), (1, 1)),
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        precision=_HIGHEST,
    )
    return jax.nn.relu(y + b)


def _max_pool(x: jax.Array) -> jax.Array:
    """2x2 max-pool with stride 2; odd sizes drop the last row/column (as PyTorch's default)."""
    return lax.reduce_window(x, -jnp.inf, lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")


def vgg16_features(params: dict, x: jax.Array) -> list[jax.Array]:
    """The five tapped activations of VGG16 for already scaled inputs.

    Args:
      params: LPIPS parameters (only ``features`` is read).
      x: ``[N, H, W, 3]`` scaled input (see :func:`scale_inputs`).
    Returns:
      ``[relu1_2 [N, H, W, 64], relu2_2 [N, H/2, W/2, 128], ..., relu5_3 [N, H/16, W/16, 512]]``.
    """
    taps = []
    for s, stage in enumerate(STAGES):
        if s > 0:
            x = _max_pool(x)
        for idx, _, _ in stage:
            layer = params["features"][str(idx)]
            x = _conv_relu(x, layer["weight"].astype(x.dtype), layer["bias"].astype(x.dtype))
        taps.append(x)
    return taps


def scale_inputs(x: jax.Array) -> jax.Array:
    """``[N, H, W, 3]`` in [-1, 1] -> the trunk's input, ``(x - SHIFT) / SCALE`` per channel."""
    return (x - jnp.asarray(SHIFT, x.dtype)) / jnp.asarray(SCALE, x.dtype)


def _unit_channels(f: jax.Array, eps: float = 1e-10) -> jax.Array:
    """Divides each activation vector by (its L2 norm over channels + eps); the max() keeps
    gradients finite at 0."""
    norm = jnp.sqrt(jnp.maximum(jnp.sum(jnp.square(f), axis=-1, keepdims=True), 1e-30))
    return f / (norm + eps)


def as_rgb(x: jax.Array) -> jax.Array:
    """Images ``[..., C]`` with C = 1 (repeated), 3, or 4 (alpha dropped) -> ``[..., 3]``."""
    c = x.shape[-1]
    if c == 3:
        return x
    if c == 1:
        return jnp.repeat(x, 3, axis=-1)
    if c == 4:
        return x[..., :3]
    raise ValueError(
        f"LPIPS compares RGB images; images with {c} channels have no RGB reading (use 1, 3 or 4)."
    )


def distance(params: dict, x0: jax.Array, x1: jax.Array) -> jax.Array:
    """LPIPS distance per image pair.

    Args:
      params: LPIPS parameters (see the module docstring).
      x0, x1: ``[N, H, W, C]`` images in [-1, 1] (C = 1, 3 or 4; see :func:`as_rgb`), H, W >= 16.
    Returns:
      ``[N]`` distances (0 for identical images).
    """
    x0, x1 = as_rgb(jnp.asarray(x0)), as_rgb(jnp.asarray(x1))
    if x0.shape != x1.shape or x0.ndim != 4:
        raise ValueError(
            "LPIPS needs two image batches of the same shape [N, H, W, C]; got "
            f"{x0.shape}, {x1.shape}."
        )
    if min(x0.shape[1:3]) < MIN_SIZE:
        raise ValueError(
            f"LPIPS/VGG16 needs images of at least {MIN_SIZE}x{MIN_SIZE}; got {x0.shape[1:3]}."
        )
    n = x0.shape[0]
    feats = vgg16_features(params, scale_inputs(jnp.concatenate([x0, x1])))
    total = jnp.zeros((n,), x0.dtype)
    for k, f in enumerate(feats):
        f = _unit_channels(f)
        diff = jnp.square(f[:n] - f[n:])
        weighted = jnp.sum(diff * params[f"lin{k}"]["weight"].astype(diff.dtype), axis=-1)
        total = total + jnp.mean(weighted, axis=(1, 2))
    return total


__all__ = [
    "CHANNELS",
    "MIN_SIZE",
    "SCALE",
    "SHIFT",
    "STAGES",
    "as_rgb",
    "check_params",
    "distance",
    "init_params",
    "scale_inputs",
    "vgg16_features",
]
