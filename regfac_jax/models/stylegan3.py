"""StyleGAN3 (alias-free) generator, configs T and R, in Flax Linen.

A port of NVlabs/stylegan3 ``training/networks_stylegan3.py`` (``Generator``), exact to its CPU
reference path. Everything follows from the official constructor kwargs (``config``):
:func:`derive_synthesis` reproduces the official constructor's geometric progression of cutoffs,
stopbands, sampling rates, channel counts, filter sizes and paddings; the checkpoint supplies only
arrays.

Variable trees mirror the official ``state_dict`` names split on '.':
``synthesis.L3_52_1024.weight`` is ``params['synthesis']['L3_52_1024']['weight']``. Layout changes
(applied by ``converters.stylegan3`` only):

* convolution weights are HWIO ``[kh, kw, in, out]`` (PyTorch: ``[out, in, kh, kw]``);
* dense weights (mapping ``fc*``/``embed``, every ``affine``, ``synthesis.input.weight``) are
  ``[in, out]`` (PyTorch: ``[out, in]``).

Buffers (``buffers`` tree): ``mapping.w_avg [w_dim]``, ``synthesis.input.{transform [3, 3], freqs
[C, 2], phases [C]}`` and per layer ``magnitude_ema []``, ``up_filter [taps]`` and
``down_filter [taps]`` or ``[taps, taps]`` (radial); a layer whose filter has a single tap has no
filter buffer, as in the official code.

Numerics: the computation runs in the dtype of the input ``ws`` (params and buffers are cast;
constants are Python floats, which never promote), so float64 ``ws`` with ``jax_enable_x64`` runs
entirely in float64 and float32 ``ws`` stay float32 even then. The official fp16 layers
(``num_fp16_res``) only use float16 on CUDA; like the official CPU path (and the reference fixtures)
this port never does. Images are NHWC.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import operator
from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from regfac_jax.models.base import StyleGANBase
from regfac_jax.models.layers import FullyConnectedLayer, normalize_2nd_moment, torch_lerp
from regfac_jax.ops.filtered_lrelu import filtered_lrelu
from regfac_jax.ops.precision import matmul_precision as _prec

BUFFER_NAMES = (
    "w_avg",
    "transform",
    "freqs",
    "phases",
    "magnitude_ema",
    "up_filter",
    "down_filter",
)

# ---- configuration -------------------------------------------------------------------------------

_REQUIRED = ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels")
_SYNTHESIS_DEFAULTS = dict(
    channel_base=32768,
    channel_max=512,
    num_layers=14,
    num_critical=2,
    first_cutoff=2,
    first_stopband=2**2.1,
    last_stopband_rel=2**0.3,
    margin_size=10,
    output_scale=0.25,
    num_fp16_res=4,
)
_LAYER_DEFAULTS = dict(
    conv_kernel=3,
    filter_size=6,
    lrelu_upsampling=2,
    use_radial_filters=False,
    conv_clamp=256,
    magnitude_ema_beta=0.999,
)
_MAPPING_DEFAULTS = dict(num_layers=2, lr_multiplier=0.01, w_avg_beta=0.998)
STYLEGAN2_HINT = "this looks like a StyleGAN2 checkpoint; use kind='stylegan2'"


def looks_like_stylegan2_config(config: Mapping[str, Any]) -> bool:
    """True for StyleGAN2(-ADA) constructor kwargs (they nest the synthesis options in
    ``synthesis_kwargs``)."""
    return "synthesis_kwargs" in config or "architecture" in config


def _check_keys(config: Mapping[str, Any]) -> dict:
    """Refuses StyleGAN2, missing or unknown keys (in that order) -> the given mapping_kwargs."""
    if looks_like_stylegan2_config(config):
        raise ValueError(
            f"The config has StyleGAN2 keys ('synthesis_kwargs'/'architecture'): {STYLEGAN2_HINT}."
        )
    missing = [k for k in _REQUIRED if k not in config]
    if missing:
        raise ValueError(
            f"StyleGAN3 config is missing {missing}; pass the official Generator init_kwargs "
            f"(z_dim, c_dim, w_dim, img_resolution, img_channels, ...)."
        )
    known = set(_REQUIRED) | set(_SYNTHESIS_DEFAULTS) | set(_LAYER_DEFAULTS) | {"mapping_kwargs"}
    unknown = sorted(set(config) - known)
    if unknown:
        raise ValueError(
            f"StyleGAN3 config has unknown keys {unknown}; expected a subset of {sorted(known)}."
        )
    mapping = dict(config.get("mapping_kwargs") or {})
    bad_mapping = sorted(set(mapping) - set(_MAPPING_DEFAULTS))
    if bad_mapping:
        raise ValueError(
            f"mapping_kwargs has unknown keys {bad_mapping}; "
            f"expected a subset of {sorted(_MAPPING_DEFAULTS)}."
        )
    return mapping


def _check_values(cfg: dict) -> None:
    """Refuses non-positive sizes, a negative c_dim and num_critical outside [0, num_layers)."""
    for key in ("z_dim", "w_dim", "img_resolution", "img_channels", "num_layers"):
        if int(cfg[key]) != cfg[key] or cfg[key] < 1:
            raise ValueError(f"StyleGAN3 config: {key} must be a positive int, got {cfg[key]!r}.")
    if int(cfg["c_dim"]) != cfg["c_dim"] or cfg["c_dim"] < 0:
        raise ValueError(f"StyleGAN3 config: c_dim must be an int >= 0, got {cfg['c_dim']!r}.")
    if not 0 <= cfg["num_critical"] < cfg["num_layers"]:
        raise ValueError(
            f"StyleGAN3 config: need 0 <= num_critical < num_layers, got {cfg['num_critical']} and "
            f"{cfg['num_layers']}."
        )


def normalize_config(config: Mapping[str, Any]) -> dict:
    """Official StyleGAN3 ``Generator`` kwargs -> a complete dict with every default filled in.

    Raises:
      ValueError: for StyleGAN2 kwargs, missing required keys, unknown keys or invalid values.
    """
    mapping = _check_keys(config)
    cfg = {
        **_SYNTHESIS_DEFAULTS,
        **_LAYER_DEFAULTS,
        **{k: v for k, v in config.items() if k != "mapping_kwargs"},
    }
    cfg["mapping_kwargs"] = {**_MAPPING_DEFAULTS, **mapping}
    _check_values(cfg)
    return cfg


@dataclasses.dataclass(frozen=True)
class InputSpec:
    """The Fourier-feature input: ``channels`` features on a ``size`` x ``size`` grid."""

    channels: int
    size: int
    sampling_rate: float
    bandwidth: float


@dataclasses.dataclass(frozen=True)
class LayerSpec:
    """One synthesis layer as the official constructor derives it (sizes are square: width =
    height)."""

    name: str
    is_torgb: bool
    is_critically_sampled: bool
    use_fp16: bool
    in_channels: int
    out_channels: int
    in_size: int
    out_size: int
    in_sampling_rate: int
    out_sampling_rate: int
    in_cutoff: float
    out_cutoff: float
    in_half_width: float
    out_half_width: float
    conv_kernel: int
    up_factor: int
    down_factor: int
    up_taps: int
    down_taps: int
    down_radial: bool
    padding: tuple[int, int, int, int]  # (x0, x1, y0, y1), as filtered_lrelu takes it
    conv_clamp: float | None


@dataclasses.dataclass(frozen=True)
class SynthesisSpec:
    """Everything the synthesis network's shapes and constants depend on."""

    w_dim: int
    img_resolution: int
    img_channels: int
    num_ws: int
    output_scale: float
    input: InputSpec
    layers: tuple[LayerSpec, ...]


