"""What a user of the launchers sees: file modes, one-line errors and exit codes, a quiet console
with a full log, refused non-finite inputs, and labelled plots. Launchers are run as subprocesses,
the way a user runs them."""

from __future__ import annotations

import contextlib
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from regfac_jax import edit, errors, io_utils, plots, regions

REPO = pathlib.Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def _umask(mask: int):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def _modes(root: pathlib.Path) -> dict[str, set[int]]:
    out = {"file": set(), "dir": set()}
    for dirpath, _, files in os.walk(root):
        out["dir"].add(os.stat(dirpath).st_mode & 0o777)
        out["file"].update(os.stat(os.path.join(dirpath, f)).st_mode & 0o777 for f in files)
    return out


# --------------------------------------------------------------------------------------------------
# Output files honour the umask, as open() would
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mask", [0o022, 0o077])
def test_atomic_writers_honour_the_umask(tmp_path, mask):
    with _umask(mask):
        assert io_utils.current_umask() == mask
        io_utils.write_json(tmp_path / "a.json", {"x": 1})
        io_utils.save_npy(tmp_path / "b.npy", np.zeros(3))
        io_utils.save_png(tmp_path / "c.png", np.zeros((4, 4, 3), np.uint8))
        with open(tmp_path / "plain.txt", "w") as f:  # the reference: what open() gives
            f.write("x")
    want = os.stat(tmp_path / "plain.txt").st_mode & 0o777
    assert want == 0o666 & ~mask
    for name in ("a.json", "b.npy", "c.png"):
        assert os.stat(tmp_path / name).st_mode & 0o777 == want, name


@pytest.mark.parametrize("mask", [0o022, 0o077])
def test_generator_checkpoints_honour_the_umask(tmp_path, mask):
    from regfac_jax import checkpoint, demo

    gen = demo.load_demo_generator()
    with _umask(mask):
        dest = checkpoint.save_generator(gen, tmp_path / "g")
        # the swap path: written aside, then renamed
        checkpoint.save_generator(gen, dest, overwrite=True)
    modes = _modes(dest)
    assert modes == {"file": {0o666 & ~mask}, "dir": {0o777 & ~mask}}, modes


