"""Training a small StyleGAN2 from scratch: losses, lazy R1, EMA generator and Adam, as pure
functions.

The recipe follows stylegan2-ada-pytorch's ``StyleGAN2Loss`` and training loop, minus what a
procedural dataset with unlimited samples does not need (no ADA augmentation) and minus the
path-length regulariser (kept out to fit the CPU budget; it shapes W's smoothness, not sample
quality at this size):

* non-saturating logistic loss: ``G: softplus(-D(G(z)))``,
  ``D: softplus(D(G(z))) + softplus(-D(x))``;
* lazy R1 on reals every ``r1_interval`` D steps, weighted ``gamma / 2 * r1_interval``, with the
  official Adam correction for lazy regularisation (``lr * c`` and ``beta ** c``,
  ``c = interval / (interval + 1)``); here the R1 term is added to that step's D loss instead of
  taking a separate optimiser step;
* style mixing (two latents, a random crossover layer) with probability ``style_mixing``;
* the mapping network's running mean ``w_avg`` (beta 0.995), used later for truncation;
* an EMA copy of the generator whose half-life is ``ema_kimg`` thousand images, ramped up over the
  first ``ema_rampup`` of training.

State is one pytree (:class:`TrainState`) so a checkpoint is one ``flax.serialization`` blob.
Everything here is pure and jit-able except :func:`train_and_export`, the resumable loop that
``experiments/train_demo.py`` calls.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from regfac_jax.demo import discriminator as disc_lib
from regfac_jax.models import stylegan2

PyTree = Any


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters (defaults: the official ones for a batch of 32, except where noted)."""

    batch_size: int = 32
    lr: float = 0.0025
    betas: tuple[float, float] = (0.0, 0.99)
    r1_gamma: float = 0.01  # official auto config would give 0.0002 * 32**2 / 32 = 0.0064
    r1_interval: int = 16
    style_mixing: float = 0.9
    w_avg_beta: float = 0.995
    ema_kimg: float = 10.0
    ema_rampup: float | None = 0.05
    d_channel_base: int = 1024
    d_channel_max: int = 64
    mbstd_group: int = 4


class TrainState(NamedTuple):
    """Everything a resumed run needs."""

    step: jax.Array  # int32 scalar: completed iterations
    g_params: PyTree
    g_buffers: PyTree  # w_avg, noise_const, resample filters
    d_params: PyTree
    g_opt: PyTree
    d_opt: PyTree
    ema_params: PyTree


def init_stylegan2(key: jax.Array, config: dict) -> tuple[dict, dict]:
    """A freshly initialised StyleGAN2 generator in the converter's tree layout.

    The official initialisation: weights N(0, 1) (dense weights divided by their lr multiplier),
    biases at their ``bias_init`` (0, or 1 for style affines), noise strengths 0, ``const`` and
    ``noise_const`` N(0, 1), ``w_avg`` 0, resample filters as designed.

    Args:
      key: PRNG key.
      config: official ``training.networks.Generator`` init_kwargs.
    Returns:
      ``(params, buffers)``, the trees ``converters.stylegan2.convert`` produces for the same
      config.
    """
    params, buffers = stylegan2.init_variables(config, key)
    if "mapping" not in buffers:
        raise ValueError(
            "The demo training tracks w_avg; mapping_kwargs.w_avg_beta must not be None."
        )
    return params, buffers


def make_discriminator(resolution: int, cfg: TrainConfig) -> disc_lib.Discriminator:
    """The discriminator module matching ``cfg``."""
    return disc_lib.Discriminator(
        img_resolution=resolution,
        channel_base=cfg.d_channel_base,
        channel_max=cfg.d_channel_max,
        mbstd_group=cfg.mbstd_group,
    )