def _progression(cfg: dict) -> dict[str, np.ndarray]:
    """Per-layer cutoffs, half-widths, sampling rates, sizes and channels (float64, as the official
    code)."""
    n, res = cfg["num_layers"], cfg["img_resolution"]
    last_cutoff = res / 2
    last_stopband = last_cutoff * cfg["last_stopband_rel"]
    exponents = np.minimum(np.arange(n + 1) / (n - cfg["num_critical"]), 1)
    cutoffs = cfg["first_cutoff"] * (last_cutoff / cfg["first_cutoff"]) ** exponents
    stopbands = cfg["first_stopband"] * (last_stopband / cfg["first_stopband"]) ** exponents
    rates = np.exp2(np.ceil(np.log2(np.minimum(stopbands * 2, res))))
    half_widths = np.maximum(stopbands, rates / 2) - cutoffs
    sizes = rates + cfg["margin_size"] * 2
    sizes[-2:] = res
    channels = np.rint(np.minimum((cfg["channel_base"] / 2) / cutoffs, cfg["channel_max"]))
    channels[-1] = cfg["img_channels"]
    return dict(
        cutoffs=cutoffs, half_widths=half_widths, rates=rates, sizes=sizes, channels=channels
    )


def _resampling(
    tmp_rate: float, rate: int, filter_size: int, is_torgb: bool, what: str
) -> tuple[int, int]:
    """(factor, taps) of a layer's up- or downsampling between ``rate`` and the lrelu rate
    ``tmp_rate``."""
    factor = int(np.rint(tmp_rate / rate))
    if rate * factor != tmp_rate:
        raise ValueError(
            f"StyleGAN3 config: the leaky-ReLU sampling rate {tmp_rate} is not an "
            f"integer multiple of the {what} sampling rate {rate}; check lrelu_upsampling."
        )
    taps = filter_size * factor if factor > 1 and not is_torgb else 1
    return factor, taps


