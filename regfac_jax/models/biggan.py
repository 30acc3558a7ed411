"""BigGAN-deep generator in Flax Linen, numerically matching ``pytorch-pretrained-biggan`` 0.1.1.

Architecture (all arrays NHWC; ``ch`` = ``channel_width``, ``z_dim`` = ``config['z_dim']``):

1. class embedding ``e = class_vector @ W_embed``  ``[N, num_classes] -> [N, z_dim]`` (a plain linear map, so
   soft or interpolated class vectors are allowed). The package sizes this embedding with ``z_dim``;
   it never reads ``class_embed_dim`` (both are 128 in every released model), and this port does the
   same;
2. condition ``cond = concat(z, e)``  ``[N, 2 * z_dim]``;
3. spectrally normalised dense layer ``gen_z`` to ``4 * 4 * 16 * ch`` values, read as
   ``[N, 4, 4, 16 * ch]`` (the TensorFlow row-major layout the released weights come from, which is
   already NHWC);
4. residual blocks (``config['layers']`` rows ``(up_sample, in_mult, out_mult)``) with a
   self-attention layer inserted before block ``attention_layer_position``; every block normalises
   with conditional batch norm (``1 + scale(cond)``, ``offset(cond)``) using standing statistics for
   the requested truncation;
5. final unconditional batch norm, ReLU, 3x3 conv to ``ch`` channels, keep the first 3, ``tanh``.

Standing statistics: each batch norm stores ``n_stats`` rows of means and variances, row ``i``
measured at truncation ``i / (n_stats - 1)``. For truncation ``t`` the package takes
``coef, start = modf(t / step)`` and, when ``coef != 0``, uses ``coef * row[start] + (1 - coef) *
row[start + 1]``: the larger weight goes to the *farther* neighbour (a quirk of the original code,
reproduced exactly; see :func:`stats_index`).

Spectral norm is folded once at conversion (``converters/biggan.py``): ``params`` hold ``W / sigma``
under the name ``weight``. ``params`` mirror the state_dict names
(``generator.layers.0.conv_1.weight`` -> ``params['generator']['layers']['0']['conv_1']['weight']``)
with conv weights HWIO and dense weights ``[in, out]``; the standing statistics are ``buffers``
(same naming).

The computation dtype follows the dtype of ``z`` (or of the latent handed to a
:meth:`BigGANGenerator.latent_fn` function); weights are cast to it. Matrix products and
convolutions run at ``Precision.HIGHEST`` (see ``regfac_jax.ops.precision``).
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import importlib.resources
import math
import re
from typing import Sequence, Union

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.tree_util import Partial

from regfac_jax import errors
from regfac_jax.models.base import Generator
from regfac_jax.ops.precision import matmul_precision as _prec

ClassSpec = Union[int, str]

# Keys of the package's config.json, with the package's defaults (the 128 px model) for keys a file
# omits.
DEFAULT_CONFIG = {
    "output_dim": 128,
    "z_dim": 128,
    "class_embed_dim": 128,
    "channel_width": 128,
    "num_classes": 1000,
    "layers": [
        [False, 16, 16],
        [True, 16, 16],
        [False, 16, 16],
        [True, 16, 8],
        [False, 8, 8],
        [True, 8, 4],
        [False, 4, 4],
        [True, 4, 2],
        [False, 2, 2],
        [True, 2, 1],
    ],
    "attention_layer_position": 8,
    "eps": 1e-4,
    "n_stats": 51,
}
REDUCTION = 4  # a block's bottleneck width is in_channels // 4
# config keys that must be positive integers
_SIZE_KEYS = ("output_dim", "z_dim", "class_embed_dim", "channel_width", "num_classes", "n_stats")


# --------------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------------
def check_config(config: dict) -> dict:
    """Validates a package-format config and returns a normalised, JSON-serialisable copy.

    Missing keys take the package's defaults (as ``BigGANConfig.from_dict`` does); unknown keys are
    an error.

    Raises:
      ValueError: naming the inconsistent field and what it should be.
    """
    unknown = sorted(set(config) - set(DEFAULT_CONFIG))
    if unknown:
        raise ValueError(
            f"Unknown BigGAN config keys {unknown}; expected a subset of {sorted(DEFAULT_CONFIG)}."
        )
    cfg = {**DEFAULT_CONFIG, **config}
    _check_sizes(cfg)
    cfg["eps"] = float(cfg["eps"])
    cfg["attention_layer_position"] = int(cfg["attention_layer_position"])
    cfg["layers"] = _check_layers(cfg["layers"], cfg["channel_width"])
    _check_attention(cfg)
    _check_output_dim(cfg)
    return cfg


def _check_sizes(cfg: dict) -> None:
    """Refuses non-positive integer sizes and n_stats < 2; turns the sizes into ints in place."""
    for key in _SIZE_KEYS:
        if (
            not isinstance(cfg[key], (int, np.integer))
            or isinstance(cfg[key], bool)
            or cfg[key] < 1
        ):
            raise ValueError(f"BigGAN config {key!r} must be a positive integer, got {cfg[key]!r}.")
        cfg[key] = int(cfg[key])
    if cfg["n_stats"] < 2:
        raise ValueError(
            "BigGAN config 'n_stats' must be >= 2 (rows for truncation 0 and 1), got "
            f"{cfg['n_stats']}."
        )


def _check_output_dim(cfg: dict) -> None:
    """Refuses an output_dim other than the 4 px start doubled by each up-sampling layer."""
    expected = 4 * 2 ** sum(up for up, _, _ in cfg["layers"])
    if cfg["output_dim"] != expected:
        raise ValueError(
            f"BigGAN config says output_dim={cfg['output_dim']}, but its layers up-sample 4 px to "
            f"{expected} px; fix output_dim or the layers list."
        )


def _check_layer(i: int, row, prev: int, ch: int) -> list:
    """Row i of the layers list, fed ``prev`` * ch channels -> [up_sample, in_mult, out_mult]."""
    if len(row) != 3:
        raise ValueError(
            f"BigGAN config layers[{i}] must be [up_sample, in_mult, out_mult], got {row!r}."
        )
    up, cin, cout = bool(row[0]), int(row[1]), int(row[2])
    if cin != prev:
        raise ValueError(
            f"BigGAN config layers[{i}] takes {cin} * channel_width channels but "
            f"the previous stage gives {prev} * channel_width (gen_z gives 16)."
        )
    if cin != cout and cin != 2 * cout:
        raise ValueError(
            f"BigGAN config layers[{i}]: a block keeps or halves its channels, got {cin} -> {cout}."
        )
    if (ch * cin) % REDUCTION:
        raise ValueError(
            f"BigGAN config layers[{i}]: {ch * cin} channels are not divisible by {REDUCTION}."
        )
    return [up, cin, cout]


def _check_layers(layers, ch: int) -> list:
    if not isinstance(layers, (list, tuple)) or not layers:
        raise ValueError(
            "BigGAN config 'layers' must be a non-empty list of [up_sample, in, "
            f"out], got {layers!r}."
        )
    out, prev = [], 16
    for i, row in enumerate(layers):
        out.append(_check_layer(i, row, prev, ch))
        prev = out[-1][2]
    if prev != 1:
        raise ValueError(
            "BigGAN config: the last layer must end at 1 * channel_width channels "
            f"(the final batch norm has channel_width features), got {prev}."
        )
    return out


def _check_attention(cfg: dict) -> None:
    pos = cfg["attention_layer_position"]
    if 0 <= pos < len(cfg["layers"]):
        channels = cfg["channel_width"] * cfg["layers"][pos][1]
        if channels % 8:
            raise ValueError(
                f"BigGAN config: the attention layer before layers[{pos}] has {channels} channels, "
                "which must be divisible by 8."
            )


def _arch(cfg: dict) -> tuple:
    """Hashable architecture description for the Linen modules."""
    return (
        cfg["channel_width"],
        cfg["num_classes"],
        cfg["z_dim"],
        cfg["n_stats"],
        cfg["eps"],
        tuple(tuple(row) for row in cfg["layers"]),
        cfg["attention_layer_position"],
    )


# --------------------------------------------------------------------------------------------------
# Truncation -> standing statistics
# --------------------------------------------------------------------------------------------------
def check_truncation(truncation: float) -> float:
    """Returns ``truncation`` as a float, raising ValueError unless 0 < truncation <= 1."""
    try:
        t = float(truncation)
    except (TypeError, ValueError):
        raise ValueError(f"truncation must be a number in (0, 1], got {truncation!r}.") from None
    if not 0.0 < t <= 1.0:
        raise ValueError(
            f"truncation must lie in (0, 1] (BigGAN's standing statistics cover 0..1), got {t}."
        )
    return t


def stats_index(truncation: float, n_stats: int) -> tuple[int, float]:
    """The package's ``(start_idx, coef)`` for a truncation:
    ``modf(truncation / (1 / (n_stats - 1)))``.

    The division by the step (not a multiplication by ``n_stats - 1``) is kept on purpose: it
    decides rounding.
    """
    t = check_truncation(truncation)
    coef, start = math.modf(t / (1.0 / (n_stats - 1)))
    return int(start), coef


def stats_selection(truncation: float, n_stats: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows and weights that mix the standing statistics for ``truncation``.

    Returns:
      ``(rows int32 [2], weights float64 [2])`` with statistic = ``weights[0] * s[rows[0]] +
      weights[1] * s[rows[1]]``: ``([start, start + 1], [coef, 1 - coef])`` when interpolating,
      ``([start, start], [1, 0])`` (row ``start`` exactly) when ``coef == 0``.
    """
    start, coef = stats_index(truncation, n_stats)
    if coef == 0.0:
        return np.array([start, start], np.int32), np.array([1.0, 0.0])
    if start + 1 >= n_stats:
        raise ValueError(
            f"truncation {truncation} needs statistics row {start + 1}, but there are "
            f"{n_stats} rows."
        )
    return np.array([start, start + 1], np.int32), np.array([coef, 1.0 - coef])


