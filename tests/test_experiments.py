"""Launch pipelines on the reference fixtures: outputs, work directories (resume, refusal, lock,
claims after validation only), --official, bad input."""

import json
import pathlib
import socket

import numpy as np
import pytest

from experiments import pipeline
from experiments.configs import ffhq_stylegan2
from regfac_jax import distributed, errors, io_utils, jacobian, regions


@pytest.fixture
def tiny_cfg(fixtures_dir, monkeypatch):
    monkeypatch.setenv(pipeline.FIXTURES_ENV, str(fixtures_dir))
    cfg = ffhq_stylegan2.get_config("tiny")
    cfg.jacobian.tangent_chunk = 16
    return cfg


def test_find_directions_writes_everything(tiny_cfg, tmp_path):
    res = pipeline.find_directions(tiny_cfg, tmp_path / "run", progress=False)
    run = tmp_path / "run"
    for name in ("eyes", "mouth"):
        # This config solves per sample: sample 0's own files (there is no ambiguous
        # directions/<region>.npy).
        d = np.load(run / "directions" / f"{name}_sample000.npy")
        ev = np.load(run / "eigenvalues" / f"{name}_sample000.npy")
        assert d.shape == (5, 32) and ev.shape == (5,)
        np.testing.assert_allclose(np.linalg.norm(d, axis=1), 1, atol=1e-5)
        assert np.all(np.diff(ev) <= 0)
        assert (run / "masks" / f"{name}.png").exists()
        np.testing.assert_array_equal(res[name]["directions"][0], d)
    assert (run / "spectrum.png").exists() and (run / "directions_orbax").is_dir()
    grams = np.load(run / "grams.npz")
    # per-sample aggregation (the paper's) keeps [N, R, d, d]
    assert grams["A"].shape == (2, 2, 32, 32)


def _checkpoint_steps(workdir):
    ckpt = workdir / pipeline.CHECKPOINT_DIR
    return sorted(int(p.name) for p in ckpt.iterdir() if p.name.isdigit()) if ckpt.is_dir() else []


