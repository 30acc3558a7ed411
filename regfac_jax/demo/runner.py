"""The shipped demo: a small StyleGAN2 trained on procedural faces, and the measured ReSeFa demo on
it.

* :func:`load_demo_generator` reads the generator shipped in ``regfac_jax/data/demo_faces``
  (``generator.npz`` holding plain float32 arrays, read with ``allow_pickle=False``;
  ``config.json``; ``SHA256SUMS``, checked before loading) through :mod:`importlib.resources`.
* :func:`run_demo` finds ReSeFa and baseline directions for the eyes, mouth and hair, measures their
  locality (:mod:`regfac_jax.metrics`) and writes edit grids (PNG), one GIF per ReSeFa direction,
  ``locality.json`` (``{region: {method: in_region_share}}``) and ``report.json`` (every number with
  its spread) into a work directory.
* The training-side helpers (:func:`demo_generator_config`, :func:`save_training`,
  :func:`restore_training`, :func:`export_generator`, :func:`write_sample_docs`) serve
  ``experiments/train_demo.py``.

Nothing here runs at import time; every function that touches files says so.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.resources
import io
import json
import os
import pathlib
import time

import numpy as np

from regfac_jax import errors, io_utils, plots, trees
from regfac_jax.plots import image_grid  # re-exported by regfac_jax.demo

DATA_PACKAGE = "regfac_jax"
DATA_DIR = ("data", "demo_faces")
GENERATOR_FILE = "generator.npz"
CONFIG_FILE = "config.json"
SUMS_FILE = "SHA256SUMS"
RUN_FILE = io_utils.RUN_FILE


# --------------------------------------------------------------------------------------------------
# Small helpers (atomic writes live in regfac_jax.io_utils)
# --------------------------------------------------------------------------------------------------
def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------------------------------
# The demo generator's configuration, training checkpoints and export
# --------------------------------------------------------------------------------------------------
def demo_generator_config(tiny: bool = False) -> dict:
    """The official-style init_kwargs of the demo StyleGAN2 (``tiny``: a 16x16 smoke-test
    variant)."""
    return {
        "z_dim": 16 if tiny else 64,
        "w_dim": 16 if tiny else 64,
        "c_dim": 0,
        "img_resolution": 16 if tiny else 32,
        "img_channels": 3,
        "mapping_kwargs": {"num_layers": 2},
        "synthesis_kwargs": {
            "channel_base": 128 if tiny else 512,
            "channel_max": 16 if tiny else 64,
            "num_fp16_res": 0,
            "conv_clamp": 256,
            "architecture": "skip",
        },
    }


def save_training(workdir: str | os.PathLike, state, meta: dict) -> None:
    """Writes a training checkpoint (``state.msgpack`` via ``flax.serialization``, ``state.json``)
    atomically."""
    from flax import serialization

    workdir = pathlib.Path(workdir)
    io_utils.write_bytes(workdir / "state.msgpack", serialization.to_bytes(state))
    io_utils.write_json(workdir / "state.json", {**meta, "step": int(state.step)})


def restore_training(workdir: str | os.PathLike, g_config: dict, cfg, seed: int):
    """The newest checkpoint in ``workdir`` (or a fresh state). Returns ``(state, meta)``.

    Raises:
      ValueError: the checkpoint was written for another generator or training configuration.
    """
    import jax
    from flax import serialization

    from regfac_jax.demo import training

    template = training.init_state(jax.random.key(seed), g_config, cfg)
    path = pathlib.Path(workdir) / "state.msgpack"
    if not path.is_file():
        return template, {}
    meta = json.loads((pathlib.Path(workdir) / "state.json").read_text())
    try:
        state = serialization.from_bytes(template, path.read_bytes())
    except (ValueError, KeyError) as err:
        raise ValueError(
            f"{path} does not match this generator/training configuration ({err}); use another "
            "--workdir or delete it to start over."
        ) from err
    return state, meta


def export_generator(gen, directory: str | os.PathLike, info: dict) -> pathlib.Path:
    """Writes ``generator.npz`` (params.* and buffers.* as float32), ``config.json`` and
    ``SHA256SUMS``."""
    directory = pathlib.Path(directory)
    arrays = {f"params.{k}": v.astype(np.float32) for k, v in trees.flatten(gen.params).items()}
    arrays.update(
        {f"buffers.{k}": v.astype(np.float32) for k, v in trees.flatten(gen.buffers).items()}
    )
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    blob = buf.getvalue()
    io_utils.write_bytes(directory / GENERATOR_FILE, blob)
    config = {"kind": gen.kind, "init_kwargs": gen.config, "training": info}
    cfg_bytes = (json.dumps(config, indent=2, sort_keys=True) + "\n").encode()
    io_utils.write_bytes(directory / CONFIG_FILE, cfg_bytes)
    sums = f"{sha256(blob)}  {GENERATOR_FILE}\n{sha256(cfg_bytes)}  {CONFIG_FILE}\n"
    io_utils.write_bytes(directory / SUMS_FILE, sums.encode())
    return directory


def _verified_files(root) -> dict[str, bytes]:
    """Reads the shipped files and checks them against SHA256SUMS."""
    try:
        sums_text = root.joinpath(SUMS_FILE).read_text()
    except FileNotFoundError as err:
        raise FileNotFoundError(
            f"The shipped demo generator is missing ({root}/{SUMS_FILE}); reinstall regfac-jax "
            "or re-create it with `python -m experiments.train_demo --export "
            "regfac_jax/data/demo_faces`."
        ) from err
    files = {}
    for line in filter(str.strip, sums_text.splitlines()):
        digest, name = line.split(None, 1)
        data = root.joinpath(name.strip()).read_bytes()
        if sha256(data) != digest:
            raise ValueError(
                f"{name.strip()} in {root} does not match its SHA256SUMS entry: the "
                "file is corrupt or "
                "was replaced; reinstall regfac-jax or re-export the demo generator."
            )
        files[name.strip()] = data
    missing = {GENERATOR_FILE, CONFIG_FILE} - set(files)
    if missing:
        raise ValueError(f"SHA256SUMS in {root} does not list {sorted(missing)}.")
    return files


def load_demo_generator(directory: str | os.PathLike | None = None):
    """The shipped demo StyleGAN2 (32x32 procedural faces) as a generator object.

    Args:
      directory: read from this directory instead of the installed package data.
    Returns:
      ``StyleGAN2Generator``; ``gen.demo_info`` holds the training record from config.json.
    Raises:
      FileNotFoundError / ValueError: files missing, or their checksums do not match.
    """
    from regfac_jax.models import build

    root = importlib.resources.files(DATA_PACKAGE)
    # one part at a time: Traversable.joinpath takes a single name before Python 3.11
    for part in DATA_DIR:
        root = root.joinpath(part)
    if directory is not None:
        root = pathlib.Path(directory)
    files = _verified_files(root)
    config = json.loads(files[CONFIG_FILE])
    with np.load(io.BytesIO(files[GENERATOR_FILE]), allow_pickle=False) as npz:
        flat = {k: npz[k] for k in npz.files}
    tree = trees.nest(flat)
    gen = build(config["kind"], config["init_kwargs"], tree["params"], tree.get("buffers", {}))
    gen.demo_info = config.get("training", {})
    return gen


# --------------------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------------------
def distribution_check(gen, num: int = 512, seed: int = 0, truncation_psi: float = 1.0) -> dict:
    """Per-region colour statistics of generated vs procedural faces.

    Returns:
      ``{region: {'real_mean': [4], 'fake_mean': [4], 'real_std': [4], 'fake_std': [4]}}``, each
      over ``num`` images, of (mean R, mean G, mean B, within-region std) as
      :func:`faces.region_statistics` defines them.
    """
    import jax

    from regfac_jax.demo import faces

    res = gen.img_resolution
    real = faces.faces(seed + 12345, num, res)
    z = jax.random.normal(jax.random.key(seed), (num, gen.z_dim))
    fake = np.concatenate(
        [
            np.asarray(gen.generate(z[i : i + 64], truncation_psi=truncation_psi))
            for i in range(0, num, 64)
        ]
    )
    rs, fs = faces.region_statistics(real), faces.region_statistics(fake)

    def r3(v):
        return [round(float(x), 3) for x in v]

    return {
        k: {
            "real_mean": r3(rs[k].mean(0)),
            "fake_mean": r3(fs[k].mean(0)),
            "real_std": r3(rs[k].std(0)),
            "fake_std": r3(fs[k].std(0)),
        }
        for k in rs
    }


def write_sample_docs(gen, directory: str | os.PathLike, seed: int = 0) -> str:
    """Writes ``samples.png`` (8x8 generated, psi 1), ``real.png`` (8x8 procedural) and
    ``distribution.json`` to ``directory``; returns a printable summary of the distribution
    check."""
    import jax

    from regfac_jax.demo import faces

    directory = pathlib.Path(directory)
    res = gen.img_resolution
    z = jax.random.normal(jax.random.key(seed + 1), (64, gen.z_dim))
    fake = np.asarray(gen.generate(z)).reshape(8, 8, res, res, 3)
    io_utils.save_png(directory / "samples.png", image_grid(fake, scale=3))
    real = faces.faces(seed + 1, 64, res).reshape(8, 8, res, res, 3)
    io_utils.save_png(directory / "real.png", image_grid(real, scale=3))
    stats = distribution_check(gen, seed=seed)
    io_utils.write_json(directory / "distribution.json", stats)
    return format_distribution(stats)


def format_distribution(stats: dict) -> str:
    """The distribution check as a markdown table (mean over images, and spread across images in
    brackets)."""

    def fmt(v):
        return ", ".join(f"{x:+.2f}" for x in v)

    lines = [
        "| region | real: mean R, G, B, within-region std [spread across images] | generated: "
        "same |",
        "|---|---|---|",
    ]
    for region, s in stats.items():
        lines.append(
            f"| {region} | {fmt(s['real_mean'])} [{fmt(s['real_std'])}] | "
            f"{fmt(s['fake_mean'])} [{fmt(s['fake_std'])}] |"
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# The demo: ReSeFa and the baselines on the shipped model, measured
# --------------------------------------------------------------------------------------------------
DEMO_REGIONS = ("eyes", "mouth", "hair")


@dataclasses.dataclass(frozen=True)
class DemoConfig:
    """What :func:`run_demo` computes (the defaults are the README's numbers).

    Attributes:
      regions: face regions (keys of ``faces.REGION_BOXES``).
      num_discovery: samples whose Jacobians give the directions.
      num_eval: held-out samples the directions are measured on.
      truncation_psi: truncation of every sample (discovery, evaluation, grids).
      target_rms: foreground RMS change each edit is calibrated to (image units, images in [-1, 1]).
      top_candidates: SeFa / GANSpace candidates per region (the best of them on the discovery
        samples is used).
      num_ganspace: sampled w for GANSpace's PCA.
      calibration_iters: bisection steps of the step calibration.
      rpca_max_iter: iteration cap of LowRankGAN's robust PCA (the official 10000).
      robustness: also measure single-sample directions and directions from a 20% larger / shifted
        box.
      grid_samples, grid_steps: size of the edit grids.
      grid_scale: the grids span ``±grid_scale`` times each method's median calibrated step (the
        metric's own edits are small; larger ones are easier to see at 32x32).
      seed: seed of every random draw.
    """

    regions: tuple[str, ...] = DEMO_REGIONS
    num_discovery: int = 16
    num_eval: int = 32
    truncation_psi: float = 0.7
    target_rms: float = 0.2
    top_candidates: int = 20
    num_ganspace: int = 4096
    calibration_iters: int = 16
    rpca_max_iter: int = 10000
    robustness: bool = True
    grid_samples: int = 4
    grid_steps: int = 7
    grid_scale: float = 3.0
    seed: int = 0

    @classmethod
    def from_config(cls, cfg) -> DemoConfig:
        """From ``{field name: value}``, e.g. ``experiments/configs/demo.py``'s ConfigDict without
        the launcher's own ``overwrite``; ``regions`` may be a comma-separated string.

        Raises:
          ValueError: a name that is not a field (the message lists the fields).
        """
        values = dict(cfg)
        errors.check_field_names(cls, values, "demo")
        if isinstance(values.get("regions"), str):
            values["regions"] = tuple(r.strip() for r in values["regions"].split(",") if r.strip())
        return cls(**values)


def sample_w(gen, seed: int, num: int, psi: float) -> np.ndarray:
    """``num`` w vectors ``[num, w_dim]`` of ``gen`` from the z seed ``seed``, truncated towards
    w_avg by ``psi``."""
    import jax

    z = jax.random.normal(jax.random.key(seed), (num, gen.z_dim))
    return np.asarray(gen.mapping(z, truncation_psi=psi))[:, 0]


def _methods_for_region(
    gen, grams: dict, r: int, cfg: DemoConfig, mask, candidates: dict
) -> dict[str, np.ndarray]:
    """The top direction of every method for region index ``r`` (SeFa/GANSpace: best candidate by
    first-order in-region share on the discovery samples)."""
    from regfac_jax import baselines, metrics

    A, B = grams["A"][r], grams["B"][r]
    out = {
        "resefa": baselines.resefa(A, B, 1)[0],
        "lowrankgan": baselines.lowrankgan(A, B, 1, max_iter=cfg.rpca_max_iter)[0],
        "jacobian_eig": baselines.jacobian_eig(A, 1)[0],
    }
    for name in ("sefa", "ganspace"):
        idx, best = metrics.best_of(A, B, mask, candidates[name], gen.img_channels)
        out[name] = best
        out[f"{name}_index"] = idx
    return out


def _robustness_directions(
    grams: dict, r: int, num_regions: int, cfg: DemoConfig
) -> dict[str, dict[str, np.ndarray]]:
    """Region-aware directions from one sample, from the 20%-larger box and from the shifted box."""
    from regfac_jax import baselines

    variants = {
        "one_sample": (grams["A1"][r], grams["B1"][r]),
        "box_larger": (grams["A"][num_regions + r], grams["B"][num_regions + r]),
        "box_shifted": (grams["A"][2 * num_regions + r], grams["B"][2 * num_regions + r]),
    }
    out = {}
    for variant, (A, B) in variants.items():
        out[variant] = {
            "resefa": baselines.resefa(A, B, 1)[0],
            "lowrankgan": baselines.lowrankgan(A, B, 1, max_iter=cfg.rpca_max_iter)[0],
            "jacobian_eig": baselines.jacobian_eig(A, 1)[0],
        }
    return out


def _demo_masks(cfg: DemoConfig, res: int) -> np.ndarray:
    """``[3R, res, res]``: the regions' boxes, then 20% larger boxes, then boxes shifted by 20%."""
    from regfac_jax import metrics, regions
    from regfac_jax.demo import faces

    boxes = [faces.REGION_BOXES[r] for r in cfg.regions]
    stacks = [
        [regions.box_mask(b, res) for b in boxes],
        [regions.box_mask(metrics.scaled_box(b, 1.2), res) for b in boxes],
        [regions.box_mask(metrics.shifted_box(b, 0.2), res) for b in boxes],
    ]
    return np.concatenate([np.stack(s) for s in stacks])


def _compute_grams(fn, w_disc, masks, progress: bool) -> dict:
    from regfac_jax import jacobian

    A_ps, B_ps = jacobian.region_grams(fn, w_disc, masks, per_sample=True, progress=progress)
    A_ps, B_ps = np.asarray(A_ps, np.float64), np.asarray(B_ps, np.float64)
    return {"A": A_ps.mean(0), "B": B_ps.mean(0), "A1": A_ps[0], "B1": B_ps[0]}


METHOD_NAMES = {
    "resefa": "ReSeFa",
    "lowrankgan": "LowRankGAN",
    "jacobian_eig": "Jacobian eig.",
    "sefa": "SeFa",
    "ganspace": "GANSpace",
}


@dataclasses.dataclass(frozen=True)
class _RegionEdits:
    """What one region's grids draw.

    Attributes:
      region: the region's name (in the file names and titles).
      dirs: ``{method: [w_dim]}`` each method's top direction.
      steps: ``{method: [num_eval]}`` each method's calibrated steps on the held-out samples.
      mask: ``[res, res]`` the region, outlined on every tile.
    """

    region: str
    dirs: dict
    steps: dict
    mask: np.ndarray


def _render_edits(gen, fn, w: np.ndarray, direction: np.ndarray, alphas: np.ndarray) -> np.ndarray:
    """Images ``[n, m, H, W, C]`` of samples ``w [n, w_dim]`` moved by ``alphas [m]`` x
    ``direction``."""
    from regfac_jax import metrics

    lat = w[:, None] + alphas[None, :, None] * direction[None, None]
    images = np.asarray(metrics.render(fn, lat.reshape(-1, lat.shape[-1])))
    return images.reshape(len(w), len(alphas), *gen_shape(gen))


def _compare_grid(gen, fn, edits: _RegionEdits, w_eval, cfg) -> np.ndarray:
    """Every method's top direction on the first held-out sample, ±grid_scale x its median step."""
    rows, labels = [], []
    for method in METHOD_NAMES:
        a = cfg.grid_scale * float(np.median(edits.steps[method]))
        alphas = np.linspace(-a, a, cfg.grid_steps, dtype=np.float32)
        rows.append(_render_edits(gen, fn, w_eval[:1], edits.dirs[method], alphas)[0])
        labels.append(f"{METHOD_NAMES[method]} (±{a:.3g})")
    multiples = np.linspace(-cfg.grid_scale, cfg.grid_scale, cfg.grid_steps)
    return plots.labelled_grid(
        np.stack(rows),
        labels,
        [f"{m}×" for m in plots.format_steps(multiples)],
        outline=edits.mask,
        scale=4,
        title=f"{edits.region}: each method's top direction on one held-out sample",
        xlabel="step, in multiples of the method's calibrated step (largest step in brackets)",
    )


def _write_grids(gen, fn, directory: pathlib.Path, edits: _RegionEdits, w_eval, cfg) -> None:
    """Edit grids for one region, labelled and with the region's outline: every method on one sample
    (``compare_*.png``), ReSeFa on several (``resefa_*.png``, and a GIF without labels)."""
    region, samples = edits.region, w_eval[: cfg.grid_samples]
    io_utils.save_png(
        directory / f"compare_{region}.png", _compare_grid(gen, fn, edits, w_eval, cfg)
    )
    a = cfg.grid_scale * float(np.median(edits.steps["resefa"]))
    alphas = np.linspace(-a, a, cfg.grid_steps, dtype=np.float32)
    imgs = _render_edits(gen, fn, samples, edits.dirs["resefa"], alphas)
    io_utils.save_png(
        directory / f"resefa_{region}.png",
        plots.labelled_grid(
            imgs,
            [f"sample {i + 1}" for i in range(cfg.grid_samples)],
            plots.format_steps(alphas),
            outline=edits.mask,
            scale=4,
            title=f"{region}: ReSeFa's top direction on held-out samples",
            xlabel="step",
        ),
    )
    sweep = np.concatenate(
        [np.linspace(0, a, 5), np.linspace(a, -a, 9)[1:], np.linspace(-a, 0, 5)[1:-1]]
    )
    frames = _render_edits(gen, fn, samples, edits.dirs["resefa"], sweep.astype(np.float32))
    io_utils.save_gif(
        directory / f"resefa_{region}.gif",
        [image_grid(frames[:, t][None], scale=4) for t in range(len(sweep))],
        pingpong=False,
    )


def gen_shape(gen) -> tuple[int, int, int]:
    return (gen.img_resolution, gen.img_resolution, gen.img_channels)


def format_table(report: dict) -> str:
    """The locality table: in-region share (mean ± std over held-out samples) and RMS change
    outside."""
    methods = ("resefa", "lowrankgan", "jacobian_eig", "sefa", "ganspace")
    lines = [
        "in-region share of the change energy (mean ± std over held-out samples); RMS change "
        "outside the region",
        f"{'region':8s} " + " ".join(f"{m:>22s}" for m in methods),
    ]
    for region, res in report["regions"].items():
        cells = [
            f"{res[m]['share']['mean']:.3f}±{res[m]['share']['std']:.3f} "
            f"({res[m]['rms_out']['mean']:.3f})"
            for m in methods
        ]
        lines.append(f"{region:8s} " + " ".join(f"{c:>22s}" for c in cells))
    if report.get("robustness"):
        lines.append(
            "robustness (in-region share, mean over held-out samples; true box for measuring)"
        )
        lines.append(f"{'region':8s} {'variant':12s} " + " ".join(f"{m:>14s}" for m in methods[:3]))
        for region, variants in report["robustness"].items():
            for variant, res in variants.items():
                lines.append(
                    f"{region:8s} {variant:12s} "
                    + " ".join(f"{res[m]['share']['mean']:>14.3f}" for m in methods[:3])
                )
    return "\n".join(lines)


def format_markdown(report: dict) -> str:
    """The locality and robustness tables in markdown (what the README carries)."""
    methods = ("resefa", "lowrankgan", "jacobian_eig", "sefa", "ganspace")

    def cell(r):
        return f"{r['share']['mean']:.3f} ± {r['share']['std']:.3f} ({r['rms_out']['mean']:.3f})"

    lines = ["| region | " + " | ".join(methods) + " |", "|---" * (len(methods) + 1) + "|"]
    for region, res in report["regions"].items():
        lines.append(f"| {region} | " + " | ".join(cell(res[m]) for m in methods) + " |")
    if report.get("robustness"):
        lines += [
            "",
            "| region | directions from | " + " | ".join(methods[:3]) + " |",
            "|---" * 5 + "|",
        ]
        for region, variants in report["robustness"].items():
            main = report["regions"][region]
            lines.append(
                f"| {region} | all discovery samples, true box | "
                + " | ".join(f"{main[m]['share']['mean']:.3f}" for m in methods[:3])
                + " |"
            )
            for variant, res in variants.items():
                lines.append(
                    f"| {region} | {_VARIANT_NAMES[variant]} | "
                    + " | ".join(f"{res[m]['share']['mean']:.3f}" for m in methods[:3])
                    + " |"
                )
    return "\n".join(lines)


_VARIANT_NAMES = {
    "one_sample": "one discovery sample",
    "box_larger": "box 20% larger",
    "box_shifted": "box shifted by 20%",
}


def _claim(workdir: pathlib.Path, config: DemoConfig, gen, overwrite: bool):
    """Claims ``workdir`` for this run (config, weights digest); another run's only if
    ``overwrite``."""
    description = {
        "config": dataclasses.asdict(config),
        io_utils.WEIGHTS_KEY: io_utils.tree_digest(gen.params),
        "generator_config": gen.config,
    }
    # the launcher: --config.overwrite
    return io_utils.claim_workdir(workdir, description, overwrite=overwrite)


def _find_directions(gen, grams: dict, masks: np.ndarray, config: DemoConfig) -> tuple[dict, list]:
    """Every method's direction per region (with SeFa's and GANSpace's candidate indices), and the
    ``(region, variant, method, direction)`` edits to measure ('main', then robustness variants)."""
    from regfac_jax import baselines

    candidates = {
        "sefa": baselines.sefa(gen.params, k=config.top_candidates),
        "ganspace": baselines.ganspace(
            sample_w(gen, config.seed + 2, config.num_ganspace, 1.0), k=config.top_candidates
        ),
    }
    jobs, all_dirs = [], {}
    for r, region in enumerate(config.regions):
        dirs = _methods_for_region(gen, grams, r, config, masks[r], candidates)
        all_dirs[region] = dirs
        jobs += [(region, "main", m, dirs[m]) for m in baselines.METHODS]
        if config.robustness:
            for variant, vd in _robustness_directions(
                grams, r, len(config.regions), config
            ).items():
                jobs += [(region, variant, m, vd[m]) for m in vd]
    return all_dirs, jobs


def _measure(
    fn, jobs: list, w_eval: np.ndarray, masks: np.ndarray, config: DemoConfig, progress: bool
) -> tuple[dict, dict]:
    """The locality of every edit on the held-out samples.

    Returns:
      ``(report, steps)``: the report's numbers, and ``{region: {method: calibrated steps [N]}}``.
    """
    import jax.numpy as jnp
    from tqdm.auto import tqdm

    from regfac_jax import metrics

    report = {"regions": {}, "robustness": {}, "config": dataclasses.asdict(config)}
    steps = {region: {} for region in config.regions}
    for region, variant, method, direction in tqdm(
        jobs, desc="measure locality", unit="edit", disable=not progress
    ):
        res = metrics.locality(
            fn,
            jnp.asarray(w_eval),
            direction,
            masks[config.regions.index(region)],
            config.target_rms,
            iters=config.calibration_iters,
        )
        summary = metrics.summarize(res)
        if variant == "main":
            report["regions"].setdefault(region, {})[method] = summary
            steps[region][method] = res["step"]
        else:
            report["robustness"].setdefault(region, {}).setdefault(variant, {})[method] = summary
    return report, steps


def _write_results(workdir: pathlib.Path, report: dict, all_dirs: dict, t0: float) -> None:
    """Writes ``directions.npz``, ``locality.json``, ``report.json`` (with the seconds since ``t0``)
    and ``locality.md``."""
    from regfac_jax import baselines

    regions = list(all_dirs)
    buf = io.BytesIO()
    np.savez(buf, **{f"{reg}.{m}": all_dirs[reg][m] for reg in regions for m in baselines.METHODS})
    io_utils.write_bytes(workdir / "directions.npz", buf.getvalue())
    locality = {
        reg: {m: round(report["regions"][reg][m]["share"]["mean"], 4) for m in baselines.METHODS}
        for reg in regions
    }
    report["seconds"] = round(time.time() - t0, 1)
    io_utils.write_json(workdir / "locality.json", locality)
    io_utils.write_json(workdir / "report.json", report)
    io_utils.write_bytes(workdir / "locality.md", (format_markdown(report) + "\n").encode())


def run_demo(
    workdir: str | os.PathLike,
    config: DemoConfig = DemoConfig(),
    gen=None,
    overwrite: bool = False,
    progress: bool = True,
    write_images: bool = True,
) -> dict:
    """Finds ReSeFa and baseline directions on the shipped model, measures their locality, writes
    the results.

    Args:
      workdir: output directory (created). Refused if it holds a different run, unless
        ``overwrite``.
      config: see :class:`DemoConfig`.
      gen: a generator to use instead of :func:`load_demo_generator` (e.g. a test model).
      overwrite: replace a different run in ``workdir``.
      progress: progress bars.
      write_images: write the edit grids and GIFs.
    Returns:
      The report dict (also written as ``report.json``); ``locality.json`` holds
      ``{region: {method: share}}``.
    """
    import jax.numpy as jnp

    t0, workdir = time.time(), pathlib.Path(workdir)
    gen = load_demo_generator() if gen is None else gen
    claim = _claim(workdir, config, gen, overwrite)
    fn = gen.latent_fn("w")
    w_disc = sample_w(gen, config.seed, config.num_discovery, config.truncation_psi)
    w_eval = sample_w(gen, config.seed + 1, config.num_eval, config.truncation_psi)
    masks = _demo_masks(config, gen.img_resolution)
    grams = _compute_grams(fn, jnp.asarray(w_disc), masks, progress)
    all_dirs, jobs = _find_directions(gen, grams, masks, config)
    report, steps = _measure(fn, jobs, w_eval, masks, config, progress)
    for region in config.regions:
        chosen = {m: all_dirs[region][f"{m}_index"] for m in ("sefa", "ganspace")}
        report["regions"][region]["candidate_index"] = chosen
        if write_images:
            mask = masks[config.regions.index(region)]
            edits = _RegionEdits(region, all_dirs[region], steps[region], mask)
            _write_grids(gen, fn, workdir, edits, w_eval, config)
    _write_results(workdir, report, all_dirs, t0)
    report["table"] = format_table(report)
    claim.release()
    return report
