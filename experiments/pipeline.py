"""What the launchers do, as importable functions: load a model, sample latents, build regions,
compute Grams with resume, solve for directions, and render edits. Launchers
(``find_directions.py``, ``manipulate.py``) only parse flags and call :func:`find_directions` /
:func:`manipulate`.

Work directory layout written by :func:`find_directions` (R regions, N samples, k = ``solver.k``
directions, d = latent width; arrays are ``.npy`` / ``.npz``, every file is written atomically)::

    run.lock                  advisory lock (fcntl) held by the running job's process 0: its pid and host
    run.json                  the experiment's fingerprint and description (a different experiment is refused)
    log.txt                   the full log (orbax's records included); the console shows progress and a summary
    latents.npz               the sampled latents (z and ws, or BigGAN's z and class_vector) and their seed
    grams_ckpt/<step>/        orbax checkpoints of the Gram sums and the finished-sample set (the resume state,
                              whatever the number of devices or hosts)
    grams.npz                 A, B: [R, d, d] (mean over samples) or [N, R, d, d] (per-sample mode); region names
    masks/<region>.png        each region's mask (255 = foreground), at the Jacobian's resolution
    spectrum.png              eigenvalue spectra of every region (per-sample mode: mean over samples)
    directions_orbax/         {region: {eigenvalues, directions}} as an orbax checkpoint, same shapes as below

  mean mode (``aggregation='mean'``): one solve per region on the sample-mean Grams

    directions/<region>.npy   [k, d] directions as rows, eigenvalues descending (the paper's layout)
    eigenvalues/<region>.npy  [k]

  per-sample mode (``aggregation='per_sample'``, and always with ``official``): one solve per region
  and sample, as the paper's script; there is deliberately no ``directions/<region>.npy``

    directions/<region>_per_sample.npy    [N, k, d]: row j is sample j's directions
    eigenvalues/<region>_per_sample.npy   [N, k]
    directions/<region>_sample007.npy     [k, d]: sample 7's directions alone (what ``manipulate --directions``
                                          reads); the paper's script writes the same rows, all d of
                                          them, to image_07_region_<region>_name_<name>.npy
    eigenvalues/<region>_sample007.npy    [k]

  with ``official`` only

    official_comparison.json  the official method used, our solver's settings for the same problem, and per region
                              the |cos| between the two top directions of every sample

Directions of the official methods keep LAPACK's signs; ours have their largest-magnitude entry
positive.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import pathlib
from typing import Any, Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np

from regfac_jax import directions as dirs_lib
from regfac_jax import edit as edit_lib
from regfac_jax import errors, io_utils, jacobian, logs, plots, regions

log = logging.getLogger("regfac_jax")

FIXTURES_ENV = "REGFAC_FIXTURES"


# --------------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------------
def default_fixtures_dir() -> pathlib.Path:
    """The reference fixtures: ``$REGFAC_FIXTURES``, else ``shared/fixtures`` beside the
    checkout."""
    return pathlib.Path(
        os.environ.get(
            FIXTURES_ENV, pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "fixtures"
        )
    )


def load_model(spec: str):
    """Resolves a model spec to a generator object.

    ``'demo'`` is the shipped model; ``'fixture:<name>'`` a reference fixture (params.npz +
    config.json under ``$REGFAC_FIXTURES`` or ``../shared/fixtures``); a directory written by
    ``python -m converters`` is loaded back; anything else goes to ``converters.load`` (NVlabs .pkl,
    Hammer .pth, state_dict + JSON, BigGAN directory). ``<file>:<network>`` (e.g.
    ``snapshot.pkl:G``) loads the named entry of a multi-network file, which ``converters.load``
    takes as ``network=`` (NVlabs snapshots: ``G_ema`` by default, which they must hold unless
    another entry is named). A spec that exists as a path as a whole is always that path.
    """
    if spec == "demo":
        from regfac_jax import demo

        return demo.load_demo_generator()
    if spec.startswith("fixture:"):
        return load_fixture(spec.split(":", 1)[1])
    path, network = pathlib.Path(spec).expanduser(), None
    head, sep, tail = spec.rpartition(":")
    if not path.exists() and sep and head and tail.isidentifier():
        path, network = pathlib.Path(head).expanduser(), tail
    if not path.exists():
        raise FileNotFoundError(
            f"Model {spec!r} not found: give 'demo', 'fixture:<name>', a checkpoint file (with "
            "an optional ':<network>' suffix such as 'snapshot.pkl:G') or a converted "
            "checkpoint directory."
        )
    from regfac_jax import checkpoint

    if network is None and path.is_dir() and checkpoint.is_generator_dir(path):
        return checkpoint.load_generator(path)
    import converters

    return converters.load(path, network=network)


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
    """StyleGAN3's transform buffer for an output translation and rotation: the inverse of the image
    transform."""
    from regfac_jax.models.stylegan3 import transform_matrix

    return np.linalg.inv(transform_matrix(translate, angle_deg)).astype(np.float32)


def prepare_model(cfg):
    """Loads the model of ``cfg.model`` and applies its StyleGAN3 transform, if any."""
    gen = load_model(cfg.model)
    if gen.kind == "stylegan3" and (tuple(cfg.translate) != (0.0, 0.0) or cfg.rotate != 0.0):
        gen = gen.with_transform(make_transform(tuple(cfg.translate), cfg.rotate))
    elif gen.kind != "stylegan3" and (tuple(cfg.translate) != (0.0, 0.0) or cfg.rotate != 0.0):
        raise errors.ConfigError(
            f"translate/rotate apply to StyleGAN3 only; this model is {gen.kind}."
        )
    return gen


# --------------------------------------------------------------------------------------------------
# Latents
# --------------------------------------------------------------------------------------------------
def parse_layers(spec, num_ws: int) -> tuple[int, ...] | None:
    """'' or None -> None (all layers); '4-7' or '4,5,6,7' or a sequence -> a tuple, checked against
    num_ws."""
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
        raise errors.ConfigError(
            f"Layers {bad} are beyond this model's layers 0..{num_ws - 1} (num_ws={num_ws})."
        )
    return layers


def sample_latents(gen, cfg) -> dict:
    """Latents for the experiment: from ``cfg.latents_file`` (.npy of z) or seeded normal z, mapped
    for StyleGANs."""
    n = int(cfg.num_samples)
    if gen.kind == "biggan":
        from regfac_jax.models import biggan

        z = biggan.truncated_noise(int(cfg.seed), n, gen.z_dim, float(cfg.truncation))
        classes = [c.strip() for c in str(cfg.classes).split(",") if c.strip()]
        labels = [int(c) if c.isdigit() else c for c in classes] or [0]
        cv = biggan.class_vector([labels[i % len(labels)] for i in range(n)], gen.num_classes)
        return {"z": np.asarray(z, np.float32), "class_vector": np.asarray(cv, np.float32)}
    if cfg.latents_file:
        z = edit_lib.load_latents(cfg.latents_file, gen.z_dim)[:n]
    else:
        z = np.random.RandomState(int(cfg.seed)).randn(n, gen.z_dim).astype(np.float32)
    c = None
    if gen.c_dim > 0:
        c = np.eye(gen.c_dim, dtype=np.float32)[np.arange(n) % gen.c_dim]
    cutoff = unset_is_none(cfg.truncation_cutoff, "truncation_cutoff")
    cutoff = None if cutoff is None else int(cutoff)
    ws = np.asarray(
        gen.mapping(z, c, truncation_psi=float(cfg.truncation_psi), truncation_cutoff=cutoff)
    )
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
        fn = gen.latent_fn(
            "w",
            layers=layers,
            base_ws=ws if layers is not None else None,
            noise_mode=cfg.noise_mode,
        )
        return fn, jnp.asarray(ws[0])
    if cfg.space == "wplus":
        return gen.latent_fn("wplus", noise_mode=cfg.noise_mode), jnp.asarray(ws.reshape(-1))
    raise errors.ConfigError(
        f"Latent space {cfg.space!r} is not available for {gen.kind}; use 'w' or 'wplus'."
    )


# --------------------------------------------------------------------------------------------------
# Regions
# --------------------------------------------------------------------------------------------------
def parse_regions(spec: str, dataset: str, resolution: int) -> dict[str, np.ndarray]:
    """Region specs, comma-separated at the top level, separated by ';' when a spec has commas.

    Each spec is a preset name of ``dataset``; ``box:r,c,h,w`` (paper convention, 256 grid);
    ``file:PATH`` (an image mask of any size); or ``seg:PATH:l1+l2`` (a label map .npy or .png and
    the labels to take).
    """
    parts = [
        p.strip()
        for p in (spec.split(";") if ";" in spec or ":" in spec else spec.split(","))
        if p.strip()
    ]
    if not parts:
        raise regions.RegionError(
            "No region given: set --config.regions (e.g. 'eyes' or 'box:120,128,20,115')."
        )
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
            lm = regions.load_label_map(path)
            out[f"seg{k}"] = regions.mask_from_labels(
                lm, [int(v) for v in labels.split("+")], resolution
            )
        else:
            out[part] = regions.preset_mask(dataset, part, resolution)
    return out


# --------------------------------------------------------------------------------------------------
# find_directions
# --------------------------------------------------------------------------------------------------
#: Inside the work directory: the orbax checkpoints of the Gram sums (the resume state).
CHECKPOINT_DIR = "grams_ckpt"
#: Settings that change how a run executes but not its result (beyond round-off): a resume may
#: change them.
_EXECUTION_ONLY = ("overwrite", "manipulate", "scale_out", "save_interval_secs", "block_size")
_JACOBIAN_EXECUTION_ONLY = ("tangent_chunk", "strategy", "memory_budget_gib")


def describe(cfg) -> dict:
    """The settings that determine the result (their change means another experiment).

    Left out: ``overwrite``, ``manipulate`` and how the run executes (``scale_out``,
    ``save_interval_secs``, ``block_size``, the Jacobian's
    ``tangent_chunk``/``strategy``/``memory_budget_gib``), which change the result by round-off at
    most, so that a restart on other hardware resumes.
    """
    d = cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg)
    for key in _EXECUTION_ONLY:
        d.pop(key, None)
    d["jacobian"] = {
        k: v for k, v in dict(d.get("jacobian") or {}).items() if k not in _JACOBIAN_EXECUTION_ONLY
    }
    d.pop("inversion", None)  # inversion settings do not change a direction search
    return json.loads(json.dumps(d, default=str))


@dataclasses.dataclass(frozen=True)
class _Job:
    """A validated direction search: everything that can fail on bad input has been built (no file
    written)."""

    gen: Any
    latents: dict  # sample_latents' output
    names: list  # region names
    masks: np.ndarray  # [R, H', W']
    fns: list  # N per-sample functions
    points: np.ndarray  # [N, d] linearisation points
    options: jacobian.JacobianOptions  # the Jacobian settings, built once from cfg.jacobian
    per_sample: bool
    description: dict  # resumable.describe_inputs(...): what the fingerprint covers


def prepare(cfg) -> _Job:
    """Loads the model, samples the latents, builds the regions and describes the experiment,
    touching no file.

    Raises (before any work directory is claimed): FileNotFoundError / ValueError /
    regions.RegionError for a missing model, unknown region or class, latents that do not fit, or
    bad settings.
    """
    from regfac_jax import resumable

    if cfg.scale_out not in ("auto", "loop", "sharded"):
        raise errors.ConfigError(
            f"scale_out must be 'auto', 'loop' or 'sharded'; got {cfg.scale_out!r}."
        )
    gen = prepare_model(cfg)
    layers = parse_layers(cfg.layers, gen.num_ws) if gen.kind != "biggan" else None
    lat = sample_latents(gen, cfg)
    options = jacobian_options(cfg)
    fns, points = zip(
        *(sample_function(gen, cfg, lat, i, layers) for i in range(int(cfg.num_samples))),
        strict=True,
    )
    h, w, _ = jacobian.output_shape(fns[0], points[0], options.preprocess)
    masks = parse_regions(cfg.regions, cfg.dataset, h)
    names = list(masks)
    stack = regions.validate_masks(np.stack([masks[k] for k in names]), (h, w))
    points = np.stack([np.asarray(p) for p in points])
    per_sample = cfg.aggregation == "per_sample" or bool(cfg.official)
    _check_solver(cfg)
    description = resumable.describe_inputs(
        list(fns), points, stack, options, per_sample=per_sample, config=describe(cfg)
    )
    return _Job(gen, lat, names, stack, list(fns), points, options, per_sample, description)


def jacobian_options(cfg) -> jacobian.JacobianOptions:
    """The run's Jacobian settings: ``cfg.jacobian``, with the paper's preprocessing if official.

    Raises:
      errors.ConfigError: a ``cfg.jacobian`` setting outside its allowed values.
    """
    try:
        options = jacobian.JacobianOptions.from_config(cfg.jacobian)
    except ValueError as err:
        raise errors.ConfigError(f"--config.jacobian: {err}") from err
    return dataclasses.replace(options, preprocess="official") if cfg.official else options


def unset_is_none(value, field: str):
    """``value`` of setting ``field``; refuses the old "unset" sentinels ``-1``, ``-1.0``, ``''``.

    Raises:
      errors.ConfigError: a sentinel, with the fix (None is the one way to leave a setting unset).
    """
    if value is not None and not isinstance(value, bool) and value in (-1, ""):
        raise errors.ConfigError(
            f"--config.{field} is {value!r}, an old sentinel for 'unset'; use None "
            f"(--config.{field}=None) to leave it unset."
        )
    return value


def _check_solver(cfg) -> None:
    """The configured solver on a 2x2 identity problem, so that a bad solver setting fails before
    any work."""
    method, kwargs = solver_settings(cfg)
    dirs_lib.generalized_eigh(np.eye(2), np.eye(2), method=method, **kwargs)


@contextlib.contextmanager
def claimed(workdir: pathlib.Path, description: dict, overwrite: bool) -> Iterator[None]:
    """Every process of the job agrees on the experiment; process 0 claims (locks) ``workdir`` for
    the duration."""
    from regfac_jax import distributed

    distributed.assert_hosts_agree(
        io_utils.fingerprint(description),
        "experiment (config, generator weights, latents or masks)",
    )
    claim = distributed.on_primary(
        lambda: io_utils.claim_workdir(workdir, description, overwrite=overwrite),
        f"claim the work directory {workdir}",
    )
    try:
        yield
    finally:
        if claim is not None:
            claim.release()


def find_directions(cfg, workdir, progress: bool = True) -> dict:
    """Runs a whole direction search into ``workdir`` (see the module docstring); resumes if
    interrupted.

    Every process of a multi-host job calls it; all compute, process 0 alone writes.

    Returns:
      ``{region: {'eigenvalues': [k], 'directions': [k, d]}}``, or ``[N, k]`` and ``[N, k, d]`` per
      sample in per-sample mode (``aggregation='per_sample'`` or ``official``).

    Raises:
      io_utils.WorkdirConflict: ``workdir`` is locked by another run or holds another experiment.
      resumable.Preempted: a SIGTERM on some host stopped the run after a checkpoint.
    """
    job = prepare(cfg)  # every check that can fail on bad input, before the folder is touched
    writer = io_utils.Writer(enabled=jax.process_index() == 0)  # multi-host: process 0 alone writes
    workdir = pathlib.Path(workdir)
    with claimed(workdir, job.description, bool(cfg.overwrite)):
        if not writer.enabled:
            return _find_directions(cfg, job, workdir, writer, progress)
        # every record, orbax's included; the console stays quiet
        with logs.log_to_file(workdir / io_utils.LOG_FILE):
            return _find_directions(cfg, job, workdir, writer, progress)


def _find_directions(
    cfg, job: _Job, workdir: pathlib.Path, writer: io_utils.Writer, progress: bool
) -> dict:
    gen = job.gen
    log.info(
        "model %s (%s, %dx%d), regions %s, %d samples, space %s, d=%d",
        cfg.model,
        gen.kind,
        gen.img_resolution,
        gen.img_resolution,
        job.names,
        len(job.fns),
        cfg.space,
        job.points.shape[1],
    )
    A, B = _accumulate(cfg, job, workdir, progress and writer.enabled)
    writer.save_npz(workdir / "latents.npz", seed=np.int64(cfg.seed), **job.latents)
    for name, mask in zip(job.names, job.masks, strict=True):
        writer.save_png(workdir / "masks" / f"{name}.png", (mask * 255).astype(np.uint8))
    writer.save_npz(workdir / "grams.npz", A=A, B=B, regions=np.array(job.names))
    results = _solve(cfg, A, B, job.names, workdir, writer)
    if writer.enabled:
        _plot_spectrum(workdir / "spectrum.png", _spectra(results))
        _save_orbax(workdir / "directions_orbax", results)
    log.info("wrote %s", workdir)
    return results


def _spectra(results: dict) -> dict:
    """Eigenvalue spectra to plot: per-sample results are shown as their mean over samples, and
    labelled so."""
    out = {}
    for name, res in results.items():
        ev = np.asarray(res["eigenvalues"])
        label = name if ev.ndim == 1 else f"{name} (mean of {ev.shape[0]} samples)"
        out[label] = ev.reshape(-1, ev.shape[-1]).mean(0)
    return out


def _mesh(cfg):
    """All devices of all processes, or (``scale_out='loop'``) this process's first device."""
    from regfac_jax import distributed

    if cfg.scale_out != "loop":
        return distributed.make_mesh()
    if jax.process_count() > 1:
        raise ValueError(
            "scale_out='loop' runs on one device of one process; a multi-process job needs 'auto'."
        )
    return distributed.make_mesh(jax.local_devices()[:1])