# --------------------------------------------------------------------------------------------------
# Noise and class vectors
# --------------------------------------------------------------------------------------------------
def truncated_noise(
    key_or_seed, n: int, dim: int, truncation: float = 1.0, dtype=jnp.float32
) -> jax.Array:
    """BigGAN's latent noise in JAX: a standard normal truncated to [-2, 2] (a true truncated
    distribution, as if resampled until inside, not clipped), times ``truncation``.

    Args:
      key_or_seed: a ``jax.random`` key or an int seed.
      n, dim: output shape ``[n, dim]``.
      truncation: in (0, 1].
    Returns:
      ``[n, dim]`` array of ``dtype``. Not the same numbers as the package's numpy sampler: for
      those use :func:`truncated_noise_numpy`.
    """
    t = check_truncation(truncation)
    key = jax.random.key(key_or_seed) if isinstance(key_or_seed, (int, np.integer)) else key_or_seed
    return jax.random.truncated_normal(key, -2.0, 2.0, (n, dim), dtype) * jnp.asarray(t, dtype)


def truncated_noise_numpy(
    n: int, dim: int, truncation: float = 1.0, seed: int | None = None
) -> np.ndarray:
    """Reproduces ``pytorch_pretrained_biggan.truncated_noise_sample(n, dim, truncation, seed)`` bit
    for bit.

    Draws ``scipy.stats.truncnorm(-2, 2)`` samples with ``numpy.random.RandomState(seed)``, casts
    them to float32 and multiplies by ``truncation`` with numpy's own promotion rules (float32 for a
    Python float). Needs scipy.

    Returns:
      ``[n, dim]`` numpy array.
    """
    try:
        from scipy.stats import truncnorm
    except ImportError as err:
        raise ImportError(
            "truncated_noise_numpy needs scipy (pip install scipy); "
            "truncated_noise(key, ...) works without it."
        ) from err
    check_truncation(truncation)
    state = None if seed is None else np.random.RandomState(seed)
    values = truncnorm.rvs(-2, 2, size=(n, dim), random_state=state).astype(np.float32)
    return truncation * values


