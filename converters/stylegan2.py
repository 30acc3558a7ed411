"""stylegan2-ada-pytorch ``training.networks.Generator`` state_dict -> :class:`StyleGAN2Generator`.

Every expected key and shape is derived from the config (the official init_kwargs), never from the
checkpoint; each key must be used exactly once (:class:`converters.common.StrictStateDict`). Layout
changes, applied through ``converters.common`` only: convolution weights (``*.weight`` of
conv0/conv1/torgb/skip) OIHW -> HWIO, dense weights (``*.affine.weight``, ``mapping.fc*.weight``,
``mapping.embed.weight``) [out, in] -> [in, out]; all other arrays keep their official layout.
``w_avg``, ``noise_const`` and ``resample_filter`` go to ``buffers``, the rest to ``params``.
"""

from __future__ import annotations

from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from converters.common import ConversionError, StrictStateDict, conv_weight, dense_weight, nest
from regfac_jax.models.stylegan2 import StyleGAN2Generator, StyleGAN2Spec, parse_config
from regfac_jax.ops.upfirdn2d import setup_filter

_CONV, _DENSE, _KEEP = "conv", "dense", "keep"
_BUFFERS = ("w_avg", "noise_const", "resample_filter")


def _dense(prefix: str, n_in: int, n_out: int) -> list[tuple[str, tuple, str]]:
    return [(f"{prefix}.weight", (n_out, n_in), _DENSE), (f"{prefix}.bias", (n_out,), _KEEP)]


def _synthesis_layer(spec: StyleGAN2Spec, prefix: str, n_in: int, n_out: int, res: int, up: int):
    k = spec.kernel_size
    rows = [(f"{prefix}.resample_filter", setup_filter(list(spec.layer_filter(up))).shape, _KEEP)]
    rows += _dense(f"{prefix}.affine", spec.w_dim, n_in)
    rows.append((f"{prefix}.weight", (n_out, n_in, k, k), _CONV))
    if spec.use_noise:
        rows += [
            (f"{prefix}.noise_const", (res, res), _KEEP),
            (f"{prefix}.noise_strength", (), _KEEP),
        ]
    rows.append((f"{prefix}.bias", (n_out,), _KEEP))
    return rows


def _block(spec: StyleGAN2Spec, res: int) -> list[tuple[str, tuple, str]]:
    p, out_ch = f"synthesis.b{res}", spec.channels(res)
    rows = [(f"{p}.resample_filter", spec.filter_shape, _KEEP)]
    if res == 4:
        rows.append((f"{p}.const", (out_ch, res, res), _KEEP))
    else:
        in_ch = spec.channels(res // 2)
        rows += _synthesis_layer(spec, f"{p}.conv0", in_ch, out_ch, res, up=2)
    rows += _synthesis_layer(spec, f"{p}.conv1", out_ch, out_ch, res, up=1)
    if spec.block_has_torgb(res):
        rows += _dense(f"{p}.torgb.affine", spec.w_dim, out_ch)
        rows += [
            (f"{p}.torgb.weight", (spec.img_channels, out_ch, 1, 1), _CONV),
            (f"{p}.torgb.bias", (spec.img_channels,), _KEEP),
        ]
    if res > 4 and spec.architecture == "resnet":
        rows += [
            (f"{p}.skip.resample_filter", spec.filter_shape, _KEEP),
            (f"{p}.skip.weight", (out_ch, spec.channels(res // 2), 1, 1), _CONV),
        ]
    return rows


def state_dict_layout(config: dict) -> list[tuple[str, tuple, str]]:
    """(official key, official shape, layout rule) for every entry the official state_dict holds for
    ``config``."""
    spec = _spec(config)
    rows = []
    for res in spec.block_resolutions:
        rows += _block(spec, res)
    if spec.c_dim > 0:
        rows += _dense("mapping.embed", spec.c_dim, spec.embed_features)
    features = (
        [spec.z_dim + spec.embed_features]
        + [spec.layer_features] * (spec.num_mapping_layers - 1)
        + [spec.w_dim]
    )
    for idx in range(spec.num_mapping_layers):
        rows += _dense(f"mapping.fc{idx}", features[idx], features[idx + 1])
    if spec.has_w_avg:
        rows.append(("mapping.w_avg", (spec.w_dim,), _KEEP))
    return rows


def _spec(config) -> StyleGAN2Spec:
    try:
        return parse_config(config)
    except ValueError as err:
        raise ConversionError(str(err)) from None


def convert(state_dict: Mapping[str, object], config: dict) -> StyleGAN2Generator:
    """Converts an official StyleGAN2(-ada) generator state_dict to a :class:`StyleGAN2Generator`.

    Args:
      state_dict: official key -> array (numpy or anything ``np.asarray`` accepts), float32 or
        float64.
      config: the official init_kwargs (z_dim, c_dim, w_dim, img_resolution, img_channels,
        mapping_kwargs, synthesis_kwargs).
    Returns:
      The generator, with float32 params and buffers.
    Raises:
      ConversionError: invalid config, or missing / unexpected keys, shape mismatches, float16
        arrays.
    """
    rows = state_dict_layout(config)
    sd = StrictStateDict(state_dict, what="StyleGAN2 state_dict")
    params, buffers = {}, {}
    for key, shape, rule in rows:
        arr = sd.take(key, shape)
        if arr is None or arr.shape != tuple(shape):
            continue  # recorded by StrictStateDict; reported together by finish()
        arr = conv_weight(arr) if rule == _CONV else dense_weight(arr) if rule == _DENSE else arr
        (buffers if key.rsplit(".", 1)[-1] in _BUFFERS else params)[key] = np.asarray(
            arr, np.float32
        )
    sd.finish()
    _check_finite(params, buffers)

    def to_device(flat: dict) -> dict:
        return jax.tree.map(jnp.asarray, nest(flat))

    return StyleGAN2Generator(config=config, params=to_device(params), buffers=to_device(buffers))


def _check_finite(*trees: dict) -> None:
    bad = [k for tree in trees for k, v in tree.items() if not np.all(np.isfinite(v))]
    if bad:
        raise ConversionError(
            f"StyleGAN2 state_dict has non-finite values (NaN/inf) in {bad}; the checkpoint is "
            "corrupt or was saved mid-divergence."
        )