def _accumulate(cfg, job: _Job, workdir: pathlib.Path, progress: bool):
    """Grams of every sample through the one resume mechanism (orbax checkpoints in
    ``workdir/grams_ckpt``)."""
    from regfac_jax import resumable

    bar, report = _progress_reporter(len(job.fns), progress)
    block = None if cfg.get("block_size") is None else int(cfg.block_size)
    checkpoints = resumable.CheckpointOptions(
        block_size=block, save_interval_secs=float(cfg.save_interval_secs), callback=report
    )
    try:
        A, B = resumable.run_resumable(
            job.fns,
            job.points,
            job.masks,
            str(workdir / CHECKPOINT_DIR),
            job.options,
            description=job.description,
            mesh=_mesh(cfg),
            per_sample=job.per_sample,
            checkpoints=checkpoints,
        )
    finally:
        if bar is not None:
            bar.close()
    return np.asarray(A), np.asarray(B)


def _progress_reporter(total: int, progress: bool) -> tuple[Any, Callable]:
    """``(bar or None, report)``: the samples' tqdm bar and the checkpoint callback that logs."""
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc="samples", unit="sample")

    def report(p):
        if bar is not None:
            bar.update(p.done - bar.n)
        log.info(
            "%d/%d samples done (%d computed by this run, %.1fs)",
            p.done,
            p.total,
            p.computed,
            p.seconds,
        )

    return bar, report