def optimizers(
    cfg: TrainConfig,
) -> tuple[optax.GradientTransformation, optax.GradientTransformation]:
    """(G, D) Adam optimisers; D's carries the lazy-R1 correction."""
    c = cfg.r1_interval / (cfg.r1_interval + 1)
    g_opt = optax.adam(cfg.lr, b1=cfg.betas[0], b2=cfg.betas[1], eps=1e-8)
    d_opt = optax.adam(cfg.lr * c, b1=cfg.betas[0] ** c, b2=cfg.betas[1] ** c, eps=1e-8)
    return g_opt, d_opt


def init_state(key: jax.Array, g_config: dict, cfg: TrainConfig) -> TrainState:
    """Initial :class:`TrainState` for a generator ``g_config``."""
    kg, kd = jax.random.split(key)
    g_params, g_buffers = init_stylegan2(kg, g_config)
    res = g_config["img_resolution"]
    d_params = make_discriminator(res, cfg).init(kd, jnp.zeros((cfg.mbstd_group, res, res, 3)))[
        "params"
    ]
    g_opt, d_opt = optimizers(cfg)
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        g_params=g_params,
        g_buffers=g_buffers,
        d_params=d_params,
        g_opt=g_opt.init(g_params),
        d_opt=d_opt.init(d_params),
        ema_params=jax.tree.map(jnp.array, g_params),
    )


def generate(
    gen: stylegan2.StyleGAN2Generator, params, buffers, key, batch: int, style_mixing: float
):
    """Training-mode generation: random z (two for style mixing), random noise.

    Returns:
      ``(images [N, R, R, C], w [N, w_dim])``: the unmixed w feeds the ``w_avg`` update.
    """
    kz, kz2, kmix, kcut, knoise = jax.random.split(key, 5)
    c = jnp.zeros((batch, 0), jnp.float32)
    z = jax.random.normal(kz, (batch, gen.z_dim))
    ws = gen.mapping_apply(params, buffers, z, c, 1.0)
    ws2 = gen.mapping_apply(params, buffers, jax.random.normal(kz2, (batch, gen.z_dim)), c, 1.0)
    cutoff = jax.random.randint(kcut, (), 1, gen.num_ws)
    cutoff = jnp.where(jax.random.uniform(kmix) < style_mixing, cutoff, gen.num_ws)
    mix = (jnp.arange(gen.num_ws) >= cutoff)[None, :, None]
    ws = jnp.where(mix, ws2, ws)
    return gen.synthesis_apply(params, buffers, ws, noise_mode="random", key=knoise), ws[:, 0]


def r1_penalty(d_apply, d_params, reals: jax.Array) -> jax.Array:
    """Per-sample ``||dD(x)/dx||^2`` ``[N]`` at the real images ``[N, R, R, C]``."""
    grad = jax.grad(lambda x: jnp.sum(d_apply(d_params, x)))(reals)
    return jnp.sum(jnp.square(grad), axis=(1, 2, 3))


def ema_beta(step: jax.Array, cfg: TrainConfig) -> jax.Array:
    """The EMA decay after ``step`` completed iterations."""
    ema_nimg = cfg.ema_kimg * 1000.0
    if cfg.ema_rampup is not None:
        ema_nimg = jnp.minimum(ema_nimg, (step + 1) * cfg.batch_size * cfg.ema_rampup)
    return 0.5 ** (cfg.batch_size / jnp.maximum(ema_nimg, 1e-8))


def _d_step(state: TrainState, reals, key, gen, d_apply, cfg: TrainConfig, with_r1: bool):
    fakes, _ = generate(gen, state.g_params, state.g_buffers, key, reals.shape[0], cfg.style_mixing)
    fakes = jax.lax.stop_gradient(fakes)

    def loss_fn(d_params):
        loss = jnp.mean(
            jax.nn.softplus(d_apply(d_params, fakes)) + jax.nn.softplus(-d_apply(d_params, reals))
        )
        r1 = jnp.mean(r1_penalty(d_apply, d_params, reals)) if with_r1 else jnp.zeros(())
        return loss + r1 * (cfg.r1_gamma / 2) * cfg.r1_interval, (loss, r1)

    (_, (loss, r1)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.d_params)
    updates, d_opt = optimizers(cfg)[1].update(grads, state.d_opt, state.d_params)
    return (
        state._replace(d_params=optax.apply_updates(state.d_params, updates), d_opt=d_opt),
        loss,
        r1,
    )


