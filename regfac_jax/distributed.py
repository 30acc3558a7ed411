"""Region Grams over many devices and hosts, with JAX's own runtime (meshes, ``shard_map``,
``jax.distributed``).

Samples are split over a one-dimensional device mesh (:func:`make_mesh`; every device of every
process). Each device runs :func:`regfac_jax.jacobian.weighted_grams` on its own samples one after
the other (``lax.scan`` inside ``jax.shard_map``), adds them up, and one ``psum`` gives every device
the sum over all samples. Per-sample Grams stay sharded on the devices and are gathered to the hosts
only when ``per_sample=True``. The same code runs on one CPU, one GPU, the 8 cores of a TPU host or
a multi-host pod: only the mesh changes.

Uneven sample counts: ``N`` samples over ``D`` devices are padded to a multiple of ``D`` with copies
of the first sample, and every padding sample's Grams are replaced by exact zeros before the sum
(``jnp.where``, so even a non-finite padding result cannot leak in); the mean divides by the real
``N``. ``pad=False`` refuses instead.

Multi-host contract: every process calls the same functions with the same arguments (latents, masks
and generator are small enough to be identical on every host: build them from the same seed and
config). Each process hands only the rows of its own devices to JAX
(``jax.make_array_from_callback``), and every process gets the result. :func:`assert_hosts_agree`
checks that the hosts really run the same experiment before any work starts.

Per-sample functions: ``fn`` may also be a sequence of ``N`` functions with the same pytree
structure (for example ``generator.latent_fn('w', layers=..., base_ws=ws[i])`` for each sample
``i``, or BigGAN's per-class functions). Leaves that are the same object, or hold the same values,
in every function (the generator's weights) are sent to each device once; the other leaves
(``base_ws``, class embeddings) are stacked and split over the devices with their samples.

Nothing here reads or writes files; :mod:`regfac_jax.resumable` adds checkpoints.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import re
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from regfac_jax import jacobian, regions

SAMPLE_AXIS = "samples"
#: Largest total size of per-sample (non-shared) function leaves before we suspect duplicated
#: weights.
MAX_PER_SAMPLE_BYTES = 256 << 20


# --------------------------------------------------------------------------------------------------
# Runtime set-up
# --------------------------------------------------------------------------------------------------
def make_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A one-axis mesh (axis ``'samples'``) over ``devices`` (default: every device of every
    process).

    Args:
      devices: the devices to split samples over; None means ``jax.devices()`` (global, all hosts).

    Returns:
      ``jax.sharding.Mesh`` of shape ``[len(devices)]``.
    """
    devices = list(jax.devices() if devices is None else devices)
    if not devices:
        raise ValueError("make_mesh needs at least one device; got an empty list.")
    return Mesh(np.asarray(devices, dtype=object), (SAMPLE_AXIS,))


_COORDINATOR = re.compile(r"^\[?[A-Za-z0-9_.:-]+\]?:(\d{1,5})$")


def initialize_distributed(
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    cpu_collectives: str | None = "gloo",
    **kwargs: Any,
) -> None:
    """Validated ``jax.distributed.initialize``: call it first thing, before any other JAX call, on
    every host.

    On Cloud TPU pods, SLURM and other clusters JAX finds the coordinator itself: leave all three
    arguments None. Elsewhere (several GPU hosts, or several processes on one machine) give all
    three.

    Args:
      coordinator: ``'host:port'`` of process 0's coordination service (the same string on every
        host).
      num_processes: total number of processes (>= 1).
      process_id: this process's index in ``[0, num_processes)``.
      cpu_collectives: value for ``jax_cpu_collectives_implementation`` (CPU-only jobs need
        ``'gloo'`` or ``'mpi'`` for cross-process collectives; it does not affect TPU or GPU
        collectives). None leaves it as is.
      **kwargs: passed to ``jax.distributed.initialize`` (e.g. ``local_device_ids``,
        ``initialization_timeout``).

    It does not start JAX's backends, so settings such as ``jax_num_cpu_devices`` may still follow
    it.

    Raises:
      ValueError: only some of the three arguments given, a malformed coordinator, or an
        out-of-range id.
      RuntimeError: already initialised, or called after JAX started its backends.
    """
    manual = _manual_cluster(coordinator, num_processes, process_id)
    if jax.distributed.is_initialized():
        raise RuntimeError(
            "jax.distributed is already initialised in this process; call initialize_distributed "
            "once, at the start of the program."
        )
    if cpu_collectives is not None:
        jax.config.update("jax_cpu_collectives_implementation", cpu_collectives)
    if manual:
        jax.distributed.initialize(str(coordinator), int(num_processes), int(process_id), **kwargs)
    else:
        jax.distributed.initialize(**kwargs)


