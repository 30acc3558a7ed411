"""Long Gram computations that survive preemption: partial sums checkpointed with orbax, resumed on
restart.

This is the project's one resume mechanism; the launchers run every job through
:func:`run_resumable`, on one device or on every device of every host.

:class:`ResumableGramAccumulator` keeps, on the host, the float64 sum of the Grams of the finished
samples, a bitmap of which samples are finished and (if asked) every sample's own Grams. Process 0
saves that state with an orbax ``CheckpointManager`` every ``save_interval_secs``, at a preemption
notice and at the end; a restarted job reads the latest checkpoint and only computes the samples
still missing. Because the state is plain host arrays, a restart may use another device count,
another process count, another device type or another block size.

Reproducibility: blocks are taken in sample order from the unfinished samples, and the host adds
block sums in that order, so a run that was killed and resumed with the same device count and block
size ends **bitwise identical** to an uninterrupted run. With another device count (or block size)
each block's sum is formed in another order on the devices, so results agree to float round-off (a
few ulps of the latents' dtype relative to the largest entry).

Multi-host: every process runs the same loop on the same blocks; block sums arrive on every host
through the mesh's ``psum``, so all hosts hold the same state. Only process 0 reads and writes the
checkpoints (a process-local orbax save: no other process takes part, so none waits for it); at
start it broadcasts what it found (or its refusal), so all hosts agree on which samples are done.

Preemption: SIGTERM (a preemption notice) on any host makes every host stop at the same block
boundary, process 0 save, and every process raise :class:`Preempted`. In a multi-process job JAX's
preemption service carries the notice to all hosts
(``multihost_utils.reached_preemption_sync_point``); in a single process a SIGTERM handler does.

Checkpoint layout (orbax): ``<dir>/<step>/{state,meta}``, where ``step`` is the number of finished
samples, ``state`` holds ``sums [2R, d, d]`` (float64), ``done [N]`` (bool) and optionally
``per_sample [N, 2R, d, d]``, and ``meta`` (JSON) the fingerprint
(:func:`regfac_jax.io_utils.fingerprint`) and the description it was made from.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import logging
import os
import signal
import threading
import time
from typing import Any, Callable, Iterator, Mapping, Sequence

import jax
import numpy as np

from regfac_jax import distributed, io_utils, jacobian, logs

FORMAT_VERSION = 2
log = logging.getLogger(__name__)


class Preempted(Exception):
    """A preemption notice (SIGTERM) stopped the run after a checkpoint; re-running resumes.

    Attributes:
      done: samples finished and saved.
      total: all samples.
    """

    def __init__(self, done: int, total: int, directory: str):
        self.done, self.total = int(done), int(total)
        super().__init__(
            f"Preempted (SIGTERM) after {done} of {total} samples; they are "
            f"checkpointed in {directory}. Re-run the same command to resume."
        )


@dataclasses.dataclass(frozen=True)
class Progress:
    """What :func:`run_resumable` reports after each block (on every process).

    Attributes:
      done: samples finished so far (including those restored from a checkpoint).
      total: all samples.
      computed: samples computed by this process's run (not restored).
      saved_step: step of the latest checkpoint (= samples finished at that save) as this process
        counts it (process 0 writes it; the others follow their own clock), or None.
      seconds: wall time since this run started.
    """

    done: int
    total: int
    computed: int
    saved_step: int | None
    seconds: float


@dataclasses.dataclass(frozen=True)
class CheckpointOptions:
    """How :func:`run_resumable` splits its work into checkpointed blocks, saves and reports.

    Attributes:
      block_size: samples per call over the whole mesh (None: 4 per device); checkpoints fall
        between blocks.
      save_interval_secs: seconds between checkpoints (0: after every block); one is always written
        at the end.
      max_to_keep: checkpoints kept in the work directory.
      callback: called with a :class:`Progress` after each block, on every process (None: nothing).

    :class:`ResumableGramAccumulator` reads ``save_interval_secs`` and ``max_to_keep``.

    Raises:
      ValueError: ``block_size`` or ``max_to_keep`` < 1, or a negative ``save_interval_secs``.
    """

    block_size: int | None = None
    save_interval_secs: float = 300.0
    max_to_keep: int = 2
    callback: Callable[[Progress], None] | None = None

    def __post_init__(self):
        if self.block_size is not None and int(self.block_size) < 1:
            raise ValueError(
                f"block_size must be >= 1 (or None for 4 per device); got {self.block_size}."
            )
        if self.save_interval_secs < 0:
            raise ValueError(f"save_interval_secs must be >= 0; got {self.save_interval_secs}.")
        if int(self.max_to_keep) < 1:
            raise ValueError(f"max_to_keep must be >= 1; got {self.max_to_keep}.")


#: Every checkpoint setting at its default.
DEFAULT_CHECKPOINTS = CheckpointOptions()


class ResumableGramAccumulator:
    """Host-side sums of Grams over samples, checkpointed to ``workdir`` by process 0.

    Args:
      workdir: checkpoint directory (local path or any path orbax/etils understands, e.g.
        ``gs://...``).
      fingerprint: the experiment's identity (:func:`regfac_jax.io_utils.fingerprint` of
        ``description``).
      num_samples: ``N``.
      gram_shape: ``(2R, d, d)``.
      per_sample: also keep every sample's Grams ``[N, 2R, d, d]`` (``N * 2R * d * d`` values of
        ``dtype``).
      dtype: dtype of the per-sample Grams and of :meth:`mean`.
      checkpoints: its ``save_interval_secs`` (:meth:`maybe_save` saves at most this often; 0: every
        call) and ``max_to_keep`` (checkpoints kept).
      description: optional description the fingerprint was made from; stored so that a refusal can
        name what differs.
      clock: seconds since an arbitrary origin (tests may replace it).

    Raises:
      io_utils.WorkdirConflict: ``workdir`` holds a checkpoint of another experiment (on process 0;
        the other processes raise RuntimeError pointing to process 0's log).
    """

    def __init__(
        self,
        workdir,
        fingerprint: str,
        *,
        num_samples: int,
        gram_shape: Sequence[int],
        per_sample: bool = False,
        dtype=np.float32,
        checkpoints: CheckpointOptions = DEFAULT_CHECKPOINTS,
        description: Mapping[str, Any] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        if int(num_samples) < 1:
            raise ValueError(f"num_samples must be >= 1; got {num_samples}.")
        self.workdir = str(workdir)
        self.fingerprint = str(fingerprint)
        self.num_samples = int(num_samples)
        self.gram_shape = tuple(int(s) for s in gram_shape)
        self.per_sample = bool(per_sample)
        self.dtype = np.dtype(dtype)
        self.save_interval_secs = float(checkpoints.save_interval_secs)
        self._meta = self._meta_record(description)
        self._clock = clock
        self._zero_state()
        self.saved_step: int | None = None
        self.restored_step: int | None = None
        self._mgr = (
            self._open_manager(int(checkpoints.max_to_keep)) if jax.process_index() == 0 else None
        )
        self._restore()
        self._last_save = clock()

    def _meta_record(self, description: Mapping[str, Any] | None) -> dict:
        """The JSON record stored beside each checkpoint, which a resume must match."""
        return {
            "format": FORMAT_VERSION,
            "fingerprint": self.fingerprint,
            "num_samples": self.num_samples,
            "gram_shape": list(self.gram_shape),
            "per_sample": self.per_sample,
            "dtype": self.dtype.name,
            "description": None if description is None else io_utils.canonical(description),
        }

    def _zero_state(self) -> None:
        """Starts the sums [2R, d, d], done flags [N] and per-sample Grams [N, 2R, d, d] at zero."""
        self.sums = np.zeros(self.gram_shape, np.float64)
        self.done = np.zeros(self.num_samples, bool)
        self.grams = (
            np.zeros((self.num_samples,) + self.gram_shape, self.dtype) if self.per_sample else None
        )

    # ---- checkpoint I/O (process 0 only) ---------------------------------------------------------
    def _open_manager(self, max_to_keep: int):
        import orbax.checkpoint as ocp
        from etils import epath

        path = epath.Path(self.workdir if "://" in self.workdir else os.path.abspath(self.workdir))
        path.mkdir(parents=True, exist_ok=True)  # orbax refuses create=True with active_processes
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep,
            create=False,
            enable_async_checkpointing=False,
            cleanup_tmp_directories=True,
            multiprocessing_options=ocp.options.MultiprocessingOptions(
                primary_host=0, active_processes={0}
            ),
        )
        return ocp.CheckpointManager(path, options=options, item_names=("state", "meta"))

    def _state(self) -> dict:
        state = {"sums": self.sums, "done": self.done}
        if self.per_sample:
            state["per_sample"] = self.grams
        return state

    def _check_meta(self, meta: Mapping[str, Any], step: int) -> None:
        keys = ("format", "fingerprint", "num_samples", "gram_shape", "per_sample", "dtype")
        if all(meta.get(k) == self._meta[k] for k in keys):
            return
        lines = io_utils.describe_differences(
            {k: v for k, v in meta.items() if k != "fingerprint"},
            {k: v for k, v in self._meta.items() if k != "fingerprint"},
        )
        raise io_utils.WorkdirConflict(
            f"{self.workdir} (checkpoint step {step}) holds a run with different settings "
            "(differences, stored -> "
            f"now: {'; '.join(lines) or 'none recorded'}). Use another directory, or delete this "
            "one to start over."
        )

    def _read_latest(self) -> dict | None:
        import orbax.checkpoint as ocp

        step = self._mgr.latest_step()
        if step is None:
            return None
        meta = self._mgr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta
        self._check_meta(meta, step)
        state = self._mgr.restore(
            step, args=ocp.args.Composite(state=ocp.args.StandardRestore())
        ).state
        want = self._state()
        for key, ref in want.items():
            got = np.asarray(state.get(key))
            if got.shape != ref.shape:
                raise io_utils.WorkdirConflict(
                    f"Checkpoint step {step} in {self.workdir} is damaged: {key} has shape "
                    f"{got.shape}, expected {ref.shape}. Delete the work directory."
                )
        self.restored_step = self.saved_step = int(step)
        return {k: np.asarray(state[k]).astype(want[k].dtype) for k in want}

    def _restore(self) -> None:
        """Process 0 reads the latest checkpoint; every process receives it (or process 0's
        refusal)."""
        state = distributed.on_primary(
            lambda: self._read_latest() if self._mgr is not None else None,
            f"read the checkpoints in {self.workdir}",
        )
        found = _broadcast({"found": np.array([state is not None], np.int32)})["found"][0]
        if found:
            state = _broadcast(state if state is not None else self._state())
            self.sums, self.done = state["sums"], state["done"]
            if self.per_sample:
                self.grams = state["per_sample"]
            self.restored_step = self.saved_step = int(self.done.sum())
            if jax.process_index() == 0:
                logs.report_resume(self.num_done, self.num_samples)

    def save(self) -> bool:
        """Writes a checkpoint now (process 0) if samples finished since the last one; True if one
        was written."""
        step = int(self.done.sum())
        self._last_save = self._clock()
        if step == 0 or step == self.saved_step:
            return False
        self.saved_step = step
        if self._mgr is None:
            return False
        import orbax.checkpoint as ocp

        args = ocp.args.Composite(
            state=ocp.args.StandardSave(self._state()), meta=ocp.args.JsonSave(self._meta)
        )
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

    # ---- accumulation ----------------------------------------------------------------------------
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
        """Adds the Grams of the samples ``indices``: their sum ``total [2R, d, d]`` and, when the
        accumulator keeps them, their own Grams ``per_sample [n, 2R, d, d]``.

        Raises:
          ValueError: wrong shapes, unknown or already finished samples (which would be counted
            twice).
        """
        idx = np.asarray(indices, np.int64).reshape(-1)
        if (
            idx.size == 0
            or idx.min() < 0
            or idx.max() >= self.num_samples
            or np.unique(idx).size != idx.size
        ):
            raise ValueError(
                f"indices must be distinct sample numbers in [0, {self.num_samples}); got {idx}."
            )
        if self.done[idx].any():
            raise ValueError(
                f"Samples {idx[self.done[idx]].tolist()} are already finished; adding them again "
                "would count them twice."
            )
        total = np.asarray(total)
        if total.shape != self.gram_shape:
            raise ValueError(f"total must have shape {self.gram_shape}; got {total.shape}.")
        if self.per_sample:
            want = (idx.size,) + self.gram_shape
            got = None if per_sample is None else np.shape(per_sample)
            if got != want:
                raise ValueError(
                    f"This accumulator keeps per-sample Grams: pass per_sample of shape {want}; "
                    f"got {got}."
                )
            self.grams[idx] = per_sample
        self.sums += total.astype(np.float64)
        self.done[idx] = True

    def mean(self) -> np.ndarray:
        """``[2R, d, d]`` mean over all samples, in ``dtype``.

        Raises:
          RuntimeError: samples are still missing.
        """
        if not self.finished:
            raise RuntimeError(
                f"Only {self.num_done} of {self.num_samples} samples are finished; "
                "run the remaining ones first (pending())."
            )
        return (self.sums / self.num_samples).astype(self.dtype)

    def per_sample_grams(self) -> np.ndarray:
        """``[N, 2R, d, d]`` (only with ``per_sample=True`` and all samples finished)."""
        if not self.per_sample:
            raise RuntimeError(
                "This accumulator was created with per_sample=False; it keeps only the sums."
            )
        if not self.finished:
            raise RuntimeError(f"Only {self.num_done} of {self.num_samples} samples are finished.")
        return self.grams


def _broadcast(tree: dict) -> dict:
    """Process 0's ``tree`` (numpy arrays) on every process, bit for bit (no float64 -> float32
    demotion)."""
    if jax.process_count() == 1:
        return tree
    from jax.experimental import multihost_utils

    as_words = {}
    for k, v in tree.items():
        raw = np.ascontiguousarray(v).reshape(-1).view(np.uint8)
        # JAX has no 64-bit types without x64
        as_words[k] = raw.view(np.uint32) if raw.size % 4 == 0 else raw
    out = multihost_utils.broadcast_one_to_all(as_words)
    return {
        k: np.asarray(out[k])
        .astype(as_words[k].dtype)
        .view(np.uint8)
        .view(v.dtype)
        .reshape(v.shape)
        for k, v in tree.items()
    }


#: Calls of the preemption sync point in this process. JAX's protocol picks "the largest step any
#: host reached, plus one" as the step to stop at, so the ids must grow by exactly one per call, and
#: every process makes the same calls (the same blocks), so the counters agree across hosts.
_SYNC_CALLS = itertools.count(1)


def _sync_point() -> bool:
    """True at a JAX preemption sync point (multi-process jobs; every process calls it after the
    same blocks)."""
    from jax.experimental import multihost_utils

    try:
        return bool(multihost_utils.reached_preemption_sync_point(next(_SYNC_CALLS)))
    except RuntimeError:  # preemption service disabled
        return False


@contextlib.contextmanager
def preemption_notice() -> Iterator[Callable[[], bool]]:
    """Yields ``notice() -> bool``: True once a preemption notice (SIGTERM) has arrived on any host.

    Every process must call ``notice`` after each block; all of them then see True after the same
    block. Multi-process jobs use JAX's preemption service (it catches SIGTERM itself); a single
    process installs a SIGTERM handler for the duration (main thread only) and restores the previous
    one on exit.
    """
    if jax.process_count() > 1:
        yield _sync_point
        return
    if threading.current_thread() is not threading.main_thread():
        yield lambda: False
        return
    received = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: received.append(signum))
    try:
        yield lambda: bool(received)
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


def describe_inputs(
    fn,
    latents,
    masks,
    options: jacobian.JacobianOptions = jacobian.DEFAULT_OPTIONS,
    *,
    per_sample: bool = False,
    config: Mapping[str, Any] | None = None,
) -> dict:
    """What determines the Grams of :func:`run_resumable`, for
    :func:`regfac_jax.io_utils.fingerprint`.

    Digests are computed here, once: ``generator`` is the SHA-256 of the arrays the functions share
    (the weights; about 0.15 s for 30M parameters), ``per_sample_args`` of the arrays that differ
    per sample (e.g. ``base_ws``). Of ``options`` only ``preprocess`` and a non-default
    ``precision`` count: ``tangent_chunk``, ``strategy``, ``memory_budget``, ``block``, the block
    size and the device count change the result only by round-off, so a resume may change them.

    Args:
      fn, latents, masks, options, per_sample: as in :func:`run_resumable`.
      config: the caller's other settings that determine the result (e.g. the solver's).

    Returns:
      A dict of strings, numbers and arrays (``latents``, ``masks`` are kept as arrays; the
      fingerprint hashes them).
    """
    preprocess = jacobian.check_options(options).preprocess
    name = preprocess
    if not (preprocess is None or isinstance(preprocess, str)):
        qualname = getattr(preprocess, "__qualname__", type(preprocess).__name__)
        name = f"{getattr(preprocess, '__module__', '?')}.{qualname}"
    latents = np.asarray(latents)
    split = distributed.split_functions(fn, 1 if latents.ndim == 1 else latents.shape[0])
    out = {
        io_utils.WEIGHTS_KEY: io_utils.tree_digest(list(split.shared)),
        "per_sample_args": io_utils.tree_digest(list(split.stacked)),
        "latents": latents,
        "masks": np.asarray(masks),
        "preprocess": name,
        "per_sample": bool(per_sample),
        "format": FORMAT_VERSION,
        "config": {} if config is None else config,
    }
    # only then: the fingerprints of default runs stay what they were
    if options.precision != "highest":
        out["precision"] = options.precision
    return out


def _progress(acc: ResumableGramAccumulator, total: int, computed: int, start: float) -> Progress:
    """Where ``acc`` stands, after ``computed`` samples this run, begun at ``start`` (monotonic)."""
    return Progress(acc.num_done, total, computed, acc.saved_step, time.monotonic() - start)


def _compute_pending(
    plan: distributed.GramPlan,
    acc: ResumableGramAccumulator,
    block: int,
    notice: Callable[[], bool],
    callback: Callable[[Progress], None] | None,
    start: float,
) -> None:
    """Computes the unfinished samples into ``acc`` block by block, saving as due and at a notice.

    Raises:
      Preempted: a notice arrived (on any host) before the last block; ``acc`` has been saved.
    """
    computed, pending = 0, acc.pending()
    for lo in range(0, pending.size, block):
        idx = pending[lo : lo + block]
        res = plan.block(idx, per_sample=acc.per_sample)
        acc.add(idx, res.total, res.per_sample)
        computed += idx.size
        preempted = notice()
        if preempted:
            acc.save()
        else:
            acc.maybe_save()
        if callback is not None:
            callback(_progress(acc, plan.num_samples, computed, start))
        if preempted and not acc.finished:
            raise Preempted(acc.num_done, plan.num_samples, acc.workdir)


def _agreed_fingerprint(description: Mapping[str, Any]) -> str:
    """The experiment's fingerprint, once every host has been checked to compute the same one."""
    fingerprint = io_utils.fingerprint(description)
    distributed.assert_hosts_agree(
        fingerprint, "experiment (config, generator weights, latents or masks)"
    )
    return fingerprint


