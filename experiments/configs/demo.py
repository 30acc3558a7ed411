"""The measured demo on the shipped model: ReSeFa and four baselines, their locality table, edit
grids and GIFs.

  python -m experiments.demo --workdir /tmp/regfac_demo   (92 s on a 2-core CPU)

Fields are those of ``regfac_jax.demo.DemoConfig`` (override any, e.g. ``--config.num_discovery 8``)
plus ``overwrite`` (replace a different run in the work directory). ``:tiny`` is a seconds-long
smoke run.
"""

import dataclasses

import ml_collections

from experiments.configs import base
from regfac_jax.demo import DemoConfig


def get_config(arg: str | None = None):
    a = base.parse_arg(arg, tiny=False)
    fields = {f.name: f.default for f in dataclasses.fields(DemoConfig)}
    fields["regions"] = ",".join(fields["regions"])  # a comma-separated string on the command line
    cfg = ml_collections.ConfigDict({**fields, "overwrite": False})
    if a.tiny:
        cfg.num_discovery, cfg.num_eval, cfg.num_ganspace = 2, 4, 256
        cfg.calibration_iters, cfg.robustness = 8, False
    return cfg
