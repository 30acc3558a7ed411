"""Memory of one inversion step into a 1024x1024 StyleGAN2 (config-f shapes, pixel loss), without
any weights file.

Run from the repository root:  PYTHONPATH=. python docs/inversion/memory_1024.py [BATCH]

Builds abstract (shape-only) parameters of the official FFHQ-1024 configuration, lowers and compiles
the jitted optimisation step of ``regfac_jax.inversion`` for BATCH images, and prints XLA's compiled
memory analysis.
"""

import sys
import time

import jax
import jax.numpy as jnp

from regfac_jax import inversion, trees
from regfac_jax.models import stylegan2

CONFIG = dict(
    z_dim=512,
    w_dim=512,
    c_dim=0,
    img_resolution=1024,
    img_channels=3,
    mapping_kwargs=dict(num_layers=8),
    synthesis_kwargs=dict(channel_base=32768, channel_max=512, conv_clamp=256),
)


# The optimisation step's scalar hyperparameters (float32 scalars in the jitted step).
SCALARS = (
    "learning_rate",
    "w_std",
    "mse_weight",
    "lpips_weight",
    "noise_regularization",
    "w_prior",
    "layer_spread",
)


def _abstract_generator() -> stylegan2.StyleGAN2Generator:
    """The config-f generator with shape-only parameters and buffers."""
    params, buffers = jax.eval_shape(
        lambda k: stylegan2.init_variables(CONFIG, k), jax.random.key(0)
    )
    return stylegan2.StyleGAN2Generator(CONFIG, params, buffers)


def _hyperparameters(gen) -> dict:
    """Shapes of the step's hyperparameters: the scalars, the W mean and spread, the step count."""
    S = jax.ShapeDtypeStruct
    hp = {k: S((), jnp.float32) for k in SCALARS}
    hp.update(
        w_avg=S((gen.w_dim,), jnp.float32),
        w_sd=S((gen.w_dim,), jnp.float32),
        num_steps=S((), jnp.int32),
    )
    return hp


def main(n: int) -> None:
    S = jax.ShapeDtypeStruct
    gen = _abstract_generator()
    flat = trees.flatten(gen.buffers)
    opt = {
        "w": S((n, gen.num_ws, gen.w_dim), jnp.float32),
        "noise": {k: S((n,) + flat[k].shape, jnp.float32) for k in inversion.noise_names(gen)},
    }
    s = inversion._Settings(1, 0.25, 0.05, 0.05, 0.75, 256, False)
    hp = _hyperparameters(gen)
    opt_state = jax.eval_shape(lambda o, h: inversion._optimizer(s, h).init(o), opt, hp)
    keys = jax.eval_shape(
        lambda: jax.vmap(jax.random.fold_in, in_axes=(None, 0))(jax.random.key(0), jnp.arange(n))
    )
    t0 = time.time()
    images = S((n, 1024, 1024, 3), jnp.float32)
    prob = inversion._Problem(gen.params, gen.buffers, None, hp, images, keys)
    compiled = inversion._run_chunk.lower(gen, s, prob, (opt, opt_state), 0).compile()
    m = compiled.memory_analysis()
    print(
        f"batch {n}: temporaries {m.temp_size_in_bytes / 2**30:.2f} GiB, arguments "
        f"{m.argument_size_in_bytes / 2**30:.2f} GiB, outputs "
        f"{m.output_size_in_bytes / 2**30:.2f} GiB "
        f"(compiled in {time.time() - t0:.0f} s on {jax.default_backend()})"
    )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1)
