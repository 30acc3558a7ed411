"""Measures inversion on the shipped demo model and draws docs/inversion/figure.png.

Run from the repository root:  PYTHONPATH=. python docs/inversion/measure.py [--steps 100] [--out docs/inversion]

1. 16 "real" faces from the procedural dataset at a seed the training stream never drew (checked below);
2. inverts them in W+ and in W (timed, compile included; the same call again shows the warm time);
3. finds ReSeFa directions for eyes, mouth and hair exactly as ``python -m experiments.demo`` does (16 discovery
   samples at psi 0.7), and measures the demo's locality metric (in-region share at calibrated steps, target RMS
   0.2) on the demo's 32 held-out generated samples and on the inverted real faces;
4. writes results.json and figure.png (real | reconstruction | eyes -/+ | mouth -/+ | hair -/+).
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np

from regfac_jax import baselines, inversion, io_utils, jacobian
from regfac_jax.demo import faces, runner

EVAL_SEED = 20261130
REGIONS = ("eyes", "mouth", "hair")


def training_seeds(info: dict) -> set[int]:
    """Every seed the training data stream drew (faces.batches: one seed per step)."""
    seed, steps = int(info["seed"]), int(info["steps"])
    return {int(np.random.SeedSequence([seed, s]).generate_state(1)[0]) for s in range(steps)}


def timed_invert(gen, real, space, steps):
    t0 = time.time()
    res = inversion.invert(gen, real, space=space, num_steps=steps)
    cold = time.time() - t0
    t0 = time.time()
    inversion.invert(gen, real, space=space, num_steps=steps)
    return res, cold, time.time() - t0


def resefa_directions(gen, masks):
    cfg = runner.DemoConfig()
    w_disc = runner._sample_w(gen, cfg.seed, cfg.num_discovery, cfg.truncation_psi)
    A, B = jacobian.region_grams(gen.latent_fn("w"), jnp.asarray(w_disc), masks, per_sample=True)
    A, B = np.asarray(A, np.float64).mean(0), np.asarray(B, np.float64).mean(0)
    w_eval = runner._sample_w(gen, cfg.seed + 1, cfg.num_eval, cfg.truncation_psi)
    return [baselines.resefa(A[r], B[r], 1)[0] for r in range(len(masks))], w_eval


def figure(gen, real, res, dirs, masks, path, rows=4, scale=4):
    """Rows: faces; columns: real, reconstruction, then each region's edit at -/+ twice its calibrated step."""
    from PIL import Image, ImageDraw
    cols = [real[:rows], res.images[:rows]]
    labels = ["real", "reconstruction"]
    for name, d, m in zip(REGIONS, dirs, masks):
        loc = inversion.edit_locality(gen, res.ws[:rows], d, m, res.noise and {k: v[:rows] for k, v in res.noise.items()})
        for sign in (-1, 1):
            ws = res.ws[:rows] + (sign * 2 * loc["step"] / np.sqrt(gen.num_ws))[:, None, None] * d[None, None]
            cols.append(inversion.synthesize(gen, ws, res.noise and {k: v[:rows] for k, v in res.noise.items()}))
            labels.append(f"{name} {'-' if sign < 0 else '+'}")
    tiles = io_utils.to_uint8(np.stack(cols, axis=1)).repeat(scale, 2).repeat(scale, 3)
    grid = io_utils.image_grid(tiles, pad=4)
    top = 18
    canvas = Image.new("RGB", (grid.shape[1], grid.shape[0] + top), "white")
    canvas.paste(Image.fromarray(grid), (0, top))
    draw = ImageDraw.Draw(canvas)
    w = tiles.shape[3] + 4
    for j, lab in enumerate(labels):
        draw.text((j * w + 2, 3), lab, fill="black")
    canvas.save(path)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--w_steps", type=int, default=None)
    ap.add_argument("--out", default="docs/inversion")
    args = ap.parse_args()
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    gen = runner.load_demo_generator()
    assert EVAL_SEED not in training_seeds(gen.demo_info), "evaluation seed was used in training"
    real = faces.faces(EVAL_SEED, 16, gen.img_resolution)
    load = os.getloadavg()
    report = {"eval_seed": EVAL_SEED, "num_images": 16, "load_average_before": [round(v, 2) for v in load],
              "cpu_count": os.cpu_count(), "spaces": {}}
    results = {}
    for space, steps in (("wplus", args.steps), ("w", args.w_steps or args.steps)):
        res, cold, warm = timed_invert(gen, real, space, steps)
        results[space] = res
        p, s = inversion.psnr(res.images, real), inversion.ssim(res.images, real)
        report["spaces"][space] = {"steps": steps, "seconds_cold": round(cold, 1), "seconds_warm": round(warm, 1),
                                   "mean_psnr": round(float(p.mean()), 2), "min_psnr": round(float(p.min()), 2),
                                   "mean_ssim": round(float(s.mean()), 4)}
        print(space, report["spaces"][space], "load", os.getloadavg(), flush=True)
    masks = faces.region_masks(gen.img_resolution, REGIONS)
    dirs, w_eval = resefa_directions(gen, masks)
    ws_eval = np.repeat(w_eval[:, None], gen.num_ws, axis=1)
    report["share"] = {}
    for name, d, m in zip(REGIONS, dirs, masks):
        row = {"generated": float(inversion.edit_locality(gen, ws_eval, d, m)["share"].mean())}
        for space, res in results.items():
            row[f"inverted_{space}"] = float(inversion.edit_locality(gen, res.ws, d, m, res.noise)["share"].mean())
        report["share"][name] = {k: round(v, 3) for k, v in row.items()}
        print(name, report["share"][name], flush=True)
    report["load_average_after"] = [round(v, 2) for v in os.getloadavg()]
    figure(gen, real, results["wplus"], dirs, masks, out / "figure.png")
    io_utils.write_json(out / "results.json", report)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
