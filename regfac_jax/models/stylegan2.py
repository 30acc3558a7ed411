"""StyleGAN2 generator (stylegan2-ada-pytorch ``training.networks.Generator``) in JAX/Flax Linen.

The port reproduces the float32 numerics of the official networks evaluated in float32 (eval mode),
including ``conv_clamp``; the fp16 settings (``num_fp16_res``, ``fp16_channels_last``) only change
the official dtype and memory layout and are accepted but ignored. Every shape follows from the
official constructor kwargs (``config``), parsed once by :func:`parse_config`.

Layouts: images and activations are NHWC; convolution weights are HWIO ``[kh, kw, in, out]`` and
dense weights ``[in, out]`` (the converter transposes them); every other array keeps its official
layout (``const`` is ``[C, R, R]``, ``noise_const`` is ``[R, R]``, ``resample_filter`` is the
prepared FIR filter). Trainable arrays live in ``params``, the buffers ``w_avg``, ``noise_const``
and ``resample_filter`` in ``buffers``; both trees mirror the official state_dict names split on
'.'.

Modulated convolutions run in one of two mathematically identical ways, chosen with ``modulation``:

* ``'weights'``     -- the official fused path: a per-sample modulated, demodulated weight and a grouped conv;
* ``'activations'`` -- scale the input channels by the styles, convolve with the shared weight,
  scale the output channels by the demodulation coefficients. For a Jacobian (``jacfwd`` pushes
  ``w_dim`` tangents through one sample) this avoids materialising one weight tensor per tangent;
  see ``benchmarks/bench_stylegan2.py`` for the measured difference.
"""

from __future__ import annotations

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from regfac_jax.models.base import StyleGANBase
from regfac_jax.models.layers import FullyConnectedLayer, normalize_2nd_moment, torch_lerp
from regfac_jax.ops.bias_act import ACTIVATIONS, activation_gain, bias_act
from regfac_jax.ops.precision import matmul_precision as _prec
from regfac_jax.ops.upfirdn2d import filter_size, setup_filter, upfirdn2d, upsample2d

_DIMS = ("NHWC", "HWIO", "NHWC")
MODULATIONS = ("weights", "activations")
# Chosen from benchmarks/bench_stylegan2.py (jacfwd over w_dim tangents and batched generation on
# CPU).
DEFAULT_MODULATION = "activations"
NOISE_MODES = ("const", "random", "none")
DEFAULT_FILTER = (1.0, 3.0, 3.0, 1.0)

# --------------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------------

_TOP_KEYS = {
    "z_dim",
    "c_dim",
    "w_dim",
    "img_resolution",
    "img_channels",
    "mapping_kwargs",
    "synthesis_kwargs",
}
_MAPPING_DEFAULTS = dict(
    num_layers=8,
    embed_features=None,
    layer_features=None,
    activation="lrelu",
    lr_multiplier=0.01,
    w_avg_beta=0.995,
)
_SYNTHESIS_DEFAULTS = dict(
    channel_base=32768,
    channel_max=512,
    num_fp16_res=0,
    architecture="skip",
    resample_filter=(1, 3, 3, 1),
    conv_clamp=None,
    fp16_channels_last=False,
    kernel_size=3,
    use_noise=True,
    activation="lrelu",
)


