"""Long Gram computations that survive preemption: partial sums checkpointed with orbax, resumed on restart.

:class:`ResumableGramAccumulator` keeps, on the host, the float64 sum of the Grams of the finished samples, a bitmap
of which samples are finished and (if asked) every sample's own Grams. Process 0 saves that state with an orbax
``CheckpointManager`` every ``save_interval_secs`` and at the end; a restarted job reads the latest checkpoint and
only computes the samples still missing. Because the state is plain host arrays, a restart may use another device
count, another device type or another block size.

Reproducibility: blocks are taken in sample order from the unfinished samples, and the host adds block sums in that
order, so a run that was killed and resumed with the same device count and block size ends **bitwise identical** to
an uninterrupted run. With another device count (or block size) each block's sum is formed in another order on the
devices, so results agree to float round-off (a few ulps of the latents' dtype relative to the largest entry).

Multi-host: every process runs the same loop on the same blocks; block sums arrive on every host through the mesh's
``psum``, so all hosts hold the same state. Only process 0 reads and writes the work directory: at start it
broadcasts what it found (or its refusal) to the others, so the work directory need not be shared between hosts,
and all hosts agree on which samples are done. On a preemption notice (``jax.distributed`` jobs) the hosts meet at a
JAX preemption sync point and process 0 saves at once.

Work directory layout (orbax): ``<workdir>/<step>/{state,meta}``, where ``step`` is the number of finished samples,
``state`` holds ``sums [2R, d, d]`` (float64), ``done [N]`` (bool) and optionally ``per_sample [N, 2R, d, d]``, and
``meta`` (JSON) the fingerprint and the canonical configuration it was made from.
"""
from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Callable, Mapping, Sequence

import jax
import numpy as np

from regfac_jax import distributed, errors, jacobian, logs

FORMAT_VERSION = 1


class WorkdirMismatchError(errors.UserError, ValueError):
    """The work directory holds checkpoints of a different experiment."""


@dataclasses.dataclass(frozen=True)
class Progress:
    """What :func:`run_resumable` reports after each block (on every process).

    Attributes:
      done: samples finished so far (including those restored from a checkpoint).
      total: all samples.
      computed: samples computed by this process's run (not restored).
      saved_step: step of the latest checkpoint (= samples finished at that save) as this process counts it
        (process 0 writes it; the others follow their own clock), or None.
      seconds: wall time since this run started.
    """

    done: int
    total: int
    computed: int
    saved_step: int | None
    seconds: float


def _diff(stored: Any, now: Any, path: str = "", limit: int = 8) -> list[str]:
    """Human-readable differences between two canonical configs (at most ``limit``)."""
    if isinstance(stored, dict) and isinstance(now, dict):
        out = []
        for key in sorted(set(stored) | set(now)):
            sub = f"{path}.{key}" if path else key
            if key not in stored:
                out.append(f"{sub}: absent in the stored run, {now[key]!r} now")
            elif key not in now:
                out.append(f"{sub}: {stored[key]!r} in the stored run, absent now")
            else:
                out.extend(_diff(stored[key], now[key], sub, limit))
        return out[:limit]
    return [] if stored == now else [f"{path or 'config'}: {stored!r} in the stored run, {now!r} now"]