def _layer_spec(cfg: dict, prog: dict, idx: int) -> LayerSpec:
    n, prev = cfg["num_layers"], max(idx - 1, 0)
    is_torgb = idx == n
    critical = idx >= n - cfg["num_critical"]
    in_rate, out_rate = int(prog["rates"][prev]), int(prog["rates"][idx])
    in_size, out_size = int(prog["sizes"][prev]), int(prog["sizes"][idx])
    tmp_rate = max(in_rate, out_rate) * (1 if is_torgb else cfg["lrelu_upsampling"])
    kernel = 1 if is_torgb else cfg["conv_kernel"]
    up, up_taps = _resampling(tmp_rate, in_rate, cfg["filter_size"], is_torgb, "input")
    down, down_taps = _resampling(tmp_rate, out_rate, cfg["filter_size"], is_torgb, "output")
    pad_total = (out_size - 1) * down + 1 - (in_size + kernel - 1) * up + up_taps + down_taps - 2
    # the symmetric sample-location convention of the paper's Appendix C.3
    pad_lo = (pad_total + up) // 2
    pad_hi = pad_total - pad_lo
    out_channels = int(prog["channels"][idx])
    return LayerSpec(
        name=f"L{idx}_{out_size}_{out_channels}",
        is_torgb=is_torgb,
        is_critically_sampled=critical,
        use_fp16=bool(prog["rates"][idx] * (2 ** cfg["num_fp16_res"]) > cfg["img_resolution"]),
        in_channels=int(prog["channels"][prev]),
        out_channels=out_channels,
        in_size=in_size,
        out_size=out_size,
        in_sampling_rate=in_rate,
        out_sampling_rate=out_rate,
        in_cutoff=float(prog["cutoffs"][prev]),
        out_cutoff=float(prog["cutoffs"][idx]),
        in_half_width=float(prog["half_widths"][prev]),
        out_half_width=float(prog["half_widths"][idx]),
        conv_kernel=kernel,
        up_factor=up,
        down_factor=down,
        up_taps=up_taps,
        down_taps=down_taps,
        down_radial=bool(cfg["use_radial_filters"] and not critical),
        padding=(pad_lo, pad_hi, pad_lo, pad_hi),
        conv_clamp=cfg["conv_clamp"],
    )


def derive_synthesis(config: Mapping[str, Any]) -> SynthesisSpec:
    """The synthesis network's layers, derived from the official kwargs exactly as the official
    constructor does."""
    cfg = normalize_config(config)
    prog = _progression(cfg)
    inp = InputSpec(
        channels=int(prog["channels"][0]),
        size=int(prog["sizes"][0]),
        sampling_rate=float(prog["rates"][0]),
        bandwidth=float(prog["cutoffs"][0]),
    )
    layers = tuple(_layer_spec(cfg, prog, idx) for idx in range(cfg["num_layers"] + 1))
    return SynthesisSpec(
        w_dim=int(cfg["w_dim"]),
        img_resolution=int(cfg["img_resolution"]),
        img_channels=int(cfg["img_channels"]),
        num_ws=cfg["num_layers"] + 2,
        output_scale=float(cfg["output_scale"]),
        input=inp,
        layers=layers,
    )