@dataclasses.dataclass(frozen=True)
class StyleGAN2Spec:
    """Everything the official constructor derives from its kwargs (all static Python values)."""

    z_dim: int
    c_dim: int
    w_dim: int
    img_resolution: int
    img_channels: int
    # mapping
    num_mapping_layers: int
    embed_features: int  # 0 when c_dim == 0
    layer_features: int
    mapping_activation: str
    lr_multiplier: float
    has_w_avg: bool
    # synthesis
    architecture: str
    resample_filter: tuple
    conv_clamp: float | None
    kernel_size: int
    use_noise: bool
    activation: str
    block_resolutions: tuple[int, ...]
    block_channels: tuple[int, ...]  # output channels of each block, in block_resolutions order

    @property
    def filter_shape(self) -> tuple[int, ...]:
        return setup_filter(list(self.resample_filter)).shape

    def layer_filter(self, up: int) -> tuple:
        """FIR taps a SynthesisLayer registers: the official block passes ``resample_filter`` only
        to its upsampling conv0; conv1 keeps the default [1, 3, 3, 1] (registered but unused)."""
        return self.resample_filter if up > 1 else DEFAULT_FILTER

    def channels(self, res: int) -> int:
        """Output channels of the block at resolution ``res``."""
        return self.block_channels[self.block_resolutions.index(res)]

    def block_num_conv(self, res: int) -> int:
        return 1 if res == 4 else 2

    def block_has_torgb(self, res: int) -> bool:
        return res == self.img_resolution or self.architecture == "skip"

    @property
    def num_ws(self) -> int:
        return sum(self.block_num_conv(r) for r in self.block_resolutions) + 1


def _positive_int(value, name: str, allow_zero: bool = False) -> int:
    ok = (
        isinstance(value, (int, np.integer))
        and not isinstance(value, bool)
        and (value > 0 or allow_zero and value == 0)
    )
    if not ok:
        raise ValueError(
            f"StyleGAN2 config: {name} must be a {'non-negative' if allow_zero else 'positive'} "
            f"integer, got {value!r}."
        )
    return int(value)


def _sub_kwargs(config: dict, key: str, defaults: dict) -> dict:
    sub = config.get(key) or {}
    if not isinstance(sub, dict):
        raise ValueError(f"StyleGAN2 config: {key} must be a dict, got {type(sub).__name__}.")
    unknown = sorted(set(sub) - set(defaults))
    if unknown:
        raise ValueError(
            f"StyleGAN2 config: unknown {key} {unknown}; stylegan2-ada-pytorch accepts "
            f"{sorted(defaults)}. Is this a StyleGAN2-ada Generator's init_kwargs?"
        )
    return {**defaults, **sub}


def _top_sizes(config: dict) -> tuple[int, int, int]:
    """Checks img_resolution, c_dim, z_dim, w_dim (in this order) -> (resolution, c_dim, w_dim)."""
    res = _positive_int(config["img_resolution"], "img_resolution")
    if res < 4 or res & (res - 1):
        raise ValueError(
            f"StyleGAN2 config: img_resolution must be a power of two >= 4, got {res}."
        )
    c_dim = _positive_int(config["c_dim"], "c_dim", allow_zero=True)
    if _positive_int(config["z_dim"], "z_dim", allow_zero=True) + c_dim == 0:
        raise ValueError(
            "StyleGAN2 config: z_dim and c_dim are both 0; the mapping network would have no input."
        )
    return res, c_dim, _positive_int(config["w_dim"], "w_dim")


def _conv_clamp(sk: dict) -> float | None:
    """synthesis_kwargs' conv_clamp checked -> None or a float."""
    clamp = sk["conv_clamp"]
    if clamp is not None and (not isinstance(clamp, (int, float)) or clamp < 0):
        raise ValueError(
            f"StyleGAN2 config: conv_clamp must be None or a non-negative number, got {clamp!r}."
        )
    return None if clamp is None else float(clamp)