def _interrupt_block(monkeypatch, at: int):
    """Makes the ``at``-th block of samples (1-based) raise KeyboardInterrupt; returns the call
    counter."""
    calls = {"n": 0}
    real = distributed.GramPlan.block

    def dying(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == at:
            raise KeyboardInterrupt("simulated preemption")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(distributed.GramPlan, "block", dying)
    return calls


def test_interrupted_run_resumes_to_the_same_result(tiny_cfg, tmp_path, monkeypatch):
    tiny_cfg.aggregation = "mean"
    # one sample per block, a checkpoint after each
    tiny_cfg.block_size, tiny_cfg.save_interval_secs = 1, 0.0
    clean = pipeline.find_directions(tiny_cfg, tmp_path / "clean", progress=False)
    calls = _interrupt_block(monkeypatch, at=2)
    with pytest.raises(KeyboardInterrupt):
        pipeline.find_directions(tiny_cfg, tmp_path / "resumed", progress=False)
    # sample 0 was checkpointed before the interruption
    assert _checkpoint_steps(tmp_path / "resumed") == [1]
    calls["n"] = -100  # no more interruptions; count what the resumed run recomputes
    resumed = pipeline.find_directions(tiny_cfg, tmp_path / "resumed", progress=False)
    assert calls["n"] == -100 + 1  # only the unfinished sample was computed again
    for name in clean:  # same device count and block size: bitwise the uninterrupted result
        np.testing.assert_array_equal(resumed[name]["directions"], clean[name]["directions"])
    assert "resuming: 1 of 2 samples done" in (tmp_path / "resumed" / "log.txt").read_text()


def test_grams_equal_the_per_sample_loop(tiny_cfg, tmp_path):
    tiny_cfg.aggregation = "mean"
    pipeline.find_directions(tiny_cfg, tmp_path / "run", progress=False)
    job = pipeline.prepare(tiny_cfg)
    chunk16 = jacobian.JacobianOptions(tangent_chunk=16)
    per = [
        jacobian.region_grams(fn, point, job.masks, chunk16)
        for fn, point in zip(job.fns, job.points, strict=True)
    ]
    grams = np.load(tmp_path / "run" / "grams.npz")
    for k, name in enumerate("AB"):
        want = np.mean([np.asarray(p[k]) for p in per], axis=0)
        # Same per-sample kernel; only the summation differs (float64 host accumulator vs float32
        # mean): round-off.
        np.testing.assert_allclose(grams[name], want, rtol=0, atol=1e-6 * np.abs(want).max())


def test_workdir_of_another_experiment_is_refused(tiny_cfg, tmp_path):
    tiny_cfg.num_samples = 1
    pipeline.find_directions(tiny_cfg, tmp_path / "run", progress=False)
    tiny_cfg.seed = 123
    with pytest.raises(io_utils.WorkdirConflict) as err:
        pipeline.find_directions(tiny_cfg, tmp_path / "run", progress=False)
    msg = str(err.value)
    assert (
        "config.seed: 4 -> 123" in msg
        and "--config.overwrite True" in msg
        and "--overwrite " not in msg
    )
    tiny_cfg.overwrite = True  # the named way out: starts over
    pipeline.find_directions(tiny_cfg, tmp_path / "run", progress=False)
    assert (
        json.loads((tmp_path / "run" / "run.json").read_text())["description"]["config"]["seed"]
        == 123
    )


def test_failed_start_claims_nothing_and_an_unstarted_claim_is_reclaimed(
    tiny_cfg, tmp_path, monkeypatch
):
    run = tmp_path / "run"
    tiny_cfg.num_samples = 1
    tiny_cfg.regions = "eyes,mouht"  # a typo: refused before the folder is touched
    with pytest.raises(regions.RegionError, match="mouht"):
        pipeline.find_directions(tiny_cfg, run, progress=False)
    assert not run.exists()
    tiny_cfg.regions, model = "eyes,mouth", tiny_cfg.model
    # a bad model: refused before the folder is touched too
    tiny_cfg.model = str(tmp_path / "missing.pkl")
    with pytest.raises(FileNotFoundError, match="missing.pkl"):
        pipeline.find_directions(tiny_cfg, run, progress=False)
    assert not run.exists()
    tiny_cfg.model = model
    # a bad solver setting: found before the folder is touched, not after the Grams
    tiny_cfg.solver.method = "whitten"
    with pytest.raises(ValueError, match="whitten"):
        pipeline.find_directions(tiny_cfg, run, progress=False)
    assert not run.exists()
    tiny_cfg.solver.method = "whiten"
    tiny_cfg.regions = "eyes,mouth"
    calls = _interrupt_block(monkeypatch, at=1)  # claimed, then stopped before any sample finished
    with pytest.raises(KeyboardInterrupt):
        pipeline.find_directions(tiny_cfg, run, progress=False)
    assert (run / "run.json").exists() and _checkpoint_steps(run) == []
    calls["n"] = -100  # no more interruptions
    tiny_cfg.seed = 9  # another experiment: accepted, since the folder holds no finished sample
    pipeline.find_directions(tiny_cfg, run, progress=False)
    assert json.loads((run / "run.json").read_text())["description"]["config"]["seed"] == 9


def test_changed_model_at_the_same_path_is_refused(tiny_cfg, tmp_path, fixtures_dir):
    import dataclasses

    import jax

    from regfac_jax import checkpoint

    gen = pipeline.load_fixture("stylegan2")
    model = tmp_path / "model"
    checkpoint.save_generator(gen, model)
    tiny_cfg.model, tiny_cfg.num_samples = str(model), 1
    pipeline.find_directions(tiny_cfg, tmp_path / "run", progress=False)
    other = dataclasses.replace(
        gen, params=jax.tree_util.tree_map(lambda a: np.asarray(a) * 1.01, gen.params)
    )
    checkpoint.save_generator(other, model, overwrite=True)  # same path, same shapes, other weights
    with pytest.raises(
        io_utils.WorkdirConflict,
        match=r"(?s)weights differ.*generator: "
        r"sha256.*--config\.overwrite",
    ):
        pipeline.find_directions(tiny_cfg, tmp_path / "run", progress=False)


def test_lock_refuses_a_second_run_until_the_holder_ends(tmp_path):
    import subprocess
    import sys
    import time

    work = tmp_path / "run"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import sys, time; from regfac_jax import io_utils\n"
                f"claim = io_utils.claim_workdir({str(work)!r}, {{'x': 1}}); print('locked', "
                "flush=True); time.sleep(120)"
            ),
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=pathlib.Path(__file__).resolve().parents[1],
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(
            io_utils.WorkdirConflict,
            match=r"in use by another run \(pid "
            rf"{holder.pid} on host "
            rf"{socket.gethostname()}",
        ):
            io_utils.claim_workdir(work, {"x": 1})  # even the same experiment: refused at once
    finally:
        holder.kill()  # a crash: the kernel releases the lock
        holder.wait()
    t0 = time.monotonic()
    with io_utils.claim_workdir(work, {"x": 1}) as claim:
        assert claim.resumed and time.monotonic() - t0 < 5
    with io_utils.claim_workdir(work, {"x": 1}):  # released on exit: claimable again
        pass