# ---- pure functions ------------------------------------------------------------------------------


def _placeholder(_key, shape, dtype=jnp.float32):
    """Shape-only initialiser: StyleGAN3 weights always come from a converted checkpoint."""
    return jnp.zeros(shape, dtype)


def conv2d(x: jax.Array, weight: jax.Array, padding: int) -> jax.Array:
    """Zero-padded 2-D convolution (correlation, as PyTorch's conv2d) of x [N, H, W, I] with HWIO
    [k, k, I, O].

    A 1x1 kernel is a matrix product. float64 runs as a sum of k*k shifted matrix products: XLA:CPU
    has no fast float64 convolution (3x slower than this at 52x52x64, N=32), and matrix products are
    fast everywhere.
    """
    k = weight.shape[0]
    if k == 1 and padding == 0:
        return jnp.matmul(x, weight[0, 0], precision=_prec())
    if x.dtype != jnp.float64:
        return lax.conv_general_dilated(
            x,
            weight,
            (1, 1),
            [(padding, padding)] * 2,
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
            precision=_prec(),
        )
    xp = jnp.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    h, w = xp.shape[1] - k + 1, xp.shape[2] - k + 1
    terms = (
        jnp.matmul(xp[:, dy : dy + h, dx : dx + w], weight[dy, dx], precision=_prec())
        for dy in range(k)
        for dx in range(k)
    )
    return functools.reduce(operator.add, terms)


def modulated_conv2d(
    x: jax.Array,
    weight: jax.Array,
    styles: jax.Array,
    padding: int,
    demodulate: bool,
    input_gain: jax.Array | None = None,
) -> jax.Array:
    """Per-sample modulated (and demodulated) convolution.

    Two evaluations of the same function (equal up to float rounding; the products are only
    regrouped):

    * one sample (N = 1, e.g. inside ``jacfwd``/``vmap`` over a single image): as the official code,
      the style, demodulation and input gain are folded into the weight and one plain convolution
      runs. Under ``jvp`` the activations then stay convolution operands, which keeps XLA from
      re-evaluating the previous layer's filters once per tangent (measured 4x faster Jacobians on
      CPU);
    * a batch (N > 1): the per-sample factors scale the input and output channels around one
      convolution with the shared weight, which avoids the official grouped convolution (slow on
      CPU).

    Args:
      x: input [N, H, W, I].
      weight: HWIO kernel [k, k, I, O].
      styles: per-sample input-channel scales [N, I].
      padding: zero padding on every side (StyleGAN3 uses k - 1: a 'full' convolution).
      demodulate: normalise each sample's output channels to unit expected magnitude.
      input_gain: scalar factor on the input channels (applied after demodulation).
    Returns:
      [N, H + 2 * padding - k + 1, W + 2 * padding - k + 1, O].
    """
    if demodulate:  # pre-normalisation (mean over the whole style batch, as in the official code)
        weight = weight * lax.rsqrt(jnp.mean(jnp.square(weight), axis=(0, 1, 2), keepdims=True))
        styles = styles * lax.rsqrt(jnp.mean(jnp.square(styles)))
    if x.shape[0] == 1:
        w = weight * styles[0, None, None, :, None]
        if demodulate:
            w = w * lax.rsqrt(jnp.sum(jnp.square(w), axis=(0, 1, 2)) + 1e-8)
        if input_gain is not None:
            w = w * input_gain
        return conv2d(x, w, padding)
    scale_in = styles if input_gain is None else styles * input_gain
    y = conv2d(x * scale_in[:, None, None, :], weight, padding)
    if demodulate:  # 1 / |w * s| per sample and output channel: sum over (kh, kw, in) of (w * s)^2
        energy = jnp.matmul(
            jnp.square(styles), jnp.sum(jnp.square(weight), axis=(0, 1)), precision=_prec()
        )
        y = y * lax.rsqrt(energy + 1e-8)[:, None, None, :]
    return y


