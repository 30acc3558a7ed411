"""Checkpoint formats -> generator objects. The format is detected from the content, never from the
name.

Supported sources:

* NVlabs snapshot pickles (stylegan2-ada-pytorch, stylegan3; pickle protocols 2-5): ``G_ema`` is
  taken, or the entry named by ``network`` (e.g. ``'G'``); a file without ``G_ema`` is refused
  unless one is named. The class decides the kind; the module state is flattened to the names
  ``state_dict()`` would give; the ``init_kwargs`` become the config (every official layout, see
  :mod:`converters.nvlabs`).
* Hammer / ReSeFa checkpoints (``torch.save({'models': {'generator_smooth' | 'generator':
  state_dict}})``): ``generator_smooth`` (else ``generator``) is taken, or the entry named by
  ``network``; Hammer key names are mapped to the official ones (``_hammer_sg2_key``,
  ``_hammer_sg3_key``) and the config is inferred from the tensor shapes.
* a plain state_dict (``torch.save(G.state_dict())``, zip or legacy, or a ``.npz``) with a config
  JSON beside it (``<file stem>.json`` or ``config.json``);
* a pytorch-pretrained-biggan directory (``config.json`` + ``pytorch_model.bin``);
* a directory written by :func:`regfac_jax.checkpoint.save_generator`.

Everything else gets a :class:`CheckpointFormatError` that says what the file is and what to do.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import zipfile
from typing import Any, Mapping

import numpy as np

from converters.common import ConversionError
from converters.nvlabs import NVLABS_KINDS, module_state_dict, port_config, read_snapshot
from converters.torch_pickle import (
    CheckpointFormatError,
    PersistentObject,
    TorchModule,
    UnsafeCheckpointError,
    read_torch_file,
)

__all__ = [
    "CheckpointFormatError",
    "Checkpoint",
    "UnsafeCheckpointError",
    "load",
    "module_state_dict",
    "read_checkpoint",
]

_LEGACY_HINT = (
    "the official converter https://github.com/NVlabs/stylegan2-ada-pytorch/blob/main/legacy.py "
    "(python legacy.py --source=OLD.pkl --dest=NEW.pkl)"
)


@dataclasses.dataclass
class Checkpoint:
    """What a checkpoint holds, in official terms, before conversion to a JAX generator.

    Attributes:
      kind: 'stylegan2' | 'stylegan3' | 'biggan'.
      state_dict: official key -> numpy array.
      config: the official constructor kwargs (BigGAN: the package's config dict).
      source: a one-line description of where it came from (format, entry).
    """

    kind: str
    state_dict: dict
    config: dict
    source: str


def load(path: str | os.PathLike, network: str | None = None):
    """Loads any supported checkpoint (file or directory) as a generator object.

    Args:
      path: the checkpoint file or directory.
      network: which entry of a multi-network file to load: for NVlabs snapshots 'G_ema' (the
        default; a file without it is refused unless another is named) or 'G'; for Hammer files
        'generator_smooth' (default, else 'generator') or 'generator'. Must be None for
        single-network formats.

    Raises:
      CheckpointFormatError: unsupported, damaged or unrecognised content (the message says which).
      UnsafeCheckpointError: the pickle names globals outside the allow-list (nothing was executed).
      ConversionError: the arrays do not fit the generator built from the config.
    """
    path = pathlib.Path(path)
    if path.is_dir():
        from regfac_jax import checkpoint

        if checkpoint.is_generator_dir(path):
            _single_network(network, path, "converted generator directory")
            return checkpoint.load_generator(path)
    ckpt = read_checkpoint(path, network)
    if ckpt.kind == "biggan":
        from converters import biggan

        return biggan.convert(ckpt.state_dict, ckpt.config)
    import converters

    return converters.convert_state_dict(ckpt.kind, ckpt.state_dict, ckpt.config)


def read_checkpoint(path: str | os.PathLike, network: str | None = None) -> Checkpoint:
    """Reads a checkpoint into official names and config without building the JAX generator.

    ``network`` selects an entry of a multi-network file, as in :func:`load`.
    """
    path = pathlib.Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist.")
    if path.is_dir():
        _single_network(network, path, "directory")
        return _read_directory(path)
    head = _head(path)
    _reject_non_checkpoints(path, head)
    if head.startswith(b"PK\x03\x04") and _is_npz(path):
        _single_network(network, path, "NumPy .npz state_dict")
        return _from_plain(_read_npz(path), path, "NumPy .npz state_dict")
    tree = read_torch_file(path)
    return _interpret(tree, path, network)


def _single_network(network: str | None, path, what: str) -> None:
    if network is not None:
        raise CheckpointFormatError(
            f"{path} is a {what}, which holds one generator; network={network!r} only selects an "
            "entry of a multi-network file (an NVlabs snapshot: 'G_ema', 'G'; a Hammer checkpoint: "
            "'generator_smooth', "
            "'generator'). Leave it out (drop the ':NAME' suffix of the model spec)."
        )


# ---- content sniffing ----------------------------------------------------------------------------


def _head(path: pathlib.Path, n: int = 4096) -> bytes:
    with open(path, "rb") as f:
        return f.read(n)


def _reject_non_checkpoints(path: pathlib.Path, head: bytes) -> None:
    """Raises a specific error for content that is recognisably not a checkpoint."""
    if not head:
        raise CheckpointFormatError(
            f"{path} is empty (0 bytes): the download or copy did not complete."
        )
    text = head.lstrip()[:512].lower()
    if text.startswith((b"<!doctype", b"<html", b"<?xml", b"<head", b"<!--")) or b"<html" in text:
        raise CheckpointFormatError(
            f"{path} is an HTML page, not a checkpoint: the download saved a web page (a login, "
            "quota or "
            "'virus scan' warning page, or an error). Download the file itself, e.g. with the "
            "direct link."
        )
    if head.startswith((b"{", b"[")):
        raise CheckpointFormatError(
            f"{path} is a JSON/text file, not a checkpoint; pass the weights file (a "
            "JSON config belongs beside a plain state_dict)."
        )
    if head.startswith(b"\x89HDF"):
        raise CheckpointFormatError(
            f"{path} is an HDF5 (Keras/TensorFlow) file; only PyTorch checkpoints are supported."
        )
    if head.startswith(b"\x93NUMPY"):
        raise CheckpointFormatError(
            f"{path} is a single NumPy array (.npy), not a checkpoint; a state_dict "
            "saved as .npz with a config JSON beside it is supported."
        )
    if b"dnnlib.tflib" in head or (head[:1] == b"\x80" and _mentions_tflib(path)):
        raise _tensorflow_error(path)


def _mentions_tflib(path: pathlib.Path) -> bool:
    """Whether a pickle names dnnlib.tflib within its first megabyte (TF pickles do so at the
    start)."""
    with open(path, "rb") as f:
        return b"dnnlib.tflib" in f.read(1 << 20)


def _tensorflow_error(path: pathlib.Path) -> CheckpointFormatError:
    with open(path, "rb") as f:
        head = f.read(1 << 20)
    if b"networks_stylegan." in head or b"G_style" in head:
        return CheckpointFormatError(
            f"{path} is a TensorFlow StyleGAN (version 1) pickle (dnnlib.tflib, G_style). "
            "StyleGAN1 is not "
            "supported (only StyleGAN2, StyleGAN3 and BigGAN-deep), and NVIDIA's legacy converter "
            "does not convert StyleGAN1 either. Use a StyleGAN2/3 model."
        )
    return CheckpointFormatError(
        f"{path} is a TensorFlow StyleGAN2 pickle (dnnlib.tflib); TensorFlow checkpoints are not "
        "supported. "
        f"Convert it to the PyTorch format first with {_LEGACY_HINT}, then load the converted .pkl."
    )


def _is_npz(path: pathlib.Path) -> bool:
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    except zipfile.BadZipFile:
        return False
    return bool(names) and all(n.endswith(".npy") for n in names)


def _read_npz(path: pathlib.Path) -> dict:
    # allow_pickle=False: object arrays cannot run code
    with np.load(path, allow_pickle=False) as data:
        return {k: np.asarray(data[k]) for k in data.files}


def _read_directory(path: pathlib.Path) -> Checkpoint:
    config, weights = path / "config.json", path / "pytorch_model.bin"
    if config.is_file() and weights.is_file():
        from converters import biggan

        cfg = biggan.read_config(config)
        return Checkpoint(
            "biggan",
            _state_dict_from_tree(read_torch_file(weights), weights),
            dict(cfg),
            f"pytorch-pretrained-biggan directory {path}",
        )
    raise CheckpointFormatError(
        f"{path} is a directory but not a supported one: expected a pytorch-pretrained-biggan "
        "folder (config.json + pytorch_model.bin) or a folder written by `python -m converters` "
        f"(generator.json); it holds {sorted(p.name for p in path.iterdir())[:10]}."
    )


# ---- interpreting the object tree ----------------------------------------------------------------


def _interpret(tree: Any, path: pathlib.Path, network: str | None) -> Checkpoint:
    if isinstance(tree, PersistentObject) or (
        isinstance(tree, Mapping) and any(isinstance(v, PersistentObject) for v in tree.values())
    ):
        return Checkpoint(*read_snapshot(tree, path, network))
    if isinstance(tree, Mapping) and "models" in tree and isinstance(tree["models"], Mapping):
        return _from_hammer(tree, path, network)
    _single_network(network, path, "single-network checkpoint")
    if isinstance(tree, Mapping) and (found := _find_state_dict(tree, path)) is not None:
        return found
    if isinstance(tree, TorchModule):
        raise CheckpointFormatError(
            f"{path} holds a whole pickled torch module ({tree.class_path}); save its "
            "state_dict() with torch.save and pass that with a config JSON."
        )
    summary = list(tree)[:10] if isinstance(tree, Mapping) else type(tree).__name__
    raise CheckpointFormatError(
        f"{path} was read safely but holds no recognised generator (top level: {summary}). "
        "Supported: NVlabs "
        "snapshot pickles (G_ema/G), Hammer/ReSeFa files ({'models': {'generator_smooth' | "
        "'generator': ...}}), "
        "state_dicts with a config JSON beside them, pytorch-pretrained-biggan folders."
    )


def _find_state_dict(tree: Mapping, path: pathlib.Path) -> Checkpoint | None:
    """A plain state_dict at the top level or under a usual key, with its config; else None."""
    if tree and all(isinstance(v, np.ndarray) for v in tree.values()):
        return _from_plain(_state_dict_from_tree(tree, path), path, "torch.save state_dict")
    for key in ("state_dict", "model", "g_ema", "G_ema", "generator"):
        if (
            isinstance(tree.get(key), Mapping)
            and tree[key]
            and all(isinstance(v, np.ndarray) for v in tree[key].values())
        ):
            return _from_plain(
                _state_dict_from_tree(tree[key], path), path, f"state_dict under {key!r}"
            )
    return None


def _state_dict_from_tree(tree: Any, path) -> dict:
    if not isinstance(tree, Mapping) or not all(isinstance(v, np.ndarray) for v in tree.values()):
        raise CheckpointFormatError(f"{path} is not a state_dict (a mapping of names to tensors).")
    return {str(k): v for k, v in tree.items()}


# ---- plain state_dicts and their config JSON -----------------------------------------------------


def _from_plain(sd: dict, path: pathlib.Path, what: str) -> Checkpoint:
    if _looks_like_hammer(sd):
        return _from_hammer({"models": {"generator": sd}}, path)
    if _looks_like_discriminator(sd):
        raise CheckpointFormatError(
            f"{path} holds a discriminator state_dict (keys such as b4.out.weight); a "
            "generator is needed."
        )
    cfg_path = _find_config(path)
    if cfg_path is None:
        raise CheckpointFormatError(
            f"{path} is a plain {what}, which does not record its architecture: put its config "
            "beside it as "
            f'{path.with_suffix(".json").name} or config.json, e.g. {{"kind": "stylegan2", '
            '"config": {<the official Generator kwargs>}} or {"class_name": '
            '"training.networks.Generator", '
            '"init_kwargs": {...}} (a pytorch-pretrained-biggan config.json also works).'
        )
    kind, config = _parse_config(json.loads(cfg_path.read_text()), cfg_path)
    return Checkpoint(kind, sd, config, f"{what} {path} with config {cfg_path.name}")


def _looks_like_discriminator(sd: Mapping) -> bool:
    return not any(k.startswith("synthesis.") for k in sd) and any(
        k.startswith(("b4.out.", "b4.fc.", "b4.conv.", "layers.0.", "output.")) or ".fromrgb." in k
        for k in sd
    )


def _find_config(path: pathlib.Path) -> pathlib.Path | None:
    for cand in (path.with_suffix(".json"), path.parent / "config.json"):
        if cand.is_file() and cand != path:
            return cand
    return None


def _parse_config(cfg: Any, cfg_path: pathlib.Path) -> tuple[str, dict]:
    """Accepts {"kind", "config"}, {"class_name", "init_kwargs"} or a pytorch-pretrained-biggan
    config."""
    if isinstance(cfg, Mapping):
        if "kind" in cfg and isinstance(cfg.get("config"), Mapping):
            return str(cfg["kind"]), dict(cfg["config"])
        if "class_name" in cfg and isinstance(cfg.get("init_kwargs"), Mapping):
            kind = NVLABS_KINDS.get(str(cfg["class_name"]))
            if kind is None:
                raise CheckpointFormatError(
                    f"{cfg_path}: class {cfg['class_name']!r} is not one of {sorted(NVLABS_KINDS)}."
                )
            return kind, port_config(str(cfg["class_name"]), kind, cfg["init_kwargs"], cfg_path)
        if "attention_layer_position" in cfg and "layers" in cfg:
            return "biggan", dict(cfg)
    raise CheckpointFormatError(
        f'{cfg_path} is not a config this loader understands: expected {{"kind": ..., '
        f'"config": {{...}}}}, '
        '{"class_name": "training.networks.Generator", "init_kwargs": {...}} or a '
        "pytorch-pretrained-biggan config.json."
    )


# ---- Hammer / ReSeFa checkpoints -----------------------------------------------------------------
#
# Hammer (github.com/bytedance/Hammer, vendored by genforce/resefa) stores
# torch.save({'models': {'generator' | 'generator_smooth' | 'discriminator': state_dict},
#             'model_kwargs_init': {name: Hammer constructor kwargs}}) (the kwargs entry is
#             optional).
# Its StyleGAN2/3 generators compute exactly what the official ones compute from the same numbers
# (same weight/bias scaling conventions: stored weight * lr_mul / sqrt(fan_in), stored bias *
# lr_mul; same demodulation; same filters), so the conversion only renames keys and reshapes two of
# them:
#   early_layer.const [1, C, 4, 4] -> b4.const [C, 4, 4]; layerK.noise [1, 1, R, R] -> noise_const
#   [R, R].
# Buffers the official code registers but Hammer does not (the 4-tap resampling filter of
# non-upsampling layers and of every block) are filled with the filter Hammer stores for its
# upsampling layers; Hammer's derived SynthesisInput grid is dropped.

# Hammer StyleGAN2Generator options that the official generator fixes to these values
_HAMMER_SG2_DEFAULTS = {
    "repeat_w": True,
    "normalize_z": True,
    "mapping_use_wscale": True,
    "mapping_wscale_gain": 1.0,
    "embedding_bias": True,
    "embedding_use_wscale": True,
    "embedding_wscale_gian": 1.0,
    "embedding_lr_mul": 1.0,
    "normalize_embedding": True,
    "normalize_embedding_latent": False,
    "init_res": 4,
    "final_tanh": False,
    "const_input": True,
    "demodulate": True,
    "use_wscale": True,
    "wscale_gain": 1.0,
    "lr_mul": 1.0,
    "noise_type": "spatial",
    "filter_kernel": [1, 3, 3, 1],
    "eps": 1e-8,
}
_HAMMER_SG3_DEFAULTS = {
    "repeat_w": True,
    "normalize_z": True,
    "embedding_bias": True,
    "embedding_lr_mul": 1.0,
    "normalize_embedding": True,
    "normalize_embedding_latent": False,
    "final_tanh": False,
    "num_critical": 2,
    "first_cutoff": 2,
    "first_stopband": 2**2.1,
    "last_stopband_rel": 2**0.3,
    "margin_size": 10,
    "filter_size": 6,
    "act_upsampling": 2,
    "eps": 1e-8,
}


def _looks_like_hammer(sd: Mapping) -> bool:
    return any(
        k.startswith(("synthesis.early_layer.", "mapping.dense0.", "synthesis.layer0.")) for k in sd
    )


def _from_hammer(tree: Mapping, path: pathlib.Path, network: str | None = None) -> Checkpoint:
    models = tree["models"]
    entry = _hammer_entry(models, path, network)
    sd = _state_dict_from_tree(models[entry], path)
    kwargs_all = tree.get("model_kwargs_init")
    kwargs = dict(kwargs_all.get(entry) or {}) if isinstance(kwargs_all, Mapping) else {}
    _refuse_hammer_v1(sd, str(kwargs.get("model_type", "")), path)
    if "synthesis.early_layer.const" in sd:
        kind, out, config = _hammer_sg2(sd, kwargs, path)
    elif "synthesis.early_layer.frequency" in sd:
        kind, out, config = _hammer_sg3(sd, kwargs, path)
    else:
        raise CheckpointFormatError(
            f"{path}: Hammer generator '{entry}' is neither StyleGAN2 nor StyleGAN3 "
            f"(keys: {sorted(sd)[:8]} ...)."
        )
    return Checkpoint(kind, out, config, f"Hammer checkpoint {path} [{entry}]")


def _hammer_entry(models: Mapping, path: pathlib.Path, network: str | None) -> str:
    """The generator's name among a Hammer file's models: ``network``, else the smoothed one."""
    if network is not None and not (
        isinstance(models.get(network), Mapping) and "discriminator" not in network
    ):
        raise CheckpointFormatError(
            f"{path}: the Hammer checkpoint has no generator {network!r}; its models are "
            f"{sorted(map(str, models))}."
        )
    entry = network or next(
        (k for k in ("generator_smooth", "generator") if isinstance(models.get(k), Mapping)), None
    )
    if entry is None:
        if any("discriminator" in str(k) for k in models):
            raise CheckpointFormatError(
                f"{path} holds only a discriminator ({sorted(models)}); a generator "
                "('generator_smooth' or 'generator') is needed."
            )
        raise CheckpointFormatError(
            f"{path} is a Hammer checkpoint without a generator (it holds {sorted(models)})."
        )
    return entry


def _refuse_hammer_v1(sd: Mapping, model_type: str, path: pathlib.Path) -> None:
    """Refuses a Hammer StyleGAN (v1) or PGGAN generator, by its model type or its keys."""
    if (
        model_type in ("StyleGANGenerator", "PGGANGenerator")
        or any(k in sd for k in ("synthesis.lod", "truncation.w_avg", "lod"))
        or any(".epilogue." in k for k in sd)
    ):
        raise CheckpointFormatError(
            f"{path} is a Hammer {model_type or 'StyleGAN (v1) / PGGAN'} generator; "
            "StyleGAN1 and PGGAN are not supported (only StyleGAN2, StyleGAN3, BigGAN)."
        )


def _check_hammer_options(kwargs: Mapping, defaults: Mapping, path) -> None:
    bad = []
    for name, default in defaults.items():
        if name in kwargs:
            value = kwargs[name]
            value = list(value) if isinstance(value, (tuple, list)) else value
            if isinstance(default, float) and isinstance(value, (int, float)):
                same = abs(value - default) <= 1e-12 * max(1.0, abs(default))
            else:
                same = (
                    str(value).lower() == str(default).lower()
                    if isinstance(default, str)
                    else value == default
                )
            if not same:
                bad.append(f"{name}={value!r} (official: {default!r})")
    if bad:
        raise ConversionError(
            f"{path}: the Hammer generator uses options the official architecture cannot "
            f"express: {', '.join(bad)}."
        )


def _count(sd: Mapping, fmt: str) -> int:
    n = 0
    while fmt.format(n) in sd:
        n += 1
    return n


def _hammer_mapping(sd: Mapping, kwargs: Mapping, w_dim: int, path) -> tuple[dict, dict, dict]:
    """Mapping network: renamed keys, the top-level sizes, and the official mapping_kwargs."""
    n_map = _count(sd, "mapping.dense{}.weight")
    if n_map == 0:
        raise ConversionError(
            f"{path}: no mapping.dense0.weight; this is not a complete Hammer generator."
        )
    out, embed, c_dim = _hammer_mapping_arrays(sd, n_map)
    z_dim = sd["mapping.dense0.weight"].shape[1] - embed
    last = sd[f"mapping.dense{n_map - 1}.weight"].shape[0]
    if last != w_dim or tuple(sd["w_avg"].shape) != (w_dim,):
        raise ConversionError(
            f"{path}: the mapping outputs {last} values and w_avg has shape "
            f"{tuple(sd['w_avg'].shape)} for w_dim {w_dim}; Hammer's repeat_w=False (one w per "
            "layer) has no official equivalent."
        )
    out["mapping.w_avg"] = sd["w_avg"]
    mapping_kwargs: dict = {"num_layers": n_map}
    hidden = sd["mapping.dense0.weight"].shape[0]
    if n_map > 1 and hidden != w_dim:
        mapping_kwargs["layer_features"] = int(hidden)
    if c_dim and embed != w_dim:
        mapping_kwargs["embed_features"] = int(embed)
    lr_mul = kwargs.get("mapping_lr_mul", 0.01)
    if abs(lr_mul - 0.01) > 1e-12:
        mapping_kwargs["lr_multiplier"] = lr_mul
    sizes = {"z_dim": int(z_dim), "c_dim": int(c_dim), "w_dim": int(w_dim)}
    return out, sizes, mapping_kwargs


def _hammer_mapping_arrays(sd: Mapping, n_map: int) -> tuple[dict, int, int]:
    """The mapping's layers and class embedding under official names; embedding width, c_dim."""
    out = {}
    for i in range(n_map):
        for p in ("weight", "bias"):
            out[f"mapping.fc{i}.{p}"] = sd[f"mapping.dense{i}.{p}"]
    c_dim = embed = 0
    if "mapping.embedding.weight" in sd:
        embed, c_dim = sd["mapping.embedding.weight"].shape
        out["mapping.embed.weight"] = sd["mapping.embedding.weight"]
        if "mapping.embedding.bias" in sd:
            out["mapping.embed.bias"] = sd["mapping.embedding.bias"]
    return out, embed, c_dim


def _setup_filter_1331() -> np.ndarray:
    f = np.array([1, 3, 3, 1], np.float32)
    f = np.outer(f, f)
    return f / f.sum()


def _infer_sg2_channels(channels: Mapping[int, int], path) -> tuple[int, int]:
    """channel_base, channel_max such that min(base // res, max) reproduces every block's
    channels."""
    cmax = max(channels.values())
    lo, hi = 1, None
    for res, c in channels.items():
        if c < cmax:
            lo, hi = max(lo, c * res), min(hi or 1 << 62, (c + 1) * res)
        else:
            lo = max(lo, cmax * res)
    base = _nicest_in(lo, hi)
    if base is None or any(min(base // r, cmax) != c for r, c in channels.items()):
        raise ConversionError(
            f"{path}: no channel_base/channel_max reproduces the per-resolution channels "
            f"{dict(channels)} (the official rule is min(channel_base // res, channel_max))."
        )
    return base, cmax


def _nicest_in(lo: float, hi: float | None) -> int | None:
    """The 'roundest' integer in [lo, hi): the largest power-of-two multiple that fits, else
    ceil(lo)."""
    start = int(np.ceil(lo))
    if hi is not None and start >= hi:
        return None
    for step in (1 << k for k in range(30, -1, -1)):
        cand = -(-start // step) * step
        if hi is None or cand < hi:
            return cand
    return start


def _block_resolution(block: int) -> int:
    """Resolution of Hammer StyleGAN2 block ``block`` (block 0 is 4x4; each block doubles it)."""
    return 4 << block


def _hammer_sg2_key(key: str) -> str | None:
    """Hammer StyleGAN2 key -> official key (None: handled elsewhere)."""
    parts = key.split(".")
    if parts[0] != "synthesis" or len(parts) < 3:
        return None
    layer, rest = parts[1], ".".join(parts[2:])
    rest = {
        "style.weight": "affine.weight",
        "style.bias": "affine.bias",
        "noise": "noise_const",
        "filter": "resample_filter",
    }.get(rest, rest)
    if layer.startswith("layer") and layer[5:].isdigit():
        idx = int(layer[5:])
        block = (idx + 1) // 2
        conv = "conv1" if idx % 2 == 0 else "conv0"
        return f"synthesis.b{_block_resolution(block)}.{conv}.{rest}"
    if layer.startswith("output") and layer[6:].isdigit():
        return f"synthesis.b{_block_resolution(int(layer[6:]))}.torgb.{rest}"
    if layer.startswith("residual") and layer[8:].isdigit():
        return f"synthesis.b{_block_resolution(int(layer[8:]))}.skip.{rest}"
    return None


def _hammer_sg2(sd: Mapping, kwargs: Mapping, path) -> tuple[str, dict, dict]:
    _check_hammer_options(kwargs, _HAMMER_SG2_DEFAULTS, path)
    w_dim = int(sd["synthesis.layer0.style.weight"].shape[1])
    out, sizes, mapping_kwargs = _hammer_mapping(sd, kwargs, w_dim, path)
    n_blocks = _count_sg2_blocks(sd, path)
    arch = _sg2_architecture(sd, n_blocks)
    out.update(_hammer_sg2_synthesis(sd, n_blocks, arch, path))
    channels = {
        _block_resolution(b): int(sd[f"synthesis.layer{2 * b}.weight"].shape[0])
        for b in range(n_blocks)
    }
    base, cmax = _infer_sg2_channels(channels, path)
    config = {
        **sizes,
        "img_resolution": _block_resolution(n_blocks - 1),
        "img_channels": int(sd[f"synthesis.output{n_blocks - 1}.weight"].shape[0]),
        "mapping_kwargs": mapping_kwargs,
        "synthesis_kwargs": {
            "channel_base": base,
            "channel_max": cmax,
            "num_fp16_res": 0,
            "conv_clamp": kwargs.get("conv_clamp"),
            "architecture": arch,
        },
    }
    return "stylegan2", out, config


def _count_sg2_blocks(sd: Mapping, path) -> int:
    """The number of synthesis blocks of a Hammer StyleGAN2 state dict, checked complete."""
    n_layers = _count(sd, "synthesis.layer{}.weight")
    n_blocks = (n_layers + 1) // 2
    if f"synthesis.output{n_blocks - 1}.weight" not in sd or n_layers % 2 == 0:
        raise ConversionError(
            f"{path}: {n_layers} synthesis layers and no output{n_blocks - 1}: not a complete "
            "Hammer StyleGAN2 generator."
        )
    return n_blocks


def _sg2_architecture(sd: Mapping, n_blocks: int) -> str:
    """The official architecture name ('resnet', 'skip' or 'orig') from the keys present."""
    return (
        "resnet"
        if "synthesis.residual1.weight" in sd
        else "skip"
        if n_blocks > 1 and "synthesis.output0.weight" in sd
        else "orig"
    )


def _hammer_sg2_synthesis(sd: Mapping, n_blocks: int, arch: str, path) -> dict:
    """The official ``synthesis.*`` arrays of a Hammer StyleGAN2 state dict, resampling filters
    included."""
    out = {}
    const = sd["synthesis.early_layer.const"]
    out["synthesis.b4.const"] = const.reshape(const.shape[1:])
    filt = next(
        (sd[k] for k in sorted(sd) if k.endswith(".filter") or k == "synthesis.filter"), None
    )
    filt = _setup_filter_1331() if filt is None else filt
    for key, value in sd.items():
        if (
            key == "synthesis.early_layer.const"
            or key == "synthesis.filter"
            or not key.startswith("synthesis.")
        ):
            continue
        official = _hammer_sg2_key(key)
        if official is None:
            raise ConversionError(f"{path}: unexpected Hammer StyleGAN2 key {key!r}.")
        out[official] = (
            value.reshape(value.shape[2:]) if official.endswith("noise_const") else value
        )
    for name in _sg2_filter_names(n_blocks, arch):
        out.setdefault(name, filt)
    return out


def _sg2_filter_names(n_blocks: int, arch: str) -> list[str]:
    """The official resampling-filter buffers of ``n_blocks`` StyleGAN2 blocks, block by block."""
    names = []
    for b in range(n_blocks):
        res = _block_resolution(b)
        names += [f"synthesis.b{res}.resample_filter", f"synthesis.b{res}.conv1.resample_filter"]
        if b > 0:
            names.append(f"synthesis.b{res}.conv0.resample_filter")
            if arch == "resnet":
                names.append(f"synthesis.b{res}.skip.resample_filter")
    return names


def _sg3_schedule(res: int, num_layers: int, kw: Mapping) -> dict:
    """The official StyleGAN3 layer schedule (cutoffs, sampling rates, sizes, filter taps) for
    ``res``."""
    num_critical = kw.get("num_critical", 2)
    first_cutoff, first_stop = kw.get("first_cutoff", 2), kw.get("first_stopband", 2**2.1)
    last_cutoff = res / 2
    last_stop = last_cutoff * kw.get("last_stopband_rel", 2**0.3)
    exps = np.minimum(np.arange(num_layers + 1) / (num_layers - num_critical), 1)
    cutoffs = first_cutoff * (last_cutoff / first_cutoff) ** exps
    stops = first_stop * (last_stop / first_stop) ** exps
    rates = np.exp2(np.ceil(np.log2(np.minimum(stops * 2, res))))
    sizes = rates + kw.get("margin_size", 10) * 2
    sizes[-2:] = res
    fsize = kw.get("filter_size", 6)
    up_taps, down_taps = [], []
    for idx in range(num_layers + 1):
        prev, torgb = max(idx - 1, 0), idx == num_layers
        tmp = max(rates[prev], rates[idx]) * (1 if torgb else kw.get("act_upsampling", 2))
        up, down = int(np.rint(tmp / rates[prev])), int(np.rint(tmp / rates[idx]))
        up_taps.append(fsize * up if up > 1 and not torgb else 1)
        down_taps.append(fsize * down if down > 1 and not torgb else 1)
    return {
        "cutoffs": cutoffs,
        "sizes": sizes.astype(int),
        "up_taps": up_taps,
        "down_taps": down_taps,
        "critical": [i >= num_layers - num_critical for i in range(num_layers + 1)],
    }


def _sg3_filters_match(sd: Mapping, sched: dict, radial: bool) -> bool:
    for i, (ut, dt) in enumerate(zip(sched["up_taps"], sched["down_taps"], strict=True)):
        up, down = (
            sd.get(f"synthesis.layer{i}.filter.up_filter"),
            sd.get(f"synthesis.layer{i}.filter.down_filter"),
        )
        if (up is None) != (ut == 1) or (up is not None and up.shape != (ut,)):
            return False
        want = (dt, dt) if radial and not sched["critical"][i] else (dt,)
        if (down is None) != (dt == 1) or (down is not None and down.shape != want):
            return False
    return True


def _infer_sg3_channels(channels: list[int], cutoffs: np.ndarray, path) -> tuple[int, int]:
    """channel_base, channel_max with rint(min(base / 2 / cutoff_i, max)) == channels[i] for every
    layer."""
    cmax = max(channels)
    lo, hi = 1.0, None
    for c, cut in zip(channels, cutoffs, strict=True):
        if c < cmax:
            lo, hi = max(lo, 2 * cut * (c - 0.5)), min(hi or float("inf"), 2 * cut * (c + 0.5))
        else:
            lo = max(lo, 2 * cut * (cmax - 0.5))
    base = _nicest_in(lo, hi)
    if base is None or [int(np.rint(min(base / 2 / cut, cmax))) for cut in cutoffs] != list(
        channels
    ):
        raise ConversionError(
            f"{path}: no channel_base/channel_max reproduces the StyleGAN3 layer channels "
            f"{channels}."
        )
    return base, cmax


def _hammer_sg3_key(key: str, names: list[str]) -> str | None:
    """Hammer StyleGAN3 key -> official key (None: dropped)."""
    fixed = {
        "synthesis.early_layer.weight": "synthesis.input.weight",
        "synthesis.early_layer.affine.weight": "synthesis.input.affine.weight",
        "synthesis.early_layer.affine.bias": "synthesis.input.affine.bias",
        "synthesis.early_layer.transform": "synthesis.input.transform",
        "synthesis.early_layer.frequency": "synthesis.input.freqs",
        "synthesis.early_layer.phase": "synthesis.input.phases",
    }
    if key in fixed:
        return fixed[key]
    parts = key.split(".")
    if len(parts) >= 3 and parts[1].startswith("layer") and parts[1][5:].isdigit():
        rest = {
            "conv.weight": "weight",
            "conv.style.weight": "affine.weight",
            "conv.style.bias": "affine.bias",
            "filter.bias": "bias",
            "filter.up_filter": "up_filter",
            "filter.down_filter": "down_filter",
            "magnitude_ema": "magnitude_ema",
        }.get(".".join(parts[2:]))
        idx = int(parts[1][5:])
        if rest is not None and idx < len(names):
            return f"synthesis.{names[idx]}.{rest}"
    raise KeyError(key)


def _infer_sg3_resolution(sd: Mapping, kwargs: Mapping, num_layers: int, radial: bool, path) -> int:
    """The one output resolution whose official layer schedule matches the filter (and grid) shapes
    in ``sd``."""
    candidates = (
        [int(kwargs["resolution"])] if "resolution" in kwargs else [1 << k for k in range(3, 12)]
    )
    matches = [
        r
        for r in candidates
        if _sg3_filters_match(sd, _sg3_schedule(r, num_layers, kwargs), radial)
    ]
    grid = sd.get("synthesis.early_layer.grid")
    if grid is not None:
        matches = [
            r for r in matches if _sg3_schedule(r, num_layers, kwargs)["sizes"][0] == grid.shape[1]
        ]
    if len(matches) != 1:
        raise ConversionError(
            f"{path}: cannot infer the StyleGAN3 resolution from the filter shapes (candidates "
            f"{matches}); the checkpoint does not follow the official layer schedule."
        )
    return matches[0]


def _hammer_sg3(sd: Mapping, kwargs: Mapping, path) -> tuple[str, dict, dict]:
    _check_hammer_options(kwargs, _HAMMER_SG3_DEFAULTS, path)
    w_dim = int(sd["synthesis.layer0.conv.style.weight"].shape[1])
    out, sizes, mapping_kwargs = _hammer_mapping(sd, kwargs, w_dim, path)
    _check_sg3_mapping(mapping_kwargs, path)
    n = _count(sd, "synthesis.layer{}.conv.weight")
    num_layers = n - 1
    channels = [int(sd[f"synthesis.layer{i}.conv.weight"].shape[0]) for i in range(n)]
    radial = any(
        sd.get(f"synthesis.layer{i}.filter.down_filter", np.zeros(1)).ndim == 2 for i in range(n)
    )
    res = _infer_sg3_resolution(sd, kwargs, num_layers, radial, path)
    sched = _sg3_schedule(res, num_layers, kwargs)
    base, cmax = _infer_sg3_channels(channels[:-1], sched["cutoffs"][:-1], path)
    names = [f"L{i}_{sched['sizes'][i]}_{channels[i]}" for i in range(n)]
    out.update(_hammer_sg3_synthesis(sd, names, path))
    config = {
        **sizes,
        "img_resolution": res,
        "img_channels": channels[-1],
        "mapping_kwargs": mapping_kwargs,
        "channel_base": base,
        "channel_max": cmax,
        "conv_kernel": int(sd["synthesis.layer0.conv.weight"].shape[-1]),
        "use_radial_filters": radial,
        "num_fp16_res": 0,
    }
    if num_layers != 14:
        config["num_layers"] = num_layers
    for name, official in (("conv_clamp", "conv_clamp"), ("output_scale", "output_scale")):
        if name in kwargs:
            config[official] = kwargs[name]
    return "stylegan3", out, config


def _check_sg3_mapping(mapping_kwargs: Mapping, path) -> None:
    """Refuses a mapping whose hidden or embedding width differs from w_dim (fixed in StyleGAN3)."""
    if "layer_features" in mapping_kwargs or "embed_features" in mapping_kwargs:
        raise ConversionError(
            f"{path}: the official StyleGAN3 mapping has w_dim hidden and embedding features; "
            f"this one has {mapping_kwargs}."
        )


def _hammer_sg3_synthesis(sd: Mapping, names: list[str], path) -> dict:
    """The official ``synthesis.*`` arrays of a Hammer StyleGAN3 state dict (layer ``names``)."""
    out = {}
    for key, value in sd.items():
        if key.startswith("mapping.") or key in ("w_avg", "synthesis.early_layer.grid"):
            continue
        try:
            out[_hammer_sg3_key(key, names)] = value
        except KeyError:
            raise ConversionError(f"{path}: unexpected Hammer StyleGAN3 key {key!r}.") from None
    return out