def solver_settings(cfg) -> tuple[str, dict]:
    """``(method, keyword arguments)`` for :func:`regfac_jax.directions.generalized_eigh` from the
    config.

    ``--config.official True`` is the paper script's default run ('official': no regularisation,
    float32); adding ``--config.official_full_rank True`` its ``--full_rank`` run (B + tau *
    trace(B) * I, tau from ``solver.tau``, default the paper's 1e-3). Otherwise ``solver.method``
    with ``solver.regularization`` / ``tau``.
    """
    tau = unset_is_none(cfg.solver.tau, "solver.tau")
    tau = None if tau is None else float(tau)
    full_rank = bool(cfg.get("official_full_rank", False))
    if full_rank and not cfg.official:
        raise ValueError(
            "--config.official_full_rank True selects the paper's --full_rank variant "
            "of the official pipeline; set --config.official True as well (or use "
            "--config.solver.method)."
        )
    method = (
        ("official_full_rank" if full_rank else "official") if cfg.official else cfg.solver.method
    )
    if method == "official" and tau is not None:
        raise ValueError(
            "The paper's default run has no ridge, so --config.solver.tau has no "
            "effect on it; unset it "
            "(None), or add --config.official_full_rank True for the paper's --full_rank --tao."
        )
    if method == "whiten":
        return method, {"regularization": cfg.solver.regularization, "tau": tau}
    return method, ({"tau": tau} if tau is not None else {})