def _manual_cluster(
    coordinator: str | None, num_processes: int | None, process_id: int | None
) -> bool:
    """True when all three are given (and valid), False when none is (JAX detects the cluster).

    Raises:
      ValueError: only some given, a malformed coordinator, or an out-of-range id.
    """
    given = [v is not None for v in (coordinator, num_processes, process_id)]
    if any(given) and not all(given):
        raise ValueError(
            "Give all of coordinator, num_processes and process_id (a manual cluster) "
            "or none of them "
            f"(auto-detection on TPU pods / SLURM); got coordinator={coordinator!r}, "
            f"num_processes={num_processes!r}, process_id={process_id!r}."
        )
    if not all(given):
        return False
    match = _COORDINATOR.match(str(coordinator))
    if match is None or not 0 < int(match.group(1)) < 65536:
        raise ValueError(
            "coordinator must be 'host:port' with a port in 1..65535 (e.g. '10.0.0.2:1234'); "
            f"got {coordinator!r}."
        )
    if int(num_processes) < 1:
        raise ValueError(f"num_processes must be >= 1; got {num_processes}.")
    if not 0 <= int(process_id) < int(num_processes):
        raise ValueError(
            f"process_id must be in [0, {num_processes}); got {process_id}. Number the hosts "
            f"0..{int(num_processes) - 1}, with 0 on the coordinator's host."
        )
    return True


# --------------------------------------------------------------------------------------------------
# Agreement between hosts, and work that process 0 alone does
# --------------------------------------------------------------------------------------------------
def assert_hosts_agree(fingerprint: str, what: str = "configuration") -> None:
    """Checks that every process holds the same ``fingerprint`` (all-gathered over the processes).

    A no-op in a single process. Every process must call it (it is a collective).

    Raises:
      RuntimeError: naming the processes whose fingerprint differs from process 0's.
    """
    if jax.process_count() == 1:
        return
    mine = np.frombuffer(hashlib.sha256(str(fingerprint).encode()).digest(), np.int32)  # 8 words
    from jax.experimental import multihost_utils

    everyone = np.asarray(multihost_utils.process_allgather(mine))  # [processes, 8]
    bad = [p for p in range(everyone.shape[0]) if not np.array_equal(everyone[p], everyone[0])]
    if bad:
        tags = {p: everyone[p].tobytes().hex()[:12] for p in [0] + bad}
        raise RuntimeError(
            f"Hosts disagree on the {what}: process(es) {bad} hold(s) a different one than process "
            "0 (hash prefixes "
            f"{tags}). Launch every host with the same command, flags, config file and code "
            "version."
        )


def on_primary(fn: Callable[[], Any], what: str) -> Any:
    """Runs ``fn()`` on process 0 only and tells every process whether it succeeded (a collective).

    For work that touches shared state once per job (claiming the work directory, reading a
    checkpoint): either every process goes on, or every process raises, so none waits forever in a
    later collective.

    Args:
      fn: called with no arguments on process 0.
      what: what ``fn`` does, for the other processes' error message.

    Returns:
      ``fn()``'s value on process 0, None on the others.

    Raises:
      Whatever ``fn`` raised, on process 0; RuntimeError pointing to process 0's log on the others.
    """
    if jax.process_count() == 1:
        return fn()
    from jax.experimental import multihost_utils

    result, error = None, None
    if jax.process_index() == 0:
        try:
            result = fn()
        except BaseException as err:  # noqa: BLE001  (re-raised below, after telling the other processes)
            error = err
    failed = multihost_utils.broadcast_one_to_all(np.array([error is not None], np.int32))
    if error is not None:
        raise error
    if int(np.asarray(failed)[0]):
        raise RuntimeError(f"Process 0 failed to {what}; its log says why.")
    return result


