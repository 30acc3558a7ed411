"""What the launchers do, as importable functions: load a model, sample latents, build regions, compute Grams with
resume, solve for directions, and render edits. Launchers (``find_directions.py``, ``manipulate.py``) only parse
flags and call :func:`find_directions` / :func:`manipulate`.

Work directory layout written by :func:`find_directions`::

    run.json                  the experiment's settings and fingerprint (a different experiment is refused)
    log.txt                   progress log
    latents.npz               the sampled latents (z, ws or class vectors) and their seed
    samples/grams_00007.npz   per-sample foreground/background Grams (resume unit: finished samples are skipped)
    grams.npz                 A, B [R, d, d] (mean over samples), region names
    masks/<region>.png        each region's mask
    directions/<region>.npy   [k, d] unit rows, eigenvalues descending (the paper's layout)
    eigenvalues/<region>.npy  [k]
    directions_orbax/         the same directions and eigenvalues as an orbax checkpoint
    spectrum.png              eigenvalue spectra of every region
    official_comparison.json  (with --official) cosine between the paper's solver and ours, per region and sample
"""
from __future__ import annotations

import json
import logging
import os
import pathlib
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from regfac_jax import directions as dirs_lib
from regfac_jax import edit as edit_lib
from regfac_jax import io_utils, jacobian, regions

log = logging.getLogger("regfac_jax")

FIXTURES_ENV = "REGFAC_FIXTURES"


# ----------------------------------------------------------------------------------------------------------
# Models
# ----------------------------------------------------------------------------------------------------------
def default_fixtures_dir() -> pathlib.Path:
    return pathlib.Path(os.environ.get(FIXTURES_ENV, pathlib.Path(__file__).resolve().parents[1].parent /
                                       "shared" / "fixtures"))


def load_model(spec: str):
    """Resolves a model spec to a generator object.

    ``'demo'`` is the shipped model; ``'fixture:<name>'`` a reference fixture (params.npz + config.json under
    ``$REGFAC_FIXTURES`` or ``../shared/fixtures``); a directory written by ``python -m converters`` is loaded back;
    anything else goes to ``converters.load`` (NVlabs .pkl, Hammer .pth, state_dict + JSON, BigGAN directory).
    """
    if spec == "demo":
        from regfac_jax import demo
        return demo.load_demo_generator()
    if spec.startswith("fixture:"):
        return load_fixture(spec.split(":", 1)[1])
    path = pathlib.Path(spec).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"Model {spec!r} not found: give 'demo', 'fixture:<name>', a checkpoint file or a "
                                "converted checkpoint directory.")
    from regfac_jax import checkpoint
    if path.is_dir() and checkpoint.is_generator_dir(path):
        return checkpoint.load_generator(path)
    import converters
    return converters.load(path)


def load_fixture(name: str):
    """A reference fixture as a generator (used by the ``:tiny`` configs and the tests)."""
    import converters
    folder = default_fixtures_dir() / name
    if not folder.is_dir():
        raise FileNotFoundError(f"No fixture {name!r} under {folder.parent} (set ${FIXTURES_ENV}).")
    with np.load(folder / "params.npz") as data:
        state = {k: data[k] for k in data.files}
    config = json.loads((folder / "config.json").read_text())
    if name.startswith("biggan"):
        return converters.convert_state_dict("biggan", state, config)
    kind = "stylegan3" if "stylegan3" in config.get("class_name", "") else "stylegan2"
    return converters.convert_state_dict(kind, state, config["init_kwargs"])


def make_transform(translate=(0.0, 0.0), angle_deg: float = 0.0) -> np.ndarray:
    """StyleGAN3's transform buffer for an output translation and rotation: the inverse of the image transform."""
    from regfac_jax.models.stylegan3 import transform_matrix
    return np.linalg.inv(transform_matrix(translate, angle_deg)).astype(np.float32)


def prepare_model(cfg):
    """Loads the model of ``cfg.model`` and applies its StyleGAN3 transform, if any."""
    gen = load_model(cfg.model)
    if gen.kind == "stylegan3" and (tuple(cfg.translate) != (0.0, 0.0) or cfg.rotate != 0.0):
        gen = gen.with_transform(make_transform(tuple(cfg.translate), cfg.rotate))
    elif gen.kind != "stylegan3" and (tuple(cfg.translate) != (0.0, 0.0) or cfg.rotate != 0.0):
        raise ValueError(f"translate/rotate apply to StyleGAN3 only; this model is {gen.kind}.")
    return gen


