"""Atomic file output and work-directory bookkeeping, shared by launchers and tools.

Every writer goes through a temporary file in the destination directory and ``os.replace``: a crash
leaves either the old file or the new one, never half of one. :class:`Writer` is the same writers
switched off on every process but process 0.

Work directories (:func:`claim_workdir`): an advisory ``fcntl`` lock (``run.lock``, naming the
holder's pid and host), and ``run.json`` with the :func:`fingerprint` of what determines the result.
Re-using a directory for the same experiment resumes; a different experiment is refused with the
settings that differ, unless the caller asks to overwrite.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import pathlib
import shutil
import tempfile
import time
import uuid
from typing import Iterator, Sequence

import numpy as np

from regfac_jax import errors

PathLike = str | os.PathLike


def current_umask() -> int:
    """The process's umask, read without changing it where Linux allows (``/proc/self/status``).

    ``os.umask`` can only be read by setting it, which races with threads creating files (orbax
    writes from threads), so it is the fallback only.
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
    """Opens a temporary file beside ``path``; on success it replaces ``path`` atomically, on error
    it vanishes.

    The file gets the mode a plain ``open()`` would give it (``0o666`` less the umask), not
    ``mkstemp``'s 0600.
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
    write_bytes(
        path, (json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n").encode()
    )


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
    """Float images ``[..., H, W, C]`` in ``value_range`` -> uint8 (clipped); 1-channel stays
    1-channel."""
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


def save_gif(
    path: PathLike, frames_u8: Sequence[np.ndarray], duration_ms: int = 120, pingpong: bool = True
) -> None:
    """An animated, looping GIF; with ``pingpong`` it plays the frames forwards then backwards."""
    frames = [_pil(f) for f in frames_u8]
    if pingpong:
        frames = frames + frames[-2:0:-1]
    buf = io.BytesIO()
    frames[0].save(
        buf, format="GIF", save_all=True, append_images=frames[1:], duration=duration_ms, loop=0
    )
    write_bytes(path, buf.getvalue())


def replace_dir(src: PathLike, dest: PathLike) -> None:
    """Renames the completed directory ``src`` to ``dest``, swapping out an existing ``dest``
    safely.

    For outputs written as a directory (orbax checkpoints): write everything into a temporary
    sibling ``src``, then call this. An existing ``dest`` is first renamed aside, and deleted only
    once ``src`` is in place; if the rename of ``src`` fails, the old ``dest`` is put back. Both
    paths must be on the same filesystem.
    """
    src, dest = pathlib.Path(src), pathlib.Path(dest)
    old = None
    if dest.exists():
        old = dest.parent / f".{dest.name}.old-{uuid.uuid4().hex[:8]}"
        os.rename(dest, old)
    try:
        os.rename(src, dest)
    except BaseException:
        if old is not None:
            os.rename(old, dest)
        raise
    if old is not None:
        shutil.rmtree(old)


# --------------------------------------------------------------------------------------------------
# Process-0 output
# --------------------------------------------------------------------------------------------------
class Writer:
    """The atomic writers of this module, switched on or off once per process.

    In a multi-host job every process computes the same results and process 0 alone writes them;
    launchers say so in one line, ``writer = Writer(enabled=jax.process_index() == 0)``, as flax's
    ``create_default_writer(..., just_logging=jax.process_index() != 0)`` does. A disabled writer
    accepts the same calls and writes nothing.
    """

    def __init__(self, enabled: bool = True):
        self.enabled = bool(enabled)

    def write_bytes(self, path: PathLike, data: bytes) -> None:
        if self.enabled:
            write_bytes(path, data)

    def write_json(self, path: PathLike, obj) -> None:
        if self.enabled:
            write_json(path, obj)

    def save_npy(self, path: PathLike, array) -> None:
        if self.enabled:
            save_npy(path, array)

    def save_npz(self, path: PathLike, **arrays) -> None:
        if self.enabled:
            save_npz(path, **arrays)

    def save_png(self, path: PathLike, image_u8: np.ndarray) -> None:
        if self.enabled:
            save_png(path, image_u8)


# --------------------------------------------------------------------------------------------------
# Fingerprints: one hash of whatever determines a result
# --------------------------------------------------------------------------------------------------
def array_digest(array) -> str:
    """SHA-256 (hex) of an array's dtype, shape and bytes; numpy, JAX or anything ``np.asarray``
    takes."""
    arr = np.ascontiguousarray(np.asarray(array))
    h = hashlib.sha256(f"{arr.dtype.str}{arr.shape}".encode())
    h.update(arr.reshape(-1).view(np.uint8) if arr.size else b"")
    return h.hexdigest()


def tree_digest(tree) -> str:
    """SHA-256 (hex) of a pytree of arrays (nested dicts/lists/tuples): every leaf's path, dtype,
    shape and bytes.

    For a generator's parameters this is the identity of its weights: about 0.15 s for StyleGAN2
    config-f's 30M parameters on one CPU core (``python -m benchmarks.bench_workdir``).
    """
    import jax

    h = hashlib.sha256()
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        h.update(jax.tree_util.keystr(path).encode())
        h.update(array_digest(leaf).encode())
    return h.hexdigest()


def _canonical_mapping(value, path: str) -> dict:
    """:func:`canonical` of a mapping: string keys (refused if two collide), values walked."""
    keys = [str(k) for k in value]
    if len(set(keys)) != len(keys):
        raise TypeError(
            f"fingerprint: keys of {path or 'the description'} collide when turned into strings."
        )
    return {str(k): canonical(v, f"{path}.{k}" if path else str(k)) for k, v in value.items()}


def canonical(value, path: str = ""):
    """A JSON-able stand-in for ``value`` that changes whenever its content does.

    Floats become their exact ``repr``; numpy/JAX arrays ``{'__array__': [dtype, shape, sha256]}``;
    mappings, lists, tuples and ml_collections configs are walked.

    Raises:
      TypeError: a value with no stable content (an arbitrary object), naming where it sits.
    """
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return repr(value)  # exact round trip, unlike JSON's float printing on some platforms
    if isinstance(value, np.generic):
        return canonical(value.item(), path)
    if isinstance(value, pathlib.PurePath):
        return str(value)
    if isinstance(value, np.ndarray) or all(
        hasattr(value, a) for a in ("__array__", "dtype", "shape")
    ):
        arr = np.asarray(value)
        return {"__array__": [str(arr.dtype), list(arr.shape), array_digest(arr)]}
    if isinstance(value, dict) or hasattr(value, "items"):
        return _canonical_mapping(value, path)
    if isinstance(value, (list, tuple)):
        return [canonical(v, f"{path}[{i}]") for i, v in enumerate(value)]
    if hasattr(value, "to_dict"):  # ml_collections.ConfigDict and friends
        return canonical(value.to_dict(), path)
    raise TypeError(
        f"fingerprint: {path or 'the description'} has a value of type "
        f"{type(value).__name__} with no "
        "stable fingerprint; use numbers, strings, lists, dicts or numpy arrays."
    )


def fingerprint(description) -> str:
    """The fingerprint of an experiment: SHA-256 (64 hex) of :func:`canonical` ``(description)``.

    Dict order does not matter; arrays count by content. The one fingerprint used by work
    directories, checkpoints and the hosts of a multi-host job.
    """
    blob = json.dumps(canonical(description), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


def _show(value) -> str:
    if isinstance(value, dict) and set(value) == {"__array__"}:
        dtype, shape, digest = value["__array__"]
        return f"{dtype}{shape} (sha256 {digest[:12]})"
    if isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value):
        return f"sha256 {value[:12]}"
    return repr(value)


def describe_differences(stored, now, path: str = "", limit: int = 8) -> list[str]:
    """``'key: old -> new'`` lines for the differences of two canonical descriptions (at most
    ``limit``)."""
    if isinstance(stored, dict) and isinstance(now, dict) and set(stored) != {"__array__"}:
        out = []
        for key in sorted(set(stored) | set(now)):
            sub = f"{path}.{key}" if path else key
            if key not in stored:
                out.append(f"{sub}: (absent) -> {_show(now[key])}")
            elif key not in now:
                out.append(f"{sub}: {_show(stored[key])} -> (absent)")
            else:
                out.extend(describe_differences(stored[key], now[key], sub, limit))
        return out[:limit]
    return [] if stored == now else [f"{path or 'description'}: {_show(stored)} -> {_show(now)}"]


# --------------------------------------------------------------------------------------------------
# Work directories: lock, fingerprint, refusal
# --------------------------------------------------------------------------------------------------
RUN_FILE = "run.json"
LOCK_FILE = "run.lock"
LOG_FILE = "log.txt"
#: Files that do not make a work directory "started": a claimed folder holding only these may be
#: re-claimed.
BOOKKEEPING = (RUN_FILE, LOCK_FILE, LOG_FILE)
#: A description key whose change means the model's weights changed (explained in the refusal).
WEIGHTS_KEY = "generator"


class WorkdirConflict(errors.UserError, FileExistsError):
    """The work directory holds another experiment or unrelated files, or another run holds its
    lock."""


class Workdir:
    """A claimed work directory: holds the advisory lock until :meth:`release` (or the process
    ends).

    Attributes:
      path: the directory.
      fingerprint: the experiment's fingerprint (also in ``run.json``).
      resumed: True when the directory already held this experiment.
    """

    def __init__(self, path: pathlib.Path, fingerprint: str, resumed: bool, lock_fd: int):
        self.path, self.fingerprint, self.resumed, self._fd = path, fingerprint, resumed, lock_fd

    def release(self) -> None:
        """Releases the lock (idempotent); the kernel also releases it when the process ends, even
        on a crash."""
        if self._fd is not None:
            import fcntl

            with contextlib.suppress(OSError):
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> Workdir:
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def __del__(self):
        # may run at interpreter shutdown; the kernel releases the lock anyway
        with contextlib.suppress(Exception):
            self.release()


def _in_use(workdir: pathlib.Path) -> WorkdirConflict:
    """The refusal for a locked ``workdir``, naming the holder its lock file records."""
    try:
        holder = json.loads((workdir / LOCK_FILE).read_text() or "{}")
    except (OSError, ValueError):
        holder = {}
    return WorkdirConflict(
        f"{workdir} is in use by another run (pid {holder.get('pid', '?')} on host "
        f"{holder.get('host', '?')}, "
        f"started {holder.get('started', '?')}). Wait for it to finish, or use another "
        "--workdir."
    )


def _write_holder(fd: int) -> None:
    """Replaces the lock file's content with this process's pid, host and start time."""
    import socket

    os.ftruncate(fd, 0)  # in place: replacing the file would leave the lock on an orphaned inode
    os.pwrite(
        fd,
        json.dumps(
            {
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            }
        ).encode(),
        0,
    )


def _lock(workdir: pathlib.Path) -> int:
    """Takes ``workdir/run.lock`` (fcntl.flock, exclusive, non-blocking) and writes the holder into
    it."""
    import fcntl

    fd = os.open(workdir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise _in_use(workdir) from None
    except OSError as err:  # e.g. a FUSE or network file system without flock: run, but say so
        logging.getLogger(__name__).warning(
            "%s: cannot take the advisory lock (%s); running without it, so make "
            "sure no other run uses this directory.",
            workdir,
            err,
        )
    _write_holder(fd)
    return fd


def _started(workdir: pathlib.Path) -> bool:
    """Whether ``workdir`` holds any result: a file other than the bookkeeping files (empty folders
    do not count)."""
    return any(p.is_file() and p.name not in BOOKKEEPING for p in workdir.rglob("*"))


def _refusal(workdir: pathlib.Path, old: dict, description, overwrite_flag: str) -> WorkdirConflict:
    lines = describe_differences(old.get("description", {}), canonical(description))
    weights = any(
        line.startswith(f"{WEIGHTS_KEY}:") or line.startswith(f"{WEIGHTS_KEY}.") for line in lines
    )
    why = (
        " The model's weights differ from those this directory was started with (the checkpoint "
        "at that path was "
        "replaced or changed), so its finished samples cannot be combined with new ones."
        if weights
        else ""
    )
    return WorkdirConflict(
        f"{workdir} holds a run with different settings.{why} Differences (stored -> now): "
        f"{'; '.join(lines) or 'unknown (run.json of another version)'}. Use another --workdir, or "
        f"pass {overwrite_flag} to delete its results and start over."
    )


def claim_workdir(
    workdir: PathLike,
    description,
    *,
    overwrite: bool = False,
    overwrite_flag: str = "--config.overwrite True",
) -> Workdir:
    """Locks ``workdir`` for this run and checks that it holds this experiment (or nothing), so
    re-runs resume.

    Call it after everything has been validated (model, regions, latents): a run that fails earlier
    leaves the folder untouched. In a multi-host job only process 0 claims.

    Args:
      workdir: the directory (created with its parents).
      description: what determines the result (JSON-able, arrays allowed); its :func:`fingerprint`
        goes to ``run.json`` with the canonical description, which a refusal compares key by key.
      overwrite: replace a different experiment's results instead of refusing.
      overwrite_flag: how the user asks for ``overwrite``, named in the refusal.

    Returns:
      The claimed :class:`Workdir` (a context manager; the lock is held until it is released).

    Raises:
      WorkdirConflict: another process holds the lock (names its pid and host); or the directory
        holds results of a different experiment, or files of some other tool, and ``overwrite`` is
        False. A directory claimed by a run that finished no sample (only ``run.json``, ``log.txt``,
        ``run.lock``) is re-claimed without asking.
    """
    workdir = pathlib.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    fd = _lock(workdir)
    try:
        fp, run_file = fingerprint(description), workdir / RUN_FILE
        old = json.loads(run_file.read_text()) if run_file.is_file() else None
        resumed = old is not None and old.get("fingerprint") == fp
        if not resumed and _started(workdir):
            if not overwrite:
                if old is None:
                    raise WorkdirConflict(
                        f"{workdir} is not empty and holds no {RUN_FILE}, so it is not a run of "
                        f"this tool. Use another --workdir, or pass {overwrite_flag} to delete "
                        "its contents."
                    )
                raise _refusal(workdir, old, description, overwrite_flag)
            _clear(workdir)
        if not resumed:
            write_json(run_file, {"fingerprint": fp, "description": canonical(description)})
        return Workdir(workdir, fp, resumed, fd)
    except BaseException:
        os.close(fd)
        raise


def _clear(workdir: pathlib.Path) -> None:
    """Deletes everything in ``workdir`` except the lock file (which this process holds)."""
    for child in workdir.iterdir():
        if child.name == LOCK_FILE:
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()
