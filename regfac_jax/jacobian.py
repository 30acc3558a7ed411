"""Image Jacobians by forward mode, and the per-region Gram matrices ReSeFa needs.

For a generator ``g(latent [d]) -> image [H, W, C]`` the Jacobian has ``P = H * W * C`` rows and
``d`` columns; with few inputs and many outputs forward mode is the right tool: one Jacobian-vector
product per latent direction, batched over tangents with ``vmap``. ``jax.linearize`` runs the primal
pass once per sample and keeps its residuals, so every tangent chunk only pays for the linear part.

For region masks ``m_r`` (``[R, H, W]``, soft or binary) the Grams are, per sample,

    A_r = sum_p m_p J_p J_p^T / sum_p m_p        B_r = sum_p (1 - m_p) J_p J_p^T / sum_p (1 - m_p)

with ``p`` running over pixels *and channels* (a mask value applies to every channel of its pixel),
i.e. the paper code's normalisation by the number of Jacobian rows in the region. One linearisation
serves every region.

Memory strategy (:attr:`JacobianOptions.strategy`):

* ``'materialize'``: ``jax.linearize`` once, then the Jacobian ``[d, P]`` is assembled from tangent
  chunks of ``tangent_chunk`` columns and each Gram is one matrix product. Peak: the linearisation's
  stored residuals plus about ``2 * d * P`` floats.
* ``'blocked'``: never stores a linearisation. Tangent block i (``block`` tangents, ``U_i = J V_i``
  ``[b, P]``) is materialised by ``jax.jvp`` per chunk (the primal recomputed, unbatched, with every
  chunk); its diagonal Gram block comes from itself and the blocks to its right from the later
  chunks, recomputed one chunk at a time. Peak: one block plus one chunk's forward pass; cost
  ``(n_blocks + 1) / 2`` forward Jacobians (plus one primal per chunk). With ``block = d`` (the
  default) it is 'materialize' without the residuals.
* ``'transpose'``: never holds the Jacobian. For each tangent chunk ``V`` (``[k, d]``) it forms
  ``U = J V`` by forward mode, then the Gram columns ``J^T (w_r * U)`` by transposing the same
  linearisation (reverse mode through the stored residuals). Peak: the residuals plus
  ``O(k * P * M)`` floats; cost about one reverse pass per weight row per chunk on top of the
  forward ones.
* ``'auto'`` (default): :func:`plan_grams` compiles candidate configurations (strategy, chunk,
  block), cheapest first by a simple cost model, and keeps the first whose peak by XLA's own
  compiled memory analysis fits the device's memory limit (``memory_stats()['bytes_limit']`` where
  the backend reports it, else ``memory_budget``). At 1024x1024x3, d = 512, 3 regions and 8 GiB it
  picks 'blocked' for StyleGAN2 config-f (chunk 4, block 256: 7.0 GiB, where 'transpose' with chunk
  64 needs over 200 GiB) and StyleGAN3-R (chunk 1, block 171: 7.8 GiB); see
  ``tests/test_jacobian.py::test_auto_plan_fits_8gib_at_1024`` and the README.

Preprocessing (:attr:`JacobianOptions.preprocess`): None (per-channel Jacobian of the raw image),
``'official'`` (the paper's code: images larger than 256 are resized to 256 by nearest neighbour and
their channels summed; smaller ones are used as they are), or any callable
``[H, W, C] -> [H', W', C']``.

Every function on the Gram path (:func:`region_grams`, :func:`plan_grams`, :func:`weighted_grams`,
the sharded and resumable ones in :mod:`regfac_jax.distributed` and :mod:`regfac_jax.resumable`)
takes these settings as one frozen :class:`JacobianOptions`, built once (by the launchers from
``cfg.jacobian``: :meth:`JacobianOptions.from_config`).
"""

from __future__ import annotations

import dataclasses
import functools
import operator
from typing import Any, Callable, Literal

import jax
import jax.numpy as jnp
import numpy as np
from jax.tree_util import Partial

from regfac_jax import regions
from regfac_jax.ops import precision as ops_precision

Preprocess = None | Literal["official"] | Callable[[jax.Array], jax.Array]
HIGHEST = jax.lax.Precision.HIGHEST
STRATEGIES = ("materialize", "transpose", "blocked")
AUTO = "auto"
PRECISIONS = ops_precision.NAMES


def _precision(name: str) -> jax.lax.Precision:
    if name not in PRECISIONS:
        raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {name!r}.")
    return PRECISIONS[name]