# --------------------------------------------------------------------------------------------------
# Placing data on the mesh
# --------------------------------------------------------------------------------------------------
def _replicate(x, mesh: Mesh) -> jax.Array:
    """``x`` (identical on every host) as a global array replicated over ``mesh``."""
    target = NamedSharding(mesh, P())
    if isinstance(x, jax.Array) and x.sharding.is_equivalent_to(target, x.ndim):
        return x
    if jax.process_count() == 1 and isinstance(x, jax.Array):
        return jax.device_put(x, target)  # device to device, no host round trip
    host = np.asarray(x)
    return jax.make_array_from_callback(host.shape, target, lambda idx: host[idx])


def _shard_rows(x: np.ndarray, mesh: Mesh) -> jax.Array:
    """Host array ``[n, ...]`` (identical on every host) split by rows over the mesh; each process
    supplies only the rows of its own devices."""
    sharding = NamedSharding(mesh, P(mesh.axis_names))
    return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])


def _to_host(x: jax.Array) -> np.ndarray:
    """A sharded global array as a full numpy array on every host (an all-gather across
    processes)."""
    if x.is_fully_addressable:
        return np.asarray(x)
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


# --------------------------------------------------------------------------------------------------
# Per-sample functions
# --------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class SplitFunctions:
    """One function, or ``N`` per-sample functions of one structure, split into shared and
    per-sample leaves.

    A pytree whose leaves are ``shared`` and ``stacked`` (traced by jit); ``treedef`` and
    ``varying`` are static.

    Attributes:
      treedef: the functions' common structure (of their ``jax.tree_util.Partial`` form).
      varying: per leaf position, whether it differs between the functions.
      shared: the leaves that do not differ (the generator's weights), in leaf order.
      stacked: the leaves that differ, each stacked over the samples ``[N, ...]`` (empty for one
        function).
    """

    treedef: Any
    varying: tuple[bool, ...]
    shared: tuple
    stacked: tuple

    def function(self, own: Sequence) -> Callable:
        """One sample's function, from its own leaves ``own`` (one per ``stacked`` entry)."""
        shared, own = iter(self.shared), iter(own)
        leaves = [next(own) if v else next(shared) for v in self.varying]
        return jax.tree_util.tree_unflatten(self.treedef, leaves)


jax.tree_util.register_dataclass(
    SplitFunctions, data_fields=["shared", "stacked"], meta_fields=["treedef", "varying"]
)


def _differs(column) -> bool:
    """Whether one leaf position holds different values across the per-sample functions (the same
    object in every function is shared without looking at its values)."""
    if all(leaf is column[0] for leaf in column):
        return False
    first = np.asarray(column[0])
    return any(not np.array_equal(np.asarray(leaf), first) for leaf in column[1:])


def _common_structure(fns: list) -> tuple[list, Any]:
    """Every function's leaves and their one treedef (a ValueError names one that differs)."""
    flat = [jax.tree_util.tree_flatten(f) for f in fns]
    treedef = flat[0][1]
    for i, (_, td) in enumerate(flat):
        if td != treedef:
            raise ValueError(
                f"Per-sample function {i} has a different structure than function 0 ({td} vs "
                f"{treedef}); build them all with the same call (e.g. latent_fn with "
                "the same space)."
            )
    return [leaves for leaves, _ in flat], treedef