def torch_linspace(start: float, end: float, steps: int, dtype) -> jax.Array:
    """``torch.linspace`` in ``dtype``: the first half counts up from ``start``, the second down
    from ``end``."""
    step = (jnp.asarray(end, dtype) - jnp.asarray(start, dtype)) / max(steps - 1, 1)
    idx = jnp.arange(steps, dtype=dtype)
    return jnp.where(
        jnp.arange(steps) < steps // 2, start + step * idx, end - step * (steps - 1 - idx)
    )


def sampling_grid(size: int, sampling_rate: float, dtype) -> jax.Array:
    """The Fourier input's sample positions [size, size, 2] (x, y), as ``affine_grid`` with
    align_corners=False."""
    lin = torch_linspace(-1.0, 1.0, size, dtype) * (size - 1) / size
    coord = lin * jnp.asarray(0.5 * size / sampling_rate, dtype)
    return jnp.stack(jnp.broadcast_arrays(coord[None, :], coord[:, None]), axis=-1)


def transform_matrix(translate: Sequence[float] = (0.0, 0.0), angle: float = 0.0) -> np.ndarray:
    """The image transform [3, 3] of ``translate`` (x, y) and ``angle`` degrees, as the official
    ``gen_images.py``.

    The generator's ``transform`` buffer holds the inverse of this matrix:
    ``gen.with_transform(np.linalg.inv(transform_matrix((0.1, -0.05), 10)))``.
    """
    s, c = math.sin(angle / 360.0 * math.pi * 2), math.cos(angle / 360.0 * math.pi * 2)
    return np.array([[c, s, translate[0]], [-s, c, translate[1]], [0.0, 0.0, 1.0]])


def validate_transform(matrix) -> np.ndarray:
    """Checks a user transform: a finite 3x3 affine matrix (last row [0, 0, 1]); returns it as
    float64 numpy.

    Raises:
      ValueError: naming what is wrong and how to fix it.
    """
    try:
        m = np.asarray(matrix, dtype=np.float64)
    except jax.errors.TracerArrayConversionError:
        raise ValueError(
            "transform must be a concrete 3x3 matrix (numpy or jax array), not a "
            "traced value; inside jit-compiled code pass it to synthesis_apply(..., transform=...) "
            "directly."
        ) from None
    if m.shape != (3, 3):
        raise ValueError(f"transform must be a 3x3 affine matrix, got shape {m.shape}.")
    if not np.all(np.isfinite(m)):
        raise ValueError(f"transform must be finite, got {m.tolist()}.")
    # 1e-6: matrices inverted with np.linalg.inv may carry rounding in the last row (float32 eps is
    # 1.2e-7).
    if not np.allclose(m[2], [0.0, 0.0, 1.0], rtol=0, atol=1e-6):
        raise ValueError(
            f"transform must be affine with last row [0, 0, 1], got {m[2].tolist()}; build it with "
            "np.linalg.inv(transform_matrix(translate, angle))."
        )
    return m


# ---- Flax modules --------------------------------------------------------------------------------


class MappingNetwork(nn.Module):
    """z (+ c) -> ws [N, num_ws, w_dim], with truncation towards ``w_avg``."""

    z_dim: int
    c_dim: int
    w_dim: int
    num_ws: int
    num_layers: int = 2
    lr_multiplier: float = 0.01

    @nn.compact
    def __call__(
        self, z: jax.Array, c: jax.Array, truncation_psi, truncation_cutoff: int | None = None
    ):
        """z [N, z_dim], c [N, c_dim], psi scalar -> ws [N, num_ws, w_dim] (in z's dtype)."""
        x = normalize_2nd_moment(z)
        if self.c_dim > 0:
            y = FullyConnectedLayer(self.c_dim, self.w_dim, name="embed")(c.astype(z.dtype))
            x = jnp.concatenate([x, normalize_2nd_moment(y)], axis=1)
        features = [self.z_dim + (self.w_dim if self.c_dim > 0 else 0)] + [
            self.w_dim
        ] * self.num_layers
        for idx in range(self.num_layers):
            fc = FullyConnectedLayer(
                features[idx], features[idx + 1], "lrelu", self.lr_multiplier, name=f"fc{idx}"
            )
            x = fc(x)
        w_avg = self.variable("buffers", "w_avg", _placeholder, None, (self.w_dim,)).value.astype(
            x.dtype
        )
        x = jnp.broadcast_to(x[:, None, :], (x.shape[0], self.num_ws, self.w_dim))
        cutoff = self.num_ws if truncation_cutoff is None else truncation_cutoff
        psi = jnp.asarray(truncation_psi, x.dtype)
        return x.at[:, :cutoff].set(torch_lerp(w_avg, x[:, :cutoff], psi))