def _whole(field: str, value: Any, minimum: int, none_means: str | None = None) -> int | None:
    """``value`` as an int >= ``minimum`` (None passes where ``none_means`` explains it)."""
    if value is None and none_means is not None:
        return None
    unset = f", or None for {none_means}" if none_means is not None else ""
    try:
        # ints and numpy ints, not 2.0
        number = None if isinstance(value, bool) else operator.index(value)
    except TypeError:
        number = None
    if number is None or number < minimum:
        raise ValueError(
            f"JacobianOptions.{field} must be an integer >= {minimum}{unset}; got {value!r}."
        )
    return number


@dataclasses.dataclass(frozen=True)
class JacobianOptions:
    """How the Gram matrices are computed: one frozen object, built once and passed down.

    Equal options hash equal, so the jitted kernels take the object as a static argument and a
    second call with equal options reuses the compiled kernel (a callable ``preprocess`` compares by
    identity: reuse the same one).

    Attributes:
      tangent_chunk: tangents per batched JVP: the memory/speed knob (under 'auto': the largest
        chunk tried).
      preprocess: None, 'official' or a callable ``[H, W, C] -> [H', W', C']`` (module docstring).
      strategy: 'auto' (XLA's memory analysis picks strategy, chunk and block; :func:`plan_grams`),
        'blocked', 'materialize' or 'transpose' (module docstring).
      memory_budget: bytes one sample's kernel may take under 'auto' where the device reports no
        memory limit (CPU); None: :data:`DEFAULT_BUDGET` (8 GiB). See :func:`memory_limit`.
      block: tangent block of 'blocked', rounded up to whole chunks (None: all ``d``, i.e. the whole
        Jacobian at once).
      precision: 'highest' (float32 everywhere, the default) or 'default' (the backend's fast matmul
        passes, TF32/bf16 on GPU/TPU; identical on CPU) for the Gram products and unpinned generator
        matmuls.

    Raises:
      ValueError: a field outside its allowed values (the message names the field and what it
        takes).
    """

    tangent_chunk: int = 64
    preprocess: Preprocess = None
    strategy: str = AUTO
    memory_budget: int | None = None
    block: int | None = None
    precision: str = "highest"

    def __post_init__(self):
        object.__setattr__(self, "tangent_chunk", _whole("tangent_chunk", self.tangent_chunk, 1))
        object.__setattr__(self, "block", _whole("block", self.block, 1, "all d"))
        object.__setattr__(
            self,
            "memory_budget",
            _whole("memory_budget", self.memory_budget, 1, "the device's limit or 8 GiB"),
        )
        if self.strategy not in (AUTO,) + STRATEGIES:
            raise ValueError(
                f"JacobianOptions.strategy must be {AUTO!r} or one of {STRATEGIES}, got "
                f"{self.strategy!r}."
            )
        if not isinstance(self.precision, str) or self.precision not in PRECISIONS:
            raise ValueError(
                f"JacobianOptions.precision must be one of {sorted(PRECISIONS)}, got "
                f"{self.precision!r}."
            )
        if not (
            self.preprocess is None
            or callable(self.preprocess)
            or (isinstance(self.preprocess, str) and self.preprocess == "official")
        ):
            raise ValueError(
                "JacobianOptions.preprocess must be None, 'official' or a callable [H, W, C] -> "
                f"[H', W', C']; got {self.preprocess!r}."
            )

    @classmethod
    def from_config(cls, cfg_jacobian) -> JacobianOptions:
        """The options of a launcher config's ``jacobian`` section (``experiments/configs``).

        Reads ``tangent_chunk``, ``preprocess`` ('none' means None), ``strategy``,
        ``memory_budget_gib`` (GiB; None: the default) and, where the section has them, ``block``
        and ``precision``.

        Args:
          cfg_jacobian: an ``ml_collections.ConfigDict`` (or any mapping with ``get``).

        Raises:
          ValueError: a setting outside its allowed values (from :class:`JacobianOptions`).
        """
        kwargs = {
            k: cfg_jacobian[k]
            for k in ("tangent_chunk", "strategy", "block", "precision")
            if k in cfg_jacobian
        }  # a missing one keeps its default
        if cfg_jacobian.get("preprocess") is not None:
            kwargs["preprocess"] = (
                None if cfg_jacobian["preprocess"] == "none" else cfg_jacobian["preprocess"]
            )
        if cfg_jacobian.get("memory_budget_gib") is not None:
            kwargs["memory_budget"] = int(float(cfg_jacobian["memory_budget_gib"]) * 2**30)
        return cls(**kwargs)


#: The default settings (every field at its default); the default argument of every Gram-path
#: function.
DEFAULT_OPTIONS = JacobianOptions()


