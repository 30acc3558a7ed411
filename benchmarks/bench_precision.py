"""Direction error of ``precision='default'`` against ``'highest'`` on the official fixtures
(StyleGAN2, -3T, -3R).

Run: ``python -m benchmarks.bench_precision [--fixtures DIR]`` (under a minute on a CPU).

For each fixture generator, four latents (the fixture's mapped ``ws[:, 0]``) and one central box
region, it computes the region Grams with both precisions, the top-5 generalized eigen-directions of
each, and prints ``|cos|`` between matching directions (1 = identical). On CPU XLA computes float32
products in full float32 either way, so the two coincide there; on GPU/TPU 'default' runs TF32/bf16
passes.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib

import jax
import numpy as np

import converters
from regfac_jax import directions, jacobian, regions

FIXTURES = pathlib.Path(
    os.environ.get(
        "REGFAC_FIXTURES", pathlib.Path(__file__).resolve().parents[2] / "shared" / "fixtures"
    )
)


def top5_cos(folder: pathlib.Path) -> list[float]:
    config = json.loads((folder / "config.json").read_text())
    config = config.get("init_kwargs", config)
    kind = "stylegan2" if "synthesis_kwargs" in config else "stylegan3"
    gen = converters.convert_state_dict(kind, dict(np.load(folder / "params.npz")), config)
    ws = np.load(folder / "io.npz")["ws"][:, 0]
    mask = regions.box_mask((96, 160, 96, 160), gen.img_resolution)
    out = {}
    for precision in ("highest", "default"):
        a, b = jacobian.region_grams(
            gen.latent_fn("w"), ws, mask, jacobian.JacobianOptions(precision=precision)
        )
        out[precision] = directions.generalized_eigh(a[0], b[0], k=5)[1]
    return [
        float(abs(np.dot(u, v)) / (np.linalg.norm(u) * np.linalg.norm(v)))
        for u, v in zip(out["highest"], out["default"], strict=True)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument("--fixtures", default=str(FIXTURES))
    args = parser.parse_args()
    print(f"backend: {jax.default_backend()} ({jax.devices()[0].device_kind})")
    for name in ("stylegan2", "stylegan3_t", "stylegan3_r"):
        cos = top5_cos(pathlib.Path(args.fixtures) / name)
        print(
            f"{name:12s} top-5 |cos| default vs highest: " + " ".join(f"{c:.6f}" for c in cos),
            flush=True,
        )


if __name__ == "__main__":
    main()