@functools.lru_cache(maxsize=1)
def imagenet_classes() -> tuple[tuple[str, tuple[str, ...]], ...]:
    """The 1000 ImageNet classes in index order: ``((wordnet_id, (name, synonym, ...)), ...)``.

    Read (once, on first use) from ``regfac_jax/data/imagenet_classes.txt``.
    """
    text = (
        importlib.resources.files("regfac_jax")
        .joinpath("data/imagenet_classes.txt")
        .read_text("utf-8")
    )
    rows = []
    for line in text.splitlines():
        wnid, names = line.split("\t")
        rows.append((wnid, tuple(s.strip() for s in names.split(","))))
    return tuple(rows)


def _normalise_name(name: str) -> str:
    return re.sub(r"\s+", " ", name.replace("_", " ")).strip().lower()


@functools.lru_cache(maxsize=1)
def _name_table() -> dict[str, tuple[int, ...]]:
    table: dict[str, list[int]] = {}
    for index, (_, names) in enumerate(imagenet_classes()):
        for name in names:
            hits = table.setdefault(_normalise_name(name), [])
            if index not in hits:
                hits.append(index)
    return {k: tuple(v) for k, v in table.items()}


def class_index(spec: ClassSpec, num_classes: int = 1000) -> int:
    """ImageNet index of ``spec``: an int index, or a class name / synonym (case and '_' vs ' '
    ignored).

    Raises:
      errors.ConfigError (a ValueError): index out of range, unknown name (with close matches) or
        ambiguous name (with candidates).
    """
    if isinstance(spec, (int, np.integer)) and not isinstance(spec, bool):
        if not 0 <= int(spec) < num_classes:
            raise errors.ConfigError(f"class index {int(spec)} is outside 0..{num_classes - 1}.")
        return int(spec)
    if not isinstance(spec, str):
        raise errors.ConfigError(f"a class must be an int index or a name string, got {spec!r}.")
    key = _normalise_name(spec)
    hits = _name_table().get(key)
    if hits is None:
        close = difflib.get_close_matches(key, list(_name_table()), n=5, cutoff=0.6)
        hint = (
            ("; close matches: " + ", ".join(f"{c!r} ({_name_table()[c][0]})" for c in close))
            if close
            else ""
        )
        raise errors.ConfigError(
            f"unknown ImageNet class name {spec!r}{hint}. Pass an index 0..999 or another name."
        )
    if len(hits) > 1:
        cands = "; ".join(f"{i}: {', '.join(imagenet_classes()[i][1])}" for i in hits)
        raise errors.ConfigError(
            f"ImageNet class name {spec!r} is ambiguous: {cands}. Pass the index instead."
        )
    return class_index(hits[0], num_classes)


