"""Defaults shared by every experiment config; figure configs override a few fields.

Fields (all overridable on the command line, e.g. ``--config.num_samples 16``):

* ``model``: 'demo' (shipped model), 'fixture:<name>', a checkpoint (NVlabs .pkl, Hammer .pth,
  state_dict + JSON, BigGAN directory) or a directory written by ``python -m converters``.
* ``dataset``: the namespace of region presets ('ffhq', 'ffhqu', 'biggan', 'faces' for the demo
  model).
* ``regions``: comma-separated presets, or ``box:r,c,h,w`` / ``file:PATH`` / ``seg:PATH:l1+l2``
  separated by ';'.
* ``space``: 'w' (paper), 'wplus', or for BigGAN 'z' / 'class'; ``layers``: W-space layer subset
  (None = all).
* ``num_samples``, ``seed``, ``latents_file``, ``truncation_psi``, ``truncation_cutoff`` (None = all
  layers).
* ``aggregation``: 'mean' (Grams averaged over samples) or 'per_sample' (one solve per sample, as
  the paper).
* ``scale_out``: 'auto' or 'sharded' (samples split over all devices of all hosts) or 'loop' (one
  device); either way Grams go through the one resume mechanism (orbax checkpoints in
  ``WORKDIR/grams_ckpt``). ``save_interval_secs``: seconds between checkpoints; ``block_size``:
  samples per step over all devices (None: 4 per device; checkpoints fall between steps).
* ``official``: the paper script's default run (Jacobians of images resized to 256 + channel sum,
  per-sample ``eig(inv(B) . A)`` in float32, **no** regularisation), plus ours on the same Grams and
  problem for comparison.
* ``official_full_rank``: with ``official``, the script's ``--full_rank`` run instead:
  ``B + tau * trace(B) * I`` (tau = ``solver.tau``, default the paper's ``--tao`` 1e-3), solved in
  float64 as the script does.
* ``jacobian``: tangent_chunk, preprocess ('none' | 'official'), strategy, memory_budget_gib.
* ``solver``: k, regularization ('auto' | 'paper' | 'none'; 'whiten' only), tau (None = default),
  method ('whiten' | 'official' | 'official_full_rank'; see
  ``regfac_jax.directions.generalized_eigh``).
* ``manipulate``: indices, layers (paper: '4-7'), step_start/step_stop/num_steps (paper: -10, 10,
  7), truncation_psi / truncation_cutoff (paper: 0.7 on the first 8 layers), num_samples, seed;
  region: the region whose locality ``--latents`` edits report (None = the directions file's
  name).
* ``inversion`` (``experiments.invert``): space ('w' | 'wplus'), every field of
  ``regfac_jax.inversion.InversionConfig`` at its default (num_steps, learning_rate, its ramps,
  noise settings, mse_weight, lpips_weight, w_prior / layer_spread: pull w towards the mean w / W+
  layers towards each other, editability for fidelity, 0 = the projector; ...), vgg16 (torchvision
  VGG16 .pth or converted .npz: enables LPIPS; None = pixel loss only), lpips_linear (None = the
  installed lpips package's heads), seed, batch_size.
"""

import dataclasses

import ml_collections
from ml_collections import config_dict


def parse_arg(arg: str | None, **defaults) -> ml_collections.ConfigDict:
    """Parses a config's argument (``--config file.py:ARG``) into typed fields.

    ``ARG`` is a comma-separated list of ``key=value`` pairs and bare ``key`` flags (``key`` alone
    means True): ``parse_arg("preset=eyesr2,tiny", preset="eyes", tiny=False)`` gives
    ``preset='eyesr2', tiny=True``. Every key must be one of ``defaults``; values take the type of
    their default.

    Raises:
      ValueError: an unknown key, or a value that does not parse as its default's type.
    """
    out = ml_collections.ConfigDict(defaults)
    for item in filter(None, (part.strip() for part in (arg or "").split(","))):
        key, has_value, value = item.partition("=")
        if key not in defaults:
            raise ValueError(
                f"Unknown config argument {key!r} in {arg!r}; this config takes {sorted(defaults)} "
                "(e.g. 'key=value,flag')."
            )
        default = defaults[key]
        if not has_value:
            if not isinstance(default, bool):
                raise ValueError(f"Config argument {key!r} needs a value ({key}=...), got {arg!r}.")
            out[key] = True
        elif isinstance(default, bool):
            if value.lower() not in ("true", "false", "1", "0"):
                raise ValueError(f"Config argument {key}={value!r} is not a boolean.")
            out[key] = value.lower() in ("true", "1")
        else:
            try:
                out[key] = type(default)(value)
            except ValueError as err:
                raise ValueError(
                    f"Config argument {key}={value!r} is not a {type(default).__name__}."
                ) from err
    return out


def base_config() -> ml_collections.ConfigDict:
    cfg = ml_collections.ConfigDict()
    cfg.model = "demo"
    cfg.dataset = "faces"
    cfg.regions = "eyes"
    cfg.space = "w"
    cfg.layers = config_dict.placeholder(str)
    cfg.num_samples = 5
    cfg.seed = 4
    cfg.latents_file = config_dict.placeholder(str)
    cfg.truncation_psi = 1.0
    cfg.truncation_cutoff = config_dict.placeholder(int)
    cfg.noise_mode = "const"
    cfg.translate = (0.0, 0.0)
    cfg.rotate = 0.0
    cfg.classes = "0"
    cfg.truncation = 0.4
    cfg.aggregation = "mean"
    cfg.scale_out = "auto"
    cfg.save_interval_secs = 300.0
    cfg.block_size = config_dict.placeholder(int)
    cfg.official = False
    cfg.official_full_rank = False
    cfg.overwrite = False
    cfg.jacobian = ml_collections.ConfigDict(
        dict(tangent_chunk=64, preprocess="none", strategy="auto", memory_budget_gib=8.0)
    )
    cfg.solver = ml_collections.ConfigDict(
        dict(k=20, regularization="auto", tau=config_dict.placeholder(float), method="whiten")
    )
    cfg.manipulate = ml_collections.ConfigDict(
        dict(
            indices="0",
            layers="4-7",
            step_start=-10.0,
            step_stop=10.0,
            num_steps=7,
            truncation_psi=0.7,
            truncation_cutoff=8,
            num_samples=4,
            seed=0,
        )
    )
    cfg.manipulate.region = config_dict.placeholder(str)
    cfg.inversion = ml_collections.ConfigDict(
        dict(
            space="w",
            **_inversion_defaults(),
            vgg16=config_dict.placeholder(str),
            lpips_linear=config_dict.placeholder(str),
            seed=0,
            batch_size=16,
        )
    )
    return cfg


def _inversion_defaults() -> dict:
    """Every ``regfac_jax.inversion.InversionConfig`` setting at its default (one source of them)."""
    from regfac_jax import inversion

    return {f.name: f.default for f in dataclasses.fields(inversion.InversionConfig)}


def tiny(cfg: ml_collections.ConfigDict, fixture: str, regions: str, dataset: str | None = None):
    """Shrinks a figure config to a CPU smoke run on a reference fixture (32x32 models)."""
    cfg.model = f"fixture:{fixture}"
    cfg.regions = regions
    if dataset:
        cfg.dataset = dataset
    cfg.num_samples = 2
    cfg.solver.k = 5
    cfg.manipulate.num_samples = 2
    cfg.manipulate.num_steps = 3
    cfg.manipulate.layers = None
    cfg.manipulate.truncation_cutoff = None
    return cfg