def _ours_on_the_same_problem(method: str, kwargs: dict) -> dict:
    """Our solver's settings for the problem an official method solves: no ridge, or the paper's
    ridge."""
    if method == "official":
        return {"regularization": "none"}
    return {"regularization": "paper", "tau": kwargs.get("tau")}


def _top_cosines(dv: np.ndarray, dv_ours: np.ndarray) -> list[float]:
    """|cos| between the top directions of two solves, one value per sample (``[N, k, d]`` or ``[k, d]``)."""
    d = dv.shape[-1]
    a, b = (np.asarray(x[..., 0, :], np.float64).reshape(-1, d) for x in (dv, dv_ours))
    cos = np.abs(np.sum(a * b, -1)) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))
    return [float(c) for c in cos]


def _write_region(
    writer: io_utils.Writer, workdir: pathlib.Path, name: str, ev: np.ndarray, dv: np.ndarray
) -> None:
    """One region's directions; per-sample results (``ev [N, k]``, ``dv [N, k, d]``) get names that
    say so."""
    if dv.ndim == 2:
        writer.save_npy(workdir / "directions" / f"{name}.npy", dv)
        writer.save_npy(workdir / "eigenvalues" / f"{name}.npy", ev)
        return
    writer.save_npy(workdir / "directions" / f"{name}_per_sample.npy", dv)
    writer.save_npy(workdir / "eigenvalues" / f"{name}_per_sample.npy", ev)
    for j in range(dv.shape[0]):
        writer.save_npy(workdir / "directions" / f"{name}_sample{j:03d}.npy", dv[j])
        writer.save_npy(workdir / "eigenvalues" / f"{name}_sample{j:03d}.npy", ev[j])


