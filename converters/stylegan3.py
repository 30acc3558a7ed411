"""Official StyleGAN3 state_dict (NVlabs/stylegan3 ``training.networks_stylegan3.Generator``) ->
generator object.

The expected keys and shapes come from the config alone: the port's Flax modules are built
abstractly (``regfac_jax.models.stylegan3.abstract_variables``) and each declared variable is mapped
back to its official name and PyTorch shape. Layout rules (``converters.common``): 4-D ``*.weight``
(convolutions) OIHW -> HWIO, 2-D ``*.weight`` (dense layers, including ``synthesis.input.weight``)
[out, in] -> [in, out]; every buffer (``w_avg``, ``transform``, ``freqs``, ``phases``,
``magnitude_ema``, ``up_filter``, ``down_filter``) keeps its layout.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

import jax.numpy as jnp
import numpy as np

from converters.common import (
    ConversionError,
    StrictStateDict,
    conv_weight,
    dense_weight,
    flatten,
    nest,
)
from regfac_jax.models import stylegan3 as sg3

# StyleGAN2 blocks are named by resolution: synthesis.b8.conv0
_STYLEGAN2_KEY = re.compile(r"^synthesis\.b\d+\.")


def _torch_shape(name: str, shape: tuple) -> tuple:
    """The official PyTorch shape of a variable this port stores with ``shape``."""
    if name.endswith(".weight") and len(shape) == 4:
        kh, kw, i, o = shape
        return (o, i, kh, kw)
    if name.endswith(".weight") and len(shape) == 2:
        return (shape[1], shape[0])
    return tuple(shape)


def _to_port(name: str, arr: np.ndarray) -> np.ndarray:
    """Applies the layout rule for ``name`` to an official array."""
    if name.endswith(".weight") and arr.ndim == 4:
        return conv_weight(arr)
    if name.endswith(".weight") and arr.ndim == 2:
        return dense_weight(arr)
    return arr


def _reject_stylegan2(state_dict: Mapping[str, Any], config: Mapping[str, Any]) -> None:
    sg2_keys = [k for k in state_dict if _STYLEGAN2_KEY.match(k)]
    if sg2_keys or sg3.looks_like_stylegan2_config(config):
        evidence = (
            f"keys such as {sg2_keys[0]!r}"
            if sg2_keys
            else "config keys 'synthesis_kwargs'/'architecture'"
        )
        raise ConversionError(
            f"Cannot convert as StyleGAN3: {sg3.STYLEGAN2_HINT} (found {evidence})."
        )


def expected_shapes(config: Mapping[str, Any]) -> dict[str, tuple]:
    """Official state_dict key -> PyTorch shape for the StyleGAN3 generator built from
    ``config``."""
    variables = sg3.abstract_variables(config)
    abstract = flatten(variables["params"]) | flatten(variables["buffers"])
    return {name: _torch_shape(name, tuple(s.shape)) for name, s in abstract.items()}


def convert(state_dict: Mapping[str, Any], config: Mapping[str, Any]) -> sg3.StyleGAN3Generator:
    """Converts an official StyleGAN3 state_dict (key -> array) with its init_kwargs to a generator.

    Args:
      state_dict: every parameter and buffer of ``Generator.state_dict()``, as numpy-convertible
        arrays.
      config: the official constructor kwargs (``G.init_kwargs``).
    Returns:
      :class:`regfac_jax.models.stylegan3.StyleGAN3Generator` with float32 (jax) params and buffers.
    Raises:
      ConversionError: for a StyleGAN2 checkpoint or config, an invalid config, or any missing,
        unexpected or mis-shaped key (all listed at once).
    """
    _reject_stylegan2(state_dict, config)
    try:
        shapes = expected_shapes(config)
    except ValueError as e:
        raise ConversionError(f"Invalid StyleGAN3 config: {e}") from None
    sd = StrictStateDict(state_dict, what="StyleGAN3 state_dict")
    arrays = {name: sd.take(name, shape) for name, shape in shapes.items()}
    sd.finish()
    params, buffers = {}, {}
    for name, arr in arrays.items():
        is_buffer = name.rsplit(".", 1)[-1] in sg3.BUFFER_NAMES
        (buffers if is_buffer else params)[name] = jnp.asarray(
            _to_port(name, np.asarray(arr, np.float32))
        )
    return sg3.StyleGAN3Generator(config=dict(config), params=nest(params), buffers=nest(buffers))
