"""Atomic file output and work-directory bookkeeping, shared by launchers and tools.

Every writer goes through a temporary file in the destination directory and ``os.replace``: a crash leaves either
the old file or the new one, never half of one. Work directories carry a ``run.json`` fingerprint of the
experiment; re-using a directory for a different experiment is refused unless the caller asks to overwrite.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import pathlib
import tempfile
from typing import Iterator, Sequence

import numpy as np

from regfac_jax import errors

PathLike = str | os.PathLike


def current_umask() -> int:
    """The process's umask, read without changing it where Linux allows (``/proc/self/status``).

    ``os.umask`` can only be read by setting it, which races with threads creating files (orbax writes from
    threads), so it is the fallback only.
    """
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def default_file_mode() -> int:
    """The mode ``open(path, "w")`` gives a new file: ``0o666`` less the umask."""
    return 0o666 & ~current_umask()


@contextlib.contextmanager
def atomic_open(path: PathLike, mode: str = "wb") -> Iterator[io.IOBase]:
    """Opens a temporary file beside ``path``; on success it replaces ``path`` atomically, on error it vanishes.

    The file gets the mode a plain ``open()`` would give it (``0o666`` less the umask), not ``mkstemp``'s 0600.
    """
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as f:
            os.fchmod(f.fileno(), default_file_mode())
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_bytes(path: PathLike, data: bytes) -> None:
    with atomic_open(path, "wb") as f:
        f.write(data)


def write_json(path: PathLike, obj) -> None:
    write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n").encode())


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (pathlib.Path,)):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def save_npy(path: PathLike, array) -> None:
    buf = io.BytesIO()
    np.save(buf, np.asarray(array), allow_pickle=False)
    write_bytes(path, buf.getvalue())


def save_npz(path: PathLike, **arrays) -> None:
    buf = io.BytesIO()
    np.savez(buf, **{k: np.asarray(v) for k, v in arrays.items()})
    write_bytes(path, buf.getvalue())


def to_uint8(images, value_range: tuple[float, float] = (-1.0, 1.0)) -> np.ndarray:
    """Float images ``[..., H, W, C]`` in ``value_range`` -> uint8 (clipped); 1-channel stays 1-channel."""
    lo, hi = value_range
    x = (np.asarray(images, np.float32) - lo) / (hi - lo)
    return np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)


def _pil(img_u8: np.ndarray):
    from PIL import Image
    if img_u8.ndim == 3 and img_u8.shape[-1] == 1:
        img_u8 = img_u8[..., 0]
    return Image.fromarray(img_u8)


def save_png(path: PathLike, image_u8: np.ndarray) -> None:
    buf = io.BytesIO()
    _pil(image_u8).save(buf, format="PNG")
    write_bytes(path, buf.getvalue())


def save_gif(path: PathLike, frames_u8: Sequence[np.ndarray], duration_ms: int = 120, pingpong: bool = True) -> None:
    """An animated, looping GIF; with ``pingpong`` it plays the frames forwards then backwards."""
    frames = [_pil(f) for f in frames_u8]
    if pingpong:
        frames = frames + frames[-2:0:-1]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=duration_ms, loop=0)
    write_bytes(path, buf.getvalue())


def fingerprint(config: dict) -> str:
    """A stable hash of a JSON-serialisable experiment description."""
    blob = json.dumps(config, sort_keys=True, default=_json_default).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


class WorkdirConflict(errors.UserError, RuntimeError):
    """The work directory holds a different experiment."""


def claim_workdir(workdir: PathLike, description: dict, overwrite: bool = False) -> pathlib.Path:
    """Creates ``workdir`` or checks that it holds the same experiment (``run.json``), so re-runs resume.

    Raises:
      WorkdirConflict: the directory holds another experiment and ``overwrite`` is False.
    """
    workdir = pathlib.Path(workdir)
    run_file = workdir / "run.json"
    fp = fingerprint(description)
    if run_file.exists():
        old = json.loads(run_file.read_text())
        if old.get("fingerprint") != fp:
            if not overwrite:
                changed = sorted(k for k in set(old.get("description", {})) | set(description)
                                 if old.get("description", {}).get(k) != description.get(k))
                raise WorkdirConflict(
                    f"{workdir} holds a different experiment (settings that differ: {', '.join(changed) or '?'}); "
                    "use another --workdir, or pass --overwrite to replace its results.")
            _clear(workdir)
    elif workdir.exists() and any(workdir.iterdir()) and not overwrite:
        raise WorkdirConflict(f"{workdir} exists, is not empty and holds no run.json from this tool; use another "
                              "--workdir or pass --overwrite.")
    workdir.mkdir(parents=True, exist_ok=True)
    write_json(run_file, {"fingerprint": fp, "description": description})
    return workdir


def _clear(workdir: pathlib.Path) -> None:
    import shutil
    for child in workdir.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()