def class_vector(classes: Sequence[ClassSpec] | ClassSpec, num_classes: int = 1000) -> np.ndarray:
    """One-hot class vectors from ImageNet indices and/or names.

    Args:
      classes: one class or a sequence, e.g. ``['golden retriever', 207]``.
      num_classes: width of the vectors (the generator's ``num_classes``).
    Returns:
      ``[len(classes), num_classes]`` float32 one-hot rows.
    """
    if isinstance(classes, (str, int, np.integer)):
        classes = [classes]
    indices = [class_index(c, num_classes) for c in classes]
    out = np.zeros((len(indices), num_classes), np.float32)
    out[np.arange(len(indices)), indices] = 1.0
    return out


def interpolate_classes(a, b, steps: int, num_classes: int = 1000) -> np.ndarray:
    """Linear path between two class vectors (or classes given as index / name).

    Returns:
      ``[steps, num_classes]`` float32: row ``k`` is ``(1 - k / (steps - 1)) * a + k / (steps - 1) *
      b``.
    """
    if int(steps) < 2:
        raise ValueError(f"interpolate_classes needs steps >= 2 (both end points), got {steps}.")
    va, vb = (_as_class_row(x, num_classes) for x in (a, b))
    alpha = np.linspace(0.0, 1.0, int(steps))[:, None]
    return ((1.0 - alpha) * va + alpha * vb).astype(np.float32)


