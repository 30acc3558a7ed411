"""Training the shipped demo generator: a small StyleGAN2 on procedural cartoon faces (32x32), on a
CPU.

  python -m experiments.train_demo --workdir /tmp/regfac_demo_train --config.max_minutes 45 \
      --config.export regfac_jax/data/demo_faces --config.docs docs/demo

The shipped ``regfac_jax/data/demo_faces`` came from two such sittings (45 and ~35 minutes on 2 CPU
cores shared with other jobs; the second resumed; its config.json records the exact step count,
images seen and minutes). ``:tiny`` shrinks the model to 16x16 with tiny channels, a seconds-long
smoke run.
"""

import ml_collections

from experiments.configs import base


def get_config(arg: str | None = None):
    a = base.parse_arg(arg, tiny=False)
    cfg = ml_collections.ConfigDict()
    # total iterations (one D and one G step each); training stops at this step
    cfg.steps = 20000
    # ... or after this much wall time in one invocation (a checkpoint is written)
    cfg.max_minutes = 45.0
    cfg.batch = 16
    cfg.seed = 0  # initialisation, noise and the data stream
    cfg.ckpt_every = 250  # checkpoint interval in steps
    cfg.tiny = a.tiny
    # write the EMA generator here (npz, json, SHA256SUMS)
    cfg.export = ml_collections.config_dict.placeholder(str)
    # write sample/real grids and the distribution check
    cfg.docs = ml_collections.config_dict.placeholder(str)
    if cfg.tiny:
        cfg.steps, cfg.batch, cfg.ckpt_every = 4, 4, 2
    return cfg