# ----------------------------------------------------------------------------------------------------------
# Latents
# ----------------------------------------------------------------------------------------------------------
def parse_layers(spec, num_ws: int) -> tuple[int, ...] | None:
    """'' or None -> None (all layers); '4-7' or '4,5,6,7' or a sequence -> a tuple, checked against num_ws."""
    if spec is None or spec == "" or spec == ():
        return None
    if isinstance(spec, str):
        out = []
        for part in spec.split(","):
            part = part.strip()
            if "-" in part:
                a, b = part.split("-")
                out.extend(range(int(a), int(b) + 1))
            elif part:
                out.append(int(part))
        layers = tuple(out)
    else:
        layers = tuple(int(i) for i in spec)
    bad = [i for i in layers if not 0 <= i < num_ws]
    if bad:
        raise ValueError(f"Layers {bad} are beyond this model's layers 0..{num_ws - 1} (num_ws={num_ws}).")
    return layers


def sample_latents(gen, cfg) -> dict:
    """Latents for the experiment: from ``cfg.latents_file`` (.npy of z) or seeded normal z, mapped for StyleGANs."""
    n = int(cfg.num_samples)
    if gen.kind == "biggan":
        from regfac_jax.models import biggan
        z = biggan.truncated_noise(int(cfg.seed), n, gen.z_dim, float(cfg.truncation))
        classes = [c.strip() for c in str(cfg.classes).split(",") if c.strip()]
        labels = [int(c) if c.isdigit() else c for c in classes] or [0]
        cv = biggan.class_vector([labels[i % len(labels)] for i in range(n)], gen.num_classes)
        return {"z": np.asarray(z, np.float32), "class_vector": np.asarray(cv, np.float32)}
    if cfg.latents_file:
        z = np.load(cfg.latents_file, allow_pickle=False).astype(np.float32)
        if z.ndim != 2 or z.shape[1] != gen.z_dim:
            raise ValueError(f"{cfg.latents_file}: latents of shape {z.shape} do not fit z_dim={gen.z_dim}.")
        z = z[:n]
    else:
        z = np.random.RandomState(int(cfg.seed)).randn(n, gen.z_dim).astype(np.float32)
    c = None
    if gen.c_dim > 0:
        c = np.eye(gen.c_dim, dtype=np.float32)[np.arange(n) % gen.c_dim]
    cutoff = None if cfg.truncation_cutoff in (None, -1) else int(cfg.truncation_cutoff)
    ws = np.asarray(gen.mapping(z, c, truncation_psi=float(cfg.truncation_psi), truncation_cutoff=cutoff))
    return {"z": z, "ws": ws}


def sample_function(gen, cfg, lat: dict, i: int, layers) -> tuple[Callable, jax.Array]:
    """The pure function and linearisation point of sample ``i`` in the configured latent space."""
    if gen.kind == "biggan":
        space = "z" if cfg.space == "w" else cfg.space
        z, cv = lat["z"][i], lat["class_vector"][i]
        fn = gen.latent_fn(space, class_vector=cv, z=z, truncation=float(cfg.truncation))
        embedding = np.asarray(gen.embed(cv[None]))[0]
        point = {"z": z, "class": embedding, "z+class": np.concatenate([z, embedding])}[space]
        return fn, jnp.asarray(point)
    ws = lat["ws"][i]
    if cfg.space == "w":
        fn = gen.latent_fn("w", layers=layers, base_ws=ws if layers is not None else None, noise_mode=cfg.noise_mode)
        return fn, jnp.asarray(ws[0])
    if cfg.space == "wplus":
        return gen.latent_fn("wplus", noise_mode=cfg.noise_mode), jnp.asarray(ws.reshape(-1))
    raise ValueError(f"Latent space {cfg.space!r} is not available for {gen.kind}; use 'w' or 'wplus'.")


