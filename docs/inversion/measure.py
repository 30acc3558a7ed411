"""Measures inversion on the shipped demo model and draws docs/inversion/figure.png.

Run from the repository root:  PYTHONPATH=. python docs/inversion/measure.py [--out docs/inversion]

1. 16 "real" faces from the procedural dataset at a seed the training stream never drew (checked
   below);
2. inverts them in W+ and in W with the demo config's settings, and with the projector's (no w prior
   / layer spread); each twice: the first call includes compilation (cold), the second not (warm);
   wall and CPU seconds;
3. finds ReSeFa directions for eyes, mouth and hair exactly as ``python -m experiments.demo`` does
   (16 discovery samples at psi 0.7), and measures the demo's locality metric (in-region share at
   calibrated steps, target RMS 0.2) on the demo's 32 held-out generated samples and on the inverted
   real faces;
4. writes results.json and figure.png (real | reconstruction | eyes -/+ | mouth -/+ | hair -/+).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import time

import jax.numpy as jnp
import numpy as np

from experiments.invert import tile_grid
from regfac_jax import baselines, inversion, io_utils, jacobian
from regfac_jax.demo import faces, runner

EVAL_SEED = 20261130
REGIONS = ("eyes", "mouth", "hair")


def training_seeds(info: dict) -> set[int]:
    """Every seed the training data stream drew (faces.batches: one seed per step)."""
    seed, steps = int(info["seed"]), int(info["steps"])
    return {int(np.random.SeedSequence([seed, s]).generate_state(1)[0]) for s in range(steps)}


def timed_invert(gen, real, space, kwargs):
    """Inverts twice: the first call includes compilation (cold), the second reuses it (warm); wall
    and CPU s."""
    t0, c0 = time.time(), time.process_time()
    res = inversion.invert(gen, real, inversion.InversionConfig(**kwargs), space=space)
    cold, cold_cpu = time.time() - t0, time.process_time() - c0
    t0, c0 = time.time(), time.process_time()
    inversion.invert(gen, real, inversion.InversionConfig(**kwargs), space=space)
    return res, {
        "seconds_cold": round(cold, 1),
        "cpu_seconds_cold": round(cold_cpu, 1),
        "seconds_warm": round(time.time() - t0, 1),
        "cpu_seconds_warm": round(time.process_time() - c0, 1),
    }


def demo_settings() -> dict:
    """The inversion settings of experiments/configs/demo_faces.py (what the launcher uses)."""
    from experiments.configs import demo_faces

    inv = demo_faces.get_config().inversion
    return dict(num_steps=inv.num_steps, w_prior=inv.w_prior, layer_spread=inv.layer_spread)


def resefa_directions(gen, masks):
    cfg = runner.DemoConfig()
    w_disc = runner.sample_w(gen, cfg.seed, cfg.num_discovery, cfg.truncation_psi)
    A, B = jacobian.region_grams(gen.latent_fn("w"), jnp.asarray(w_disc), masks, per_sample=True)
    A, B = np.asarray(A, np.float64).mean(0), np.asarray(B, np.float64).mean(0)
    w_eval = runner.sample_w(gen, cfg.seed + 1, cfg.num_eval, cfg.truncation_psi)
    return [baselines.resefa(A[r], B[r], 1)[0] for r in range(len(masks))], w_eval


def figure(gen, real, res, dirs, masks, path, rows=4, scale=4):
    """Rows: faces; columns: real, reconstruction, then each region's edit at -/+ twice its
    calibrated step."""
    from PIL import Image, ImageDraw

    cols = [real[:rows], res.images[:rows]]
    labels = ["real", "reconstruction"]
    noise = res.noise and {k: v[:rows] for k, v in res.noise.items()}
    for name, d, m in zip(REGIONS, dirs, masks, strict=True):
        loc = inversion.edit_locality(gen, res.ws[:rows], d, m, noise)
        for sign in (-1, 1):
            ws = (
                res.ws[:rows]
                + (sign * 2 * loc["step"] / np.sqrt(gen.num_ws))[:, None, None] * d[None, None]
            )
            cols.append(inversion.synthesize(gen, ws, noise))
            labels.append(f"{name} {'-' if sign < 0 else '+'}")
    tiles = io_utils.to_uint8(np.stack(cols, axis=1)).repeat(scale, 2).repeat(scale, 3)
    grid = tile_grid(tiles, pad=4)
    top = 18
    canvas = Image.new("RGB", (grid.shape[1], grid.shape[0] + top), "white")
    canvas.paste(Image.fromarray(grid), (0, top))
    draw = ImageDraw.Draw(canvas)
    w = tiles.shape[3] + 4
    for j, lab in enumerate(labels):
        draw.text((j * w + 2, 3), lab, fill="black")
    canvas.save(path)


def _invert_all(gen, real: np.ndarray, spaces: dict) -> dict:
    """Inverts ``real`` in the four settings, filling ``spaces``; returns the results by label."""
    results = {}
    settings = demo_settings()
    projector = dict(settings, w_prior=0.0, layer_spread=0.0)
    for label, space, kwargs in (
        ("wplus", "wplus", settings),
        ("w", "w", settings),
        ("wplus_projector", "wplus", projector),
        ("w_projector", "w", projector),
    ):
        res, times = timed_invert(gen, real, space, kwargs)
        results[label] = res
        p, s = inversion.psnr(res.images, real), inversion.ssim(res.images, real)
        spaces[label] = {
            "space": space,
            **kwargs,
            **times,
            "mean_psnr": round(float(p.mean()), 2),
            "min_psnr": round(float(p.min()), 2),
            "mean_ssim": round(float(s.mean()), 4),
            "load_average_after": [round(v, 2) for v in os.getloadavg()],
        }
        print(label, spaces[label], flush=True)
    return results


def _shares(gen, results: dict, dirs, masks, w_eval) -> dict:
    """Each region's mean in-region share of its direction's edit, generated and inverted."""
    ws_eval = np.repeat(w_eval[:, None], gen.num_ws, axis=1)
    share = {}
    for name, d, m in zip(REGIONS, dirs, masks, strict=True):
        row = {"generated": float(inversion.edit_locality(gen, ws_eval, d, m)["share"].mean())}
        for space, res in results.items():
            row[f"inverted_{space}"] = float(
                inversion.edit_locality(gen, res.ws, d, m, res.noise)["share"].mean()
            )
        share[name] = {k: round(v, 3) for k, v in row.items()}
        print(name, share[name], flush=True)
    return share


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="docs/inversion")
    args = ap.parse_args()
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    gen = runner.load_demo_generator()
    assert EVAL_SEED not in training_seeds(gen.demo_info), "evaluation seed was used in training"
    real = faces.faces(EVAL_SEED, 16, gen.img_resolution)
    load = os.getloadavg()
    report = {
        "eval_seed": EVAL_SEED,
        "num_images": 16,
        "load_average_before": [round(v, 2) for v in load],
        "cpu_count": os.cpu_count(),
        "spaces": {},
    }
    results = _invert_all(gen, real, report["spaces"])
    masks = faces.region_masks(gen.img_resolution, REGIONS)
    dirs, w_eval = resefa_directions(gen, masks)
    report["share"] = _shares(gen, results, dirs, masks, w_eval)
    report["load_average_after"] = [round(v, 2) for v in os.getloadavg()]
    figure(gen, real, results["wplus"], dirs, masks, out / "figure.png")
    io_utils.write_json(out / "results.json", report)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
