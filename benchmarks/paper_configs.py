"""The paper-scale generator configurations (official init_kwargs) and generators built from them.

* ``stylegan2-f``: stylegan2-ada-pytorch config-f (z = w = 512, 8 mapping layers, channel_base
  32768, channel_max 512, 'skip' architecture), as the official FFHQ 1024 checkpoint.
* ``stylegan3-t`` / ``stylegan3-r``: NVlabs stylegan3's training configs (T: channel_base 32768,
  channel_max 512, 3x3 convolutions; R: doubled channels, 1x1 convolutions, radial filters), as the
  official 1024 checkpoints.

:func:`abstract_generator` builds one whose weights are ``jax.ShapeDtypeStruct`` leaves: nothing
large is allocated, and ``jax.jit(...).lower(...)`` accepts it, so memory can be analysed by
compiling without running. :func:`random_generator` builds one with real random weights (for
timing).
"""

from __future__ import annotations

import jax

from regfac_jax.models.base import Generator

NAMES = ("stylegan2-f", "stylegan3-t", "stylegan3-r")


def config(name: str, resolution: int = 1024) -> tuple[str, dict]:
    """(kind, official init_kwargs) of the named configuration at ``resolution``."""
    if name == "stylegan2-f":
        return "stylegan2", {
            "z_dim": 512,
            "w_dim": 512,
            "c_dim": 0,
            "img_resolution": resolution,
            "img_channels": 3,
            "mapping_kwargs": {"num_layers": 8},
            "synthesis_kwargs": {
                "channel_base": 32768,
                "channel_max": 512,
                "num_fp16_res": 0,
                "conv_clamp": 256,
                "architecture": "skip",
            },
        }
    if name in ("stylegan3-t", "stylegan3-r"):
        r = name == "stylegan3-r"
        return "stylegan3", {
            "z_dim": 512,
            "w_dim": 512,
            "c_dim": 0,
            "img_resolution": resolution,
            "img_channels": 3,
            "mapping_kwargs": {"num_layers": 2},
            "channel_base": 65536 if r else 32768,
            "channel_max": 1024 if r else 512,
            "conv_kernel": 1 if r else 3,
            "use_radial_filters": r,
            "num_fp16_res": 0,
        }
    raise ValueError(f"Unknown configuration {name!r}; expected one of {NAMES}.")


def _variables(kind: str, cfg: dict, key) -> tuple[dict, dict]:
    if kind == "stylegan2":
        from regfac_jax.models.stylegan2 import init_variables

        return init_variables(cfg, key)
    from regfac_jax.models import stylegan3

    shapes = stylegan3.abstract_variables(cfg)
    keys = iter(jax.random.split(key, len(jax.tree_util.tree_leaves(shapes))))

    def fill(s):  # random weights with O(1) outputs
        return 0.05 * jax.random.normal(next(keys), s.shape, s.dtype)

    return jax.tree_util.tree_map(fill, shapes["params"]), jax.tree_util.tree_map(
        fill, shapes["buffers"]
    )


def abstract_generator(name: str, resolution: int = 1024) -> Generator:
    """The named generator with ShapeDtypeStruct weights (for compile-only memory analysis)."""
    from regfac_jax import models

    kind, cfg = config(name, resolution)
    params, buffers = jax.eval_shape(lambda k: _variables(kind, cfg, k), jax.random.key(0))
    return models.build(kind, cfg, params, buffers)


def random_generator(name: str, resolution: int = 1024, seed: int = 0) -> Generator:
    """The named generator with random weights (StyleGAN2: the port's official-like init)."""
    from regfac_jax import models

    kind, cfg = config(name, resolution)
    params, buffers = _variables(kind, cfg, jax.random.key(seed))
    return models.build(kind, cfg, params, buffers)