# ----------------------------------------------------------------------------------------------------------
# Regions
# ----------------------------------------------------------------------------------------------------------
def parse_regions(spec: str, dataset: str, resolution: int) -> dict[str, np.ndarray]:
    """Region specs, comma-separated at the top level, separated by ';' when a spec has commas.

    Each spec is a preset name of ``dataset``; ``box:r,c,h,w`` (paper convention, 256 grid); ``file:PATH`` (an
    image mask of any size); or ``seg:PATH:l1+l2`` (a label map .npy or .png and the labels to take).
    """
    parts = [p.strip() for p in (spec.split(";") if ";" in spec or ":" in spec else spec.split(",")) if p.strip()]
    if not parts:
        raise regions.RegionError("No region given: set --config.regions (e.g. 'eyes' or 'box:120,128,20,115').")
    out = {}
    for k, part in enumerate(parts):
        if part.startswith("box:"):
            box = [float(v) for v in part[4:].split(",")]
            out[f"box{k}"] = regions.box_mask(box, resolution)
        elif part.startswith("file:"):
            path = part[5:]
            out[pathlib.Path(path).stem] = regions.mask_from_file(path, resolution)
        elif part.startswith("seg:"):
            _, path, labels = part.split(":")
            lm = np.load(path) if path.endswith(".npy") else _read_label_png(path)
            out[f"seg{k}"] = regions.mask_from_labels(lm, [int(v) for v in labels.split("+")], resolution)
        else:
            out[part] = regions.preset_mask(dataset, part, resolution)
    return out


def _read_label_png(path):
    from PIL import Image
    with Image.open(path) as img:
        return np.asarray(img)


# ----------------------------------------------------------------------------------------------------------
# find_directions
# ----------------------------------------------------------------------------------------------------------
def describe(cfg) -> dict:
    """The settings that define the result (their change means another experiment); excludes 'overwrite'."""
    d = cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg)
    d.pop("overwrite", None)
    d.pop("manipulate", None)
    d.pop("inversion", None)
    return json.loads(json.dumps(d, default=str))


def _setup_logging(workdir: pathlib.Path):
    handler = logging.FileHandler(workdir / "log.txt")
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    return handler


def find_directions(cfg, workdir, progress: bool = True) -> dict:
    """Runs a whole direction search into ``workdir`` (see the module docstring); resumes if interrupted.

    Returns:
      ``{region: {'eigenvalues': [k], 'directions': [k, d]}}``.
    """
    if not _is_writer():  # multi-host: process 0 alone touches the work directory
        return _find_directions(cfg, pathlib.Path(workdir), progress)
    workdir = io_utils.claim_workdir(workdir, describe(cfg), overwrite=bool(cfg.overwrite))
    handler = _setup_logging(workdir)
    try:
        return _find_directions(cfg, workdir, progress)
    finally:
        log.removeHandler(handler)
        handler.close()


def _is_writer() -> bool:
    return jax.process_index() == 0


class _Out:
    """Output calls that only process 0 performs (the others compute the same values and write nothing)."""

    def __getattr__(self, name):
        func = getattr(io_utils, name)
        return func if _is_writer() else (lambda *a, **k: None)


writer = _Out()


def _find_directions(cfg, workdir: pathlib.Path, progress: bool) -> dict:
    gen = prepare_model(cfg)
    layers = parse_layers(cfg.layers, gen.num_ws) if gen.kind != "biggan" else None
    lat = sample_latents(gen, cfg)
    writer.save_npz(workdir / "latents.npz", seed=np.int64(cfg.seed), **lat)
    preprocess = "official" if cfg.official else (None if cfg.jacobian.preprocess == "none" else cfg.jacobian.preprocess)
    fn0, point0 = sample_function(gen, cfg, lat, 0, layers)
    h, w, c = jacobian.output_shape(fn0, point0, preprocess)
    masks = parse_regions(cfg.regions, cfg.dataset, h)
    names = list(masks)
    stack = regions.validate_masks(np.stack([masks[k] for k in names]), (h, w))
    for name in names:
        writer.save_png(workdir / "masks" / f"{name}.png", (masks[name] * 255).astype(np.uint8))
    n = int(cfg.num_samples)
    log.info("model %s (%s, %dx%d), regions %s, %d samples, space %s, d=%d", cfg.model, gen.kind,
             gen.img_resolution, gen.img_resolution, names, n, cfg.space, point0.shape[0])
    A, B = _accumulate(gen, cfg, lat, layers, stack, preprocess, workdir, progress)
    writer.save_npz(workdir / "grams.npz", A=A, B=B, regions=np.array(names))
    results = _solve(cfg, A, B, names, workdir)
    if _is_writer():
        _plot_spectrum(workdir / "spectrum.png", {k: v["eigenvalues"] for k, v in results.items()})
        _save_orbax(workdir / "directions_orbax", results)
    log.info("wrote %s", workdir)
    return results


def _use_sharded(cfg) -> bool:
    if cfg.scale_out == "auto":
        return jax.device_count() > 1 or jax.process_count() > 1
    if cfg.scale_out not in ("loop", "sharded"):
        raise ValueError(f"scale_out must be 'auto', 'loop' or 'sharded'; got {cfg.scale_out!r}.")
    return cfg.scale_out == "sharded"