def _input_matrices(t: jax.Array, user: jax.Array) -> jax.Array:
    """Affine output t [N, 4] (cos, sin, tx, ty) and user transform [3, 3] -> matrices [N, 3, 3]."""
    t = t / jnp.sqrt(jnp.sum(jnp.square(t[:, :2]), axis=1, keepdims=True))
    zero, one = jnp.zeros_like(t[:, 0]), jnp.ones_like(t[:, 0])
    m_r = jnp.stack(
        [
            jnp.stack([t[:, 0], -t[:, 1], zero], -1),
            jnp.stack([t[:, 1], t[:, 0], zero], -1),
            jnp.stack([zero, zero, one], -1),
        ],
        1,
    )
    m_t = jnp.stack(
        [
            jnp.stack([one, zero, -t[:, 2]], -1),
            jnp.stack([zero, one, -t[:, 3]], -1),
            jnp.stack([zero, zero, one], -1),
        ],
        1,
    )
    return jnp.matmul(jnp.matmul(m_r, m_t, precision=_prec()), user[None], precision=_prec())


def _fourier_features(
    s: InputSpec, freqs: jax.Array, phases: jax.Array, mats: jax.Array
) -> jax.Array:
    """Freqs [C, 2] and phases [C] moved by mats [N, 3, 3] -> band-limited sines [N, H, W, C]."""
    # [N, C]
    phases = phases[None] + jnp.matmul(freqs[None], mats[:, :2, 2:], precision=_prec())[..., 0]
    freqs = jnp.matmul(freqs[None], mats[:, :2, :2], precision=_prec())  # [N, C, 2]
    norm = jnp.sqrt(jnp.sum(jnp.square(freqs), axis=2))
    amplitudes = jnp.clip(1 - (norm - s.bandwidth) / (s.sampling_rate / 2 - s.bandwidth), 0, 1)

    grid = sampling_grid(s.size, s.sampling_rate, freqs.dtype)  # [H, W, 2]
    x = jnp.einsum("hwk,nck->nhwc", grid, freqs, precision=_prec()) + phases[:, None, None, :]
    return jnp.sin(x * (math.pi * 2)) * amplitudes[:, None, None, :]


class SynthesisInput(nn.Module):
    """Fourier features of a w-dependent rotated and translated grid, then a channel mixing."""

    spec: InputSpec
    w_dim: int

    @nn.compact
    def __call__(self, w: jax.Array, transform: jax.Array | None = None) -> jax.Array:
        """w [N, w_dim] (and an optional transform [3, 3] replacing the buffer) -> [N, size, size,
        channels]."""
        s, dt = self.spec, w.dtype
        weight = self.param("weight", _placeholder, (s.channels, s.channels))
        buf = self.variable("buffers", "transform", lambda: jnp.eye(3, dtype=jnp.float32)).value
        freqs = self.variable("buffers", "freqs", _placeholder, None, (s.channels, 2)).value.astype(
            dt
        )
        phases = self.variable("buffers", "phases", _placeholder, None, (s.channels,)).value.astype(
            dt
        )
        user = (buf if transform is None else transform).astype(dt)

        # (cos, sin, tx, ty), rotation normalised below
        t = FullyConnectedLayer(self.w_dim, 4, name="affine")(w)
        mats = _input_matrices(t, user)
        x = _fourier_features(s, freqs, phases, mats)
        mix = weight.astype(dt) / math.sqrt(s.channels)
        return jnp.matmul(x, mix, precision=_prec())


