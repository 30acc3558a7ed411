"""pytorch-pretrained-biggan state_dict -> :class:`regfac_jax.models.biggan.BigGANGenerator`.

Rules (on top of ``converters.common``):

* a spectrally normalised layer stores ``<name>.weight_orig``, ``<name>.weight_u`` and
  ``<name>.weight_v``; it becomes ``<name>.weight`` = ``weight_orig / sigma`` with
  ``sigma = u . (W_mat @ v)`` from the stored vectors and no power iteration (what torch's
  ``spectral_norm`` uses in eval mode), ``W_mat`` = weight reshaped to ``[out, -1]``; sigma is
  computed in float64 and the folded weight is rounded to float32 once;
* conv weights ``[out, in, kh, kw]`` -> HWIO, dense weights ``[out, in]`` -> ``[in, out]``
  (the class embedding ``embeddings.weight`` ``[z_dim, num_classes]`` -> ``[num_classes, z_dim]``);
* ``running_means`` / ``running_vars`` (``[n_stats, C]``) go to ``buffers``; everything else to
  ``params``.
"""

from __future__ import annotations

import json
import os

import numpy as np

from converters.common import ConversionError, StrictStateDict, conv_weight, dense_weight, nest
from regfac_jax.models.biggan import REDUCTION, BigGANGenerator, check_config