def _g_step(state: TrainState, key, gen, d_apply, cfg: TrainConfig):
    def loss_fn(g_params):
        fakes, w = generate(gen, g_params, state.g_buffers, key, cfg.batch_size, cfg.style_mixing)
        return jnp.mean(jax.nn.softplus(-d_apply(state.d_params, fakes))), w

    (loss, w), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.g_params)
    updates, g_opt = optimizers(cfg)[0].update(grads, state.g_opt, state.g_params)
    g_params = optax.apply_updates(state.g_params, updates)
    buffers = dict(state.g_buffers)
    old = buffers["mapping"]["w_avg"]
    buffers["mapping"] = {
        **buffers["mapping"],
        "w_avg": jnp.mean(w, 0) + cfg.w_avg_beta * (old - jnp.mean(w, 0)),
    }
    beta = ema_beta(state.step, cfg)
    ema = jax.tree.map(lambda e, p: p + beta * (e - p), state.ema_params, g_params)
    return state._replace(g_params=g_params, g_buffers=buffers, g_opt=g_opt, ema_params=ema), loss


@functools.partial(jax.jit, static_argnames=("gen", "cfg", "with_r1"))
def train_step(
    state: TrainState,
    reals: jax.Array,
    key: jax.Array,
    gen: stylegan2.StyleGAN2Generator,
    cfg: TrainConfig,
    with_r1: bool,
) -> tuple[TrainState, dict]:
    """One iteration: a D step (with R1 when ``with_r1``), then a G step, w_avg and EMA updates.

    Args:
      state: current :class:`TrainState`.
      reals: ``[batch_size, R, R, 3]`` real images in [-1, 1].
      key: PRNG key for this iteration.
      gen: a generator object of the trained config (only its pure functions are used; hashed by
        identity).
      cfg: hyper-parameters.
      with_r1: add the lazy R1 term (call with True every ``cfg.r1_interval`` steps).
    Returns:
      ``(new_state, metrics)`` with scalar losses 'loss_d', 'loss_g', 'r1'.
    """
    d_apply = make_discriminator(reals.shape[1], cfg).apply
    d_apply = functools.partial(_apply_params, d_apply)
    kd, kg = jax.random.split(key)
    state, loss_d, r1 = _d_step(state, reals, kd, gen, d_apply, cfg, with_r1)
    state, loss_g = _g_step(state, kg, gen, d_apply, cfg)
    return state._replace(step=state.step + 1), {"loss_d": loss_d, "loss_g": loss_g, "r1": r1}


def _apply_params(apply_fn, params, x):
    return apply_fn({"params": params}, x)


def ema_generator(state: TrainState, config: dict) -> stylegan2.StyleGAN2Generator:
    """The EMA generator (with the trained buffers) as a generator object."""
    return stylegan2.StyleGAN2Generator(
        config=config, params=state.ema_params, buffers=state.g_buffers
    )


# --------------------------------------------------------------------------------------------------
# The training run: resumable loop, checkpoints, export
# --------------------------------------------------------------------------------------------------
def _export_info(state: TrainState, cfg: TrainConfig, run, meta: dict) -> dict:
    """The training record that ``config.json`` of an exported generator carries."""
    steps = int(state.step)
    return {
        "steps": steps,
        "images_seen": steps * run.batch,
        "batch": run.batch,
        "train_minutes": round(meta["train_seconds"] / 60, 1),
        "seed": run.seed,
        "train_config": dict(vars(cfg)),
        "command": (
            "python -m experiments.train_demo --workdir /tmp/regfac_demo_train "
            f"--config.max_minutes 600 --config.steps {steps} --config.batch {run.batch} "
            f"--config.seed {run.seed} --config.export {run.export}"
        ),
        "note": "resumable: rerunning the command continues from the newest checkpoint in "
        "--workdir",
    }