def parse_config(config: dict) -> StyleGAN2Spec:
    """Validates official ``training.networks.Generator`` init_kwargs and derives every size.

    Args:
      config: dict with z_dim, c_dim, w_dim, img_resolution, img_channels, mapping_kwargs,
        synthesis_kwargs.
    Returns:
      The frozen :class:`StyleGAN2Spec`.
    Raises:
      ValueError: naming the offending entry when the config is not a valid StyleGAN2-ada generator
        config.
    """
    _check_top_keys(config)
    mk = _sub_kwargs(config, "mapping_kwargs", _MAPPING_DEFAULTS)
    sk = _sub_kwargs(config, "synthesis_kwargs", _SYNTHESIS_DEFAULTS)
    res, c_dim, w_dim = _top_sizes(config)
    _check_choices(mk, sk)
    kernel = _positive_int(sk["kernel_size"], "synthesis_kwargs.kernel_size")
    resolutions, channels = _block_channels(sk, res)
    num_layers, embed, layer = _mapping_features(mk, c_dim, w_dim)
    clamp = _conv_clamp(sk)
    return StyleGAN2Spec(
        z_dim=_positive_int(config["z_dim"], "z_dim", allow_zero=True),
        c_dim=c_dim,
        w_dim=w_dim,
        img_resolution=res,
        img_channels=_positive_int(config["img_channels"], "img_channels"),
        num_mapping_layers=num_layers,
        embed_features=embed,
        layer_features=layer,
        mapping_activation=mk["activation"],
        lr_multiplier=float(mk["lr_multiplier"]),
        has_w_avg=mk["w_avg_beta"] is not None,
        architecture=sk["architecture"],
        resample_filter=tuple(np.asarray(sk["resample_filter"], np.float64).tolist()),
        conv_clamp=clamp,
        kernel_size=kernel,
        use_noise=bool(sk["use_noise"]),
        activation=sk["activation"],
        block_resolutions=resolutions,
        block_channels=channels,
    )


def _check_top_keys(config) -> None:
    """Refuses anything but a dict holding the official Generator's top-level init_kwargs."""
    if not isinstance(config, dict):
        raise ValueError(
            f"StyleGAN2 config must be a dict of init_kwargs, got {type(config).__name__}."
        )
    missing = sorted({"z_dim", "c_dim", "w_dim", "img_resolution", "img_channels"} - set(config))
    unknown = sorted(set(config) - _TOP_KEYS)
    if missing or unknown:
        raise ValueError(
            f"StyleGAN2 config: missing {missing}, unknown {unknown}; expected the init_kwargs of "
            f"stylegan2-ada-pytorch training.networks.Generator ({sorted(_TOP_KEYS)}). A StyleGAN3 "
            "config (channel_base at top level, no synthesis_kwargs) needs kind='stylegan3'."
        )


def _check_choices(mk: dict, sk: dict) -> None:
    """The activations and the synthesis architecture must be ones the port implements."""
    for name, act in (
        ("mapping_kwargs.activation", mk["activation"]),
        ("synthesis_kwargs.activation", sk["activation"]),
    ):
        if act not in ACTIVATIONS:
            raise ValueError(
                f"StyleGAN2 config: {name} {act!r} is not one of {sorted(ACTIVATIONS)}."
            )
    if sk["architecture"] not in ("orig", "skip", "resnet"):
        raise ValueError(
            "StyleGAN2 config: architecture must be 'orig', 'skip' or 'resnet', got "
            f"{sk['architecture']!r}."
        )