def check_options(options: Any) -> JacobianOptions:
    """``options``, checked to be a :class:`JacobianOptions` (the Gram path takes no loose
    settings).

    Raises:
      TypeError: anything else, with the way to build one.
    """
    if not isinstance(options, JacobianOptions):
        raise TypeError(
            "options must be a jacobian.JacobianOptions (e.g. JacobianOptions(tangent_chunk=16, "
            f"strategy='blocked')); got {type(options).__name__} {options!r}."
        )
    return options


# --------------------------------------------------------------------------------------------------
# Preprocessing
# --------------------------------------------------------------------------------------------------
def official_preprocess(image: jax.Array, size: int = 256) -> jax.Array:
    """The paper code's reduction: ``[H, W, C]`` larger than ``size`` -> nearest resize to ``size``,
    channels summed (``[size, size, 1]``); images of ``size`` or less are returned unchanged."""
    h, w, _ = image.shape
    if h <= size and w <= size:
        return image
    # nearest neighbour, as torch's default interpolate picks it
    rows = (jnp.arange(size) * h) // size
    cols = (jnp.arange(size) * w) // size
    return jnp.sum(image[rows][:, cols], axis=-1, keepdims=True)


def _apply_preprocess(image, preprocess: Preprocess):
    if preprocess is None:
        return image
    if preprocess == "official":
        return official_preprocess(image)
    if callable(preprocess):
        return preprocess(image)
    raise ValueError(f"preprocess must be None, 'official' or a callable; got {preprocess!r}.")


def as_partial(fn: Callable) -> Partial:
    """``fn`` as a ``jax.tree_util.Partial``, so that it can be passed *into* jit.

    A Partial is a pytree: its bound arrays (a generator's weights) become traced arguments of the
    compiled kernels instead of constants baked into them. A Partial is returned as it is.
    """
    return fn if isinstance(fn, Partial) else Partial(fn)


def output_shape(fn, latent, preprocess: Preprocess = None) -> tuple[int, ...]:
    """Shape of ``preprocess(fn(latent))``, checked to be an image ``[H, W, C]``, without running
    the generator."""
    latent = jnp.asarray(latent)
    if latent.ndim != 1:
        raise ValueError(f"A single latent must be a vector [d]; got shape {latent.shape}.")
    try:
        out = jax.eval_shape(lambda x: _apply_preprocess(fn(x), preprocess), latent)
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"The generator function rejected a latent of shape {latent.shape} ({err}). Check the "
            "latent dimension against the generator's latent_dim and the chosen latent space."
        ) from err
    if len(out.shape) != 3:
        raise ValueError(
            "The generator function must return one image [H, W, C]; it returned "
            f"shape {out.shape}."
        )
    return tuple(out.shape)