def _accumulate(gen, cfg, lat, layers, stack, preprocess, workdir, progress):
    """Per-sample Grams with resume: a plain loop on one device, or sharded over every device of every host."""
    per_sample = cfg.aggregation == "per_sample" or bool(cfg.official)
    if _use_sharded(cfg):
        from regfac_jax import resumable
        n = int(cfg.num_samples)
        fns, points = zip(*(sample_function(gen, cfg, lat, i, layers) for i in range(n)))
        callback = None
        if progress and jax.process_index() == 0:
            callback = lambda p: log.info("%s", p)  # noqa: E731
        return tuple(np.asarray(g) for g in resumable.run_resumable(
            list(fns), jnp.stack(points), stack, str(workdir / "grams_ckpt"), config=describe(cfg),
            per_sample=per_sample, preprocess=preprocess, tangent_chunk=int(cfg.jacobian.tangent_chunk),
            strategy=cfg.jacobian.strategy, memory_budget=int(cfg.jacobian.memory_budget_gib * 2 ** 30),
            save_interval_secs=float(cfg.save_interval_secs), callback=callback))
    return _accumulate_loop(gen, cfg, lat, layers, stack, preprocess, workdir, progress, per_sample)


def _accumulate_loop(gen, cfg, lat, layers, stack, preprocess, workdir, progress, per_sample):
    """Per-sample Grams, each saved as soon as it is done; finished samples are read back, not recomputed."""
    n = int(cfg.num_samples)
    samples_dir = workdir / "samples"
    samples_dir.mkdir(exist_ok=True)
    iterator = range(n)
    if progress:
        from tqdm.auto import tqdm
        iterator = tqdm(iterator, desc="samples", unit="sample")
    per_a, per_b, t0 = [], [], time.time()
    for i in iterator:
        path = samples_dir / f"grams_{i:05d}.npz"
        if path.exists():
            with np.load(path) as data:
                a, b = data["A"], data["B"]
        else:
            fn, point = sample_function(gen, cfg, lat, i, layers)
            a, b = jacobian.region_grams(fn, point, stack, tangent_chunk=int(cfg.jacobian.tangent_chunk),
                                         preprocess=preprocess, strategy=cfg.jacobian.strategy,
                                         memory_budget=int(cfg.jacobian.memory_budget_gib * 2 ** 30))
            a, b = np.asarray(a), np.asarray(b)
            writer.save_npz(path, A=a, B=b)
            done = i + 1
            log.info("sample %d/%d done (%.1fs elapsed, ~%.0fs left)", done, n, time.time() - t0,
                     (time.time() - t0) / done * (n - done))
        per_a.append(a)
        per_b.append(b)
    per_a, per_b = np.stack(per_a), np.stack(per_b)  # [N, R, d, d]
    if per_sample:
        return per_a, per_b
    return per_a.mean(0), per_b.mean(0)


def _solve(cfg, A, B, names, workdir) -> dict:
    k = int(cfg.solver.k) if cfg.solver.k else None
    tau = None if cfg.solver.tau in (None, -1, -1.0) else float(cfg.solver.tau)
    per_sample = A.ndim == 4
    results, comparison = {}, {}
    for r, name in enumerate(names):
        a, b = (A[:, r], B[:, r]) if per_sample else (A[r], B[r])
        method = "official" if cfg.official else cfg.solver.method
        reg = "paper" if cfg.official else cfg.solver.regularization
        ev, dv = dirs_lib.generalized_eigh(a, b, k=k, regularization=reg, tau=tau, method=method)
        ev, dv = np.asarray(ev), np.asarray(dv)
        if cfg.official:  # also ours on the same Grams, to report agreement
            ev_w, dv_w = dirs_lib.generalized_eigh(a, b, k=k, regularization=reg, tau=tau)
            comparison[name] = [float(abs(np.dot(dv[j, 0], np.asarray(dv_w)[j, 0]))) for j in range(dv.shape[0])]
        if per_sample:
            for j in range(dv.shape[0]):
                writer.save_npy(workdir / "directions" / f"{name}_sample{j:03d}.npy", dv[j])
                writer.save_npy(workdir / "eigenvalues" / f"{name}_sample{j:03d}.npy", ev[j])
            results[name] = {"eigenvalues": ev[0], "directions": dv[0]}
        else:
            results[name] = {"eigenvalues": ev, "directions": dv}
        writer.save_npy(workdir / "directions" / f"{name}.npy", results[name]["directions"])
        writer.save_npy(workdir / "eigenvalues" / f"{name}.npy", results[name]["eigenvalues"])
    if comparison:
        writer.write_json(workdir / "official_comparison.json",
                            {"cosine_top_direction_official_vs_ours": comparison})
        log.info("official vs ours, |cos| of the top direction per sample: %s", comparison)
    return results