def read_config(path: str | os.PathLike) -> dict:
    """Reads the package's ``config.json`` (a file, or a folder holding one) and validates it.

    Returns:
      the normalised config dict (missing keys take the package's defaults).
    Raises:
      ConversionError: the file is missing, not JSON, or inconsistent.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        path = os.path.join(path, "config.json")
    try:
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
    except FileNotFoundError:
        raise ConversionError(
            f"BigGAN config not found at {path}; pass the package's config.json."
        ) from None
    except json.JSONDecodeError as err:
        raise ConversionError(f"BigGAN config {path} is not valid JSON: {err}.") from None
    if not isinstance(raw, dict):
        raise ConversionError(
            f"BigGAN config {path} must hold a JSON object, got {type(raw).__name__}."
        )
    try:
        return check_config(raw)
    except ValueError as err:
        raise ConversionError(f"{path}: {err}") from None


def spectral_sigma(weight_orig: np.ndarray, u: np.ndarray, v: np.ndarray) -> float:
    """torch eval-mode spectral norm estimate ``u . (W_mat @ v)`` in float64 (``W_mat``: weight as
    ``[out, -1]``)."""
    w = np.asarray(weight_orig, np.float64).reshape(weight_orig.shape[0], -1)
    return float(np.dot(np.asarray(u, np.float64), w @ np.asarray(v, np.float64)))


def _take_sn(sd: StrictStateDict, name: str, shape: tuple) -> np.ndarray | None:
    """Takes ``name.weight_{orig,u,v}`` and returns the folded weight in torch layout (None if any
    is missing)."""
    fan_in = int(np.prod(shape[1:]))
    w = sd.take(f"{name}.weight_orig", shape, dtype=np.float64)
    u = sd.take(f"{name}.weight_u", (shape[0],), dtype=np.float64)
    v = sd.take(f"{name}.weight_v", (fan_in,), dtype=np.float64)
    if (
        w is None
        or u is None
        or v is None
        or w.shape != shape
        or u.shape != (shape[0],)
        or v.shape != (fan_in,)
    ):
        return None
    sigma = spectral_sigma(w, u, v)
    if not np.isfinite(sigma) or sigma == 0.0:
        raise ConversionError(
            f"{name}: spectral norm estimate u.(W v) = {sigma}; the u/v buffers are corrupt."
        )
    return (w / sigma).astype(np.float32)


class _Builder:
    """Collects converted arrays under their state_dict names (``.weight_orig`` -> ``.weight``)."""

    def __init__(self, sd: StrictStateDict):
        self.sd, self.params, self.buffers = sd, {}, {}

    def sn_dense(self, name: str, cout: int, cin: int) -> None:
        w = _take_sn(self.sd, name, (cout, cin))
        self.params[f"{name}.weight"] = None if w is None else dense_weight(w)

    def sn_conv(self, name: str, cout: int, cin: int, k: int, bias: bool = True) -> None:
        w = _take_sn(self.sd, name, (cout, cin, k, k))
        self.params[f"{name}.weight"] = None if w is None else conv_weight(w)
        if bias:
            self.params[f"{name}.bias"] = self.sd.take(f"{name}.bias", (cout,))

    def batch_norm(self, name: str, c: int, n_stats: int, cond_dim: int | None) -> None:
        for stat in ("running_means", "running_vars"):
            self.buffers[f"{name}.{stat}"] = self.sd.take(f"{name}.{stat}", (n_stats, c))
        if cond_dim is None:
            self.params[f"{name}.weight"] = self.sd.take(f"{name}.weight", (c,))
            self.params[f"{name}.bias"] = self.sd.take(f"{name}.bias", (c,))
        else:
            self.sn_dense(f"{name}.scale", c, cond_dim)
            self.sn_dense(f"{name}.offset", c, cond_dim)

    def plain(self, name: str, shape: tuple, transform=None) -> None:
        arr = self.sd.take(name, shape)
        self.params[name] = arr if arr is None or transform is None else transform(arr)


def _block(b: _Builder, prefix: str, cin: int, cout: int, cond_dim: int, n_stats: int) -> None:
    mid = cin // REDUCTION
    widths = [(cin, mid, 1), (mid, mid, 3), (mid, mid, 3), (mid, cout, 1)]
    for i, (ci, co, k) in enumerate(widths):
        b.batch_norm(f"{prefix}.bn_{i}", ci, n_stats, cond_dim)
        b.sn_conv(f"{prefix}.conv_{i}", co, ci, k)


def _attention(b: _Builder, prefix: str, c: int) -> None:
    for name, co, ci in (
        ("theta", c // 8, c),
        ("phi", c // 8, c),
        ("g", c // 2, c),
        ("o_conv", c, c // 2),
    ):
        b.sn_conv(f"{prefix}.snconv1x1_{name}", co, ci, 1, bias=False)
    b.plain(f"{prefix}.gamma", (1,))


def _check_sizes(state_dict, cfg: dict) -> None:
    """Direct messages for the config fields that most often disagree with a checkpoint."""
    problems = []
    emb = np.shape(
        state_dict.get("embeddings.weight", np.zeros((cfg["z_dim"], cfg["num_classes"])))
    )
    if tuple(emb) != (cfg["z_dim"], cfg["num_classes"]):
        problems.append(
            f"embeddings.weight is {tuple(emb)} = (z_dim, num_classes) but the config says "
            f"z_dim={cfg['z_dim']}, num_classes={cfg['num_classes']}"
        )
    gen = np.shape(state_dict.get("generator.gen_z.bias", np.zeros(256 * cfg["channel_width"])))
    if len(gen) == 1 and gen[0] != 256 * cfg["channel_width"]:
        problems.append(
            f"generator.gen_z.bias has {gen[0]} entries = 4*4*16*channel_width, i.e. channel_width="
            f"{gen[0] / 256:g}, but the config says channel_width={cfg['channel_width']}"
        )
    rm = np.shape(state_dict.get("generator.bn.running_means", np.zeros((cfg["n_stats"], 1))))
    if len(rm) == 2 and rm[0] != cfg["n_stats"]:
        problems.append(
            f"generator.bn.running_means has {rm[0]} rows but the config says "
            f"n_stats={cfg['n_stats']}"
        )
    if problems:
        raise ConversionError(
            "BigGAN checkpoint does not match its config: "
            + "; ".join(problems)
            + ". Use the config.json shipped with these weights."
        )


def convert(state_dict, config: dict) -> BigGANGenerator:
    """Converts a pytorch-pretrained-biggan ``BigGAN`` state_dict to a :class:`BigGANGenerator`.

    Args:
      state_dict: official key -> array (numpy or anything ``np.asarray`` accepts).
      config: the package's config.json content (see :func:`read_config`).
    Raises:
      ConversionError: an inconsistent config, or missing / unexpected / mis-shaped keys (all listed
        at once).
    """
    try:
        cfg = check_config(dict(config))
    except ValueError as err:
        raise ConversionError(str(err)) from None
    state_dict = dict(state_dict)
    _check_sizes(state_dict, cfg)
    sd = StrictStateDict(state_dict, what="BigGAN checkpoint")
    ch, n_stats, cond_dim = cfg["channel_width"], cfg["n_stats"], 2 * cfg["z_dim"]
    b = _Builder(sd)
    b.plain("embeddings.weight", (cfg["z_dim"], cfg["num_classes"]), dense_weight)
    b.sn_dense("generator.gen_z", 4 * 4 * 16 * ch, cond_dim)
    b.params["generator.gen_z.bias"] = sd.take("generator.gen_z.bias", (4 * 4 * 16 * ch,))
    slot = 0
    for i, (_, cin, cout) in enumerate(cfg["layers"]):
        if i == cfg["attention_layer_position"]:
            _attention(b, f"generator.layers.{slot}", ch * cin)
            slot += 1
        _block(b, f"generator.layers.{slot}", ch * cin, ch * cout, cond_dim, n_stats)
        slot += 1
    b.batch_norm("generator.bn", ch, n_stats, None)
    b.sn_conv("generator.conv_to_rgb", ch, ch, 3)
    sd.finish()
    return BigGANGenerator(config=cfg, params=nest(b.params), buffers=nest(b.buffers))


__all__ = ["convert", "read_config", "spectral_sigma"]
