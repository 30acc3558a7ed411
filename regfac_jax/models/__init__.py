"""Generator ports, looked up by kind.

``build(kind, config, params, buffers)`` rebuilds a generator object from what a checkpoint stores;
each port module registers its class in ``_REGISTRY`` lazily so importing this package stays cheap.
"""

from __future__ import annotations

import importlib

from regfac_jax.models.base import Generator

_MODULES = {
    "stylegan2": ("regfac_jax.models.stylegan2", "StyleGAN2Generator"),
    "stylegan3": ("regfac_jax.models.stylegan3", "StyleGAN3Generator"),
    "biggan": ("regfac_jax.models.biggan", "BigGANGenerator"),
}

KINDS = tuple(_MODULES)


def generator_class(kind: str) -> type:
    """Returns the generator class for ``kind`` ('stylegan2' | 'stylegan3' | 'biggan')."""
    if kind not in _MODULES:
        raise ValueError(f"Unknown generator kind {kind!r}; expected one of {sorted(_MODULES)}.")
    module, name = _MODULES[kind]
    return getattr(importlib.import_module(module), name)


def build(kind: str, config: dict, params, buffers) -> Generator:
    """Rebuilds a generator of ``kind`` from its official config and (already converted) arrays."""
    return generator_class(kind)(config=config, params=params, buffers=buffers)


__all__ = ["Generator", "KINDS", "build", "generator_class"]