def _final_grams(acc: ResumableGramAccumulator) -> np.ndarray:
    """Checks that the hosts finished the same samples, saves, -> mean (or per-sample) Grams."""
    distributed.assert_hosts_agree(
        io_utils.fingerprint({"done": acc.done}), "set of finished samples"
    )
    acc.save()
    return acc.per_sample_grams() if acc.per_sample else acc.mean()


def run_resumable(
    fn,
    latents,
    masks,
    workdir,
    options: jacobian.JacobianOptions = jacobian.DEFAULT_OPTIONS,
    *,
    description: Mapping[str, Any] | None = None,
    mesh=None,
    per_sample: bool = False,
    checkpoints: CheckpointOptions = DEFAULT_CHECKPOINTS,
):
    """Region Grams of many samples over a device mesh, checkpointed to ``workdir`` and resumed from
    it.

    Every process of a multi-host job calls this with the same arguments (``workdir`` is only used
    by process 0).

    Args:
      fn: generator function, or one per sample (see
        :func:`regfac_jax.distributed.sharded_region_grams`).
      latents: ``[N, d]``.
      masks: ``[R, H', W']`` or ``[H', W']``.
      workdir: checkpoint directory; re-running on it resumes. (Launchers put it inside a work
        directory claimed with :func:`regfac_jax.io_utils.claim_workdir`, which holds the lock.)
      options: the Jacobian settings, as in ``region_grams``.
      description: :func:`describe_inputs` of these inputs (with the caller's ``config``), whose
        fingerprint identifies the experiment; None: ``describe_inputs(fn, latents, masks, options,
        per_sample=per_sample)``.
      mesh: default ``make_mesh()`` (all devices of all processes).
      per_sample: return per-sample Grams (also kept in the checkpoints).
      checkpoints: block size, checkpoint interval, checkpoints kept and progress callback
        (:class:`CheckpointOptions`).

    Returns:
      ``(A, B)``: ``[R, d, d]`` each, the mean over samples (or ``[N, R, d, d]`` with
      ``per_sample``), on every process.

    Raises:
      io_utils.WorkdirConflict: ``workdir`` holds another experiment.
      RuntimeError: the hosts disagree on the experiment (names the processes).
      FloatingPointError: a sample's Jacobian is not finite (names it; earlier blocks stay
        checkpointed).
      Preempted: a SIGTERM arrived on some host; every host raises it after process 0 saved.
    """
    start = time.monotonic()
    if description is None:
        description = describe_inputs(fn, latents, masks, options, per_sample=per_sample)
    fingerprint = _agreed_fingerprint(description)
    plan = distributed.plan_grams(fn, latents, masks, options, mesh=mesh, pad=True)
    block = 4 * plan.mesh.size if checkpoints.block_size is None else int(checkpoints.block_size)
    with (
        ResumableGramAccumulator(
            workdir,
            fingerprint,
            num_samples=plan.num_samples,
            gram_shape=plan.gram_shape,
            per_sample=per_sample,
            dtype=plan.latents.dtype,
            checkpoints=checkpoints,
            description=description,
        ) as acc,
        preemption_notice() as notice,
    ):
        _compute_pending(plan, acc, block, notice, checkpoints.callback, start)
        grams = _final_grams(acc)
    return distributed.split_grams(grams, plan.num_regions)