class ResumableGramAccumulator:
    """Host-side sums of Grams over samples, checkpointed to ``workdir`` by process 0.

    Args:
      workdir: checkpoint directory (local path or any path orbax/etils understands, e.g. ``gs://...``).
      fingerprint: the experiment's identity (:func:`regfac_jax.distributed.config_fingerprint`).
      num_samples: ``N``.
      gram_shape: ``(2R, d, d)``.
      per_sample: also keep every sample's Grams ``[N, 2R, d, d]`` (``N * 2R * d * d`` values of ``dtype``).
      dtype: dtype of the per-sample Grams and of :meth:`mean`.
      save_interval_secs: save at most this often from :meth:`maybe_save` (0: after every block).
      max_to_keep: checkpoints kept.
      config: optional configuration the fingerprint was made from; stored so that a refusal can name what differs.
      clock: seconds since an arbitrary origin (tests may replace it).

    Raises:
      WorkdirMismatchError: ``workdir`` holds a checkpoint of another experiment (on process 0; the other
        processes raise RuntimeError pointing to process 0's log).
    """

    def __init__(self, workdir, fingerprint: str, *, num_samples: int, gram_shape: Sequence[int],
                 per_sample: bool = False, dtype=np.float32, save_interval_secs: float = 300.0,
                 max_to_keep: int = 2, config: Mapping[str, Any] | None = None,
                 clock: Callable[[], float] = time.monotonic):
        if int(num_samples) < 1:
            raise ValueError(f"num_samples must be >= 1; got {num_samples}.")
        if save_interval_secs < 0:
            raise ValueError(f"save_interval_secs must be >= 0; got {save_interval_secs}.")
        self.workdir = str(workdir)
        self.fingerprint = str(fingerprint)
        self.num_samples = int(num_samples)
        self.gram_shape = tuple(int(s) for s in gram_shape)
        self.per_sample = bool(per_sample)
        self.dtype = np.dtype(dtype)
        self.save_interval_secs = float(save_interval_secs)
        self._meta = {"format": FORMAT_VERSION, "fingerprint": self.fingerprint, "num_samples": self.num_samples,
                      "gram_shape": list(self.gram_shape), "per_sample": self.per_sample,
                      "dtype": self.dtype.name,
                      "experiment": None if config is None else distributed._canonical(config, "")}
        self._clock = clock
        self.sums = np.zeros(self.gram_shape, np.float64)
        self.done = np.zeros(self.num_samples, bool)
        self.grams = np.zeros((self.num_samples,) + self.gram_shape, self.dtype) if self.per_sample else None
        self.saved_step: int | None = None
        self.restored_step: int | None = None
        self._mgr = self._open_manager(max_to_keep) if jax.process_index() == 0 else None
        self._restore()
        self._last_save = clock()

    # ---- checkpoint I/O (process 0 only) ------------------------------------------------------------
    def _open_manager(self, max_to_keep: int):
        import orbax.checkpoint as ocp
        from etils import epath
        path = epath.Path(self.workdir if "://" in self.workdir else os.path.abspath(self.workdir))
        path.mkdir(parents=True, exist_ok=True)  # orbax refuses create=True with active_processes
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, create=False, enable_async_checkpointing=False, cleanup_tmp_directories=True,
            multiprocessing_options=ocp.options.MultiprocessingOptions(primary_host=0, active_processes={0}))
        return ocp.CheckpointManager(path, options=options, item_names=("state", "meta"))

    def _state(self) -> dict:
        state = {"sums": self.sums, "done": self.done}
        if self.per_sample:
            state["per_sample"] = self.grams
        return state

    def _check_meta(self, meta: Mapping[str, Any], step: int) -> None:
        if meta.get("fingerprint") == self.fingerprint and all(
                meta.get(k) == self._meta[k] for k in ("format", "num_samples", "gram_shape", "per_sample", "dtype")):
            return
        lines = _diff({k: v for k, v in meta.items() if k != "fingerprint"},
                      {k: v for k, v in self._meta.items() if k != "fingerprint"})
        detail = "; ".join(lines) if lines else "the stored configuration is not recorded or differs only in data"
        raise WorkdirMismatchError(
            f"This work directory holds a different experiment: {self.workdir} (checkpoint step {step}) has "
            f"fingerprint {str(meta.get('fingerprint'))[:16]}..., this run has {self.fingerprint[:16]}... "
            f"(differences: {detail}). Use a new work directory, or delete this one to start over.")

    def _read_latest(self) -> dict | None:
        import orbax.checkpoint as ocp
        step = self._mgr.latest_step()
        if step is None:
            return None
        meta = self._mgr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta
        self._check_meta(meta, step)
        state = self._mgr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore())).state
        want = self._state()
        for key, ref in want.items():
            got = np.asarray(state.get(key))
            if got.shape != ref.shape:
                raise WorkdirMismatchError(f"Checkpoint step {step} in {self.workdir} is damaged: {key} has shape "
                                           f"{got.shape}, expected {ref.shape}. Delete the work directory.")
        self.restored_step = self.saved_step = int(step)
        return {k: np.asarray(state[k]).astype(want[k].dtype) for k in want}

    def _restore(self) -> None:
        """Process 0 reads the latest checkpoint; every process receives it (or process 0's refusal)."""
        code, error, state = 0, None, None
        if self._mgr is not None:
            try:
                state = self._read_latest()
                code = 0 if state is None else 1
            except Exception as err:  # noqa: BLE001  (re-raised below, after telling the other processes)
                code, error = 2, err
        code = int(_broadcast({"code": np.array([code], np.int32)})["code"][0])
        if code == 2:
            if error is not None:
                raise error
            raise RuntimeError(f"Process 0 could not resume from the work directory {self.workdir} (another "
                               "experiment, or a read error); see process 0's log for the details.")
        if code == 1:
            state = _broadcast(state if state is not None else self._state())
            self.sums, self.done = state["sums"], state["done"]
            if self.per_sample:
                self.grams = state["per_sample"]
            self.restored_step = self.saved_step = int(self.done.sum())
            if jax.process_index() == 0:
                logs.report_resume(self.num_done, self.num_samples)

    def save(self) -> bool:
        """Writes a checkpoint now (process 0) if samples finished since the last one; True if one was written."""
        step = int(self.done.sum())
        self._last_save = self._clock()
        if step == 0 or step == self.saved_step:
            return False
        self.saved_step = step
        if self._mgr is None:
            return False
        import orbax.checkpoint as ocp
        args = ocp.args.Composite(state=ocp.args.StandardSave(self._state()), meta=ocp.args.JsonSave(self._meta))
        self._mgr.save(step, args=args, force=True)
        self._mgr.wait_until_finished()
        return True

    def maybe_save(self) -> bool:
        """Saves if ``save_interval_secs`` have passed since the last save."""
        if self._clock() - self._last_save >= self.save_interval_secs:
            return self.save()
        return False

    def close(self) -> None:
        """Final save and release of the checkpoint manager."""
        self.save()
        if self._mgr is not None:
            self._mgr.close()
            self._mgr = None

    def __enter__(self) -> ResumableGramAccumulator:
        return self

    def __exit__(self, *exc) -> None:
        self.close()  # also on errors: the finished samples are valid and worth keeping

    # ---- accumulation -------------------------------------------------------------------------------
    @property
    def num_done(self) -> int:
        return int(self.done.sum())

    @property
    def finished(self) -> bool:
        return bool(self.done.all())

    def pending(self) -> np.ndarray:
        """Indices of the samples not yet finished, ascending."""
        return np.flatnonzero(~self.done)

    def add(self, indices, total: np.ndarray, per_sample: np.ndarray | None = None) -> None:
        """Adds the Grams of the samples ``indices``: their sum ``total [2R, d, d]`` and, when the accumulator
        keeps them, their own Grams ``per_sample [n, 2R, d, d]``.

        Raises:
          ValueError: wrong shapes, unknown or already finished samples (which would be counted twice).
        """
        idx = np.asarray(indices, np.int64).reshape(-1)
        if idx.size == 0 or idx.min() < 0 or idx.max() >= self.num_samples or np.unique(idx).size != idx.size:
            raise ValueError(f"indices must be distinct sample numbers in [0, {self.num_samples}); got {idx}.")
        if self.done[idx].any():
            raise ValueError(f"Samples {idx[self.done[idx]].tolist()} are already finished; adding them again "
                             "would count them twice.")
        total = np.asarray(total)
        if total.shape != self.gram_shape:
            raise ValueError(f"total must have shape {self.gram_shape}; got {total.shape}.")
        if self.per_sample:
            want = (idx.size,) + self.gram_shape
            got = None if per_sample is None else np.shape(per_sample)
            if got != want:
                raise ValueError(f"This accumulator keeps per-sample Grams: pass per_sample of shape {want}; "
                                 f"got {got}.")
            self.grams[idx] = per_sample
        self.sums += total.astype(np.float64)
        self.done[idx] = True

    def mean(self) -> np.ndarray:
        """``[2R, d, d]`` mean over all samples, in ``dtype``.

        Raises:
          RuntimeError: samples are still missing.
        """
        if not self.finished:
            raise RuntimeError(f"Only {self.num_done} of {self.num_samples} samples are finished; run the remaining "
                               "ones first (pending()).")
        return (self.sums / self.num_samples).astype(self.dtype)

    def per_sample_grams(self) -> np.ndarray:
        """``[N, 2R, d, d]`` (only with ``per_sample=True`` and all samples finished)."""
        if not self.per_sample:
            raise RuntimeError("This accumulator was created with per_sample=False; it keeps only the sums.")
        if not self.finished:
            raise RuntimeError(f"Only {self.num_done} of {self.num_samples} samples are finished.")
        return self.grams