def split_functions(fn: Callable | Sequence[Callable], n: int) -> SplitFunctions:
    """Splits one function, or ``n`` per-sample functions, into shared and stacked leaves.

    Args:
      fn: a generator function, or a sequence of ``n`` of them with one structure (module
        docstring).
      n: the number of samples (latents).

    Raises:
      ValueError: not ``n`` functions, functions of different structures, or per-sample leaves so
        large that the weights are probably copied per sample.
    """
    if callable(fn):
        leaves, treedef = jax.tree_util.tree_flatten(jacobian.as_partial(fn))
        return SplitFunctions(treedef, (False,) * len(leaves), tuple(leaves), ())
    fns = [jacobian.as_partial(f) for f in fn]
    if len(fns) != n:
        raise ValueError(
            f"Got {len(fns)} per-sample functions for {n} latents; give one function "
            "per latent, or a single function shared by all."
        )
    all_leaves, treedef = _common_structure(fns)
    # every function has the treedef's number of leaves
    columns = list(zip(*all_leaves, strict=True))
    varying = tuple(_differs(col) for col in columns)
    shared = tuple(col[0] for col, v in zip(columns, varying, strict=True) if not v)
    stacked = tuple(
        np.stack([np.asarray(leaf) for leaf in col])
        for col, v in zip(columns, varying, strict=True)
        if v
    )
    size = sum(s.nbytes for s in stacked)
    if size > MAX_PER_SAMPLE_BYTES:
        raise ValueError(
            f"The per-sample functions differ in {size / 2**20:.0f} MiB of arrays, more than "
            f"{MAX_PER_SAMPLE_BYTES >> 20} MiB: the weights are probably copied per "
            "sample. Build all "
            "functions from one generator object so its weights are shared (the same arrays)."
        )
    return SplitFunctions(treedef, varying, shared, stacked)


# --------------------------------------------------------------------------------------------------
# The sharded kernel
# --------------------------------------------------------------------------------------------------
@functools.partial(jax.jit, static_argnames=("mesh", "options", "per_sample"))
def _block_kernel(
    functions: SplitFunctions,
    weights,
    latents,
    valid,
    *,
    mesh: Mesh,
    options: jacobian.JacobianOptions,
    per_sample: bool,
):
    """Sum of ``weighted_grams`` over the valid rows of ``latents`` (sharded over ``mesh``, as are
    the rows of ``functions.stacked``), plus per-row finite flags and, with ``per_sample``, the
    per-row Grams (still sharded)."""
    axes = mesh.axis_names

    def local(shared, stacked, weights, lat, val):
        here = dataclasses.replace(functions, shared=tuple(shared), stacked=())

        def body(total, xs):
            z, v, own = xs
            g = jacobian.weighted_grams(here.function(own), z, weights, options)
            ok = jnp.logical_or(jnp.all(jnp.isfinite(g)), jnp.logical_not(v))
            g = jnp.where(v, g, jnp.zeros_like(g))  # padding rows contribute exact zeros
            return total + g, (ok, g) if per_sample else (ok,)

        zero = jnp.zeros((weights.shape[0], lat.shape[1], lat.shape[1]), lat.dtype)
        total, ys = jax.lax.scan(body, zero, (lat, val, stacked))
        return (jax.lax.psum(total, axes),) + ys

    out_specs = (P(), P(axes), P(axes)) if per_sample else (P(), P(axes))
    # check_vma=False: weighted_grams pairs device-varying latents with replicated tangent bases,
    # which the varying-manual-axes type check would reject although the computation is purely per
    # device.
    run = jax.shard_map(
        local,
        mesh=mesh,
        in_specs=(P(), P(axes), P(), P(axes), P(axes)),
        out_specs=out_specs,
        check_vma=False,
    )
    return run(functions.shared, functions.stacked, weights, latents, valid)


@dataclasses.dataclass(frozen=True)
class BlockResult:
    """Grams of one block of samples, on the host.

    Attributes:
      total: ``[2R, d, d]`` sum over the block's samples (foreground rows first, then background
        rows).
      per_sample: ``[n, 2R, d, d]`` or None.
    """

    total: np.ndarray
    per_sample: np.ndarray | None


