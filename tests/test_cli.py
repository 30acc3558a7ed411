"""What a user of the launchers sees: file modes, one-line errors and exit codes, a quiet console with a full log,
refused non-finite inputs, and labelled plots. Launchers are run as subprocesses, the way a user runs them."""
from __future__ import annotations

import contextlib
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from regfac_jax import edit, errors, io_utils, regions

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


# ---------------------------------------------------------------------------------------------------------
# Output files honour the umask, as open() would
# ---------------------------------------------------------------------------------------------------------
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
        checkpoint.save_generator(gen, dest, overwrite=True)  # the swap path: written aside, then renamed
    modes = _modes(dest)
    assert modes == {"file": {0o666 & ~mask}, "dir": {0o777 & ~mask}}, modes