def _as_class_row(x, num_classes: int) -> np.ndarray:
    if isinstance(x, (str, int, np.integer)):
        return class_vector([x], num_classes)[0].astype(np.float64)
    row = np.asarray(x, np.float64).reshape(-1)
    if row.shape != (num_classes,):
        raise ValueError(
            f"a class vector must have {num_classes} entries, got shape {np.shape(x)}."
        )
    return row


# --------------------------------------------------------------------------------------------------
# Pure ops (NHWC)
# --------------------------------------------------------------------------------------------------


def conv2d(x: jax.Array, w: jax.Array, bias: jax.Array | None = None) -> jax.Array:
    """Stride-1 'same' convolution: x ``[N, H, W, Cin]``, w HWIO ``[k, k, Cin, Cout]`` ->
    ``[N, H, W, Cout]``."""
    k = w.shape[0]
    if k == 1:
        y = jnp.einsum("nhwc,cd->nhwd", x, w[0, 0], precision=_prec())
    else:
        pad = (k - 1) // 2
        y = jax.lax.conv_general_dilated(
            x,
            w,
            (1, 1),
            ((pad, pad), (pad, pad)),
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
            precision=_prec(),
        )
    return y if bias is None else y + bias


def upsample2x(x: jax.Array) -> jax.Array:
    """Nearest-neighbour 2x up-sampling: ``[N, H, W, C] -> [N, 2H, 2W, C]``."""
    return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


def maxpool2x(x: jax.Array) -> jax.Array:
    """2x2 max pooling, stride 2: ``[N, H, W, C] -> [N, H/2, W/2, C]``."""
    n, h, w, c = x.shape
    return x.reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


def mix_stats(table: jax.Array, rows: jax.Array, weights: jax.Array) -> jax.Array:
    """``weights[0] * table[rows[0]] + weights[1] * table[rows[1]]`` for a ``[n_stats, C]`` table ->
    ``[C]``."""
    return table[rows[0]] * weights[0] + table[rows[1]] * weights[1]


# --------------------------------------------------------------------------------------------------
# Linen modules. Weights are already spectrally normalised (folded at conversion).
# --------------------------------------------------------------------------------------------------
_init = nn.initializers.normal(0.02)


class Conv(nn.Module):
    """'same' conv with an HWIO ``weight`` (and optional ``bias``)."""

    features: int
    kernel: int
    use_bias: bool = True

    @nn.compact
    def __call__(self, x):
        w = self.param(
            "weight", _init, (self.kernel, self.kernel, x.shape[-1], self.features)
        ).astype(x.dtype)
        b = (
            self.param("bias", nn.initializers.zeros, (self.features,)).astype(x.dtype)
            if self.use_bias
            else None
        )
        return conv2d(x, w, b)


class Linear(nn.Module):
    """Dense layer with a ``weight`` ``[in, out]`` (and optional ``bias``)."""

    features: int
    use_bias: bool = False

    @nn.compact
    def __call__(self, x):
        w = self.param("weight", _init, (x.shape[-1], self.features)).astype(x.dtype)
        y = jnp.dot(x, w, precision=_prec())
        if self.use_bias:
            y = y + self.param("bias", nn.initializers.zeros, (self.features,)).astype(x.dtype)
        return y


class BatchNorm(nn.Module):
    """Batch norm with standing statistics chosen by truncation; conditional (class/z dependent gain
    and bias) or plain (learned ``weight`` and ``bias``)."""

    n_stats: int
    eps: float
    conditional: bool = True

    @nn.compact
    def __call__(self, x, stats, cond=None):
        """x ``[N, H, W, C]``, stats = (rows int32 [2], weights [2]), cond ``[N, 2 * z_dim]`` ->
        ``[N, H, W, C]``."""
        c = x.shape[-1]
        means = self.variable("buffers", "running_means", jnp.zeros, (self.n_stats, c)).value
        var_s = self.variable("buffers", "running_vars", jnp.ones, (self.n_stats, c)).value
        rows, weights = stats[0], stats[1].astype(x.dtype)
        mean = mix_stats(means.astype(x.dtype), rows, weights)
        var = mix_stats(var_s.astype(x.dtype), rows, weights)
        if self.conditional:
            gain = 1 + Linear(c, name="scale")(cond)[:, None, None, :]
            bias = Linear(c, name="offset")(cond)[:, None, None, :]
            return (x - mean) / jnp.sqrt(var + self.eps) * gain + bias
        weight = self.param("weight", nn.initializers.ones, (c,)).astype(x.dtype)
        bias = self.param("bias", nn.initializers.zeros, (c,)).astype(x.dtype)
        # the eval-mode formula of torch's batch_norm kernel
        alpha = weight / jnp.sqrt(var + self.eps)
        return x * alpha + (bias - mean * alpha)