def _solve(cfg, A, B, names, workdir, writer: io_utils.Writer) -> dict:
    """Directions of every region (per sample when the Grams are ``[N, R, d, d]``), written as
    documented above."""
    k = int(cfg.solver.k) if cfg.solver.k else None
    method, kwargs = solver_settings(cfg)
    per_sample = A.ndim == 4
    results, comparison = {}, {}
    for r, name in enumerate(names):
        a, b = (A[:, r], B[:, r]) if per_sample else (A[r], B[r])
        ev, dv = (
            np.asarray(x) for x in dirs_lib.generalized_eigh(a, b, k=k, method=method, **kwargs)
        )
        # also ours on the same Grams and the same problem, to report agreement
        if method != "whiten":
            _, dv_w = dirs_lib.generalized_eigh(
                a, b, k=k, **_ours_on_the_same_problem(method, kwargs)
            )
            comparison[name] = _top_cosines(dv, np.asarray(dv_w))
        results[name] = {"eigenvalues": ev, "directions": dv}
        _write_region(writer, workdir, name, ev, dv)
    if comparison:
        writer.write_json(
            workdir / "official_comparison.json",
            {
                "method": method,
                "ours": _ours_on_the_same_problem(method, kwargs),
                "cosine_top_direction_official_vs_ours": comparison,
            },
        )
        log.info("%s vs ours, |cos| of the top direction per sample: %s", method, comparison)
    return results