def _checkpoint(workdir, state: TrainState, run, metrics: dict, train_seconds: float) -> dict:
    """Saves ``state`` to ``workdir`` with its meta (seconds trained, batch, seed, last losses).

    Returns:
      The meta.
    """
    from regfac_jax.demo import runner

    meta = {
        "train_seconds": train_seconds,
        "batch": run.batch,
        "seed": run.seed,
        "last_metrics": {k: float(v) for k, v in metrics.items()},
    }
    runner.save_training(workdir, state, meta)
    return meta


def _train(state: TrainState, gen, cfg: TrainConfig, run, workdir, meta: dict, progress: bool):
    """Steps from ``state.step`` to ``run.steps`` (or for ``run.max_minutes``), checkpointing every
    ``ckpt_every`` steps and at the end.

    Returns:
      The final state and the meta of its checkpoint.
    """
    import concurrent.futures
    import time

    from tqdm.auto import tqdm

    from regfac_jax.demo import faces

    start = int(state.step)
    stream = faces.batches(run.seed, run.batch, gen.img_resolution, start=start)
    deadline, t0, seconds = (
        time.time() + 60 * run.max_minutes,
        time.time(),
        meta.get("train_seconds", 0.0),
    )
    with (
        concurrent.futures.ThreadPoolExecutor(1) as pool,
        tqdm(
            total=run.steps, initial=start, unit="step", desc="train demo GAN", disable=not progress
        ) as bar,
    ):
        pending = pool.submit(next, stream)  # the next batch is drawn while this step runs
        for step in range(start, run.steps):
            reals = jnp.asarray(pending.result())
            pending = pool.submit(next, stream)
            key = jax.random.fold_in(jax.random.key(run.seed), step)
            state, metrics = train_step(state, reals, key, gen, cfg, step % cfg.r1_interval == 0)
            bar.update(1)
            if step % 25 == 0:
                bar.set_postfix({k: f"{float(v):.3f}" for k, v in metrics.items()})
            done = step + 1 == run.steps or time.time() > deadline
            if (step + 1) % run.ckpt_every == 0 or done:
                meta = _checkpoint(workdir, state, run, metrics, seconds + time.time() - t0)
            if done:
                break
    meta.setdefault("train_seconds", seconds)
    return state, meta


def train_and_export(run, workdir, progress: bool = True) -> dict:
    """Trains the demo generator from the newest checkpoint in ``workdir``, then exports it if
    asked.

    Args:
      run: an ``experiments/configs/train_demo.py`` config (any object with its fields): ``steps``,
        ``max_minutes``, ``batch``, ``seed``, ``ckpt_every``, ``tiny``, ``export`` and ``docs``
        (None = skip).
      workdir: checkpoints (``state.msgpack``, ``state.json``), written every ``ckpt_every`` steps
        and at exit.
      progress: show a progress bar with the losses.

    Returns:
      ``{"step", "images_seen", "train_minutes", "last_metrics", "docs_report"}``.
    """
    from regfac_jax.demo import runner

    g_config = runner.demo_generator_config(tiny=run.tiny)
    syn = g_config["synthesis_kwargs"]
    cfg = TrainConfig(
        batch_size=run.batch, d_channel_base=syn["channel_base"], d_channel_max=syn["channel_max"]
    )
    state, meta = runner.restore_training(workdir, g_config, cfg, run.seed)
    state, meta = _train(state, ema_generator(state, g_config), cfg, run, workdir, meta, progress)
    report = {
        "step": int(state.step),
        "images_seen": int(state.step) * run.batch,
        "train_minutes": meta["train_seconds"] / 60,
        "last_metrics": meta.get("last_metrics", {}),
        "docs_report": None,
    }
    if run.export:
        runner.export_generator(
            ema_generator(state, g_config), run.export, _export_info(state, cfg, run, meta)
        )
    if run.docs:
        report["docs_report"] = runner.write_sample_docs(ema_generator(state, g_config), run.docs)
    return report