# --------------------------------------------------------------------------------------------------
# Kernels (jitted; the generator arrives as a Partial pytree so its weights are arguments, not
# constants)
# --------------------------------------------------------------------------------------------------
def _tangent_basis(d: int, chunk: int, dtype, chunks_per_block: int = 1):
    """One-hot tangents ``[n, k, d]``, padded with zero rows to a whole number of blocks of
    chunks."""
    k = max(1, min(chunk, d))
    n = -(-d // k)
    n = -(-n // chunks_per_block) * chunks_per_block
    return jnp.eye(n * k, d, dtype=dtype).reshape(n, k, d), n * k


def _flat(fn, preprocess):
    return lambda x: _apply_preprocess(fn(x), preprocess).reshape(-1)


def _linearized(fn, latent, preprocess):
    return jax.linearize(_flat(fn, preprocess), latent)


def _jvp_chunk(fn, latent, preprocess):
    """``V [k, d] -> J V [k, P]`` by ``jax.jvp``: the primal is recomputed (unbatched) per call,
    nothing is stored."""
    flat = _flat(fn, preprocess)
    return jax.vmap(lambda v: jax.jvp(flat, (latent,), (v,))[1])


@functools.partial(jax.jit, static_argnames=("tangent_chunk", "preprocess"))
def _jacobian_rows(fn, latent, tangent_chunk: int, preprocess):
    """``J^T`` as ``[d, P]`` from chunks of ``tangent_chunk`` JVPs."""
    _, f_jvp = _linearized(fn, latent, preprocess)
    basis, d_pad = _tangent_basis(latent.shape[0], tangent_chunk, latent.dtype)
    rows = jax.lax.map(jax.vmap(f_jvp), basis)  # [n_chunks, k, P]
    return rows.reshape(d_pad, -1)[: latent.shape[0]]


def _cross(u_block, u_chunk, weights, precision):
    """``[M, b, k]``: ``U_block diag(w_m) U_chunk^T`` for every weight row, never forming
    ``w_m * U_block``."""
    return jnp.einsum(
        "bp,mkp->mbk", u_block, weights[:, None, :] * u_chunk[None], precision=precision
    )


def _blocked(chunk_jvp, basis, weights, chunks_per_block: int, precision):
    """Upper block triangle of every ``J^T diag(w_m) J`` (diagonal blocks halved),
    ``[M, d_pad, d_pad]``.

    Tangent block i (``b = chunks_per_block * k`` tangents) is materialised, ``U_i`` ``[b, P]``; its
    diagonal Gram block comes from its own chunks, and the blocks to its right from the later
    tangent chunks, recomputed by forward mode one chunk at a time (``lax.cond`` skips the earlier
    ones). Cost: ``(n_blocks + 1) / 2`` forward Jacobians; memory: one block plus one chunk's
    forward pass.
    """
    n, k, d = basis.shape
    n_blocks, b = n // chunks_per_block, chunks_per_block * k
    blocks = basis.reshape(n_blocks, chunks_per_block, k, d)
    m = weights.shape[0]

    def strip(i):
        u = jax.lax.map(chunk_jvp, blocks[i]).reshape(b, -1)  # [b, P]
        diag = jax.lax.map(
            lambda uc: _cross(u, uc, weights, precision), u.reshape(chunks_per_block, k, -1)
        )
        diag = jnp.moveaxis(diag, 0, 2).reshape(m, b, b)
        if n_blocks == 1:
            return 0.5 * diag

        def right(j):
            def later():  # a chunk right of the diagonal block: its cross terms
                return _cross(u, chunk_jvp(basis[j]), weights, precision)

            def earlier():  # left of the diagonal: the lower triangle, filled in by symmetry
                return jnp.zeros((m, b, k), u.dtype)

            return jax.lax.cond(j >= (i + 1) * chunks_per_block, later, earlier)

        off = jnp.moveaxis(jax.lax.map(right, jnp.arange(n)), 0, 2).reshape(m, b, n * k)
        return jax.lax.dynamic_update_slice(off, 0.5 * diag, (0, 0, i * b))

    upper = jax.lax.map(strip, jnp.arange(n_blocks))  # [n_blocks, M, b, d_pad]
    upper = jnp.moveaxis(upper, 1, 0).reshape(m, n * k, n * k)
    return upper + jnp.swapaxes(upper, -1, -2)


def _blocked_grams(fn, latent, weights, options: JacobianOptions):
    """'blocked': ``[M, d, d]`` (not yet symmetric) from tangent blocks recomputed by jax.jvp."""
    d = latent.shape[0]
    k = max(1, min(options.tangent_chunk, d))
    per_block = -(-min(options.block or d, d) // k)
    basis, _ = _tangent_basis(d, k, latent.dtype, per_block)
    chunk_jvp = _jvp_chunk(fn, latent, options.preprocess)
    return _blocked(chunk_jvp, basis, weights, per_block, _precision(options.precision))[:, :d, :d]


def _materialized_grams(f_jvp, latent, weights, basis, precision):
    """'materialize': the Jacobian ``[d, P]`` from tangent chunks, one product per weight row."""
    d = latent.shape[0]
    # [d, P]
    jt = jax.lax.map(jax.vmap(f_jvp), basis).reshape(basis.shape[0] * basis.shape[1], -1)[:d]
    return jax.lax.map(lambda w: jnp.matmul(jt * w, jt.T, precision=precision), weights)


def _transposed_grams(f_jvp, latent, weights, basis):
    """'transpose': Gram columns ``J^T (w_m * J v)`` per tangent chunk, by linear transposition."""
    d = latent.shape[0]
    f_vjp = jax.linear_transpose(f_jvp, latent)

    def pull(u):  # [P] -> [d]
        return f_vjp(u)[0]

    def chunk_columns(v):  # v [k, d] -> [M, k, d]: columns of every G_m for these tangents
        u = jax.vmap(f_jvp)(v)  # [k, P]
        return jax.vmap(lambda w: jax.vmap(pull)(u * w))(weights)

    cols = jax.lax.map(chunk_columns, basis)  # [n_chunks, M, k, d]
    return jnp.moveaxis(cols, 1, 0).reshape(weights.shape[0], -1, d)[:, :d]


@functools.partial(jax.jit, static_argnames=("options",))
def weighted_grams(fn, latent, weights, options: JacobianOptions):
    """``G_m = J^T diag(weights_m) J`` for every row of ``weights`` ``[M, P]`` -> ``[M, d, d]``.

    Args:
      fn: the generator function, as a ``jax.tree_util.Partial`` (:func:`as_partial`).
      latent: ``[d]``.
      weights: ``[M, P]`` row weights (:func:`mask_weights`).
      options: static; its strategy must be concrete ('materialize', 'transpose' or 'blocked'), as
        :func:`plan_grams` resolves 'auto'. Its precision also applies to generator matmuls that do
        not pin their own.

    Returns:
      ``[M, d, d]``, symmetric.
    """
    if check_options(options).strategy not in STRATEGIES:
        raise ValueError(
            f"weighted_grams runs one concrete strategy, one of {STRATEGIES}; got "
            f"{options.strategy!r}. Let region_grams or plan_grams resolve 'auto'."
        )
    with ops_precision.use(options.precision):
        if options.strategy == "blocked":
            grams = _blocked_grams(fn, latent, weights, options)
        else:
            _, f_jvp = _linearized(fn, latent, options.preprocess)
            basis, _ = _tangent_basis(latent.shape[0], options.tangent_chunk, latent.dtype)
            if options.strategy == "materialize":
                grams = _materialized_grams(
                    f_jvp, latent, weights, basis, _precision(options.precision)
                )
            else:
                grams = _transposed_grams(f_jvp, latent, weights, basis)
    return 0.5 * (grams + jnp.swapaxes(grams, -1, -2))


# --------------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------------
def jacobian(
    fn, latent, *, tangent_chunk: int | None = None, preprocess: Preprocess = None
) -> jax.Array:
    """The full Jacobian of ``preprocess(fn(latent))``, ``[H, W, C, d]`` (for small images).

    Args:
      fn: pure ``g(latent [d]) -> image [H, W, C]`` (e.g. ``generator.latent_fn('w')``).
      latent: ``[d]``.
      tangent_chunk: tangents per batched JVP (default: all ``d`` at once).
      preprocess: see the module docstring.
    """
    latent = jnp.asarray(latent)
    shape = output_shape(fn, latent, preprocess)
    chunk = latent.shape[0] if tangent_chunk is None else int(tangent_chunk)
    rows = _jacobian_rows(as_partial(fn), latent, chunk, preprocess)
    return jnp.moveaxis(rows, 0, -1).reshape(shape + (latent.shape[0],))


def mask_weights(masks: np.ndarray, channels: int) -> np.ndarray:
    """Row weights ``[2R, H*W*C]``: normalised foreground masks then normalised backgrounds."""
    r = masks.shape[0]
    fore = np.repeat(masks.reshape(r, -1), channels, axis=1)
    back = 1.0 - fore
    fore = fore / fore.sum(axis=1, keepdims=True)
    back = back / back.sum(axis=1, keepdims=True)
    return np.concatenate([fore, back], axis=0)


def choose_strategy(d: int, num_rows: int, itemsize: int, memory_budget: int) -> str:
    """Size-only rule (no compilation): 'materialize' if the Jacobian, twice, fits ``memory_budget``
    bytes, else 'transpose'. :func:`plan_grams` is the rule strategy 'auto' uses."""
    return "materialize" if 2 * d * num_rows * itemsize <= memory_budget else "transpose"


DEFAULT_BUDGET = 8 << 30  # bytes, where the device reports no memory limit (CPU) and none is given
# share of a reported device limit a kernel may plan for (the allocator needs some slack)
_HEADROOM = 0.9
_CHUNKS = (64, 32, 16, 8, 4, 2, 1)
_BLOCK_COUNTS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32)
_RETRIES = 3  # configurations compiled after the guesses ruled out every one


@dataclasses.dataclass(frozen=True)
class Plan:
    """What strategy 'auto' chose, and XLA's memory analysis of it.

    Attributes:
      strategy: 'blocked', 'transpose' or 'materialize'.
      tangent_chunk: tangents per batched JVP.
      block: tangent block of 'blocked' (None otherwise).
      peak_bytes: arguments + outputs + temporaries of the compiled kernel (XLA's analysis), per
        sample.
      limit_bytes: the limit it was planned against.
      relative_cost: the planner's time estimate, in forward Jacobians (1 = one JVP per tangent).
      compiled: the compiled kernel (call it as ``compiled(fn, latent, weights)``).
    """

    strategy: str
    tangent_chunk: int
    block: int | None
    peak_bytes: int
    limit_bytes: int
    relative_cost: float
    compiled: object = dataclasses.field(default=None, compare=False, repr=False)


def memory_limit(memory_budget: int | None = None) -> int:
    """Bytes a Gram kernel may use: 90% of the device's ``memory_stats()['bytes_limit']`` where the
    backend reports it (GPU, TPU), else ``memory_budget`` (CPU), else :data:`DEFAULT_BUDGET`."""
    try:
        stats = jax.local_devices()[0].memory_stats() or {}
    except Exception:  # noqa: BLE001  backends without memory statistics
        stats = {}
    if stats.get("bytes_limit"):
        return int(_HEADROOM * stats["bytes_limit"])
    return int(memory_budget) if memory_budget else DEFAULT_BUDGET


def analysed_peak(compiled) -> int:
    """Arguments + outputs + temporaries - aliased bytes of a compiled executable (XLA's memory
    analysis)."""
    m = compiled.memory_analysis()
    return int(
        m.argument_size_in_bytes
        + m.output_size_in_bytes
        + m.temp_size_in_bytes
        - m.alias_size_in_bytes
    )


def _cost(strategy: str, k: int, n_blocks: int, num_weights: int) -> float:
    """Planner's time estimate in forward Jacobians: small chunks batch worse (about +1/k each);
    'blocked' recomputes (n_blocks + 1) / 2 Jacobians; 'transpose' adds one reverse pass per weight
    row."""
    per_chunk = 1.0 + 1.0 / k
    if strategy == "blocked":
        return per_chunk * (n_blocks + 1) / 2
    return per_chunk * (1 + num_weights)


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _candidates(
    d: int, num_weights: int, max_chunk: int
) -> list[tuple[float, str, int, int | None]]:
    """(cost, strategy, chunk, block) of every configuration auto considers, cheapest first."""
    out = []
    for k in sorted({min(c, d, max(1, max_chunk)) for c in _CHUNKS}, reverse=True):
        # nb blocks, whole chunks each
        blocks = {_ceil_div(_ceil_div(d, nb), k) * k for nb in _BLOCK_COUNTS}
        for b in sorted(blocks, reverse=True):
            if b >= k:
                out.append((_cost("blocked", k, -(-d // b), num_weights), "blocked", k, min(b, d)))
        out.append((_cost("transpose", k, 1, num_weights), "transpose", k, None))
    return sorted(out, key=lambda c: (c[0], -c[2]))


_PLANS: dict = {}


def _predict(seen: list[tuple[int, int, int]], k: int, held: int) -> int | None:
    """Peak bytes guessed from analysed ones ``(chunk, block bytes, peak)`` of the same strategy:
    the block plus a part linear in the chunk (fitted through two chunk sizes; from one, taken
    proportional to chunk + 1, the tangents plus the primal). None without observations. Used only
    to skip compiling hopeless configurations."""
    if not seen:
        return None
    ks = np.array([s[0] for s in seen], float)
    rest = np.array([s[2] - s[1] for s in seen], float)
    if len(set(ks)) >= 2:
        slope, intercept = np.polyfit(ks, rest, 1)
        return int(held + max(intercept + slope * k, 0.0))
    return int(held + rest[0] * (k + 1) / (ks[0] + 1))


def _signature(*trees) -> tuple:
    leaves, treedef = jax.tree_util.tree_flatten(trees)
    return treedef, tuple((tuple(np.shape(x)), str(getattr(x, "dtype", type(x)))) for x in leaves)


class _Planner:
    """One search of :func:`plan_grams`: the configurations analysed so far, and its steps."""

    def __init__(self, fn, latent, weights, options: JacobianOptions, limit: int, progress: bool):
        self.fn, self.latent, self.weights, self.options = fn, latent, weights, options
        self.limit, self.progress = limit, progress
        self.rows, self.itemsize = weights.shape[1], np.dtype(latent.dtype).itemsize
        self.candidates = _candidates(latent.shape[0], weights.shape[0], options.tangent_chunk)
        self.failed: list[tuple[str, int, int | None, int]] = []
        self.seen: dict[str, list[tuple[int, int, int]]] = {"blocked": [], "transpose": []}
        forward = jax.jit(lambda f, x: _flat(f, options.preprocess)(x))
        self.forward = forward.lower(fn, latent).compile().memory_analysis()

    def held(self, block: int | None) -> int:
        """Bytes of the tangent block 'blocked' keeps."""
        return (block or 0) * self.rows * self.itemsize

    def ruled_out(self, strategy: str, k: int, block: int | None) -> bool:
        """Too large before compiling, or no smaller than a failed one of the same strategy."""
        return self.held(block) + k * self.rows * self.itemsize > self.limit or any(
            s == strategy and k >= fk and (block or 0) >= (fb or 0) for s, fk, fb, _ in self.failed
        )

    def guess(self, strategy: str, k: int, block: int | None) -> int | None:
        """Peak bytes guessed from the peaks seen, or first (blocked) from the forward pass."""
        guess = _predict(self.seen[strategy], k, self.held(block))
        # prior, fitted on StyleGAN2 config-f (module docstring)
        if guess is None and strategy == "blocked":
            fwd = self.forward
            guess = self.held(block) + fwd.argument_size_in_bytes + (k + 6) * fwd.temp_size_in_bytes
        return guess

    def try_(
        self, strategy: str, k: int, block: int | None, cost: float, guess: int | None
    ) -> Plan | None:
        """Compiles one configuration; its Plan if XLA's analysed peak fits the limit, else None."""
        options = dataclasses.replace(self.options, strategy=strategy, tangent_chunk=k, block=block)
        compiled = weighted_grams.lower(self.fn, self.latent, self.weights, options).compile()
        peak = analysed_peak(compiled)
        self.seen[strategy].append((k, self.held(block), peak))
        if self.progress:
            shown = "-" if guess is None else f"{guess / 2**30:.2f}"
            print(
                f"plan_grams: {strategy} chunk {k} block {block}: {peak / 2**30:.2f} GiB "
                "analysed (guess "
                f"{shown}; limit {self.limit / 2**30:.2f} GiB)",
                flush=True,
            )
        if peak > self.limit:
            self.failed.append((strategy, k, block, peak))
            return None
        return Plan(strategy, k, block, peak, self.limit, cost, compiled)

    def first_fit(self) -> tuple[Plan | None, list]:
        """The cheapest configuration whose guess and peak fit, and those skipped on their guess."""
        skipped = []
        for cost, strategy, k, block in self.candidates:
            if self.ruled_out(strategy, k, block):
                continue
            guess = self.guess(strategy, k, block)
            if guess is not None and guess > self.limit:
                skipped.append((guess, strategy, k, block, cost))
                continue
            plan = self.try_(strategy, k, block, cost, guess)
            if plan is not None:
                return plan, skipped
        return None, skipped

    def retry_skipped(self, skipped: list) -> Plan | None:
        """The smallest-guess configurations, compiled anyway: the guesses may be pessimistic."""
        plan = None
        for guess, strategy, k, block, cost in sorted(skipped, key=lambda c: c[0])[:_RETRIES]:
            if plan is None and not self.ruled_out(strategy, k, block):
                plan = self.try_(strategy, k, block, cost, guess)
        return plan

    def improve(self, plan: Plan) -> Plan:
        """Up to :data:`_RETRIES` cheaper configurations that the peaks seen predict to fit."""
        for _ in range(_RETRIES):
            better = [
                (cost, strategy, k, block)
                for cost, strategy, k, block in self.candidates
                if cost < plan.relative_cost
                and not self.ruled_out(strategy, k, block)
                and (_predict(self.seen[strategy], k, self.held(block)) or self.limit + 1)
                <= self.limit
            ]
            if not better:
                break
            cost, strategy, k, block = better[0]
            guess = _predict(self.seen[strategy], k, self.held(block))
            plan = self.try_(strategy, k, block, cost, guess) or plan
        return plan

    def run(self) -> Plan:
        plan, skipped = self.first_fit()
        plan = plan or self.retry_skipped(skipped)
        if plan is not None:
            return self.improve(plan)
        smallest = min((f[3] for f in self.failed), default=None)
        shown = "n/a" if smallest is None else f"{smallest / 2**30:.2f} GiB"
        raise MemoryError(
            f"No Jacobian strategy fits {self.limit / 2**30:.2f} GiB for this generator (smallest "
            f"analysed peak: {shown}). Use preprocess='official' (256x256x1 rows), a device with "
            "more memory, or a larger memory_budget."
        )


def plan_grams(
    fn, latent, weights, options: JacobianOptions = DEFAULT_OPTIONS, *, progress: bool = False
) -> Plan:
    """Chooses strategy, ``tangent_chunk`` and block from XLA's compiled memory analysis (nothing is
    run).

    Configurations are tried cheapest first (see :func:`_cost`). One is compiled only when its
    guessed peak fits the limit and no configuration of the same strategy with a smaller chunk and
    block already failed; the first whose analysed peak fits is kept. Guesses (used only to skip
    compiling) come from the analysed peaks already seen, or, before any, from the forward pass's
    analysis (a chunk of k tangents holds about k + 6 forward passes' temporaries, plus the tangent
    block; fitted on StyleGAN2 config-f). If the guesses ruled out everything, the configurations
    with the smallest guesses are compiled anyway; once one fits, up to three cheaper ones that the
    peaks seen so far predict to fit are tried. Results are cached per shapes, so repeated calls
    compile nothing.

    Args:
      fn: the generator function (a Partial whose leaves may be ``jax.ShapeDtypeStruct``).
      latent: ``[d]`` array or ShapeDtypeStruct.
      weights: ``[M, P]`` row weights (array or ShapeDtypeStruct).
      options: its ``preprocess``, ``memory_budget`` and ``precision`` are used, and its
        ``tangent_chunk`` as the largest chunk to consider; ``strategy`` and ``block`` are what this
        chooses.
      progress: print each configuration tried.

    Raises:
      MemoryError: no configuration fits; the message gives the smallest analysed peak and what to
        change.
    """
    fn, options = as_partial(fn), check_options(options)
    limit = memory_limit(options.memory_budget)
    key = (
        _signature(fn, latent, weights),
        options.preprocess,
        limit,
        options.precision,
        options.tangent_chunk,
    )
    if key not in _PLANS:
        _PLANS[key] = _Planner(fn, latent, weights, options, limit, progress).run()
    return _PLANS[key]


def _region_weights(fn, latents, masks, preprocess: Preprocess):
    """Validated ``latents [N, d]``, and the row weights ``[2R, P]`` of ``masks`` at image size."""
    latents = jnp.asarray(latents)
    if latents.ndim == 1:
        latents = latents[None]
    if latents.ndim != 2 or latents.shape[0] == 0:
        raise ValueError(f"latents must be [N, d] with N >= 1; got shape {latents.shape}.")
    h, w, c = output_shape(fn, latents[0], preprocess)
    m = regions.validate_masks(masks, (h, w))
    return latents, jnp.asarray(mask_weights(m, c), latents.dtype)


def _sample_kernel(
    fn: Partial, latent, weights, options: JacobianOptions, progress: bool
) -> Callable:
    """``kernel(latent, weights) -> [2R, d, d]``: the plan's under 'auto', else weighted_grams."""
    if options.strategy == AUTO:
        return functools.partial(
            plan_grams(fn, latent, weights, options, progress=progress).compiled, fn
        )
    return functools.partial(weighted_grams, fn, options=options)


def _checked(grams: jax.Array, i: int, n: int) -> jax.Array:
    if not bool(jnp.all(jnp.isfinite(grams))):
        raise FloatingPointError(
            f"Sample {i}: the Jacobian holds NaN or inf (latent {i} of {n}); check that "
            "latent and the generator's weights for non-finite values."
        )
    return grams


def region_grams(
    fn,
    latents,
    masks,
    options: JacobianOptions = DEFAULT_OPTIONS,
    *,
    per_sample: bool = False,
    progress: bool = False,
):
    """Foreground and background Gram matrices of every region, from one Jacobian per sample.

    Args:
      fn: pure ``g(latent [d]) -> image [H, W, C]``; a ``jax.tree_util.Partial`` (as generators'
        ``latent_fn`` return) keeps its weights out of the compiled program.
      latents: ``[N, d]`` (or ``[d]`` for one sample).
      masks: ``[R, H', W']`` or ``[H', W']`` at the resolution of the (preprocessed) image, values
        in [0, 1].
      options: the Jacobian settings (:class:`JacobianOptions`: chunk, preprocessing, strategy,
        memory budget, block, precision).
      per_sample: return ``[N, R, d, d]`` instead of the mean over samples.
      progress: show a progress bar over samples (and the configurations 'auto' compiles).

    Returns:
      ``(A, B)``: ``[R, d, d]`` each, averaged over samples (or ``[N, R, d, d]`` with
      ``per_sample``).

    Raises:
      ValueError / regions.RegionError: bad latents or masks (wrong size, empty region, no
      background).
      MemoryError: under 'auto', no configuration fits the memory limit.
      FloatingPointError: a sample's Jacobian holds NaN or inf (the message names the sample).
    """
    latents, weights = _region_weights(fn, latents, masks, check_options(options).preprocess)
    (n, d), r = latents.shape, weights.shape[0] // 2
    kernel = _sample_kernel(as_partial(fn), latents[0], weights, options, progress)
    samples = range(n)
    if progress:
        from tqdm.auto import tqdm

        samples = tqdm(samples, desc="Jacobian Grams", unit="sample")
    total, per = None, []
    for i in samples:
        g = _checked(kernel(latents[i], weights), i, n)
        if per_sample:
            per.append(g)
        total = g if total is None else total + g
    if per_sample:
        grams = jnp.stack(per).reshape(n, 2, r, d, d)
        return grams[:, 0], grams[:, 1]
    grams = (total / n).reshape(2, r, d, d)
    return grams[0], grams[1]