def _save_orbax(path: pathlib.Path, results: dict) -> None:
    import shutil

    import orbax.checkpoint as ocp

    tree = {
        k: {"eigenvalues": np.asarray(v["eigenvalues"]), "directions": np.asarray(v["directions"])}
        for k, v in results.items()
    }
    tmp = path.with_name(path.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    # Process-local save: orbax saves are collective by default (every process must call them), but
    # only process 0 gets here; a default checkpointer would wait for the others at its barrier
    # forever.
    local = ocp.options.MultiprocessingOptions(primary_host=0, active_processes={0})
    with ocp.Checkpointer(
        ocp.PyTreeCheckpointHandler(multiprocessing_options=local), multiprocessing_options=local
    ) as ckptr:
        ckptr.save(tmp.resolve(), tree)
    io_utils.replace_dir(tmp, path)


def _plot_spectrum(path: pathlib.Path, spectra: dict) -> None:
    """Each region's eigenvalues on a log scale (matplotlib, :func:`regfac_jax.plots.spectrum`)."""
    io_utils.save_png(
        path, plots.spectrum(spectra, title=f"Eigenvalue spectra ({path.parent.name})")
    )


def summarize_directions(results: dict, workdir) -> str:
    """The console summary of :func:`find_directions`: regions, how many directions, the top
    eigenvalues."""
    lines = [f"directions in {workdir}/directions/ (spectra: spectrum.png, full log: log.txt):"]
    for name, res in results.items():
        ev = np.asarray(res["eigenvalues"]).reshape(-1)
        top = ", ".join(f"{v:.4g}" for v in ev[:3])
        lines.append(
            f"  {name}: {np.asarray(res['directions']).shape[-2]} directions, top eigenvalues {top}"
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# manipulate
# --------------------------------------------------------------------------------------------------
def manipulate(
    cfg, directions_path, workdir, progress: bool = True, latents_path=None
) -> list[pathlib.Path]:
    """Renders edits of ``directions_path`` (ours or the paper's .npy) into ``workdir``: a PNG grid
    per direction (rows: samples, columns: steps), a GIF per sample and direction, and
    ``index.html`` showing all of them. With ``latents_path`` (``experiments.invert``'s latents.npz)
    the samples are those inverted images, and ``locality.json`` reports each direction's locality
    on them (see :func:`regfac_jax.inversion.edit_locality`)."""
    m = cfg.manipulate
    gen = prepare_model(cfg)
    if latents_path and gen.kind == "biggan":
        raise errors.ConfigError(
            "--latents holds StyleGAN W/W+ latents from experiments.invert; this model is BigGAN."
        )
    all_dirs = edit_lib.load_directions(directions_path, gen.latent_dim)
    idx = _direction_indices(m.indices, all_dirs.shape[0], directions_path)
    unset_is_none(m.truncation_cutoff, "manipulate.truncation_cutoff")
    inverted = None
    if latents_path:
        from regfac_jax import inversion

        # (ws, noise, files); validated before the claim
        inverted = inversion.load_latents(latents_path, gen)
    description = _manipulate_description(cfg, gen, all_dirs, inverted)
    workdir = pathlib.Path(workdir)
    with (
        io_utils.claim_workdir(workdir, description, overwrite=bool(cfg.overwrite)),
        logs.log_to_file(workdir / "log.txt"),
    ):  # claimed after validation; every record goes to log.txt
        return _render_edits(cfg, gen, all_dirs, idx, workdir, directions_path, progress, inverted)


def _manipulate_description(cfg, gen, all_dirs, inverted) -> dict:
    """The work directory's fingerprint: config, weights digest, directions, settings, latents."""
    return {
        **describe(cfg),
        io_utils.WEIGHTS_KEY: io_utils.tree_digest(gen.params),
        "directions": np.asarray(all_dirs),
        "manipulate": cfg.manipulate.to_dict(),
        "latents": None if inverted is None else np.asarray(inverted[0]),
    }


def _direction_indices(indices, count: int, directions_path) -> list[int]:
    """The comma-separated ``indices`` as ints, each checked to be below ``count``."""
    idx = [int(i) for i in str(indices).split(",") if i.strip()]
    bad = [i for i in idx if not 0 <= i < count]
    if bad:
        raise errors.ConfigError(
            f"Direction indices {bad} are beyond the {count} directions in {directions_path}."
        )
    return idx


def _biggan_renderer(cfg, gen, all_dirs, steps) -> tuple[Callable, int]:
    """``(render, n)``: ``render(j)`` gives the frames of direction ``j`` on ``n`` BigGAN samples,
    edited in z."""
    from regfac_jax.models import biggan

    m = cfg.manipulate
    if cfg.space not in ("z", "w"):
        raise errors.ConfigError(
            f"manipulate edits BigGAN in z; directions of space {cfg.space!r} are not supported."
        )
    n = int(m.num_samples)
    z = biggan.truncated_noise(int(m.seed), n, gen.z_dim, float(cfg.truncation))
    classes = [c.strip() for c in str(cfg.classes).split(",") if c.strip()] or ["0"]
    cv = biggan.class_vector(
        [int(c) if c.isdigit() else c for c in classes][:1] * n, gen.num_classes
    )

    def render(j):
        edited = edit_lib.edit_latent(z, all_dirs[j], steps)
        return [gen.generate(edited[:, s], cv, float(cfg.truncation)) for s in range(len(steps))]

    return render, n


def _inverted_renderer(cfg, gen, all_dirs, steps, inverted) -> tuple[Callable, int]:
    """``(render, n)`` on the inverted images of ``experiments.invert``, with their noise maps."""
    from regfac_jax import inversion

    layers = parse_layers(cfg.manipulate.layers, gen.num_ws)
    ws, noise, _ = inverted

    def render(j):
        edited = edit_lib.edit_ws(ws, all_dirs[j], steps, layers)
        return [inversion.synthesize(gen, edited[:, s], noise) for s in range(len(steps))]

    return render, len(ws)


def _stylegan_renderer(cfg, gen, all_dirs, steps) -> tuple[Callable, int]:
    """``(render, n)`` on ``manipulate.num_samples`` seeded StyleGAN samples, edited in W."""
    m = cfg.manipulate
    layers = parse_layers(m.layers, gen.num_ws)
    n = int(m.num_samples)
    z = np.random.RandomState(int(m.seed)).randn(n, gen.z_dim).astype(np.float32)
    c = np.eye(gen.c_dim, dtype=np.float32)[np.arange(n) % gen.c_dim] if gen.c_dim else None
    cutoff = None if m.truncation_cutoff is None else int(m.truncation_cutoff)
    ws = gen.mapping(z, c, truncation_psi=float(m.truncation_psi), truncation_cutoff=cutoff)

    def render(j):
        edited = edit_lib.edit_ws(ws, all_dirs[j], steps, layers)
        return [gen.synthesis(edited[:, s], noise_mode=cfg.noise_mode) for s in range(len(steps))]

    return render, n


def _write_direction(
    workdir: pathlib.Path, j: int, frames: np.ndarray, steps, directions_path
) -> list:
    """Direction ``j``'s grid (rows: samples, columns: steps) and a GIF per sample; their paths."""
    u8 = io_utils.to_uint8(frames)  # [n, S, H, W, C]
    grid = workdir / f"direction_{j:03d}.png"
    io_utils.save_png(
        grid,
        plots.labelled_grid(
            u8,
            [f"sample {s}" for s in range(u8.shape[0])],
            plots.format_steps(steps),
            xlabel="step",
            title=f"direction {j} of {pathlib.Path(directions_path).name}",
        ),
    )
    outputs = [grid]
    for s in range(u8.shape[0]):
        gif = workdir / f"direction_{j:03d}_sample_{s:03d}.gif"
        io_utils.save_gif(gif, list(u8[s]))
        outputs.append(gif)
    return outputs


def _render_edits(
    cfg, gen, all_dirs, idx, workdir: pathlib.Path, directions_path, progress: bool, inverted=None
):
    steps = edit_lib.step_range(
        cfg.manipulate.step_start, cfg.manipulate.step_stop, int(cfg.manipulate.num_steps)
    )
    if gen.kind == "biggan":
        render, _ = _biggan_renderer(cfg, gen, all_dirs, steps)
    elif inverted is not None:
        render, _ = _inverted_renderer(cfg, gen, all_dirs, steps, inverted)
    else:
        render, _ = _stylegan_renderer(cfg, gen, all_dirs, steps)
    iterator = idx
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(idx, desc="directions", unit="direction")
    outputs = []
    for j in iterator:
        frames = np.stack([np.asarray(f) for f in render(j)], axis=1)  # [n, S, H, W, C]
        outputs += _write_direction(workdir, j, frames, steps, directions_path)
    _write_html(workdir, outputs, directions_path, steps)
    if inverted is not None:
        ws, noise, _ = inverted
        layers = parse_layers(cfg.manipulate.layers, gen.num_ws)
        _latents_locality(cfg, gen, ws, noise, all_dirs, idx, layers, directions_path, workdir)
    return outputs


def _latents_locality(cfg, gen, ws, noise, all_dirs, idx, layers, directions_path, workdir) -> None:
    """Writes ``locality.json``: the demo's locality metric of each direction on the inverted
    images."""
    from regfac_jax import inversion, metrics

    masks = parse_regions(cfg.regions, cfg.dataset, gen.img_resolution)
    region = cfg.manipulate.region or pathlib.Path(directions_path).stem
    if region not in masks:
        log.warning(
            "no locality report: region %r is not among %s; set --config.manipulate.region",
            region,
            sorted(masks),
        )
        return
    report = {"region": region, "num_images": len(ws), "directions": {}}
    for j in idx:
        res = inversion.edit_locality(gen, ws, all_dirs[j], masks[region], noise, layers)
        report["directions"][str(j)] = metrics.summarize(res)
        log.info(
            "direction %d, region %s: in-region share %.3f +- %.3f over %d inverted images",
            j,
            region,
            res["share"].mean(),
            res["share"].std(),
            len(ws),
        )
        logs.console(
            f"direction {j}, region {region}: in-region share {res['share'].mean():.3f} "
            f"+- {res['share'].std():.3f} over {len(ws)} inverted images"
        )
    io_utils.write_json(workdir / "locality.json", report)


def _write_html(workdir: pathlib.Path, outputs, directions_path, steps) -> None:
    rows = []
    for p in outputs:
        if p.suffix == ".png":
            rows.append(
                f'<h2>{p.stem}</h2>\n<img src="{p.name}" '
                'style="image-rendering:pixelated;max-width:100%">'
            )
        else:
            rows.append(
                f'<img src="{p.name}" title="{p.stem}" '
                'style="image-rendering:pixelated;width:128px">'
            )
    html = (
        "<!doctype html>\n<html><head><meta charset='utf-8'><title>regfac-jax "
        f"edits</title></head><body>\n<h1>Edits along {pathlib.Path(directions_path).name}</h1>\n"
        f"<p>steps: {', '.join(plots.format_steps(steps))} (columns); rows: samples</p>\n"
        + "\n".join(rows)
        + "\n</body></html>\n"
    )
    io_utils.write_bytes(workdir / "index.html", html.encode())