def _broadcast(tree: dict) -> dict:
    """Process 0's ``tree`` (numpy arrays) on every process, bit for bit (no float64 -> float32 demotion)."""
    if jax.process_count() == 1:
        return tree
    from jax.experimental import multihost_utils
    as_words = {}
    for k, v in tree.items():
        raw = np.ascontiguousarray(v).reshape(-1).view(np.uint8)
        as_words[k] = raw.view(np.uint32) if raw.size % 4 == 0 else raw  # JAX has no 64-bit types without x64
    out = multihost_utils.broadcast_one_to_all(as_words)
    return {k: np.asarray(out[k]).astype(as_words[k].dtype).view(np.uint8).view(v.dtype).reshape(v.shape)
            for k, v in tree.items()}


def _preempted(step: int) -> bool:
    """True at a JAX preemption sync point (multi-process jobs only; every process must call it with the same
    steps)."""
    if jax.process_count() == 1:
        return False
    from jax.experimental import multihost_utils
    try:
        return bool(multihost_utils.reached_preemption_sync_point(step))
    except RuntimeError:  # preemption service disabled
        return False


def _function_content(fn, num_samples: int) -> dict:
    """The arrays inside ``fn`` (one function or one per sample), each shared array once."""
    _, varying, shared, stacked = distributed._split_functions(fn, num_samples)
    return {"varying": list(varying), "shared": shared, "per_sample": stacked}


