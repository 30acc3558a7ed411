"""GAN inversion: find the latents (W or W+) whose image reproduces a given photo, so that it can be
edited.

:func:`invert` follows the schedule of NVlabs' ``projector.py`` (stylegan2-ada-pytorch), for a whole
batch of images at once:

* start every image at the mean w, estimated from ``w_avg_samples`` mapped random z (their spread
  ``w_std`` sets the exploration noise below);
* optimise with Adam (optax, betas 0.9 / 0.999) whose learning rate ramps up linearly over the first
  ``lr_rampup`` of the steps and down along a half cosine over the last ``lr_rampdown``;
* add Gaussian noise of scale ``w_std * initial_noise_factor * max(0, 1 - t / noise_ramp)^2`` to w
  at each step (t = step / num_steps), so the search explores early and settles late;
* where the model has noise inputs (StyleGAN2's ``noise_const`` buffers) and ``optimize_noise`` is
  set, optimise a fresh noise map per image and layer too, re-normalised to zero mean and unit
  variance after every step, with the projector's regulariser: the squared mean of each map times
  itself shifted by one pixel (both axes), summed over the map and its 2x average-pooled versions
  down to 8x8, weighted by ``noise_regularization``.

Losses per image: ``mse_weight`` times the pixel MSE (images in [-1, 1]) plus, when LPIPS parameters
are given (:mod:`regfac_jax.lpips`, VGG16 weights converted by :mod:`converters.lpips`),
``lpips_weight`` times LPIPS on images area-downsampled to at most 256 pixels, as the projector
does. Nothing is downloaded.

The whole optimisation is one jit-compiled function (``lax.scan`` over steps, the generator vmapped
over images); the host only calls it in chunks of ``chunk`` steps so that ``progress`` can report.
Each image's result depends on its own pixels, ``seed`` and its index in the batch only. The
settings named above are the fields of one :class:`InversionConfig`.

Loading image files with validation (sizes, modes, bit depths, channel counts, NaN) is
:func:`load_images`.
"""

from __future__ import annotations

import dataclasses
import functools
import glob
import numbers
import os
import pathlib
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.tree_util import Partial

from regfac_jax import errors, trees
from regfac_jax import lpips as lpips_lib

SPACES = ("w", "wplus")
NOISE_SUFFIX = "noise_const"


@dataclasses.dataclass(frozen=True)
class InversionResult:
    """What :func:`invert` found, per image (N images).

    Attributes:
      ws: ``[N, num_ws, w_dim]`` latents (for space 'w' every layer holds the same w).
      loss: ``[N]`` final loss (at the final latents, without exploration noise).
      mse: ``[N]`` final pixel MSE in [-1, 1] units.
      lpips: ``[N]`` final LPIPS distance, or None when no LPIPS weights were given.
      noise: ``{buffer name: [N, R, R]}`` the optimised noise maps (None when noise was not
        optimised); render with :func:`synthesize` to reproduce ``images``.
      images: ``[N, H, W, C]`` the reconstructions.
      space: 'w' or 'wplus'.
      num_steps: optimisation steps taken.
    """

    ws: np.ndarray
    loss: np.ndarray
    mse: np.ndarray
    lpips: np.ndarray | None
    noise: dict | None
    images: np.ndarray
    space: str
    num_steps: int


# --------------------------------------------------------------------------------------------------
# Schedules and regularisers (pure)
# --------------------------------------------------------------------------------------------------
def lr_ramp(t: jax.Array, rampdown: float = 0.25, rampup: float = 0.05) -> jax.Array:
    """Learning-rate factor at progress ``t`` in [0, 1]: linear warm-up, half-cosine cool-down."""
    down = jnp.minimum(1.0, (1.0 - t) / rampdown)
    down = 0.5 - 0.5 * jnp.cos(down * jnp.pi)
    return down * jnp.minimum(1.0, t / rampup)


def w_noise_scale(
    t: jax.Array, w_std: float, initial_noise_factor: float = 0.05, noise_ramp: float = 0.75
):
    """Scale of the exploration noise added to w at progress ``t``; zero from ``t >= noise_ramp``
    on."""
    return w_std * initial_noise_factor * jnp.square(jnp.maximum(0.0, 1.0 - t / noise_ramp))


def noise_regularizer(noise: jax.Array) -> jax.Array:
    """Projector-style penalty on spatial correlation of one noise map ``[R, R]`` (a scalar >=
    0)."""
    total = jnp.zeros((), noise.dtype)
    while True:
        total = total + jnp.square(jnp.mean(noise * jnp.roll(noise, 1, axis=1)))
        total = total + jnp.square(jnp.mean(noise * jnp.roll(noise, 1, axis=0)))
        if noise.shape[0] <= 8:
            return total
        r = noise.shape[0] // 2
        noise = noise[: 2 * r, : 2 * r].reshape(r, 2, r, 2).mean(axis=(1, 3))


def normalize_noise(noise: jax.Array) -> jax.Array:
    """``[..., R, R]`` maps shifted to zero mean and scaled to unit mean square (each map on its
    own)."""
    noise = noise - jnp.mean(noise, axis=(-2, -1), keepdims=True)
    return noise * jax.lax.rsqrt(jnp.mean(jnp.square(noise), axis=(-2, -1), keepdims=True))