class SynthesisLayer(nn.Module):
    """Modulated convolution, then the filtered leaky ReLU (or, for ToRGB, bias and clamp only)."""

    spec: LayerSpec
    w_dim: int

    def _filters(self) -> tuple[jax.Array | None, jax.Array | None]:
        s = self.spec
        fu = fd = None
        if s.up_taps > 1:
            fu = self.variable("buffers", "up_filter", _placeholder, None, (s.up_taps,)).value
        if s.down_taps > 1:
            shape = (s.down_taps, s.down_taps) if s.down_radial else (s.down_taps,)
            fd = self.variable("buffers", "down_filter", _placeholder, None, shape).value
        return fu, fd

    @nn.compact
    def __call__(self, x: jax.Array, w: jax.Array) -> jax.Array:
        """x [N, in_size, in_size, in_channels], w [N, w_dim] -> [N, out_size, out_size,
        out_channels]."""
        s, dt = self.spec, x.dtype
        k = s.conv_kernel
        weight = self.param("weight", _placeholder, (k, k, s.in_channels, s.out_channels)).astype(
            dt
        )
        bias = self.param("bias", _placeholder, (s.out_channels,))
        magnitude_ema = self.variable("buffers", "magnitude_ema", _placeholder, None, ()).value
        fu, fd = self._filters()

        styles = FullyConnectedLayer(self.w_dim, s.in_channels, name="affine")(w)
        if s.is_torgb:
            styles = styles * (1 / math.sqrt(s.in_channels * k**2))
        x = modulated_conv2d(
            x,
            weight,
            styles,
            padding=k - 1,
            demodulate=not s.is_torgb,
            input_gain=lax.rsqrt(magnitude_ema.astype(dt)),
        )
        gain, slope = (1.0, 1.0) if s.is_torgb else (math.sqrt(2), 0.2)
        return filtered_lrelu(
            x,
            fu,
            fd,
            bias.astype(dt),
            s.up_factor,
            s.down_factor,
            s.padding,
            gain=gain,
            slope=slope,
            clamp=s.conv_clamp,
        )


class SynthesisNetwork(nn.Module):
    """ws [N, num_ws, w_dim] -> images [N, R, R, C]: Fourier input, the layers, output scaling."""

    spec: SynthesisSpec

    @nn.compact
    def __call__(self, ws: jax.Array, transform: jax.Array | None = None) -> jax.Array:
        s = self.spec
        x = SynthesisInput(s.input, s.w_dim, name="input")(ws[:, 0], transform)
        for idx, layer in enumerate(s.layers):
            x = SynthesisLayer(layer, s.w_dim, name=layer.name)(x, ws[:, idx + 1])
        if s.output_scale != 1:
            x = x * s.output_scale
        return x


# ---- the generator object ------------------------------------------------------------------------