@dataclasses.dataclass(frozen=True, eq=False)
class GramPlan:
    """What computes the Grams of any subset of the samples on a mesh (see :func:`plan_grams`).

    Attributes:
      mesh: the device mesh the samples are split over.
      latents: ``[N, d]`` host copy, identical on every host.
      weights: ``[2R, P]`` region row weights, replicated over the mesh.
      functions: the generator function(s); ``shared`` replicated over the mesh, ``stacked`` on the
        host.
      num_regions: ``R``.
      options: the Jacobian settings with a concrete strategy ('auto' resolved).
      pad: pad sample counts that do not divide over the devices.
    """

    mesh: Mesh
    latents: np.ndarray
    weights: jax.Array
    functions: SplitFunctions
    num_regions: int
    options: jacobian.JacobianOptions
    pad: bool

    @property
    def num_samples(self) -> int:
        return self.latents.shape[0]

    @property
    def dim(self) -> int:
        return self.latents.shape[1]

    @property
    def gram_shape(self) -> tuple[int, int, int]:
        return (2 * self.num_regions, self.dim, self.dim)

    def _rows(self, idx: np.ndarray) -> np.ndarray:
        """``idx`` padded with copies of its first sample to a multiple of the device count."""
        n, n_dev = idx.size, self.mesh.size
        n_pad = -(-n // n_dev) * n_dev
        if n_pad != n and not self.pad:
            raise ValueError(
                f"{n} samples do not divide over {n_dev} devices. Use a multiple of "
                f"{n_dev} samples "
                f"(e.g. {n_pad}), or pad=True, which adds {n_pad - n} padding samples "
                "whose Grams are masked out exactly (at the cost of their compute)."
            )
        return np.concatenate([idx, np.full(n_pad - n, idx[0])])

    def block(self, indices, per_sample: bool = False) -> BlockResult:
        """Grams of the samples ``indices`` (sample numbers in ``[0, N)``), summed, and per sample
        if asked.

        Raises:
          ValueError: empty or out-of-range indices, or ``pad=False`` with a count that does not
            divide.
          FloatingPointError: naming the samples whose Grams are not finite.
        """
        idx = np.asarray(indices, np.int64).reshape(-1)
        if idx.size == 0 or idx.min() < 0 or idx.max() >= self.num_samples:
            raise ValueError(
                f"Sample indices must be a non-empty subset of [0, {self.num_samples}); got {idx}."
            )
        n, rows = idx.size, self._rows(idx)
        functions = dataclasses.replace(
            self.functions,
            stacked=tuple(_shard_rows(s[rows], self.mesh) for s in self.functions.stacked),
        )
        outs = _block_kernel(
            functions,
            self.weights,
            _shard_rows(self.latents[rows], self.mesh),
            _shard_rows(np.arange(rows.size) < n, self.mesh),
            mesh=self.mesh,
            options=self.options,
            per_sample=per_sample,
        )
        ok = _to_host(outs[1])[:n]
        if not ok.all():
            bad = idx[~ok].tolist()
            raise FloatingPointError(
                f"Samples {bad} (of {self.num_samples}): the Jacobian holds NaN or inf; check "
                "those latents and the generator's weights for non-finite values."
            )
        total = np.asarray(outs[0].addressable_data(0))
        per = _to_host(outs[2])[:n] if per_sample else None
        return BlockResult(total, per)


def _host_latents(latents) -> np.ndarray:
    """``[N, d]`` (a ``[d]`` becomes one row) in JAX's canonical dtype (float32 unless x64)."""
    lat = np.asarray(latents)
    if lat.ndim == 1:
        lat = lat[None]
    if lat.ndim != 2 or lat.shape[0] == 0:
        raise ValueError(f"latents must be [N, d] with N >= 1; got shape {lat.shape}.")
    return np.ascontiguousarray(lat, dtype=jnp.asarray(lat[:1]).dtype)


def plan_grams(
    fn,
    latents,
    masks,
    options: jacobian.JacobianOptions = jacobian.DEFAULT_OPTIONS,
    *,
    mesh: Mesh | None = None,
    pad: bool = True,
) -> GramPlan:
    """Validates the inputs once, resolves strategy 'auto', and places the generator and region
    weights on every device.

    Args: as :func:`sharded_region_grams`.

    Returns:
      A :class:`GramPlan`; ``plan.block(indices)`` computes any subset of the samples.
    """
    lat, options = _host_latents(latents), jacobian.check_options(options)
    mesh = make_mesh() if mesh is None else mesh
    functions = split_functions(fn, lat.shape[0])
    probe = functions.function([s[0] for s in functions.stacked])
    h, w, c = jacobian.output_shape(probe, lat[0], options.preprocess)
    m = regions.validate_masks(masks, (h, w))
    host_weights = np.asarray(jacobian.mask_weights(m, c), lat.dtype)
    if options.strategy == jacobian.AUTO:
        options = _auto_strategy(probe, lat[0], host_weights, options)
    shared = tuple(_replicate(x, mesh) for x in functions.shared)
    return GramPlan(
        mesh=mesh,
        latents=lat,
        weights=_replicate(host_weights, mesh),
        functions=dataclasses.replace(functions, shared=shared),
        num_regions=m.shape[0],
        options=options,
        pad=bool(pad),
    )


# Below this share of the memory budget the Jacobian is materialised without asking XLA: planning
# compiles the per-sample kernel once more, which costs more than it saves on small images (the
# fixtures, the demo model).
_SMALL_SHARE = 1 / 64


def _auto_strategy(
    fn, latent, weights, options: jacobian.JacobianOptions
) -> jacobian.JacobianOptions:
    """``options`` with the strategy, chunk and block of one sample's kernel:
    :func:`jacobian.plan_grams` (XLA's memory analysis against the device limit) unless the Jacobian
    is tiny next to the budget."""
    d, rows = latent.shape[0], weights.shape[1]
    limit = jacobian.memory_limit(options.memory_budget)
    if 2 * d * rows * weights.dtype.itemsize <= _SMALL_SHARE * limit:
        return dataclasses.replace(options, strategy="materialize", block=None)
    plan = jacobian.plan_grams(fn, latent, weights, options)
    return dataclasses.replace(
        options, strategy=plan.strategy, tangent_chunk=plan.tangent_chunk, block=plan.block
    )


def split_grams(grams: np.ndarray, num_regions: int) -> tuple[jax.Array, jax.Array]:
    """``[..., 2R, d, d]`` (foreground rows then background rows) -> ``(A, B)``, each
    ``[..., R, d, d]``."""
    g = jnp.asarray(grams)
    return g[..., :num_regions, :, :], g[..., num_regions:, :, :]


def sharded_region_grams(
    fn: Callable | Sequence[Callable],
    latents,
    masks,
    options: jacobian.JacobianOptions = jacobian.DEFAULT_OPTIONS,
    *,
    mesh: Mesh | None = None,
    per_sample: bool = False,
    pad: bool = True,
):
    """:func:`regfac_jax.jacobian.region_grams` with the samples split over a device mesh.

    Args:
      fn: pure ``g(latent [d]) -> image [H, W, C]`` (a generator's ``latent_fn``), or a sequence of
        ``N`` such functions of one structure, one per sample (module docstring).
      latents: ``[N, d]`` (or ``[d]``), identical on every host.
      masks: ``[R, H', W']`` or ``[H', W']`` at the (preprocessed) image resolution, values in [0,
        1].
      options: the Jacobian settings, as in ``region_grams``.
      mesh: from :func:`make_mesh` (default: all devices of all processes).
      per_sample: also gather the per-sample Grams to the hosts.
      pad: pad a sample count that does not divide over the devices (padding masked out exactly);
        False raises.

    Returns:
      ``(A, B)``: ``[R, d, d]`` each, the mean over the ``N`` samples (or ``[N, R, d, d]`` with
      ``per_sample``), in the latents' dtype, on every process.

    Raises:
      ValueError / regions.RegionError: bad latents, masks, functions or (with ``pad=False``) sample
      counts.
      FloatingPointError: some sample's Jacobian is not finite (the message names the samples).
    """
    plan = plan_grams(fn, latents, masks, options, mesh=mesh, pad=pad)
    res = plan.block(np.arange(plan.num_samples), per_sample=per_sample)
    if per_sample:
        return split_grams(res.per_sample, plan.num_regions)
    mean = (res.total.astype(np.float64) / plan.num_samples).astype(plan.latents.dtype)
    return split_grams(mean, plan.num_regions)