def area_downsample(images: jax.Array, size: int) -> jax.Array:
    """``[N, H, W, C]`` -> ``[N, size, size, C]`` by box averaging (H, W multiples of ``size``);
    identity when already at most ``size``."""
    n, h, w, c = images.shape
    if h <= size:
        return images
    if h % size or w % size:
        raise ValueError(f"area_downsample: {h}x{w} is not a multiple of {size}.")
    return images.reshape(n, size, h // size, size, w // size, c).mean(axis=(2, 4))


# --------------------------------------------------------------------------------------------------
# Generator plumbing
# --------------------------------------------------------------------------------------------------
def noise_names(gen) -> list[str]:
    """Dotted names of the generator's noise buffers (empty for StyleGAN3 and generators without
    noise)."""
    return sorted(k for k in trees.flatten(gen.buffers or {}) if k.endswith(NOISE_SUFFIX))


def _with_noise(buffers, noise: dict | None):
    if not noise:
        return buffers
    flat = trees.flatten(buffers)
    flat.update(noise)
    return trees.nest(flat)


def _synth_one(gen, params, buffers, ws, noise):
    """ws ``[num_ws, w_dim]``, noise ``{name: [R, R]}`` -> image ``[H, W, C]``."""
    return gen.synthesis_apply(params, _with_noise(buffers, noise), ws[None], noise_mode="const")[0]


@functools.partial(jax.jit, static_argnums=0)
def _synthesize(gen, params, buffers, ws, noise):
    return jax.vmap(functools.partial(_synth_one, gen), in_axes=(None, None, 0, 0))(
        params, buffers, ws, noise
    )


def synthesize(gen, ws, noise: dict | None = None, batch: int = 16) -> np.ndarray:
    """Images ``[N, H, W, C]`` of latents ``ws`` ``[N, num_ws, w_dim]``, with per-image noise maps
    ``{name: [N, R, R]}`` (as :class:`InversionResult` holds them) or the generator's own noise
    (None)."""
    ws = np.asarray(ws, np.float32)
    if noise is None:
        return np.concatenate(
            [np.asarray(gen.synthesis(ws[i : i + batch])) for i in range(0, len(ws), batch)]
        )
    out = []
    for i in range(0, len(ws), batch):
        part = {k: jnp.asarray(v[i : i + batch], jnp.float32) for k, v in noise.items()}
        out.append(
            np.asarray(
                _synthesize(gen, gen.params, gen.buffers, jnp.asarray(ws[i : i + batch]), part)
            )
        )
    return np.concatenate(out)


def image_fn(gen, noise_one: dict | None = None, space: str = "w", **kwargs) -> Partial:
    """``gen.latent_fn(space, **kwargs)`` rendering with one image's noise maps ``{name: [R, R]}``.

    The result has the same function object (so jit caches are shared) and differs only in its
    buffers leaf.
    """
    fn = gen.latent_fn(space, **kwargs)
    if not noise_one:
        return fn
    if len(fn.args) < 2 or fn.args[1] is not gen.buffers:
        raise TypeError(
            f"{gen.kind}.latent_fn does not carry its buffers second; cannot substitute noise."
        )
    return Partial(fn.func, fn.args[0], _with_noise(gen.buffers, noise_one), *fn.args[2:])


def w_statistics(
    gen, num_samples: int = 10000, seed: int = 123, batch: int = 2048
) -> tuple[np.ndarray, float, np.ndarray]:
    """Statistics of mapped random z: mean w ``[w_dim]``, spread (root of the summed per-coordinate
    variance, the projector's ``w_std``) and per-coordinate standard deviation ``[w_dim]``."""
    if num_samples < 1:
        raise ValueError(f"w_avg_samples must be >= 1, got {num_samples}.")
    z = np.random.RandomState(seed).randn(num_samples, gen.z_dim).astype(np.float32)
    parts = []
    for i in range(0, num_samples, batch):
        zi = z[i : i + batch]
        c = (
            np.eye(gen.c_dim, dtype=np.float32)[np.arange(i, i + len(zi)) % gen.c_dim]
            if gen.c_dim
            else None
        )
        parts.append(np.asarray(gen.mapping(zi, c))[:, 0].astype(np.float64))
    w = np.concatenate(parts)
    w_avg = w.mean(axis=0)
    return (
        w_avg.astype(np.float32),
        float(np.sqrt(np.sum((w - w_avg) ** 2) / num_samples)),
        w.std(axis=0).astype(np.float32),
    )


# --------------------------------------------------------------------------------------------------
# The settings
# --------------------------------------------------------------------------------------------------
# Settings that must be > 0 (a zero step count or ramp length divides by zero); the others >= 0.
_POSITIVE = (
    "num_steps",
    "chunk",
    "w_avg_samples",
    "learning_rate",
    "lr_rampdown",
    "lr_rampup",
    "noise_ramp",
)
_KINDS = {"int": int, "float": float, "bool": bool}


def _checked(name: str, value: Any, kind: type) -> Any:
    """One :class:`InversionConfig` field, converted to ``kind`` once type and range are checked.

    Raises:
      ValueError: naming the field, the value given and what it must be.
    """
    if kind is bool:
        if not isinstance(value, (bool, np.bool_)):
            raise ValueError(f"InversionConfig.{name} must be True or False; got {value!r}.")
        return bool(value)
    number = numbers.Integral if kind is int else numbers.Real
    if (
        not isinstance(value, number)
        or isinstance(value, (bool, np.bool_))
        or not np.isfinite(value)
    ):
        raise ValueError(f"InversionConfig.{name} must be a finite {kind.__name__}; got {value!r}.")
    if value < 0 or (value == 0 and name in _POSITIVE):
        bound = "> 0" if name in _POSITIVE else ">= 0"
        raise ValueError(f"InversionConfig.{name} must be {bound}; got {value!r}.")
    return kind(value)


@dataclasses.dataclass(frozen=True)
class InversionConfig:
    """Settings of :func:`invert`, built once (defaults: NVlabs' projector) and passed down.

    Only ``chunk`` (capped at ``num_steps``), the ramp lengths and ``initial_noise_factor`` are
    compiled into the optimisation; the step count, learning rate and loss weights enter it as
    traced values, so changing them reuses the compiled program.

    Attributes:
      num_steps: optimisation steps (the projector's default is 1000).
      learning_rate: peak Adam step.
      lr_rampdown, lr_rampup: lengths of the learning rate's half-cosine cool-down and linear
        warm-up, as fractions of num_steps (> 0).
      w_avg_samples: mapped samples for the mean w and its spread.
      initial_noise_factor, noise_ramp: exploration noise on w (fraction of the w spread; ramp
        length as a fraction of num_steps, > 0).
      noise_regularization: weight of the noise-map regulariser.
      optimize_noise: optimise per-image noise maps where the model has noise inputs.
      mse_weight, lpips_weight: loss weights.
      w_prior: weight of the mean squared distance of w from the mean w, per coordinate in units
        of its spread over mapped samples (keeps latents where the generator's samples live: a
        fidelity/editability trade).
      layer_spread: (W+) weight of the same measure of each layer's w from the image's mean over
        layers.
      chunk: steps per compiled call between progress reports.

    Raises:
      ValueError: on construction, for a value of the wrong type or out of range (naming the field).
    """

    num_steps: int = 1000
    learning_rate: float = 0.1
    lr_rampdown: float = 0.25
    lr_rampup: float = 0.05
    w_avg_samples: int = 10000
    initial_noise_factor: float = 0.05
    noise_ramp: float = 0.75
    noise_regularization: float = 1e5
    optimize_noise: bool = True
    mse_weight: float = 1.0
    lpips_weight: float = 1.0
    w_prior: float = 0.0
    layer_spread: float = 0.0
    chunk: int = 10

    def __post_init__(self):
        for field in dataclasses.fields(self):
            value = _checked(field.name, getattr(self, field.name), _KINDS[field.type])
            object.__setattr__(self, field.name, value)

    @classmethod
    def from_config(cls, values: Mapping[str, Any]) -> InversionConfig:
        """From ``{field name: value}`` (e.g. an ml_collections ``ConfigDict``'s settings).

        Raises:
          ValueError: a name that is not a field (listing the fields), or a bad value.
        """
        errors.check_field_names(cls, values, "inversion")
        return cls(**values)


# --------------------------------------------------------------------------------------------------
# The optimisation
# --------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class _Settings:
    """The compiled-in part of an :class:`InversionConfig` (with the shapes, the jit cache key).

    The loss weights, learning rate and step count are traced (``_Problem.hp``): changing them does
    not recompile.
    """

    chunk: int
    lr_rampdown: float
    lr_rampup: float
    initial_noise_factor: float
    noise_ramp: float
    lpips_size: int
    use_lpips: bool

    @classmethod
    def of(cls, config: InversionConfig, use_lpips: bool, lpips_size: int = 256) -> _Settings:
        """The compiled-in settings of ``config``; LPIPS (when used) on images of at most
        lpips_size."""
        return cls(
            min(config.chunk, config.num_steps),
            config.lr_rampdown,
            config.lr_rampup,
            config.initial_noise_factor,
            config.noise_ramp,
            lpips_size,
            use_lpips,
        )


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class _Problem:
    """The traced inputs of one batch's optimisation (a pytree).

    Attributes:
      params, buffers: the generator's weights.
      lp: LPIPS parameters, or None.
      hp: traced settings (scalars from :class:`InversionConfig`, ``num_steps`` int32) and the w
        statistics ``w_std`` (scalar), ``w_avg`` ``[w_dim]``, ``w_sd`` ``[w_dim]``.
      targets: ``[N, H, W, C]`` images in [-1, 1].
      keys: ``[N]`` per-image PRNG keys.
    """

    params: Any
    buffers: Any
    lp: Any
    hp: dict
    targets: jax.Array
    keys: jax.Array


def _traced_settings(config: InversionConfig, w_avg, w_std: float, w_sd) -> dict:
    """``_Problem.hp``: the config's traced numbers as float32 / int32 arrays, and w statistics."""
    names = (
        "learning_rate",
        "mse_weight",
        "lpips_weight",
        "noise_regularization",
        "w_prior",
        "layer_spread",
    )
    hp = {k: jnp.float32(getattr(config, k)) for k in names}
    hp.update(
        w_std=jnp.float32(w_std),
        w_avg=jnp.asarray(w_avg),
        w_sd=jnp.asarray(np.maximum(w_sd, 1e-8)),
        num_steps=jnp.int32(config.num_steps),
    )
    return hp


def _optimizer(s: _Settings, hp: dict) -> optax.GradientTransformation:
    def schedule(count):
        return hp["learning_rate"] * lr_ramp(count / hp["num_steps"], s.lr_rampdown, s.lr_rampup)

    return optax.adam(schedule, b1=0.9, b2=0.999)


def _latent_penalties(w: jax.Array, hp: dict) -> tuple[jax.Array, jax.Array]:
    """``w_prior`` and ``layer_spread`` terms of w ``[L, w_dim]`` (L = 1 or num_ws), unweighted."""
    # [L, w_dim] in units of the per-coordinate spread
    z = (w - hp["w_avg"]) / hp["w_sd"]
    prior = jnp.mean(jnp.square(z))
    spread = jnp.mean(jnp.square(z - jnp.mean(z, axis=0, keepdims=True)))
    return prior, spread


def _per_image_loss(gen, s: _Settings, prob: _Problem, opt, target, key, t):
    """Loss and (mse, lpips) of one image.

    opt = {'w': [L, w_dim] (L = 1 or num_ws), 'noise': {name: [R, R]}}; target [H, W, C]; t
    progress.
    """
    hp = prob.hp
    scale = w_noise_scale(t, hp["w_std"], s.initial_noise_factor, s.noise_ramp)
    w = opt["w"] + jax.random.normal(key, opt["w"].shape) * scale
    ws = jnp.broadcast_to(w, (gen.num_ws, gen.w_dim))
    synth = _synth_one(gen, prob.params, prob.buffers, ws, opt["noise"])
    mse = jnp.mean(jnp.square(synth - target))
    lp = (
        jnp.zeros(())
        if not s.use_lpips
        else lpips_lib.distance(
            prob.lp,
            area_downsample(synth[None], s.lpips_size),
            area_downsample(target[None], s.lpips_size),
        )[0]
    )
    reg = sum((noise_regularizer(v) for v in opt["noise"].values()), jnp.zeros(()))
    prior, spread = _latent_penalties(opt["w"], hp)
    loss = (
        hp["mse_weight"] * mse
        + hp["lpips_weight"] * lp
        + hp["noise_regularization"] * reg
        + hp["w_prior"] * prior
        + hp["layer_spread"] * spread
    )
    return loss, (mse, lp)


def _batch_loss(gen, s: _Settings, prob: _Problem, opt, keys, t):
    f = functools.partial(_per_image_loss, gen, s, prob)
    loss, aux = jax.vmap(f, in_axes=(0, 0, 0, None))(opt, prob.targets, keys, t)
    return jnp.sum(loss), (loss, aux)


def _chunk_steps(gen, s: _Settings, prob: _Problem, state, start):
    """``s.chunk`` optimisation steps from step ``start`` (steps past ``num_steps`` leave the state
    unchanged)."""
    tx = _optimizer(s, prob.hp)

    def step(carry, i):
        opt, opt_state, _ = carry
        t_idx = start + i
        step_keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(prob.keys, t_idx)
        grads, (loss, _) = jax.grad(_batch_loss, argnums=3, has_aux=True)(
            gen, s, prob, opt, step_keys, t_idx / prob.hp["num_steps"]
        )
        updates, new_state = tx.update(grads, opt_state, opt)
        new_opt = optax.apply_updates(opt, updates)
        new_opt = {
            "w": new_opt["w"],
            "noise": {k: normalize_noise(v) for k, v in new_opt["noise"].items()},
        }
        active = t_idx < prob.hp["num_steps"]

        def keep(new, old):
            return jnp.where(active, new, old)

        return (
            jax.tree.map(keep, new_opt, opt),
            jax.tree.map(keep, new_state, opt_state),
            loss,
        ), None

    init = (*state, jnp.zeros(prob.targets.shape[0]))
    (opt, opt_state, loss), _ = jax.lax.scan(step, init, jnp.arange(s.chunk))
    return opt, opt_state, loss


# One compiled program per (generator, settings, shapes); ``prob``'s traced settings do not
# recompile.
_run_chunk = jax.jit(_chunk_steps, static_argnums=(0, 1))


@functools.partial(jax.jit, static_argnums=(0, 1))
def _final(gen, s: _Settings, prob: _Problem, opt):
    """Clean loss terms and reconstructions at the final latents (no exploration noise: t = 1)."""
    _, (loss, (mse, lp_d)) = _batch_loss(gen, s, prob, opt, prob.keys, 1.0)
    ws = jnp.broadcast_to(opt["w"], (prob.targets.shape[0], gen.num_ws, gen.w_dim))
    synth = jax.vmap(functools.partial(_synth_one, gen), in_axes=(None, None, 0, 0))
    return loss, mse, lp_d, ws, synth(prob.params, prob.buffers, ws, opt["noise"])


def _initial_latents(gen, keys, w_avg, layers: int, optimize_noise: bool) -> dict:
    """The optimised variables at step 0: the mean w in each of ``layers`` rows, and fresh unit
    noise maps."""
    names = noise_names(gen) if optimize_noise else []
    flat_buffers = trees.flatten(gen.buffers or {})

    def maps(j, shape):
        return jax.vmap(
            lambda key: normalize_noise(jax.random.normal(jax.random.fold_in(key, 1 + j), shape))
        )(keys)

    noise = {k: maps(j, flat_buffers[k].shape) for j, k in enumerate(names)}
    return {
        "w": jnp.broadcast_to(jnp.asarray(w_avg), (keys.shape[0], layers, gen.w_dim)),
        "noise": noise,
    }


def check_images(gen, images) -> np.ndarray:
    """Validates a batch for :func:`invert`: float ``[N, H, W, C]`` at the generator's size, finite,
    in [-1, 1].

    Raises:
      ValueError: naming the problem (and the offending image indices) and what the images must be.
    """
    if gen.kind not in ("stylegan2", "stylegan3"):
        raise ValueError(
            f"Inversion needs a StyleGAN (W / W+ latents); this generator is {gen.kind}."
        )
    x = np.asarray(images)
    want = (gen.img_resolution, gen.img_resolution, gen.img_channels)
    if x.ndim != 4 or x.shape[1:] != want:
        raise ValueError(
            f"images must be [N, {want[0]}, {want[1]}, {want[2]}] (this generator's "
            f"size and channels); got {x.shape}. Use load_images() to read and resize files."
        )
    if x.shape[0] == 0:
        raise ValueError("images is empty: nothing to invert.")
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(
            f"images must be float in [-1, 1]; got dtype {x.dtype} (uint8 x: x / 127.5 - 1)."
        )
    x = x.astype(np.float32)
    bad = np.where(~np.isfinite(x).all(axis=(1, 2, 3)))[0]
    if len(bad):
        raise ValueError(f"images {bad.tolist()} contain NaN or infinite values; drop or fix them.")
    out = np.where((x.min(axis=(1, 2, 3)) < -1.001) | (x.max(axis=(1, 2, 3)) > 1.001))[0]
    if len(out):
        raise ValueError(
            f"images {out.tolist()} have values outside [-1, 1] (range "
            f"{x.min():.3g}..{x.max():.3g}); images must be scaled to [-1, 1]."
        )
    return np.clip(x, -1.0, 1.0)


def _problem(gen, images, config: InversionConfig, space: str, lpips: dict | None, seed: int):
    """The checked batch as a :class:`_Problem` and the optimised variables at step 0."""
    targets = jnp.asarray(check_images(gen, images))
    if lpips is not None:
        lpips_lib.check_params(lpips)
    w_avg, w_std, w_sd = w_statistics(gen, config.w_avg_samples)
    keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(
        jax.random.key(seed), jnp.arange(targets.shape[0])
    )
    opt = _initial_latents(
        gen, keys, w_avg, 1 if space == "w" else gen.num_ws, config.optimize_noise
    )
    lp = None if lpips is None else jax.tree.map(jnp.asarray, lpips)
    hp = _traced_settings(config, w_avg, w_std, w_sd)
    return _Problem(gen.params, gen.buffers, lp, hp, targets, keys), opt


def _optimise(gen, s: _Settings, prob: _Problem, opt, num_steps: int, progress):
    """Runs ``num_steps`` steps in compiled chunks of ``s.chunk``, reporting after each.

    Returns:
      The optimised variables after the last step.
    """
    state = (opt, _optimizer(s, prob.hp).init(opt))
    done = 0
    while done < num_steps:
        opt, opt_state, loss = _run_chunk(gen, s, prob, state, done)
        state, done = (opt, opt_state), min(done + s.chunk, num_steps)
        if progress is not None:
            progress(done, float(jnp.mean(loss)))
    return state[0]


def _check_invert_args(space: str, config) -> None:
    """Refuses an unknown space, then a config that is not an :class:`InversionConfig`."""
    if space not in SPACES:
        raise ValueError(f"space must be one of {SPACES}, got {space!r}.")
    if not isinstance(config, InversionConfig):
        raise TypeError(
            f"config must be an InversionConfig (got {type(config).__name__}); build one with "
            "InversionConfig(num_steps=..., ...) or InversionConfig.from_config(settings)."
        )


def invert(
    gen,
    images,
    config: InversionConfig = InversionConfig(),
    *,
    space: str = "w",
    lpips: dict | None = None,
    seed: int = 0,
    progress: Callable[[int, float], None] | None = None,
) -> InversionResult:
    """Inverts a batch of images into the generator's W or W+ space (see the module docstring).

    Args:
      gen: a StyleGAN2 or StyleGAN3 generator object.
      images: ``[N, H, W, C]`` float in [-1, 1] at the generator's resolution and channel count.
      config: the optimisation's settings (:class:`InversionConfig`; the default is the
        projector's).
      space: 'w' (one w for all layers) or 'wplus' (one w per layer).
      lpips: LPIPS parameters (``converters.lpips.load``) to add the perceptual loss; None for
        pixels only.
      seed: seeds the exploration noise and the initial noise maps (image i uses
        ``fold_in(seed, i)``).
      progress: called as ``progress(step, loss)`` after every ``config.chunk`` steps, with the
        number of steps done and the mean loss over the batch at the last step; it may raise to
        abort.
    Returns:
      :class:`InversionResult`.
    """
    _check_invert_args(space, config)
    prob, opt = _problem(gen, images, config, space, lpips, seed)
    s = _Settings.of(config, lpips is not None)
    opt = _optimise(gen, s, prob, opt, config.num_steps, progress)
    loss, mse, lp_d, ws, recon = _final(gen, s, prob, opt)
    return InversionResult(
        ws=np.asarray(ws),
        loss=np.asarray(loss),
        mse=np.asarray(mse),
        lpips=None if lpips is None else np.asarray(lp_d),
        noise={k: np.asarray(v) for k, v in opt["noise"].items()} or None,
        images=np.asarray(recon),
        space=space,
        num_steps=config.num_steps,
    )


# --------------------------------------------------------------------------------------------------
# Image files
# --------------------------------------------------------------------------------------------------
def expand_image_paths(spec: str | os.PathLike | Sequence[str | os.PathLike]) -> list[pathlib.Path]:
    """A directory (every file in it, sorted), a glob pattern (sorted matches), a file, or a list of
    these."""
    if isinstance(spec, (list, tuple)):
        return [p for item in spec for p in expand_image_paths(item)]
    path = pathlib.Path(spec).expanduser()
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
    if path.is_file():
        return [path]
    matches = sorted(pathlib.Path(p) for p in glob.glob(str(path)) if os.path.isfile(p))
    if not matches:
        raise FileNotFoundError(
            f"No image files at {spec!r} (give a directory, a file or a glob such as "
            "'photos/*.png')."
        )
    return matches


def _read_npy(path: pathlib.Path) -> np.ndarray:
    """A ``.npy`` float image ``[H, W]`` or ``[H, W, C]`` in [-1, 1] -> ``[H, W, C]`` in [0, 1]."""
    a = np.load(path, allow_pickle=False)
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or not np.issubdtype(a.dtype, np.floating):
        raise ValueError(
            f"a .npy image must be float [H, W] or [H, W, C] in [-1, 1]; got {a.dtype} {a.shape}"
        )
    if not np.isfinite(a).all():
        raise ValueError(f"contains {int((~np.isfinite(a)).sum())} NaN/infinite values")
    if a.min() < -1.001 or a.max() > 1.001:
        raise ValueError(f"values {a.min():.3g}..{a.max():.3g} lie outside [-1, 1]")
    return (np.clip(a.astype(np.float32), -1, 1) + 1) / 2


def _open_image(path: pathlib.Path):
    """The mode and decoded PIL image of ``path``; a ValueError when it is not a readable image."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.load()
            return img.mode, img.copy()
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise ValueError(f"not a readable image ({type(err).__name__}: {err})") from None


def _read_array(path: pathlib.Path, notes: list[str]) -> np.ndarray:
    """One file -> float ``[H, W, C]`` in [0, 1] (C = 1, 3 or 4); notes collect what was
    converted."""
    if path.suffix.lower() == ".npy":
        return _read_npy(path)
    mode, img = _open_image(path)
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        a = np.asarray(img, np.float64)
        peak = 65535.0 if mode.startswith("I;16") or a.max() <= 65535 else float(a.max())
        notes.append(f"16-bit grayscale ({mode}) read at full precision")
        return (np.clip(a / peak, 0, 1)[..., None]).astype(np.float32)
    if mode == "F":
        a = np.asarray(img, np.float32)
        if not np.isfinite(a).all():
            raise ValueError(f"contains {int((~np.isfinite(a)).sum())} NaN/infinite values")
        notes.append("32-bit float image taken as values in [0, 1]")
        return np.clip(a, 0, 1)[..., None]
    if mode in ("L", "1"):
        return np.asarray(img.convert("L"), np.float32)[..., None] / 255.0
    if mode in ("LA", "La"):
        notes.append("grayscale with alpha")
        return np.asarray(img.convert("LA"), np.float32) / 255.0
    if mode in ("RGBA", "RGBa", "PA") or (mode == "P" and "transparency" in img.info):
        return np.asarray(img.convert("RGBA"), np.float32) / 255.0
    if mode != "RGB":
        notes.append(f"{mode} converted to RGB")
    return np.asarray(img.convert("RGB"), np.float32) / 255.0


def _alpha_dropped(alpha: np.ndarray) -> str:
    """The note for dropping alpha [H, W, 1], warning when some pixels are transparent."""
    opaque = bool(np.all(alpha >= 1.0))
    return "alpha channel dropped" + (
        "" if opaque else " (the image has transparent pixels: their colour is used as it is)"
    )


def _rgba(colour: np.ndarray, alpha: np.ndarray | None, notes: list[str]) -> np.ndarray:
    """Colour [H, W, 1 or 3], alpha [H, W, 1] (None: opaque) -> [H, W, 4], noting fill-ins."""
    if colour.shape[-1] == 1:
        colour = np.repeat(colour, 3, axis=-1)
        notes.append("grayscale repeated to RGB")
    if alpha is None:
        notes.append("no alpha channel: made opaque")
        alpha = np.ones_like(colour[..., :1])
    return np.concatenate([colour, alpha], axis=-1)


def _fit_channels(a: np.ndarray, channels: int, notes: list[str]) -> np.ndarray:
    """``[H, W, c]`` in [0, 1] -> ``[H, W, channels]``, noting what was dropped or made up."""
    c = a.shape[-1]
    if c == channels:
        return a
    colour, alpha = (a[..., :-1], a[..., -1:]) if c in (2, 4) else (a, None)
    if alpha is not None and channels in (1, 3):
        notes.append(_alpha_dropped(alpha))
    if channels == 1:
        if colour.shape[-1] == 3:
            notes.append("RGB converted to grayscale (the generator has 1 channel)")
            colour = colour @ np.array([0.299, 0.587, 0.114], np.float32)[:, None]
        return colour
    if channels == 3:
        if colour.shape[-1] == 1:
            notes.append("grayscale repeated to RGB")
            colour = np.repeat(colour, 3, axis=-1)
        return colour
    if channels == 4:
        return _rgba(colour, alpha, notes)
    raise ValueError(f"the generator has {channels} channels; image files give 1, 3 or 4")


def _fit_size(a: np.ndarray, res: int, notes: list[str]) -> np.ndarray:
    """Centre-crops to a square and resizes (Lanczos, per channel) to ``res`` x ``res``, noting
    both."""
    from PIL import Image

    h, w = a.shape[:2]
    if (h, w) == (res, res):
        return a
    if h != w:
        s = min(h, w)
        top, left = (h - s) // 2, (w - s) // 2
        a = a[top : top + s, left : left + s]
        notes.append(f"centre-cropped from {w}x{h} to {s}x{s}")
    s = a.shape[0]
    if s != res:
        chans = [
            np.asarray(
                Image.fromarray(a[..., i].astype(np.float32), mode="F").resize(
                    (res, res), Image.LANCZOS
                )
            )
            for i in range(a.shape[-1])
        ]
        a = np.clip(np.stack(chans, axis=-1), 0, 1)
        notes.append(
            f"resized from {s}x{s} to {res}x{res}"
            + (" (upsampled: expect a blurry target)" if s < res else "")
        )
    return a


def load_images(paths, gen) -> tuple[np.ndarray, list[str], list[str]]:
    """Reads image files into a batch for :func:`invert`, keeping every file that can be used.

    Policy: files are centre-cropped to a square and resized (Lanczos) to the generator's resolution
    with a warning; grayscale is repeated to RGB (and RGB turned to gray for 1-channel generators),
    alpha is dropped, 16-bit images are read at full precision, each with a warning. Files that are
    not images, ``.npy`` arrays that are not float images in [-1, 1] or hold NaN, are skipped with a
    warning naming the file and the reason.

    Args:
      paths: a directory, a glob pattern, a file, or a list of them (``.npy`` files hold float [H,
        W(, C)] in [-1, 1]).
      gen: the generator (its ``img_resolution`` and ``img_channels``).
    Returns:
      ``(images [N, R, R, C] float32 in [-1, 1], files [N] (the order of images), warnings [str])``.
    Raises:
      ValueError: no file could be used (listing why for each), or the generator's channel count is
        not one image files can give.
    """
    res, channels = gen.img_resolution, gen.img_channels
    if channels not in (1, 3, 4):
        raise ValueError(
            f"The generator makes {channels}-channel images; image files give 1 "
            "(gray), 3 (RGB) or 4 "
            "(RGBA) channels. Pass a float array [N, H, W, C] to invert() instead."
        )
    images, files, warnings = [], [], []
    for path in expand_image_paths(paths):
        notes: list[str] = []
        try:
            a = _fit_size(_fit_channels(_read_array(path, notes), channels, notes), res, notes)
        except (ValueError, OSError) as err:
            warnings.append(f"{path}: skipped: {err}")
            continue
        images.append(a * 2.0 - 1.0)
        files.append(str(path))
        warnings.extend(f"{path}: {n}" for n in notes)
    if not images:
        raise ValueError(
            "No usable image among the inputs:\n  " + "\n  ".join(warnings or ["(no files)"])
        )
    return np.stack(images).astype(np.float32), files, warnings


# --------------------------------------------------------------------------------------------------
# Quality measures and latents files
# --------------------------------------------------------------------------------------------------
def psnr(x, y) -> np.ndarray:
    """PSNR in dB per image of ``[N, H, W, C]`` images in [-1, 1], with peak-to-peak 1 after mapping
    to [0, 1]."""
    mse = np.mean(
        np.square((np.asarray(x, np.float64) - np.asarray(y, np.float64)) / 2), axis=(1, 2, 3)
    )
    return 10 * np.log10(1.0 / np.maximum(mse, 1e-20))


def _gaussian_blur(x: np.ndarray, sigma: float = 1.5, size: int = 11) -> np.ndarray:
    """'valid' separable Gaussian filter over axes 1, 2 of ``[N, H, W, C]``."""
    r = np.arange(size) - (size - 1) / 2
    g = np.exp(-(r**2) / (2 * sigma**2))
    g /= g.sum()
    h = x.shape[1] - size + 1
    x = sum(g[i] * x[:, i : i + h] for i in range(size))
    w = x.shape[2] - size + 1
    return sum(g[i] * x[:, :, i : i + w] for i in range(size))


def ssim(x, y) -> np.ndarray:
    """SSIM per image (Wang et al. 2004: 11x11 Gaussian window, sigma 1.5, K1 0.01, K2 0.03, data
    range 1 after mapping [-1, 1] to [0, 1]; 'valid' window positions, mean over positions and
    channels) of ``[N, H, W, C]``."""
    x = (np.asarray(x, np.float64) + 1) / 2
    y = (np.asarray(y, np.float64) + 1) / 2
    size = min(11, x.shape[1], x.shape[2])
    mx, my = _gaussian_blur(x, size=size), _gaussian_blur(y, size=size)
    vx = _gaussian_blur(x * x, size=size) - mx**2
    vy = _gaussian_blur(y * y, size=size) - my**2
    cov = _gaussian_blur(x * y, size=size) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    s = (2 * mx * my + c1) * (2 * cov + c2) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return s.mean(axis=(1, 2, 3))


def save_latents(path, result: InversionResult, files: Sequence[str]) -> None:
    """Writes ``ws``, ``files`` (the image order), ``space``, ``loss`` and ``noise/<name>`` maps
    (atomically)."""
    from regfac_jax import io_utils

    arrays = {
        "ws": result.ws,
        "files": np.array([str(f) for f in files]),
        "space": np.array(result.space),
        "loss": result.loss,
    }
    for k, v in (result.noise or {}).items():
        arrays[f"noise/{k}"] = v
    io_utils.save_npz(path, **arrays)


def load_latents(path, gen) -> tuple[np.ndarray, dict | None, list[str]]:
    """Reads a latents file of :func:`save_latents` (or any ``.npz`` with ``ws``), checked against
    ``gen``.

    Returns:
      ``(ws [N, num_ws, w_dim], noise {name: [N, R, R]} or None, files [N])``.
    """
    with np.load(path, allow_pickle=False) as data:
        if "ws" not in data.files:
            raise ValueError(
                f"{path} holds no 'ws' array (keys: {data.files}); write it with "
                "experiments.invert."
            )
        ws = data["ws"].astype(np.float32)
        files = (
            [str(f) for f in data["files"]]
            if "files" in data.files
            else [f"#{i}" for i in range(len(ws))]
        )
        noise = {
            k[len("noise/") :]: data[k].astype(np.float32)
            for k in data.files
            if k.startswith("noise/")
        }
    if ws.ndim != 3 or ws.shape[1:] != (gen.num_ws, gen.w_dim):
        raise ValueError(
            f"{path}: ws of shape {ws.shape} do not fit this generator ([N, "
            f"{gen.num_ws}, {gen.w_dim}]); were they inverted with another model?"
        )
    names = set(noise_names(gen))
    if noise and (set(noise) != names or any(v.shape[0] != len(ws) for v in noise.values())):
        raise ValueError(
            f"{path}: its noise maps {sorted(noise)} do not match this generator's {sorted(names)}."
        )
    return ws, noise or None, files


def edit_locality(
    gen,
    ws,
    direction,
    mask,
    noise: dict | None = None,
    layers: Sequence[int] | None = None,
    target_rms: float = 0.2,
) -> dict:
    """The locality metric (:func:`regfac_jax.metrics.locality`) of editing each image's latents
    along a w direction.

    The edit adds ``a * direction`` to the w of every layer in ``layers`` (all when None), i.e. a W+
    edit along the direction tiled over those layers, with steps calibrated per image to
    ``target_rms`` inside ``mask``.

    Args:
      ws: ``[N, num_ws, w_dim]`` (e.g. inverted latents); noise: their per-image noise maps or None.
      direction: ``[w_dim]``; mask: ``[H, W]`` region mask.
    Returns:
      ``metrics.locality``'s per-image arrays ``[N]`` ('share', 'rms_in', 'rms_out', 'step',
      'reached').
    """
    from regfac_jax import metrics

    ws = np.asarray(ws, np.float32)
    sel = np.zeros((gen.num_ws, 1), np.float32)
    sel[list(range(gen.num_ws)) if layers is None else list(layers)] = 1.0
    tiled = (sel * np.asarray(direction, np.float32).reshape(1, -1)).reshape(-1)
    flat = ws.reshape(len(ws), -1)
    if noise is None:
        return metrics.locality(gen.latent_fn("wplus"), flat, tiled, mask, target_rms)
    parts = [
        metrics.locality(
            image_fn(gen, {k: v[i] for k, v in noise.items()}, "wplus"),
            flat[i : i + 1],
            tiled,
            mask,
            target_rms,
        )
        for i in range(len(ws))
    ]
    return {k: np.concatenate([np.atleast_1d(p[k]) for p in parts]) for k in parts[0]}


__all__ = [
    "InversionConfig",
    "InversionResult",
    "SPACES",
    "area_downsample",
    "check_images",
    "edit_locality",
    "expand_image_paths",
    "image_fn",
    "invert",
    "load_images",
    "load_latents",
    "lr_ramp",
    "noise_names",
    "noise_regularizer",
    "normalize_noise",
    "psnr",
    "save_latents",
    "ssim",
    "synthesize",
    "w_noise_scale",
    "w_statistics",
]