class StyleGAN3Generator(StyleGANBase):
    """A converted StyleGAN3 generator (T or R config): ``config`` = official init_kwargs, see the
    module doc.

    The Fourier input's user transform (the ``synthesis.input.transform`` buffer: the inverse of the
    wanted image transform, as in the official ``gen_images.py``) can be replaced per call,
    ``gen.synthesis(ws, transform=m)``, or for good, ``gen.with_transform(m)`` (a new generator;
    Jacobians then see it too).
    """

    kind = "stylegan3"

    def __post_init__(self):
        super().__post_init__()
        self.cfg = normalize_config(self.config)
        self.spec = derive_synthesis(self.cfg)
        m = self.cfg["mapping_kwargs"]
        self._mapping_net = MappingNetwork(
            self.z_dim, self.c_dim, self.w_dim, self.num_ws, m["num_layers"], m["lr_multiplier"]
        )
        self._synthesis_net = SynthesisNetwork(self.spec)

    # ---- sizes -----------------------------------------------------------------------------------
    @property
    def w_dim(self) -> int:
        return int(self.cfg["w_dim"])

    @property
    def z_dim(self) -> int:
        return int(self.cfg["z_dim"])

    @property
    def c_dim(self) -> int:
        return int(self.cfg["c_dim"])

    @property
    def layer_names(self) -> tuple[str, ...]:
        """Official synthesis layer names, e.g. ('L0_36_64', ..., 'L14_32_3')."""
        return tuple(layer.name for layer in self.spec.layers)

    @property
    def transform(self) -> np.ndarray:
        """The current user transform buffer [3, 3]."""
        return np.asarray(self.buffers["synthesis"]["input"]["transform"])

    # ---- pure functions --------------------------------------------------------------------------
    def mapping_apply(self, params, buffers, z, c, truncation_psi, truncation_cutoff) -> jax.Array:
        """z [N, z_dim], c [N, c_dim] -> ws [N, num_ws, w_dim]; ``truncation_cutoff`` is static
        (None = all)."""
        if truncation_cutoff is not None and not 0 <= int(truncation_cutoff) <= self.num_ws:
            raise ValueError(
                f"truncation_cutoff must be None or in 0..{self.num_ws}, got {truncation_cutoff}."
            )
        variables = {"params": params["mapping"], "buffers": buffers["mapping"]}
        return self._mapping_net.apply(variables, z, c, truncation_psi, truncation_cutoff)

    def synthesis_apply(
        self, params, buffers, ws, noise_mode: str = "const", key=None, transform=None
    ) -> jax.Array:
        """ws [N, num_ws, w_dim] -> images [N, R, R, C] in ws's dtype (float types; others become
        float32).

        StyleGAN3 has no noise inputs: ``noise_mode`` and ``key`` are accepted for API parity and
        unused. ``transform`` [3, 3] replaces the ``synthesis.input.transform`` buffer for this
        call.
        """
        if noise_mode not in ("const", "none", "random"):
            raise ValueError(f"noise_mode must be 'const', 'none' or 'random', got {noise_mode!r}.")
        ws = jnp.asarray(ws)
        if not jnp.issubdtype(ws.dtype, jnp.floating):
            ws = ws.astype(jnp.float32)
        variables = {"params": params["synthesis"], "buffers": buffers["synthesis"]}
        return self._synthesis_net.apply(variables, ws, transform)

    # ---- transforms ------------------------------------------------------------------------------
    def synthesis(self, ws, noise_mode: str = "const", key=None, transform=None, **kwargs):
        """ws [N, num_ws, w_dim] -> images [N, R, R, C]; ``transform`` [3, 3] overrides the buffer
        for this call."""
        if transform is not None:
            kwargs["transform"] = jnp.asarray(validate_transform(transform), jnp.float32)
        return super().synthesis(ws, noise_mode, key, **kwargs)

    def with_transform(self, matrix) -> "StyleGAN3Generator":
        """A new generator whose ``synthesis.input.transform`` buffer is ``matrix`` (validated,
        stored float32)."""
        m = jnp.asarray(validate_transform(matrix), jnp.float32)
        # fresh containers, shared arrays
        buffers = jax.tree_util.tree_map(lambda a: a, self.buffers)
        buffers["synthesis"]["input"]["transform"] = m
        new = dataclasses.replace(self, buffers=buffers)
        # same config, and the cached functions take weights as arguments: reuse them
        new._fn_cache = self._fn_cache
        return new


def abstract_variables(config: Mapping[str, Any]) -> dict:
    """Shapes the modules declare for ``config``: {'params': {...}, 'buffers': {...}} of
    ShapeDtypeStructs.

    Names and layouts are this port's (HWIO convolutions, [in, out] dense weights); converters
    invert the layout rules to obtain the official state_dict shapes.
    """
    cfg = normalize_config(config)
    spec = derive_synthesis(cfg)
    m = cfg["mapping_kwargs"]
    mapping = MappingNetwork(
        cfg["z_dim"], cfg["c_dim"], cfg["w_dim"], spec.num_ws, m["num_layers"], m["lr_multiplier"]
    )
    synthesis = SynthesisNetwork(spec)
    key = jax.random.key(0)
    z, c = jnp.zeros((1, cfg["z_dim"])), jnp.zeros((1, cfg["c_dim"]))
    mv = jax.eval_shape(lambda: mapping.init(key, z, c, 1.0))
    sv = jax.eval_shape(lambda: synthesis.init(key, jnp.zeros((1, spec.num_ws, cfg["w_dim"]))))
    return {
        "params": {"mapping": mv["params"], "synthesis": sv["params"]},
        "buffers": {"mapping": mv["buffers"], "synthesis": sv["buffers"]},
    }