def test_official_pipeline_agrees_with_ours(tiny_cfg, tmp_path):
    tiny_cfg.official = True
    pipeline.find_directions(tiny_cfg, tmp_path / "off", progress=False)
    cos = json.loads((tmp_path / "off" / "official_comparison.json").read_text())
    values = [
        c
        for per_region in cos["cosine_top_direction_official_vs_ours"].values()
        for c in per_region
    ]
    # Same Grams, same problem (the paper's default run: no ridge): both solvers must find the same
    # top direction.
    assert min(values) > 0.999, values


def test_manipulate_writes_grids_gifs_and_html(tiny_cfg, tmp_path):
    pipeline.find_directions(tiny_cfg, tmp_path / "run", progress=False)
    tiny_cfg.manipulate.indices = "0,1"
    out = pipeline.manipulate(
        tiny_cfg,
        tmp_path / "run" / "directions" / "eyes_sample000.npy",
        tmp_path / "edit",
        progress=False,
    )
    assert sum(p.suffix == ".png" for p in out) == 2 and sum(p.suffix == ".gif" for p in out) == 4
    assert "direction_000.png" in (tmp_path / "edit" / "index.html").read_text()


def test_bad_input(tiny_cfg, tmp_path):
    tiny_cfg.regions = "wheels"
    with pytest.raises(regions.RegionError, match="available: .*eyes"):
        pipeline.find_directions(tiny_cfg, tmp_path / "a", progress=False)
    tiny_cfg.regions = "eyes"
    tiny_cfg.layers = "4-9"
    with pytest.raises(ValueError, match="beyond this model's layers 0..7"):
        pipeline.find_directions(tiny_cfg, tmp_path / "b", progress=False)
    tiny_cfg.layers = ""
    np.save(tmp_path / "d.npy", np.ones((3, 256), np.float32))
    with pytest.raises(ValueError, match="do not fit"):
        pipeline.manipulate(tiny_cfg, tmp_path / "d.npy", tmp_path / "c", progress=False)


@pytest.mark.parametrize(
    "field,value",
    [
        ("truncation_cutoff", -1),
        ("solver.tau", -1.0),
        ("solver.tau", -1),
        ("manipulate.truncation_cutoff", -1),
    ],
)
def test_old_unset_sentinels_are_refused_before_any_work(tiny_cfg, tmp_path, field, value):
    section, _, key = field.rpartition(".")
    (tiny_cfg[section] if section else tiny_cfg)[key] = value
    run = pipeline.manipulate if field.startswith("manipulate") else pipeline.find_directions
    args = (tmp_path / "d.npy",) if run is pipeline.manipulate else ()
    np.save(tmp_path / "d.npy", np.ones((3, 32), np.float32))
    with pytest.raises(errors.UserError, match=rf"--config\.{field} is {value!r}.*use None"):
        run(tiny_cfg, *args, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()  # refused before the work directory was claimed


def test_bad_jacobian_setting_is_a_config_error(tiny_cfg, tmp_path):
    tiny_cfg.jacobian.tangent_chunk = 0
    with pytest.raises(
        errors.ConfigError,
        match=r"--config\.jacobian: "
        r"JacobianOptions\.tangent_chunk must be",
    ):
        pipeline.find_directions(tiny_cfg, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


# afhq_stylegan3r's smoke run differs from ffhqu_stylegan3's (the same StyleGAN3 pipeline) only by
# its fixture (R, the slowest to compile) and its preset, which test_regions_edit checks; so it runs
# with -m slow.
FIGURE_CONFIGS = [
    "demo_faces",
    "ffhq_stylegan2",
    "lsun_car_stylegan2",
    "lsun_church_stylegan2",
    pytest.param("afhq_stylegan3r", marks=pytest.mark.slow),
    "ffhqu_stylegan3",
    "biggan_deep256",
]


@pytest.mark.parametrize("name", FIGURE_CONFIGS)
def test_every_figure_config_runs_tiny(name, fixtures_dir, monkeypatch, tmp_path):
    import importlib

    monkeypatch.setenv(pipeline.FIXTURES_ENV, str(fixtures_dir))
    module = importlib.import_module(f"experiments.configs.{name}")
    assert "python -m experiments" in module.__doc__  # each config documents its command
    cfg = module.get_config("tiny")
    cfg.num_samples = 1
    res = pipeline.find_directions(cfg, tmp_path / "run", progress=False)
    d = next(iter(res.values()))["directions"]
    # [N, k, d]: per-sample configs write <region>_sample000.npy, no <region>.npy
    per_sample = d.ndim == 3
    d = d[0] if per_sample else d
    assert d.shape[0] == cfg.solver.k and np.all(np.isfinite(d))
    first = next(iter(res)) + ("_sample000" if per_sample else "")
    out = pipeline.manipulate(
        cfg, tmp_path / "run" / "directions" / f"{first}.npy", tmp_path / "edit", progress=False
    )
    assert out and all(p.exists() for p in out)
