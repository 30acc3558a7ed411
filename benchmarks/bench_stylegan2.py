"""StyleGAN2 port speed on this machine: generation throughput vs image size, and Jacobian cost vs
its floor.

Run: ``python benchmarks/bench_stylegan2.py`` (about 2 minutes on 2 busy CPU cores; ``--help`` for
options; ``--jacobian_resolutions 32 64`` adds the 64px Jacobian, about 1 more minute).

* Generation: images/s of ``synthesis`` (jitted, batch ``--batch``, noise const) for tiny
  random-weight models at each resolution, with both modulation paths.
* Jacobian: seconds for ``jax.jacfwd`` of ``latent_fn``'s function (one sample, ``w_dim`` tangents),
  with both modulation paths, divided by the floor: one forward pass at batch ``w_dim`` (the same
  arithmetic a forward-mode Jacobian cannot avoid).

All timings are medians of ``--repeats`` runs after one warm-up (compilation excluded).
"""

from __future__ import annotations

import argparse
import functools

import jax
import jax.numpy as jnp

from benchmarks.timing import median_seconds
from regfac_jax.models.stylegan2 import (
    DEFAULT_MODULATION,
    MODULATIONS,
    StyleGAN2Generator,
    init_variables,
)


def tiny_config(resolution: int, w_dim: int) -> dict:
    return {
        "z_dim": w_dim,
        "w_dim": w_dim,
        "c_dim": 0,
        "img_resolution": resolution,
        "img_channels": 3,
        "mapping_kwargs": {"num_layers": 2},
        "synthesis_kwargs": {
            "channel_base": 16 * resolution,
            "channel_max": 64,
            "num_fp16_res": 0,
            "conv_clamp": 256,
            "architecture": "skip",
        },
    }


def build(resolution: int, w_dim: int) -> StyleGAN2Generator:
    config = tiny_config(resolution, w_dim)
    params, buffers = init_variables(config, jax.random.key(0))
    return StyleGAN2Generator(config=config, params=params, buffers=buffers)


def random_ws(gen: StyleGAN2Generator, n: int) -> jax.Array:
    return jax.random.normal(jax.random.key(1), (n, gen.num_ws, gen.w_dim))


def bench_generation(resolutions, batch: int, w_dim: int, repeats: int) -> None:
    print(f"generation: images/s at batch {batch} (w_dim {w_dim}, channel_max 64)")
    print(f"{'resolution':>10} " + " ".join(f"{m:>12}" for m in MODULATIONS))
    for res in resolutions:
        gen = build(res, w_dim)
        ws = random_ws(gen, batch)
        rates = [
            batch / median_seconds(functools.partial(gen.synthesis, ws, modulation=m), repeats)
            for m in MODULATIONS
        ]
        print(f"{res:>10} " + " ".join(f"{r:12.1f}" for r in rates), flush=True)


def bench_jacobian(resolution: int, w_dim: int, repeats: int) -> None:
    gen = build(resolution, w_dim)
    w = random_ws(gen, 1)[0, 0]
    floors = {}
    for m in MODULATIONS:
        fwd = jax.jit(functools.partial(gen.synthesis_apply, modulation=m))

        def forward(fwd=fwd):
            return fwd(gen.params, gen.buffers, random_ws(gen, w_dim))

        floors[m] = median_seconds(forward, repeats)
    floor = min(floors.values())
    print(
        f"\njacobian at {resolution}px, w_dim {w_dim} (jacfwd over {w_dim} tangents); floor = "
        f"fastest forward pass at batch {w_dim}: {floor * 1e3:.1f} ms "
        + str({m: f"{t * 1e3:.1f} ms" for m, t in floors.items()})
    )
    for m in MODULATIONS:

        def image(v, modulation=m):
            ws = jnp.broadcast_to(v, (1, gen.num_ws, gen.w_dim))
            return gen.synthesis_apply(gen.params, gen.buffers, ws, modulation=modulation)[0]

        jac = jax.jit(jax.jacfwd(image))
        seconds = median_seconds(functools.partial(jac, w), repeats)
        tag = "  (default in latent_fn)" if m == DEFAULT_MODULATION else ""
        print(
            f"  {m:>12}: {seconds * 1e3:8.1f} ms = {seconds / floor:5.2f} x floor{tag}", flush=True
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument("--resolutions", type=int, nargs="+", default=[32, 64, 128, 256])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--w_dim", type=int, default=64)
    parser.add_argument("--jacobian_resolutions", type=int, nargs="+", default=[32])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(
        f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}), jax {jax.__version__}"
    )
    bench_generation(args.resolutions, args.batch, args.w_dim, args.repeats)
    for res in args.jacobian_resolutions:
        bench_jacobian(res, args.w_dim, args.repeats)


if __name__ == "__main__":
    main()