class SelfAttention(nn.Module):
    """SAGAN self-attention with 2x2 max-pooled keys and values;
    ``out = x + gamma * o_conv(attention)``."""

    @nn.compact
    def __call__(self, x):
        n, h, w, c = x.shape
        theta = Conv(c // 8, 1, False, name="snconv1x1_theta")(x).reshape(n, h * w, c // 8)
        phi = maxpool2x(Conv(c // 8, 1, False, name="snconv1x1_phi")(x)).reshape(
            n, h * w // 4, c // 8
        )
        g = maxpool2x(Conv(c // 2, 1, False, name="snconv1x1_g")(x)).reshape(n, h * w // 4, c // 2)
        attn = jax.nn.softmax(jnp.einsum("nqc,nkc->nqk", theta, phi, precision=_prec()), axis=-1)
        attn_g = jnp.einsum("nqk,nkc->nqc", attn, g, precision=_prec()).reshape(n, h, w, c // 2)
        out = Conv(c, 1, False, name="snconv1x1_o_conv")(attn_g)
        gamma = self.param("gamma", nn.initializers.zeros, (1,)).astype(x.dtype)
        return x + gamma * out


class GenBlock(nn.Module):
    """BigGAN-deep residual block: 4 x (cond. BN, ReLU, conv 1x1 / 3x3 / 3x3 / 1x1) plus a skip that
    drops channels (keeps the first half) and up-samples like the main path."""

    out_channels: int
    up_sample: bool
    n_stats: int
    eps: float

    @nn.compact
    def __call__(self, x, cond, stats):
        cin = x.shape[-1]
        mid = cin // REDUCTION
        widths = (mid, mid, mid, self.out_channels)
        h = x
        for i, (k, cout) in enumerate(zip((1, 3, 3, 1), widths, strict=True)):
            h = BatchNorm(self.n_stats, self.eps, name=f"bn_{i}")(h, stats, cond)
            h = jax.nn.relu(h)
            if i == 1 and self.up_sample:
                h = upsample2x(h)
            h = Conv(cout, k, name=f"conv_{i}")(h)
        skip = x[..., : cin // 2] if cin != self.out_channels else x
        if self.up_sample:
            skip = upsample2x(skip)
        return h + skip


class Layers(nn.Module):
    """The ``generator.layers`` ModuleList: blocks named by position, the attention layer taking one
    slot."""

    arch: tuple

    @nn.compact
    def __call__(self, x, cond, stats):
        ch, _, _, n_stats, eps, layers, attn_pos = self.arch
        slot = 0
        for i, (up, _, cout) in enumerate(layers):
            if i == attn_pos:
                x = SelfAttention(name=str(slot))(x)
                slot += 1
            x = GenBlock(ch * cout, up, n_stats, eps, name=str(slot))(x, cond, stats)
            slot += 1
        return x


class BigGANNet(nn.Module):
    """The whole BigGAN-deep network; variables ``{'params': ..., 'buffers': ...}`` mirror the
    state_dict."""

    arch: tuple

    def setup(self):
        ch, num_classes, z_dim, n_stats, eps, _, _ = self.arch
        self.embeddings = Linear(z_dim, name="embeddings")
        self.generator = _Trunk(self.arch, name="generator")

    def __call__(self, z, class_vector, stats):
        """z ``[N, z_dim]``, class_vector ``[N, num_classes]`` -> images ``[N, H, W, 3]`` in [-1,
        1]."""
        return self.from_cond(
            jnp.concatenate([z, self.embed(class_vector.astype(z.dtype))], axis=1), stats
        )

    def embed(self, class_vector):
        """``[N, num_classes] -> [N, z_dim]`` class embedding."""
        return self.embeddings(class_vector)

    def from_cond(self, cond, stats):
        """cond ``[N, 2 * z_dim]`` (z then class embedding) -> images ``[N, H, W, 3]``."""
        return self.generator(cond, stats)


class _Trunk(nn.Module):
    arch: tuple

    @nn.compact
    def __call__(self, cond, stats):
        ch, _, _, n_stats, eps, _, _ = self.arch
        x = Linear(4 * 4 * 16 * ch, use_bias=True, name="gen_z")(cond)
        x = x.reshape(cond.shape[0], 4, 4, 16 * ch)  # TF layout: already NHWC
        x = Layers(self.arch, name="layers")(x, cond, stats)
        x = jax.nn.relu(BatchNorm(n_stats, eps, conditional=False, name="bn")(x, stats))
        x = Conv(ch, 3, name="conv_to_rgb")(x)
        return jnp.tanh(x[..., :3])


# --------------------------------------------------------------------------------------------------
# Generator object
# --------------------------------------------------------------------------------------------------
@dataclasses.dataclass(eq=False)
class BigGANGenerator(Generator):
    """A converted BigGAN-deep generator. Build it with ``converters.biggan.convert`` (or
    ``converters.load``).

    ``config`` is the package's config.json content (normalised by :func:`check_config`).
    """

    kind = "biggan"

    def __post_init__(self):
        super().__post_init__()
        self.config = check_config(self.config)
        self.net = BigGANNet(_arch(self.config))

    # ---- sizes -----------------------------------------------------------------------------------
    @property
    def img_resolution(self) -> int:
        return self.config["output_dim"]

    @property
    def img_channels(self) -> int:
        return 3

    @property
    def z_dim(self) -> int:
        return self.config["z_dim"]

    @property
    def latent_dim(self) -> int:
        return self.z_dim

    @property
    def num_classes(self) -> int:
        return self.config["num_classes"]

    # ---- pure functions (weights as arguments) ---------------------------------------------------
    def generate_apply(self, params, buffers, z, class_vector, stats) -> jax.Array:
        """Pure: z ``[N, z_dim]``, class_vector ``[N, num_classes]``, stats (rows, weights) ->
        ``[N, H, W, 3]``."""
        return self.net.apply({"params": params, "buffers": buffers}, z, class_vector, stats)

    def cond_apply(self, params, buffers, cond, stats) -> jax.Array:
        """Pure: cond ``[N, 2 * z_dim]`` -> ``[N, H, W, 3]``."""
        return self.net.apply(
            {"params": params, "buffers": buffers}, cond, stats, method=BigGANNet.from_cond
        )

    # ---- public API ------------------------------------------------------------------------------
    def stats(self, truncation: float, dtype=np.float32) -> tuple[np.ndarray, np.ndarray]:
        """(rows int32 [2], weights [2]) mixing the standing statistics for ``truncation``."""
        rows, weights = stats_selection(truncation, self.config["n_stats"])
        return rows, weights.astype(dtype)

    def generate(self, z, class_vector, truncation: float) -> jax.Array:
        """Images for latents ``z [N, z_dim]`` and class vectors ``[N, num_classes]`` (one-hot or
        soft).

        ``z`` is used as given: draw it with :func:`truncated_noise` at the same ``truncation``,
        which here only picks the standing statistics. Returns ``[N, H, W, 3]`` NHWC in [-1, 1], in
        z's floating dtype.
        """
        z = self._check_z(z)
        c = self._check_class(class_vector, z.shape[0])
        fn = self._cached("generate", lambda: jax.jit(self.generate_apply))
        return fn(self.params, self.buffers, z, c.astype(z.dtype), self.stats(truncation, z.dtype))

    def embed(self, class_vector) -> jax.Array:
        """Class embedding ``[N, num_classes] -> [N, z_dim]`` (the 'class' latent space)."""
        c = jnp.asarray(self._check_class(class_vector, None))
        return jnp.dot(c, self.params["embeddings"]["weight"].astype(c.dtype), precision=_prec())

    def latent_fn(
        self, space: str = "z", *, class_vector=None, z=None, truncation: float = 1.0
    ) -> Partial:
        """The pure function a Jacobian differentiates, for one sample.

        Args:
          space: 'z'       -- g(z [z_dim]) with the class fixed by ``class_vector`` [num_classes];
                 'class'   -- g(e [z_dim]) with z fixed by ``z`` [z_dim]; ``e`` is the class *embedding*
                              (``class_vector @ W_embed``, see :meth:`embed`), the continuous space
                              the network actually consumes: the 1000-d one-hot only reaches the
                              network through this linear map, so its Jacobian is
                              ``J_e @ W_embed^T`` with at most z_dim independent columns;
                 'z+class' -- g(concat(z, e) [2 * z_dim]).
          class_vector, z: the fixed part, as described above.
          truncation: picks the standing statistics (0 < truncation <= 1).
        Returns:
          ``jax.tree_util.Partial`` g(latent) -> image ``[H, W, 3]``, computed in the latent's
          dtype.
        """
        stats = self.stats(truncation)
        if space == "z":
            if class_vector is None:
                raise ValueError(
                    "space='z' needs class_vector [num_classes] (the class to hold fixed)."
                )
            fixed = self.embed(jnp.reshape(jnp.asarray(class_vector, jnp.float32), (1, -1)))[0]
        elif space == "class":
            if z is None:
                raise ValueError("space='class' needs z [z_dim] (the latent to hold fixed).")
            fixed = self._check_z(jnp.reshape(jnp.asarray(z, jnp.float32), (1, -1)))[0]
        elif space == "z+class":
            fixed = jnp.zeros((0,), jnp.float32)
        else:
            raise ValueError(
                f"Unknown latent space {space!r} for biggan; expected 'z', 'class' or 'z+class'."
            )
        fn = self._cached(("latent", space), lambda: functools.partial(_latent_image, self, space))
        return Partial(fn, self.params, self.buffers, stats, fixed)

    # ---- input checks ----------------------------------------------------------------------------
    def _check_z(self, z) -> jax.Array:
        z = jnp.asarray(z)
        if not jnp.issubdtype(z.dtype, jnp.floating):
            z = z.astype(jnp.float32)
        if z.ndim != 2 or z.shape[1] != self.z_dim:
            raise ValueError(
                f"z must have shape [N, {self.z_dim}] (z_dim={self.z_dim}), got {tuple(z.shape)}."
            )
        return z

    def _check_class(self, class_vector, n: int | None) -> jax.Array:
        c = jnp.asarray(class_vector)
        if not jnp.issubdtype(c.dtype, jnp.floating):
            c = c.astype(jnp.float32)
        if c.ndim != 2 or c.shape[1] != self.num_classes:
            raise ValueError(
                f"class_vector must have shape [N, {self.num_classes}] "
                f"(num_classes={self.num_classes}),"
                f" got {tuple(c.shape)}; build it with class_vector([...], {self.num_classes})."
            )
        if n is not None and c.shape[0] != n:
            raise ValueError(
                f"class_vector has {c.shape[0]} rows but z has {n}; give one class row per latent."
            )
        return c


def _latent_image(gen: BigGANGenerator, space: str, params, buffers, stats, fixed, latent):
    """One image ``[H, W, 3]`` from a single latent; ``fixed`` holds the part that is not
    differentiated."""
    fixed = fixed.astype(latent.dtype)
    if space == "z":
        cond = jnp.concatenate([latent, fixed])
    elif space == "class":
        cond = jnp.concatenate([fixed, latent])
    else:
        cond = latent
    rows, weights = stats
    return gen.cond_apply(params, buffers, cond[None], (rows, weights.astype(latent.dtype)))[0]


__all__ = [
    "BigGANGenerator",
    "BigGANNet",
    "DEFAULT_CONFIG",
    "check_config",
    "check_truncation",
    "class_index",
    "class_vector",
    "imagenet_classes",
    "interpolate_classes",
    "stats_index",
    "stats_selection",
    "truncated_noise",
    "truncated_noise_numpy",
]