def _save_orbax(path: pathlib.Path, results: dict) -> None:
    import shutil

    import orbax.checkpoint as ocp
    tree = {k: {"eigenvalues": np.asarray(v["eigenvalues"]), "directions": np.asarray(v["directions"])}
            for k, v in results.items()}
    tmp = path.with_name(path.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    with ocp.PyTreeCheckpointer() as ckptr:
        ckptr.save(tmp.resolve(), tree)
    if path.exists():
        shutil.rmtree(path)
    os.replace(tmp, path)


def _plot_spectrum(path: pathlib.Path, spectra: dict, size=(480, 320)) -> None:
    """A small log-scale line plot of each region's eigenvalues (Pillow only)."""
    from PIL import Image, ImageDraw
    img = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(img)
    colors = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14)]
    margin = 30
    vals = {k: np.log10(np.maximum(np.asarray(v, np.float64), 1e-12)) for k, v in spectra.items()}
    lo = min(v.min() for v in vals.values())
    hi = max(v.max() for v in vals.values())
    hi = hi if hi > lo else lo + 1
    draw.rectangle([margin, margin // 2, size[0] - 10, size[1] - margin], outline="black")
    for idx, (name, v) in enumerate(vals.items()):
        xs = margin + (np.arange(len(v)) / max(len(v) - 1, 1)) * (size[0] - margin - 10)
        ys = (size[1] - margin) - (v - lo) / (hi - lo) * (size[1] - 1.5 * margin)
        col = colors[idx % len(colors)]
        draw.line(list(zip(xs.tolist(), ys.tolist())), fill=col, width=2)
        draw.text((margin + 5, margin // 2 + 4 + 12 * idx), name, fill=col)
    draw.text((margin, size[1] - margin + 5), f"eigenvalue index (log10 range {lo:.1f}..{hi:.1f})", fill="black")
    import io
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    io_utils.write_bytes(path, buf.getvalue())


# ----------------------------------------------------------------------------------------------------------
# manipulate
# ----------------------------------------------------------------------------------------------------------
def manipulate(cfg, directions_path, workdir, progress: bool = True, latents_path=None) -> list[pathlib.Path]:
    """Renders edits of ``directions_path`` (ours or the paper's .npy) into ``workdir``: a PNG grid per direction
    (rows: samples, columns: steps), a GIF per sample and direction, and ``index.html`` showing all of them.
    With ``latents_path`` (``experiments.invert``'s latents.npz) the samples are those inverted images, and
    ``locality.json`` reports each direction's locality on them (see :func:`regfac_jax.inversion.edit_locality`)."""
    m = cfg.manipulate
    extra = {"latents": str(latents_path)} if latents_path else {}
    workdir = io_utils.claim_workdir(workdir, {**describe(cfg), "directions": str(directions_path),
                                               "manipulate": m.to_dict(), **extra}, overwrite=bool(cfg.overwrite))
    gen = prepare_model(cfg)
    if latents_path and gen.kind == "biggan":
        raise ValueError("--latents holds StyleGAN W/W+ latents from experiments.invert; this model is BigGAN.")
    all_dirs = edit_lib.load_directions(directions_path, gen.latent_dim)
    idx = [int(i) for i in str(m.indices).split(",") if i.strip()]
    bad = [i for i in idx if not 0 <= i < all_dirs.shape[0]]
    if bad:
        raise ValueError(f"Direction indices {bad} are beyond the {all_dirs.shape[0]} directions in {directions_path}.")
    steps = edit_lib.step_range(m.step_start, m.step_stop, int(m.num_steps))
    n = int(m.num_samples)
    outputs = []
    if gen.kind == "biggan":
        from regfac_jax.models import biggan
        if cfg.space not in ("z", "w"):
            raise ValueError(f"manipulate edits BigGAN in z; directions of space {cfg.space!r} are not supported.")
        z = biggan.truncated_noise(int(m.seed), n, gen.z_dim, float(cfg.truncation))
        classes = [c.strip() for c in str(cfg.classes).split(",") if c.strip()] or ["0"]
        cv = biggan.class_vector([int(c) if c.isdigit() else c for c in classes][:1] * n, gen.num_classes)
        render = lambda j: [gen.generate(edit_lib.edit_latent(z, all_dirs[j], steps)[:, s], cv,  # noqa: E731
                                         float(cfg.truncation)) for s in range(len(steps))]
    elif latents_path:
        from regfac_jax import inversion
        layers = parse_layers(m.layers, gen.num_ws)
        ws, noise, _ = inversion.load_latents(latents_path, gen)
        n = len(ws)
        render = lambda j: [inversion.synthesize(gen, edit_lib.edit_ws(ws, all_dirs[j], steps, layers)[:, s],  # noqa
                                                 noise) for s in range(len(steps))]
    else:
        layers = parse_layers(m.layers, gen.num_ws)
        z = np.random.RandomState(int(m.seed)).randn(n, gen.z_dim).astype(np.float32)
        c = np.eye(gen.c_dim, dtype=np.float32)[np.arange(n) % gen.c_dim] if gen.c_dim else None
        cutoff = None if m.truncation_cutoff in (None, -1) else int(m.truncation_cutoff)
        ws = gen.mapping(z, c, truncation_psi=float(m.truncation_psi), truncation_cutoff=cutoff)
        render = lambda j: [gen.synthesis(edit_lib.edit_ws(ws, all_dirs[j], steps, layers)[:, s],  # noqa: E731
                                          noise_mode=cfg.noise_mode) for s in range(len(steps))]
    iterator = idx
    if progress:
        from tqdm.auto import tqdm
        iterator = tqdm(idx, desc="directions", unit="direction")
    for j in iterator:
        frames = np.stack([np.asarray(f) for f in render(j)], axis=1)  # [n, S, H, W, C]
        u8 = io_utils.to_uint8(frames)
        grid = workdir / f"direction_{j:03d}.png"
        io_utils.save_png(grid, io_utils.image_grid(u8))
        outputs.append(grid)
        for s in range(n):
            gif = workdir / f"direction_{j:03d}_sample_{s:03d}.gif"
            io_utils.save_gif(gif, list(u8[s]))
            outputs.append(gif)
    _write_html(workdir, outputs, directions_path, steps)
    if latents_path:
        _latents_locality(cfg, gen, ws, noise, all_dirs, idx, layers, directions_path, workdir)
    return outputs


def _latents_locality(cfg, gen, ws, noise, all_dirs, idx, layers, directions_path, workdir) -> None:
    """Writes ``locality.json``: the demo's locality metric of each direction on the inverted images."""
    from regfac_jax import inversion, metrics
    masks = parse_regions(cfg.regions, cfg.dataset, gen.img_resolution)
    region = cfg.manipulate.region or pathlib.Path(directions_path).stem
    if region not in masks:
        log.warning("no locality report: region %r is not among %s; set --config.manipulate.region", region,
                    sorted(masks))
        return
    report = {"region": region, "num_images": len(ws), "directions": {}}
    for j in idx:
        res = inversion.edit_locality(gen, ws, all_dirs[j], masks[region], noise, layers)
        report["directions"][str(j)] = metrics.summarize(res)
        log.info("direction %d, region %s: in-region share %.3f +- %.3f over %d inverted images", j, region,
                 res["share"].mean(), res["share"].std(), len(ws))
        print(f"direction {j}, region {region}: in-region share {res['share'].mean():.3f} "
              f"+- {res['share'].std():.3f} over {len(ws)} inverted images")
    io_utils.write_json(workdir / "locality.json", report)


def _write_html(workdir: pathlib.Path, outputs, directions_path, steps) -> None:
    rows = []
    for p in outputs:
        if p.suffix == ".png":
            rows.append(f'<h2>{p.stem}</h2>\n<img src="{p.name}" style="image-rendering:pixelated;max-width:100%">')
        else:
            rows.append(f'<img src="{p.name}" title="{p.stem}" style="image-rendering:pixelated;width:128px">')
    html = ("<!doctype html>\n<html><head><meta charset='utf-8'><title>regfac-jax edits</title></head><body>\n"
            f"<h1>Edits along {pathlib.Path(directions_path).name}</h1>\n"
            f"<p>steps: {', '.join(f'{float(s):g}' for s in steps)} (columns); rows: samples</p>\n"
            + "\n".join(rows) + "\n</body></html>\n")
    io_utils.write_bytes(workdir / "index.html", html.encode())
