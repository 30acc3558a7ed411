"""Inverts photos into a generator's W / W+ space so that they can be edited:
``python -m experiments.invert --config CONFIG.py --images DIR_OR_GLOB --workdir DIR
[--config.inversion.space wplus]``.

Writes into the work directory:

    latents.npz          ws [N, num_ws, w_dim], files [N] (the image order), space, loss [N], noise/<buffer> [N, R, R]
    reconstructions.png  one row per image: input | reconstruction
    inversion.json       {"images": [{"file", "psnr", "ssim"}], "mean_psnr", "mean_ssim", "space", "steps", "seconds"}

Files that cannot be used are skipped with a message; resized or converted ones are kept with a
warning (see ``regfac_jax.inversion.load_images``). With ``--config.inversion.vgg16 PATH``
(torchvision's VGG16 weights) the loss adds LPIPS. Edit the results with ``python -m
experiments.manipulate ... --latents DIR/latents.npz``.
"""

from __future__ import annotations

import logging
import pathlib
import time

import numpy as np
from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file (path.py[:arg]).", lock_config=True
)
_IMAGES = flags.DEFINE_string(
    "images", None, "Image directory, file or glob pattern (quote it).", required=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory.", required=True)

log = logging.getLogger("regfac_jax")


def _progress_bar(total: int, desc: str):
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc=desc, unit="step")

    def update(step: int, loss: float) -> None:
        bar.update(step - bar.n)
        bar.set_postfix(loss=f"{loss:.4g}")

    return bar, update


def tile_grid(tiles: np.ndarray, pad: int = 2) -> np.ndarray:
    """uint8 tiles ``[rows, cols, H, W, C]`` -> one picture with white gaps of ``pad`` pixels."""
    rows, cols, h, w, c = tiles.shape
    out = np.full((rows * (h + pad) - pad, cols * (w + pad) - pad, c), 255, np.uint8)
    for i in range(rows):
        for j in range(cols):
            out[i * (h + pad) : i * (h + pad) + h, j * (w + pad) : j * (w + pad) + w] = tiles[i, j]
    return out


def _grid(inputs: np.ndarray, recons: np.ndarray) -> np.ndarray:
    """Rows of input | reconstruction (``[N, H, W, C]`` each), tiles enlarged (nearest) to at least
    128 px."""
    from regfac_jax import io_utils

    scale = max(1, 128 // inputs.shape[1])
    tiles = io_utils.to_uint8(np.stack([inputs, recons], axis=1))
    return tile_grid(tiles.repeat(scale, axis=2).repeat(scale, axis=3))


# Keys of the config's ``inversion`` block that are this launcher's inputs, not optimisation
# settings.
_LAUNCHER_KEYS = ("space", "vgg16", "lpips_linear", "seed", "batch_size")


def inversion_config(inv):
    """The :class:`regfac_jax.inversion.InversionConfig` of a config's ``inversion`` block."""
    from regfac_jax import inversion

    return inversion.InversionConfig.from_config(
        {k: v for k, v in inv.items() if k not in _LAUNCHER_KEYS}
    )


def invert_images(cfg, images: str, workdir, progress: bool = True) -> dict:
    """Loads the model and the images, inverts them in batches and writes the outputs; returns
    inversion.json."""
    from experiments import pipeline
    from regfac_jax import inversion

    inv, config = cfg.inversion, inversion_config(cfg.inversion)
    gen = pipeline.prepare_model(cfg)
    x, files, warnings = inversion.load_images(images, gen)
    for w in warnings:
        log.warning("%s", w)
    lp = _lpips(inv)
    t0 = time.time()
    results = _invert_batches(gen, x, config, inv, lp, progress)
    seconds = time.time() - t0
    result = _merge(results)
    return _write(workdir, x, files, result, seconds)


def _lpips(inv):
    """The LPIPS network of ``inv.vgg16`` (and ``inv.lpips_linear``), or None when unset."""
    if not inv.vgg16:
        return None
    import converters

    return converters.load_lpips(inv.vgg16, inv.lpips_linear or None)


def _invert_batches(gen, x: np.ndarray, config, inv, lp, progress: bool) -> list:
    """Inverts ``x`` [N, H, W, C] in batches of ``inv.batch_size``; one result per batch."""
    from regfac_jax import inversion

    batch = max(1, int(inv.batch_size))
    results = []
    for i in range(0, len(x), batch):
        bar, update = (
            _progress_bar(config.num_steps, f"images {i + 1}-{min(i + batch, len(x))} of {len(x)}")
            if progress
            else (None, None)
        )
        results.append(
            inversion.invert(
                gen,
                x[i : i + batch],
                config,
                space=inv.space,
                lpips=lp,
                seed=int(inv.seed) + i,
                progress=update,
            )
        )
        if bar is not None:
            bar.close()
    return results


def _merge(results):
    from regfac_jax import inversion

    def cat(name):
        return np.concatenate([getattr(r, name) for r in results])

    noise = (
        None
        if results[0].noise is None
        else {k: np.concatenate([r.noise[k] for r in results]) for k in results[0].noise}
    )
    return inversion.InversionResult(
        ws=cat("ws"),
        loss=cat("loss"),
        mse=cat("mse"),
        lpips=None if results[0].lpips is None else cat("lpips"),
        noise=noise,
        images=cat("images"),
        space=results[0].space,
        num_steps=results[0].num_steps,
    )


def _write(workdir, x, files, result, seconds) -> dict:
    from regfac_jax import inversion, io_utils

    workdir = pathlib.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    psnr, ssim = inversion.psnr(result.images, x), inversion.ssim(result.images, x)
    inversion.save_latents(workdir / "latents.npz", result, files)
    io_utils.save_png(workdir / "reconstructions.png", _grid(x, result.images))
    rows = zip(files, psnr, ssim, strict=True)
    report = {
        "images": [{"file": f, "psnr": float(p), "ssim": float(s)} for f, p, s in rows],
        "mean_psnr": float(np.mean(psnr)),
        "mean_ssim": float(np.mean(ssim)),
        "space": result.space,
        "steps": int(result.num_steps),
        "seconds": round(float(seconds), 2),
    }
    io_utils.write_json(workdir / "inversion.json", report)
    print(
        f"{len(files)} images, {result.space}, {result.num_steps} steps, {seconds:.1f} s: mean "
        f"PSNR {report['mean_psnr']:.2f} dB, mean SSIM {report['mean_ssim']:.3f}; wrote {workdir}"
    )
    return report


def main(argv):
    del argv
    invert_images(_CONFIG.value, _IMAGES.value, _WORKDIR.value)


if __name__ == "__main__":
    flags.mark_flags_as_required(["config"])
    app.run(main)