def _block_channels(sk: dict, res: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(block resolutions 4..res, their channel counts min(channel_base // r, channel_max))."""
    base, cmax = (
        _positive_int(sk["channel_base"], "channel_base"),
        _positive_int(sk["channel_max"], "channel_max"),
    )
    resolutions = tuple(2**i for i in range(2, int(math.log2(res)) + 1))
    channels = tuple(min(base // r, cmax) for r in resolutions)
    if min(channels) < 1:
        raise ValueError(
            f"StyleGAN2 config: channel_base {base} gives zero channels at {res}px; "
            "raise channel_base."
        )
    return resolutions, channels


def _mapping_features(mk: dict, c_dim: int, w_dim: int) -> tuple[int, int, int]:
    """(mapping layers, embedding features (0 without labels), hidden layer features)."""
    num_layers = _positive_int(mk["num_layers"], "mapping_kwargs.num_layers")
    embed = (
        0
        if c_dim == 0
        else _positive_int(
            w_dim if mk["embed_features"] is None else mk["embed_features"],
            "mapping_kwargs.embed_features",
        )
    )
    layer = _positive_int(
        w_dim if mk["layer_features"] is None else mk["layer_features"],
        "mapping_kwargs.layer_features",
    )
    return num_layers, embed, layer


# --------------------------------------------------------------------------------------------------
# Pure functions
# --------------------------------------------------------------------------------------------------


def _conv(x: jax.Array, w: jax.Array, padding, lhs_dilation=(1, 1)) -> jax.Array:
    return lax.conv_general_dilated(
        x, w, (1, 1), padding, lhs_dilation=lhs_dilation, dimension_numbers=_DIMS, precision=_prec()
    )


def conv2d_resample(
    x: jax.Array, w: jax.Array, f: jax.Array | None, up: int = 1, padding: int = 0
) -> jax.Array:
    """Convolution with optional FIR upsampling, as the official ``conv2d_resample`` computes it.

    ``up == 1``: correlation with ``w`` and symmetric zero padding. ``up > 1`` (with the official
    ``flip_weight=False`` of up-sampling layers): a 1x1 ``w`` convolves first and upsamples after; a
    larger ``w`` runs as a stride-``up`` transposed convolution with ``w`` followed by FIR filtering
    with ``f``.

    Args:
      x: [N, H, W, I].
      w: [kh, kw, I, O] (HWIO).
      f: prepared FIR filter ([fh, fw] or [taps]) for up > 1.
      up: integer upsampling factor.
      padding: padding with respect to the upsampled image (the official ``kernel_size // 2``).
    Returns:
      [N, H * up, W * up, O] for the generator's kernel/padding combinations.
    """
    kh, kw = w.shape[:2]
    if up == 1:
        return _conv(x, w, ((padding, padding), (padding, padding)))
    fw, fh = filter_size(f)
    px0, px1 = padding + (fw + up - 1) // 2, padding + (fw - up) // 2
    py0, py1 = padding + (fh + up - 1) // 2, padding + (fh - up) // 2
    if kh == 1 and kw == 1:
        x = _conv(x, w, ((0, 0), (0, 0)))
        return upfirdn2d(x, f, up=up, padding=(px0, px1, py0, py1), gain=up**2)
    px0, px1, py0, py1 = px0 - (kw - 1), px1 - (kw - up), py0 - (kh - 1), py1 - (kh - up)
    pxt, pyt = max(min(-px0, -px1), 0), max(min(-py0, -py1), 0)
    # Transposed conv = correlation of the zero-dilated input with the spatially flipped kernel,
    # full padding.
    x = _conv(
        x,
        w[::-1, ::-1],
        ((kh - 1 - pyt, kh - 1 - pyt), (kw - 1 - pxt, kw - 1 - pxt)),
        lhs_dilation=(up, up),
    )
    return upfirdn2d(x, f, padding=(px0 + pxt, px1 + pxt, py0 + pyt, py1 + pyt), gain=up**2)


def _demodulation(weight: jax.Array, styles: jax.Array) -> jax.Array:
    """1 / L2 norm [N, O] of each output channel of weight [kh, kw, I, O] modulated by styles."""
    # [N, kh, kw, I, O]
    wmod = weight[None] * styles[:, None, None, :, None]
    return lax.rsqrt(jnp.sum(jnp.square(wmod), axis=(1, 2, 3)) + 1e-8)  # [N, O]


def _per_sample_conv(x: jax.Array, wmod: jax.Array, resample_filter, up: int, padding: int):
    """:func:`conv2d_resample` of each x [N, H, W, I] with its own weight wmod [N, kh, kw, I, O]."""

    def conv(xi, wi):  # one sample [H, W, I] with its own weight [kh, kw, I, O]
        return conv2d_resample(xi[None], wi, resample_filter, up, padding)[0]

    return jax.vmap(conv)(x, wmod)


def modulated_conv2d(
    x: jax.Array,
    weight: jax.Array,
    styles: jax.Array,
    noise: jax.Array | None = None,
    up: int = 1,
    padding: int = 0,
    resample_filter: jax.Array | None = None,
    demodulate: bool = True,
    modulation: str = DEFAULT_MODULATION,
) -> jax.Array:
    """StyleGAN2's modulated (and demodulated) convolution.

    Args:
      x: [N, H, W, I].
      weight: [kh, kw, I, O] shared weight.
      styles: [N, I] per-sample input-channel scales.
      noise: None or an array broadcastable to the output [N, H*up, W*up, O], added last.
      up, padding, resample_filter: as :func:`conv2d_resample`.
      demodulate: normalise each output channel of the modulated weight to unit L2 norm.
      modulation: 'weights' (per-sample weights, grouped conv) or 'activations' (scale x, shared
        conv, scale the output); identical mathematics.
    Returns:
      [N, H*up, W*up, O].
    """
    if modulation not in MODULATIONS:
        raise ValueError(f"modulation must be one of {MODULATIONS}, got {modulation!r}.")
    dcoefs = _demodulation(weight, styles) if demodulate else None
    if modulation == "weights":
        wmod = weight[None] * styles[:, None, None, :, None]
        if dcoefs is not None:
            wmod = wmod * dcoefs[:, None, None, None, :]
        x = _per_sample_conv(x, wmod, resample_filter, up, padding)
    else:
        x = conv2d_resample(x * styles[:, None, None, :], weight, resample_filter, up, padding)
        if dcoefs is not None:
            x = x * dcoefs[:, None, None, :]
    if noise is not None:
        x = x + noise
    return x


# --------------------------------------------------------------------------------------------------
# Flax modules (names mirror the official state_dict)
# --------------------------------------------------------------------------------------------------


def _normal(key, shape, dtype=jnp.float32):
    return jax.random.normal(key, shape, dtype)


class MappingNetwork(nn.Module):
    """z [N, z_dim] (+ c [N, c_dim]) -> ws [N, num_ws, w_dim], with truncation towards w_avg."""

    spec: StyleGAN2Spec

    @nn.compact
    def __call__(self, z, c, truncation_psi, truncation_cutoff: int | None = None) -> jax.Array:
        s = self.spec
        dtype = jnp.float64 if z.dtype == jnp.float64 else jnp.float32
        parts = []
        if s.z_dim > 0:
            parts.append(normalize_2nd_moment(z.astype(dtype)))
        if s.c_dim > 0:
            embed = FullyConnectedLayer(s.c_dim, s.embed_features, name="embed")
            parts.append(normalize_2nd_moment(embed(c.astype(dtype))))
        x = jnp.concatenate(parts, axis=1) if len(parts) > 1 else parts[0]
        features = (
            [s.z_dim + s.embed_features]
            + [s.layer_features] * (s.num_mapping_layers - 1)
            + [s.w_dim]
        )
        for idx in range(s.num_mapping_layers):
            x = FullyConnectedLayer(
                features[idx],
                features[idx + 1],
                activation=s.mapping_activation,
                lr_multiplier=s.lr_multiplier,
                name=f"fc{idx}",
            )(x)
        x = jnp.broadcast_to(x[:, None, :], (x.shape[0], s.num_ws, s.w_dim))
        if not s.has_w_avg:
            return x
        return self._truncate(x, truncation_psi, truncation_cutoff)

    def _truncate(self, x: jax.Array, truncation_psi, truncation_cutoff: int | None) -> jax.Array:
        """ws [N, num_ws, w_dim] pulled towards w_avg by psi, on the layers before the cutoff."""
        s, dtype = self.spec, x.dtype
        w_avg = self.variable(
            "buffers", "w_avg", lambda: jnp.zeros((s.w_dim,), jnp.float32)
        ).value.astype(dtype)
        psi = jnp.asarray(truncation_psi, dtype)
        layers = np.zeros((s.num_ws,), bool)
        # the official x[:, :truncation_cutoff]
        layers[slice(None, truncation_cutoff)] = True
        truncated = jnp.where(layers[None, :, None], torch_lerp(w_avg, x, psi), x)
        return jnp.where(psi == 1, x, truncated)


class SynthesisLayer(nn.Module):
    """Modulated 3x3 conv (optionally 2x up), noise, bias, activation with gain and clamp."""

    spec: StyleGAN2Spec
    in_channels: int
    out_channels: int
    resolution: int
    up: int = 1

    def _noise(self, batch: int, dtype, noise_mode: str, key) -> jax.Array | None:
        """Scaled noise [1 or batch, R, R, 1]: stored ("const"), fresh ("random"), else None."""
        noise_const = self.variable(
            "buffers",
            "noise_const",
            lambda: _normal(self.make_rng("params"), (self.resolution,) * 2),
        )
        strength = self.param("noise_strength", nn.initializers.zeros, ()).astype(dtype)
        if noise_mode == "const":
            return noise_const.value.astype(dtype)[None, :, :, None] * strength
        if noise_mode == "random":
            shape = (batch, self.resolution, self.resolution, 1)
            return jax.random.normal(key, shape, dtype) * strength
        return None

    @nn.compact
    def __call__(self, x, w, noise_mode="const", key=None, modulation=DEFAULT_MODULATION, gain=1.0):
        """x [N, R/up, R/up, in], w [N, w_dim] -> [N, R, R, out]."""
        s, k, dtype = self.spec, self.spec.kernel_size, x.dtype
        f = self.variable(
            "buffers",
            "resample_filter",
            lambda: jnp.asarray(setup_filter(list(s.layer_filter(self.up)))),
        )
        styles = FullyConnectedLayer(s.w_dim, self.in_channels, bias_init=1.0, name="affine")(w)
        weight = self.param("weight", _normal, (k, k, self.in_channels, self.out_channels)).astype(
            dtype
        )
        noise = self._noise(x.shape[0], dtype, noise_mode, key) if s.use_noise else None
        bias = self.param("bias", nn.initializers.zeros, (self.out_channels,))
        x = modulated_conv2d(
            x,
            weight,
            styles,
            noise,
            up=self.up,
            padding=k // 2,
            resample_filter=f.value.astype(dtype) if self.up > 1 else None,
            modulation=modulation,
        )
        clamp = None if s.conv_clamp is None else s.conv_clamp * gain
        return bias_act(
            x, bias, act=s.activation, gain=activation_gain(s.activation) * gain, clamp=clamp
        )


class ToRGBLayer(nn.Module):
    """Modulated 1x1 conv without demodulation, bias and clamp."""

    spec: StyleGAN2Spec
    in_channels: int

    @nn.compact
    def __call__(self, x, w, modulation=DEFAULT_MODULATION):
        """x [N, R, R, in], w [N, w_dim] -> [N, R, R, img_channels]."""
        s = self.spec
        styles = FullyConnectedLayer(s.w_dim, self.in_channels, bias_init=1.0, name="affine")(w)
        styles = styles * (1 / math.sqrt(self.in_channels))
        weight = self.param("weight", _normal, (1, 1, self.in_channels, s.img_channels)).astype(
            x.dtype
        )
        bias = self.param("bias", nn.initializers.zeros, (s.img_channels,))
        x = modulated_conv2d(x, weight, styles, demodulate=False, modulation=modulation)
        return bias_act(x, bias, clamp=s.conv_clamp)


class SkipLayer(nn.Module):
    """The resnet shortcut: 1x1 conv (no bias), 2x FIR upsampling, gain sqrt(1/2), no clamp."""

    spec: StyleGAN2Spec
    in_channels: int
    out_channels: int

    @nn.compact
    def __call__(self, x):
        f = self.variable(
            "buffers",
            "resample_filter",
            lambda: jnp.asarray(setup_filter(list(self.spec.resample_filter))),
        )
        weight = self.param("weight", _normal, (1, 1, self.in_channels, self.out_channels)).astype(
            x.dtype
        )
        x = conv2d_resample(
            x, weight * (1 / math.sqrt(self.in_channels)), f.value.astype(x.dtype), up=2
        )
        return bias_act(x, None, gain=math.sqrt(0.5))


class SynthesisBlock(nn.Module):
    """One resolution: const input or 2x-up conv0, conv1, optional toRGB and resnet shortcut."""

    spec: StyleGAN2Spec
    resolution: int

    def _const_input(self, ws: jax.Array) -> jax.Array:
        """The learned constant [C, 4, 4] as a batch [N, 4, 4, C] (N from ws [N, k, w_dim])."""
        res, out_ch = self.resolution, self.spec.channels(self.resolution)
        const = self.param("const", _normal, (out_ch, res, res)).astype(ws.dtype)
        return jnp.broadcast_to(
            jnp.transpose(const, (1, 2, 0))[None], (ws.shape[0], res, res, out_ch)
        )

    def _up_convs(self, x: jax.Array, ws: jax.Array, keys: list, layer_kw: dict) -> jax.Array:
        """conv0 (2x up) then conv1 on x [N, R/2, R/2, C_in], plus the resnet shortcut if any."""
        s, res = self.spec, self.resolution
        in_ch, out_ch = s.channels(res // 2), s.channels(res)
        y = SkipLayer(s, in_ch, out_ch, name="skip")(x) if s.architecture == "resnet" else None
        x = SynthesisLayer(s, in_ch, out_ch, res, up=2, name="conv0")(
            x, ws[:, 0], key=keys[0], **layer_kw
        )
        gain = math.sqrt(0.5) if y is not None else 1.0
        x = SynthesisLayer(s, out_ch, out_ch, res, name="conv1")(
            x, ws[:, 1], key=keys[1], gain=gain, **layer_kw
        )
        return y + x if y is not None else x

    @nn.compact
    def __call__(self, x, img, ws, noise_mode="const", key=None, modulation=DEFAULT_MODULATION):
        """x [N, R/2, R/2, C_in] or None, img [N, R/2, R/2, img_channels] or None, ws [N, k,
        w_dim]."""
        s, res = self.spec, self.resolution
        out_ch = s.channels(res)
        dtype = ws.dtype
        f = self.variable(
            "buffers", "resample_filter", lambda: jnp.asarray(setup_filter(list(s.resample_filter)))
        )
        keys = [None, None] if key is None else list(jax.random.split(key, 2))
        layer_kw = dict(noise_mode=noise_mode, modulation=modulation)
        if res == 4:
            x = self._const_input(ws)
            x = SynthesisLayer(s, out_ch, out_ch, res, name="conv1")(
                x, ws[:, 0], key=keys[1], **layer_kw
            )
        else:
            x = self._up_convs(x, ws, keys, layer_kw)
        if img is not None:
            img = upsample2d(img, f.value.astype(dtype))
        if s.block_has_torgb(res):
            rgb = ToRGBLayer(s, out_ch, name="torgb")(
                x, ws[:, s.block_num_conv(res)], modulation=modulation
            )
            img = rgb if img is None else img + rgb
        return x, img


class SynthesisNetwork(nn.Module):
    """ws [N, num_ws, w_dim] -> images [N, R, R, img_channels], computed in ws's dtype."""

    spec: StyleGAN2Spec

    @nn.compact
    def __call__(self, ws, noise_mode="const", key=None, modulation=DEFAULT_MODULATION):
        s = self.spec
        x = img = None
        w_idx = 0
        for i, res in enumerate(s.block_resolutions):
            n = s.block_num_conv(res)
            block_ws = ws[:, w_idx : w_idx + n + int(s.block_has_torgb(res))]
            block_key = None if key is None else jax.random.fold_in(key, i)
            x, img = SynthesisBlock(s, res, name=f"b{res}")(
                x, img, block_ws, noise_mode, block_key, modulation
            )
            w_idx += n
        return img


# --------------------------------------------------------------------------------------------------
# The generator object
# --------------------------------------------------------------------------------------------------


def _variables(params, buffers, name: str) -> dict:
    return {"params": params.get(name, {}), "buffers": (buffers or {}).get(name, {})}


class StyleGAN2Generator(StyleGANBase):
    """A converted stylegan2-ada-pytorch generator (see the module docstring for layouts).

    Build one with ``converters.convert_state_dict('stylegan2', state_dict, init_kwargs)``.
    """

    kind = "stylegan2"

    def __post_init__(self):
        super().__post_init__()
        self.spec = parse_config(self.config)
        self._mapping_net = MappingNetwork(self.spec)
        self._synthesis_net = SynthesisNetwork(self.spec)

    # ---- sizes -----------------------------------------------------------------------------------
    @property
    def w_dim(self) -> int:
        return self.spec.w_dim

    @property
    def z_dim(self) -> int:
        return self.spec.z_dim

    @property
    def c_dim(self) -> int:
        return self.spec.c_dim

    # ---- pure functions --------------------------------------------------------------------------
    def mapping_apply(
        self, params, buffers, z, c, truncation_psi=1.0, truncation_cutoff: int | None = None
    ):
        """z [N, z_dim], c [N, c_dim] -> ws [N, num_ws, w_dim] (z's dtype if float64, else
        float32)."""
        return self._mapping_net.apply(
            _variables(params, buffers, "mapping"), z, c, truncation_psi, truncation_cutoff
        )

    def synthesis_apply(
        self,
        params,
        buffers,
        ws,
        noise_mode: str = "const",
        key=None,
        modulation: str = DEFAULT_MODULATION,
    ) -> jax.Array:
        """ws [N, num_ws, w_dim] -> images [N, R, R, img_channels], in float64 for float64 ws, else
        float32.

        Args:
          noise_mode: 'const' (stored noise), 'random' (needs ``key``) or 'none'.
          key: PRNG key for noise_mode 'random'.
          modulation: 'weights' or 'activations' (see the module docstring); same images either way.
        """
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"noise_mode must be one of {NOISE_MODES}, got {noise_mode!r}.")
        if noise_mode == "random" and key is None:
            raise ValueError("noise_mode='random' needs a PRNG key.")
        if modulation not in MODULATIONS:
            raise ValueError(f"modulation must be one of {MODULATIONS}, got {modulation!r}.")
        ws = jnp.asarray(ws)
        ws = ws.astype(jnp.float64 if ws.dtype == jnp.float64 else jnp.float32)
        if noise_mode != "random":
            key = None
        return self._synthesis_net.apply(
            _variables(params, buffers, "synthesis"), ws, noise_mode, key, modulation
        )

    # ---- public API additions --------------------------------------------------------------------
    def mapping(self, z, c=None, truncation_psi: float = 1.0, truncation_cutoff: int | None = None):
        """As :meth:`StyleGANBase.mapping`; refuses truncation when the model tracks no w_avg."""
        if not self.spec.has_w_avg and truncation_psi != 1:
            raise ValueError(
                "This generator has no w_avg (mapping_kwargs.w_avg_beta=None), so it "
                "cannot truncate; use truncation_psi=1."
            )
        return super().mapping(z, c, truncation_psi, truncation_cutoff)


def init_variables(config: dict, key: jax.Array) -> tuple[dict, dict]:
    """Random params and buffers for ``config`` (official-like init: normal weights, zero biases).

    Returns:
      (params, buffers), nested dicts in this port's layouts.
    """
    spec = parse_config(config)
    k1, k2 = jax.random.split(key)
    z = jnp.zeros((1, spec.z_dim), jnp.float32)
    c = jnp.zeros((1, spec.c_dim), jnp.float32)
    mapping = jax.jit(MappingNetwork(spec).init)({"params": k1}, z, c, 1.0)
    ws = jnp.zeros((1, spec.num_ws, spec.w_dim), jnp.float32)
    synthesis = jax.jit(SynthesisNetwork(spec).init)({"params": k2}, ws)
    params = {"mapping": dict(mapping.get("params", {})), "synthesis": dict(synthesis["params"])}
    buffers = {"synthesis": dict(synthesis["buffers"])}
    if "buffers" in mapping:
        buffers["mapping"] = dict(mapping["buffers"])
    return params, buffers


__all__ = [
    "DEFAULT_MODULATION",
    "MODULATIONS",
    "StyleGAN2Generator",
    "StyleGAN2Spec",
    "conv2d_resample",
    "init_variables",
    "modulated_conv2d",
    "parse_config",
]
