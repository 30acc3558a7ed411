"""Launch pipelines on the reference fixtures: outputs, resume after an interruption, --official, bad input."""
import json

import numpy as np
import pytest

from experiments import pipeline
from experiments.configs import ffhq_stylegan2
from regfac_jax import io_utils, jacobian, regions


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
        # This config solves per sample: sample 0's own files (there is no ambiguous directions/<region>.npy).
        d = np.load(run / "directions" / f"{name}_sample000.npy")
        ev = np.load(run / "eigenvalues" / f"{name}_sample000.npy")
        assert d.shape == (5, 32) and ev.shape == (5,)
        np.testing.assert_allclose(np.linalg.norm(d, axis=1), 1, atol=1e-5)
        assert np.all(np.diff(ev) <= 0)
        assert (run / "masks" / f"{name}.png").exists()
        np.testing.assert_array_equal(res[name]["directions"][0], d)
    assert (run / "spectrum.png").exists() and (run / "directions_orbax").is_dir()
    grams = np.load(run / "grams.npz")
    assert grams["A"].shape == (2, 2, 32, 32)  # per-sample aggregation (the paper's) keeps [N, R, d, d]


def test_interrupted_run_resumes_to_the_same_result(tiny_cfg, tmp_path, monkeypatch):
    tiny_cfg.aggregation = "mean"
    clean = pipeline.find_directions(tiny_cfg, tmp_path / "clean", progress=False)
    calls = {"n": 0}
    real = jacobian.region_grams

    def dying(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt("simulated preemption")
        return real(*args, **kwargs)

    monkeypatch.setattr(jacobian, "region_grams", dying)
    with pytest.raises(KeyboardInterrupt):
        pipeline.find_directions(tiny_cfg, tmp_path / "resumed", progress=False)
    assert len(list((tmp_path / "resumed" / "samples").glob("*.npz"))) == 1
    calls["n"] = -100  # no more interruptions; count what the resumed run recomputes
    resumed = pipeline.find_directions(tiny_cfg, tmp_path / "resumed", progress=False)
    assert calls["n"] == -100 + 1  # only the unfinished sample was computed again
    for name in clean:
        np.testing.assert_array_equal(resumed[name]["directions"], clean[name]["directions"])


def test_workdir_of_another_experiment_is_refused(tiny_cfg, tmp_path):
    pipeline.find_directions(tiny_cfg, tmp_path / "run", progress=False)
    tiny_cfg.seed = 123
    with pytest.raises(io_utils.WorkdirConflict, match="seed"):
        pipeline.find_directions(tiny_cfg, tmp_path / "run", progress=False)


def test_official_pipeline_agrees_with_ours(tiny_cfg, tmp_path):
    tiny_cfg.official = True
    pipeline.find_directions(tiny_cfg, tmp_path / "off", progress=False)
    cos = json.loads((tmp_path / "off" / "official_comparison.json").read_text())
    values = [c for per_region in cos["cosine_top_direction_official_vs_ours"].values() for c in per_region]
    # Same Grams, same problem (the paper's default run: no ridge): both solvers must find the same top direction.
    assert min(values) > 0.999, values


def test_manipulate_writes_grids_gifs_and_html(tiny_cfg, tmp_path):
    pipeline.find_directions(tiny_cfg, tmp_path / "run", progress=False)
    tiny_cfg.manipulate.indices = "0,1"
    out = pipeline.manipulate(tiny_cfg, tmp_path / "run" / "directions" / "eyes_sample000.npy", tmp_path / "edit",
                              progress=False)
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


FIGURE_CONFIGS = ["demo_faces", "ffhq_stylegan2", "lsun_car_stylegan2", "lsun_church_stylegan2", "afhq_stylegan3r",
                  "ffhqu_stylegan3", "biggan_deep256"]


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
    per_sample = d.ndim == 3  # [N, k, d]: per-sample configs write <region>_sample000.npy, no <region>.npy
    d = d[0] if per_sample else d
    assert d.shape[0] == cfg.solver.k and np.all(np.isfinite(d))
    first = next(iter(res)) + ("_sample000" if per_sample else "")
    out = pipeline.manipulate(cfg, tmp_path / "run" / "directions" / f"{first}.npy", tmp_path / "edit",
                              progress=False)
    assert out and all(p.exists() for p in out)


def test_sharded_path_equals_the_loop(tiny_cfg, tmp_path):
    tiny_cfg.aggregation = "mean"
    tiny_cfg.scale_out = "loop"
    loop = pipeline.find_directions(tiny_cfg, tmp_path / "loop", progress=False)
    tiny_cfg.scale_out = "sharded"
    sharded = pipeline.find_directions(tiny_cfg, tmp_path / "sharded", progress=False)
    assert (tmp_path / "sharded" / "grams_ckpt").is_dir()
    a = np.load(tmp_path / "loop" / "grams.npz")["A"]
    b = np.load(tmp_path / "sharded" / "grams.npz")["A"]
    # Same per-sample kernels; only the summation (float32 loop vs float64 accumulator) differs.
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-6 * np.abs(a).max())
    for k in loop:
        assert abs(float(np.dot(loop[k]["directions"][0], sharded[k]["directions"][0]))) > 1 - 1e-4
