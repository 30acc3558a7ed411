"""Jacobian time over the floor, and memory, for a generator:
``python -m benchmarks.bench_jacobian``.

The floor is one forward pass of the same generator at batch ``d`` (as many images as the Jacobian
has columns): a forward-mode Jacobian cannot be much cheaper than pushing ``d`` tangents through the
network. Both are timed in the same run on the same machine, after compilation, as the median of
several repeats. Memory is XLA's compiled memory analysis (arguments + outputs + temporaries) of
each kernel.

By default it measures the toy convolutional generator of ``regfac_jax.models.toy``;
``--model stylegan2`` measures a random-weight StyleGAN2 of the given size once that port is
installed.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp

from benchmarks.timing import median_seconds
from regfac_jax import jacobian, regions


def _mem_gib(jitted, *args, **static):
    m = jitted.lower(*args, **static).compile().memory_analysis()
    return (m.temp_size_in_bytes + m.argument_size_in_bytes + m.output_size_in_bytes) / 2**30


def toy_generator(resolution, d, channels):
    from regfac_jax.models import toy

    params = toy.init_toy(jax.random.key(0), latent_dim=d, resolution=resolution, channels=channels)
    return toy.toy_latent_fn(params), d


def stylegan2_generator(resolution, d, channels):
    from benchmarks.bench_stylegan2 import build  # a random-weight StyleGAN2 of that size

    del channels
    gen = build(resolution, d)
    return gen.latent_fn("w"), d


def _region_weights(resolution: int, regions_count: int, c: int) -> jax.Array:
    """Gram weights ``[2 R, H * W * c]`` of the first ``regions_count`` of three fixed boxes."""
    # centre row, col, h, w
    boxes = [(128, 128, 64, 96), (64, 128, 64, 128), (192, 128, 64, 96)][:regions_count]
    masks = jnp.stack([regions.box_mask(b, resolution) for b in boxes])
    return jnp.asarray(jacobian.mask_weights(masks, c))


def _strategy_rows(fn, latent: jax.Array, weights: jax.Array, chunk: int, blocks) -> dict:
    """Seconds and compiled GiB of ``weighted_grams`` per strategy (and block), by label."""
    d = latent.shape[0]
    rows = {}
    configs = [("materialize", None), ("transpose", None)] + [
        ("blocked", -(-d // nb)) for nb in blocks
    ]
    for strategy, block in configs:
        options = jacobian.JacobianOptions(tangent_chunk=chunk, strategy=strategy, block=block)
        t = median_seconds(lambda o=options: jacobian.weighted_grams(fn, latent, weights, o), 5)
        mem = _mem_gib(jacobian.weighted_grams, fn, latent, weights, options)
        rows[strategy + ("" if block is None else f" (block {block})")] = (t, mem)
    return rows


def run(
    model: str,
    resolution: int,
    d: int,
    channels: int,
    chunk: int,
    blocks=(1, 4, 8),
    regions_count: int = 3,
):
    make = {"toy": toy_generator, "stylegan2": stylegan2_generator}[model]
    fn, d = make(resolution, d, channels)
    latent = jax.random.normal(jax.random.key(1), (d,))
    batch = jax.random.normal(jax.random.key(2), (d, d))
    # batch-d forward; StyleGAN2 vmaps to a batched pass
    forward = jax.jit(lambda f, x: jax.vmap(f)(x))
    t_floor = median_seconds(lambda: forward(fn, batch), 5)
    c = jax.eval_shape(fn, latent).shape[-1]
    weights = _region_weights(resolution, regions_count, c)
    rows = _strategy_rows(fn, latent, weights, chunk, blocks)
    jacfwd = jax.jit(jax.jacfwd(lambda f, x: f(x), argnums=1))
    t_jac = median_seconds(lambda: jacfwd(fn, latent), 5)
    print(
        f"device: {jax.devices()[0].device_kind}; model {model} {resolution}x{resolution}x{c}, "
        f"d={d}, tangent_chunk={chunk}, {weights.shape[0] // 2} regions"
    )
    print(f"{'what':38s} {'seconds':>9s} {'/ floor':>8s} {'memory GiB':>11s}")
    print(
        f"{'floor: forward at batch d':38s} {t_floor:9.4f} {1.0:8.2f} "
        f"{_mem_gib(forward, fn, batch):11.3f}"
    )
    print(f"{'jax.jacfwd (full Jacobian)':38s} {t_jac:9.4f} {t_jac / t_floor:8.2f}")
    for strategy, (t, mem) in rows.items():
        print(f"{'region Grams, ' + strategy:38s} {t:9.4f} {t / t_floor:8.2f} {mem:11.3f}")


def main():
    ap = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    ap.add_argument("--model", default="toy", choices=["toy", "stylegan2"])
    ap.add_argument("--resolution", type=int, default=64)
    ap.add_argument("--d", type=int, default=64)
    ap.add_argument("--channels", type=int, default=16)
    ap.add_argument("--chunk", type=int, default=64)
    ap.add_argument(
        "--blocks", type=int, nargs="*", default=[1, 4, 8], help="block counts for 'blocked'"
    )
    ap.add_argument("--regions", type=int, default=3, choices=[1, 2, 3])
    args = ap.parse_args()
    run(args.model, args.resolution, args.d, args.channels, args.chunk, args.blocks, args.regions)


if __name__ == "__main__":
    main()