# --------------------------------------------------------------------------------------------------
# Launchers: bad flags exit 2, user errors exit 1, each as one line; tracebacks only with
# --verbosity=1
# --------------------------------------------------------------------------------------------------
def _launch(module: str, *args: str, cwd=REPO, fixtures=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    if fixtures is not None:
        env["REGFAC_FIXTURES"] = str(fixtures)
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


TINY = ("--config", "experiments/configs/ffhq_stylegan2.py:tiny")


def _one_error_line(proc: subprocess.CompletedProcess) -> str:
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert "Traceback" not in proc.stderr, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


@pytest.mark.parametrize(
    "args, expected",
    [
        (
            ("--config.num_sample", "3"),
            r"--config.num_sample: the config has no field \'num_sample\'; "
            r"did you mean "
            r'"num_samples"\?',
        ),
        (("--config.jacobian.tangent_chnk=3",), r'did you mean "tangent_chunk"\?'),
        (("--config.num_samples", "many"), r"--config.num_samples=many: invalid literal"),
        (("--overwrite",), r"Unknown command line flag 'overwrite'"),
        ((), r"--workdir is required"),
    ],
)
def test_bad_flags_give_one_line_and_exit_2(tmp_path, args, expected):
    extra = () if not args else ("--workdir", str(tmp_path / "w"))
    proc = _launch("experiments.find_directions", *TINY, *args, *extra)
    assert proc.returncode == 2, proc.stderr
    import re

    assert re.search(expected, _one_error_line(proc)), proc.stderr
    assert not (tmp_path / "w").exists()  # nothing was started


def test_missing_config_file_is_a_bad_flag(tmp_path):
    proc = _launch(
        "experiments.find_directions",
        "--config",
        "experiments/configs/nope.py",
        "--workdir",
        str(tmp_path / "w"),
    )
    assert proc.returncode == 2
    assert "no such file 'experiments/configs/nope.py'" in _one_error_line(proc)


def test_user_errors_give_one_line_and_exit_1(tmp_path, fixtures_dir):
    proc = _launch(
        "experiments.find_directions",
        *TINY,
        "--config.regions",
        "eyez",
        "--workdir",
        str(tmp_path / "a"),
        fixtures=fixtures_dir,
    )
    assert proc.returncode == 1, proc.stderr
    line = _one_error_line(proc)
    assert "'eyez'" in line and "available: " in line and "eyes" in line
    assert proc.stdout == ""
    # A missing checkpoint, with --verbosity=1: the traceback (and every log record), then the one
    # line.
    proc = _launch(
        "experiments.find_directions",
        *TINY,
        "--config.model",
        str(tmp_path / "nowhere.pkl"),
        "--workdir",
        str(tmp_path / "b"),
        "--verbosity=1",
        fixtures=fixtures_dir,
    )
    assert (
        proc.returncode == 1 and "Traceback" in proc.stderr and "FileNotFoundError" in proc.stderr
    )
    errors_ = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")]
    assert len(errors_) == 1 and "nowhere.pkl' not found" in errors_[0], proc.stderr


def test_every_launcher_runs_through_the_cli_runner():
    for name in ("find_directions", "manipulate", "demo", "train_demo"):
        source = (REPO / "experiments" / f"{name}.py").read_text()
        assert "cli.run(main)" in source and "app.run(" not in source, name
    proc = _launch("experiments.train_demo", "--config.batch", "x")
    assert proc.returncode == 2 and "--config.batch" in _one_error_line(proc)


def test_library_user_errors_share_one_base():
    import converters
    from converters import torch_pickle
    from regfac_jax.models import biggan

    for cls in (
        regions.RegionError,
        io_utils.WorkdirConflict,
        converters.ConversionError,
        torch_pickle.CheckpointFormatError,
        torch_pickle.UnsafeCheckpointError,
        errors.ConfigError,
        errors.InputFileError,
    ):
        assert issubclass(cls, errors.UserError), cls
    with pytest.raises(
        errors.UserError, match="unknown ImageNet class name 'goldn retriever'.*golden retriever"
    ):
        biggan.class_index("goldn retriever")
    with pytest.raises(ValueError):  # still a ValueError for existing callers
        biggan.class_index(5000)


# --------------------------------------------------------------------------------------------------
# Garbage in: non-finite directions, latents and masks are refused, naming the file
# --------------------------------------------------------------------------------------------------
def test_non_finite_inputs_are_refused_naming_the_file(tmp_path):
    d = np.ones((3, 8), np.float32)
    d[1, 2] = np.nan
    np.save(tmp_path / "dirs.npy", d)
    with pytest.raises(
        errors.InputFileError,
        match=r"dirs\.npy: 1 of 24 values .* NaN or inf "
        r"\(rows \[1\]\)",
    ):
        edit.load_directions(tmp_path / "dirs.npy", 8)
    np.save(tmp_path / "ok.npy", np.ones((3, 8), np.float32))
    assert edit.load_directions(tmp_path / "ok.npy", 8).shape == (3, 8)
    z = np.ones((4, 8), np.float32)
    z[3, 0] = np.inf
    np.save(tmp_path / "z.npy", z)
    with pytest.raises(
        errors.InputFileError,
        match=r"z\.npy: 1 of 32 values of these latents are "
        r"NaN or inf",
    ):
        edit.load_latents(tmp_path / "z.npy", 8)
    with pytest.raises(errors.InputFileError, match="does not exist"):
        edit.load_latents(tmp_path / "missing.npy", 8)
    m = np.zeros((16, 16), np.float32)
    m[4:8, 4:8] = 1
    np.save(tmp_path / "mask_ok.npy", m)
    assert regions.mask_from_file(tmp_path / "mask_ok.npy", 16).sum() == 16
    m[0, 0] = np.nan
    np.save(tmp_path / "mask.npy", m)
    with pytest.raises(regions.RegionError, match=r"mask\.npy: the mask holds 1 NaN or inf"):
        regions.mask_from_file(tmp_path / "mask.npy", 16)
    with pytest.raises(regions.RegionError, match=r"mask\.npy: the label map holds 1 NaN"):
        regions.load_label_map(tmp_path / "mask.npy")
    np.save(tmp_path / "big.npy", np.full((16, 16), 2.0, np.float32))
    with pytest.raises(
        regions.RegionError,
        match=r"big\.npy: Mask values must be finite and in "
        r"\[0, 1\]",
    ):
        regions.mask_from_file(tmp_path / "big.npy", 16)


def test_manipulate_refuses_nan_directions(tmp_path, fixtures_dir):
    d = np.ones((2, 32), np.float32)
    d[0, 0] = np.nan
    np.save(tmp_path / "bad.npy", d)
    proc = _launch(
        "experiments.manipulate",
        *TINY,
        "--directions",
        str(tmp_path / "bad.npy"),
        "--workdir",
        str(tmp_path / "edits"),
        fixtures=fixtures_dir,
    )
    assert proc.returncode == 1
    line = _one_error_line(proc)
    assert str(tmp_path / "bad.npy") in line and "NaN or inf" in line
    assert not list((tmp_path / "edits").glob("*.png"))  # no garbage images


# --------------------------------------------------------------------------------------------------
# Noise: the console shows progress bars and a summary; everything else goes to WORKDIR/log.txt
# --------------------------------------------------------------------------------------------------
def test_console_is_quiet_and_the_log_is_full(tmp_path, fixtures_dir):
    work = tmp_path / "run"
    proc = _launch(
        "experiments.find_directions",
        *TINY,
        "--config.regions",
        "eyes",
        "--config.jacobian.tangent_chunk",
        "16",
        "--workdir",
        str(work),
        fixtures=fixtures_dir,
    )
    assert proc.returncode == 0, proc.stderr
    console = proc.stdout + proc.stderr
    assert "orbax" not in console and "xla_bridge" not in console, console
    assert not [
        ln
        for ln in proc.stderr.replace("\r", "\n").splitlines()
        if ln.strip() and not ln.startswith("samples:")
    ], proc.stderr  # progress bars only
    assert (
        f"directions in {work}/directions/" in proc.stdout and "eyes: 5 directions" in proc.stdout
    )
    log = (work / "log.txt").read_text()
    assert "orbax-checkpoint version" in log and "2/2 samples done" in log


_FAKE_LAUNCHER = """
import logging, sys
from absl import logging as absl_logging
from experiments import cli
from regfac_jax import logs

def main(argv):
    absl_logging.info("orbax-like chatter")
    logging.getLogger("jax._src.xla_bridge").info("backend chatter")
    logs.report_resume(3, 8)
    logging.getLogger("regfac_jax").warning("a warning the user must see")
    print("summary")

cli.run(main, sys.argv)
"""


def test_console_shows_user_lines_and_warnings_only(tmp_path):
    script = tmp_path / "launcher.py"
    script.write_text(_FAKE_LAUNCHER)
    proc = subprocess.run(
        [sys.executable, str(script)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "summary\n"
    lines = proc.stderr.splitlines()
    assert (
        lines[0] == "resuming: 3 of 8 samples done" and "a warning the user must see" in lines[1]
    ), lines
    assert len(lines) == 2 and "chatter" not in proc.stderr
    proc = subprocess.run(
        [sys.executable, str(script), "--verbosity=1"],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "orbax-like chatter" in proc.stderr and proc.stderr.count("resuming: 3 of 8") == 1


def test_resume_is_announced_and_logged(tiny_cfg, tmp_path, monkeypatch, caplog):
    import logging

    from experiments import pipeline
    from regfac_jax import distributed, logs

    real, calls = distributed.GramPlan.block, {"n": 0}

    # the second block (sample 1) is interrupted, after sample 0's checkpoint
    def dying(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt("simulated interruption")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(distributed.GramPlan, "block", dying)
    tiny_cfg.aggregation = "mean"
    # one sample per block, a checkpoint after each
    tiny_cfg.block_size, tiny_cfg.save_interval_secs = 1, 0.0
    with caplog.at_level(logging.INFO, logger=logs.CONSOLE_LOGGER):
        with pytest.raises(KeyboardInterrupt):
            pipeline.find_directions(tiny_cfg, tmp_path / "run", progress=False)
        assert not [r for r in caplog.records if r.name == logs.CONSOLE_LOGGER]
        pipeline.find_directions(tiny_cfg, tmp_path / "run", progress=False)
    said = [r.getMessage() for r in caplog.records if r.name == logs.CONSOLE_LOGGER]
    assert said == ["resuming: 1 of 2 samples done"]
    assert (tmp_path / "run" / "log.txt").read_text().count("resuming: 1 of 2 samples done") == 1


@pytest.fixture
def tiny_cfg(fixtures_dir, monkeypatch):
    from experiments import pipeline
    from experiments.configs import ffhq_stylegan2

    monkeypatch.setenv(pipeline.FIXTURES_ENV, str(fixtures_dir))
    return ffhq_stylegan2.get_config("tiny")


# --------------------------------------------------------------------------------------------------
# Pictures: labelled grids with the region outline, matplotlib spectra, readable steps
# --------------------------------------------------------------------------------------------------
def _find(haystack: np.ndarray, needle: np.ndarray) -> tuple[int, int] | None:
    h, w = needle.shape[:2]
    for t in range(haystack.shape[0] - h + 1):
        for left in range(haystack.shape[1] - w + 1):
            if np.array_equal(haystack[t : t + h, left : left + w], needle):
                return t, left
    return None


def test_steps_are_formatted_for_people():
    # what manipulate uses (jnp.linspace, float32)
    steps = np.asarray(edit.step_range(-10.0, 10.0, 7))
    assert steps[3] != 0  # round-off: the middle step is 2.4e-07, which index.html used to print
    assert plots.format_steps(steps) == ["-10", "-6.67", "-3.33", "0", "3.33", "6.67", "10"]
    # small, not round-off: kept
    assert plots.format_steps([0.001, 0.0025, -0.5]) == ["0.001", "0.0025", "-0.5"]


def test_labelled_grid_keeps_the_tiles_and_adds_labels_and_outline():
    rng = np.random.default_rng(0)
    # no pure white: margins stay distinguishable
    imgs = rng.integers(0, 200, (2, 3, 8, 8, 3)).astype(np.uint8)
    grid = plots.image_grid(imgs, scale=4, pad=2)
    assert grid.shape == (2 * 34 + 2, 3 * 34 + 2, 3)
    np.testing.assert_array_equal(grid[2:34, 2:34], imgs[0, 0].repeat(4, 0).repeat(4, 1))
    plain = plots.labelled_grid(imgs, ["", ""], ["", "", ""], scale=4)
    at = _find(plain, grid)
    assert at is not None  # every tile pixel is there, unsmoothed
    # no labels: white margins
    assert (plain[: at[0]] == 255).all() and (plain[:, : at[1]] == 255).all()
    labelled = plots.labelled_grid(
        imgs, ["method A", "method B"], ["-1", "0", "1"], scale=4, title="t"
    )
    at = _find(labelled, grid)
    assert at is not None
    # text left of and above the grid
    assert (labelled[:, : at[1]] < 128).any() and (labelled[: at[0]] < 128).any()
    mask = np.zeros((8, 8), np.float32)
    mask[2:5, 3:7] = 1
    outlined = plots.labelled_grid(
        imgs, ["method A", "method B"], ["-1", "0", "1"], scale=4, title="t", outline=mask
    )
    changed = np.any(
        outlined[at[0] : at[0] + grid.shape[0], at[1] : at[1] + grid.shape[1]] != grid, axis=-1
    )
    # The boundary runs along the box edges of every tile (rows 8..20, cols 12..28 of a tile, 4x
    # scale).
    ys, xs = np.nonzero(changed[2:34, 2:34])
    assert (
        ys.size
        and 6 <= ys.min() <= 9
        and 18 <= ys.max() <= 21
        and 10 <= xs.min() <= 13
        and 26 <= xs.max() <= 29
    )
    # the same outline on another tile
    assert changed[2:34, 2:34].sum() == changed[36:68, 70:102].sum()
    assert not changed[2 + 12, 2 + 18]  # the inside of the region is untouched


def test_spectrum_and_manipulate_html(tmp_path):
    from experiments import pipeline

    img = plots.spectrum(
        {"eyes": np.array([5.0, 1.0, 0.1, 0.0]), "mouth": np.array([3.0, 2.0, 1e-3, -1e-9])}
    )
    assert img.shape == (420, 640, 3) and img.dtype == np.uint8 and (img < 128).any()
    pipeline._write_html(
        tmp_path, [tmp_path / "direction_000.png"], "eyes.npy", edit.step_range(-10.0, 10.0, 7)
    )
    html = (tmp_path / "index.html").read_text()
    assert "steps: -10, -6.67, -3.33, 0, 3.33, 6.67, 10 (columns)" in html and "e-0" not in html
