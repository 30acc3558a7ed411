"""The one timing rule every benchmark uses (compile/warm up once, then the median of ``repeats``
runs), and the toy Gram problem the scaling benchmarks share."""

from __future__ import annotations

import statistics
import time
from typing import Callable

import jax


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``fn()`` over ``repeats`` runs after one warm-up call, waiting for JAX
    results."""
    jax.block_until_ready(fn())  # compile + warm up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def toy_problem(samples: int, d: int, resolution: int, channels: int = 16) -> tuple:
    """(latent function, latents [samples, d], masks [1, H, W]) of the toy generator."""
    import numpy as np

    from regfac_jax import regions
    from regfac_jax.models import toy

    params = toy.init_toy(jax.random.key(0), latent_dim=d, resolution=resolution, channels=channels)
    fn = toy.toy_latent_fn(params)
    latents = np.random.default_rng(1).standard_normal((samples, d)).astype(np.float32)
    masks = regions.box_mask((128, 128, 64, 96), resolution)[None]
    return fn, latents, masks