def experiment_fingerprint(fn, latents, masks, *, per_sample: bool = False, preprocess=None,
                           config: Mapping[str, Any] | None = None) -> tuple[str, dict]:
    """The fingerprint :func:`run_resumable` stores: the caller's config plus the content of the generator's
    weights, the latents and the masks (tangent_chunk, strategy, block size and device count are left out: they
    change the result only by round-off, so a resume may change them).

    Returns:
      ``(fingerprint, canonical config)``.
    """
    name = preprocess if preprocess is None or isinstance(preprocess, str) else \
        f"{getattr(preprocess, '__module__', '?')}.{getattr(preprocess, '__qualname__', type(preprocess).__name__)}"
    latents = np.asarray(latents)
    content = {"config": {} if config is None else config, "latents": latents, "masks": np.asarray(masks),
               "function": distributed.config_fingerprint(
                   _function_content(fn, 1 if latents.ndim == 1 else latents.shape[0])),
               "per_sample": bool(per_sample), "preprocess": name, "format": FORMAT_VERSION}
    return distributed.config_fingerprint(content), content


def run_resumable(fn, latents, masks, workdir, *, config: Mapping[str, Any] | None = None, mesh=None,
                  block_size: int | None = None, per_sample: bool = False, tangent_chunk: int = 64,
                  preprocess: jacobian.Preprocess = None, strategy: str = "auto", memory_budget: int = 2 << 30,
                  save_interval_secs: float = 300.0, max_to_keep: int = 2,
                  callback: Callable[[Progress], None] | None = None):
    """Region Grams of many samples over a device mesh, checkpointed to ``workdir`` and resumed from it.

    Every process of a multi-host job calls this with the same arguments (``workdir`` is only used by process 0).

    Args:
      fn: generator function, or one per sample (see :func:`regfac_jax.distributed.sharded_region_grams`).
      latents: ``[N, d]``.
      masks: ``[R, H', W']`` or ``[H', W']``.
      workdir: checkpoint directory; re-running on it resumes.
      config: the launcher's settings, folded into the fingerprint (a workdir of another config is refused).
      mesh: default ``make_mesh()`` (all devices of all processes).
      block_size: samples per call over the whole mesh (default 4 per device); checkpoints happen between
        blocks.
      per_sample: return per-sample Grams (also kept in the checkpoints).
      tangent_chunk, preprocess, strategy, memory_budget: as in ``region_grams``.
      save_interval_secs: seconds between checkpoints (0: after every block); one is always written at the end.
      max_to_keep: checkpoints kept in ``workdir``.
      callback: called with a :class:`Progress` after each block, on every process.

    Returns:
      ``(A, B)``: ``[R, d, d]`` each, the mean over samples (or ``[N, R, d, d]`` with ``per_sample``), on every
      process.

    Raises:
      WorkdirMismatchError: ``workdir`` holds another experiment.
      RuntimeError: the hosts disagree on the configuration (names the processes).
      FloatingPointError: a sample's Jacobian is not finite (names it; earlier blocks stay checkpointed).
    """
    start = time.monotonic()
    fingerprint, content = experiment_fingerprint(fn, latents, masks, per_sample=per_sample, preprocess=preprocess,
                                                  config=config)
    distributed.assert_hosts_agree(fingerprint, "experiment (config, generator weights, latents or masks)")
    plan = distributed.plan_grams(fn, latents, masks, mesh=mesh, tangent_chunk=tangent_chunk,
                                  preprocess=preprocess, strategy=strategy, memory_budget=memory_budget, pad=True)
    block = 4 * plan.mesh.size if block_size is None else int(block_size)
    if block < 1:
        raise ValueError(f"block_size must be >= 1; got {block_size}.")
    computed = 0
    with ResumableGramAccumulator(workdir, fingerprint, num_samples=plan.num_samples, gram_shape=plan.gram_shape,
                                  per_sample=per_sample, dtype=plan.latents.dtype, config=content,
                                  save_interval_secs=save_interval_secs, max_to_keep=max_to_keep) as acc:
        pending = acc.pending()
        for lo in range(0, pending.size, block):
            idx = pending[lo:lo + block]
            res = plan.block(idx, per_sample=per_sample)
            acc.add(idx, res.total, res.per_sample)
            computed += idx.size
            if _preempted(acc.num_done):
                acc.save()
            else:
                acc.maybe_save()
            if callback is not None:
                callback(Progress(acc.num_done, plan.num_samples, computed, acc.saved_step,
                                  time.monotonic() - start))
        distributed.assert_hosts_agree(distributed.config_fingerprint({"done": acc.done}), "set of finished samples")
        acc.save()
        grams = acc.per_sample_grams() if per_sample else acc.mean()
    return distributed.split_grams(grams, plan.num_regions)
