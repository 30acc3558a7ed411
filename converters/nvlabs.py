"""NVlabs snapshot pickles: which network to take, its state_dict, and its init_kwargs as the port's
config.

What a user's ``.pkl`` can hold, read from the official sources (NVlabs/stylegan2-ada-pytorch
``train.py``, ``training/training_loop.py``, ``training/networks.py``, ``legacy.py``;
NVlabs/stylegan3 ``train.py``, ``training/training_loop.py``, ``training/networks_stylegan2.py``,
``training/networks_stylegan3.py``, ``legacy.py``). Every network is a ``torch_utils.persistence``
object that carries its module's source; the class is identified from that text
(:func:`converters.torch_pickle._guess_module`), never by running it.

The layouts, by what wrote the file (generator class; how ``init_kwargs`` is laid out):

* stylegan2-ada-pytorch ``train.py``: ``training.networks.Generator``; synthesis options nested
  under ``synthesis_kwargs``.
* stylegan2-ada-pytorch ``legacy.py`` (a TensorFlow pickle converted):
  ``training.networks.Generator``; nested, every mapping and synthesis option explicit.
* stylegan3 ``train.py --cfg=stylegan2``: ``training.networks_stylegan2.Generator``; synthesis
  options FLAT at the top level plus ``fused_modconv_default``; ``conv_clamp``/``num_fp16_res`` only
  with ``--fp32`` (otherwise the class defaults 256 and 4 apply).
* stylegan3 ``legacy.py`` (a TF pickle converted: the released stylegan2-*):
  ``training.networks_stylegan2.Generator``; flat, every option explicit.
* stylegan3 ``train.py --cfg=stylegan3-t`` / ``-r``: ``training.networks_stylegan3.Generator``;
  flat (the port's StyleGAN3 config is this layout).

A training snapshot is ``{'G', 'D', 'G_ema', 'augment_pipe', 'training_set_kwargs'}``
(``augment_pipe`` is a ``training.augment.AugmentPipe`` or None, ``training_set_kwargs`` a dict or
None); discriminators are ``training.networks.Discriminator`` /
``training.networks_stylegan2.Discriminator``. ``G_ema`` is the generator every official tool uses,
so it is the default; ``G`` (the raw training weights) is taken only when asked for by name, and a
file without ``G_ema`` is refused with the list of what it holds, as NVIDIA's ``legacy.py`` refuses
it.
"""

from __future__ import annotations

import pathlib
from typing import Any, Mapping

import numpy as np

from converters.common import ConversionError
from converters.torch_pickle import CheckpointFormatError, PersistentObject, TorchModule

__all__ = ["NVLABS_KINDS", "module_state_dict", "port_config", "read_snapshot", "select_network"]

# The official Generator classes and the port that runs each.
NVLABS_KINDS = {
    "training.networks.Generator": "stylegan2",  # NVlabs/stylegan2-ada-pytorch
    "training.networks_stylegan2.Generator": "stylegan2",  # NVlabs/stylegan3's copy of StyleGAN2
    "training.networks_stylegan3.Generator": "stylegan3",  # NVlabs/stylegan3
}
DEFAULT_NETWORK = "G_ema"
# every official Generator
_POSITIONAL = ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels")
_GENERATOR_KEYS = set(_POSITIONAL) | {"mapping_kwargs"}
# stylegan3's training/networks_stylegan2.py: Generator(**synthesis_kwargs) hands these on to
# SynthesisNetwork, SynthesisBlock and SynthesisLayer (the same options stylegan2-ada-pytorch nests
# under synthesis_kwargs).
_FLAT_SYNTHESIS_KEYS = {
    "channel_base",
    "channel_max",
    "num_fp16_res",
    "architecture",
    "resample_filter",
    "conv_clamp",
    "fp16_channels_last",
    "kernel_size",
    "use_noise",
    "activation",
}
# That file's defaults where they differ from stylegan2-ada-pytorch's training/networks.py, whose
# defaults the port's StyleGAN2 config assumes: SynthesisBlock conv_clamp, SynthesisNetwork
# num_fp16_res, MappingNetwork w_avg_beta. Filled in explicitly so that an omitted option means what
# the stylegan3 code meant by it.
_FLAT_DEFAULTS = {"conv_clamp": 256, "num_fp16_res": 4}
_FLAT_MAPPING_DEFAULTS = {"w_avg_beta": 0.998}
# fused_modconv_default (True, False or 'inference_only') picks one of two evaluation orders of the
# same modulated convolution (the official modulated_conv2d implements both); it cannot change a
# result, so the converter validates it and drops it.


# ---- networks and their state --------------------------------------------------------------------


def module_state_dict(obj: PersistentObject | TorchModule, prefix: str = "") -> dict:
    """The ``state_dict()`` a module record would produce: parameters, persistent buffers, then
    submodules."""
    state = obj.state
    out: dict[str, np.ndarray] = {}
    for name, value in (state.get("_parameters") or {}).items():
        if value is not None:
            out[prefix + name] = value
    skip = set(state.get("_non_persistent_buffers_set") or ())
    for name, value in (state.get("_buffers") or {}).items():
        if value is not None and name not in skip:
            out[prefix + name] = value
    for name, child in (state.get("_modules") or {}).items():
        if isinstance(child, (PersistentObject, TorchModule)):
            out.update(module_state_dict(child, f"{prefix}{name}."))
        elif child is not None:
            raise CheckpointFormatError(
                f"submodule {prefix}{name} is a {type(child).__name__}, not a module."
            )
    return out


def _listing(nets: Mapping[str, PersistentObject]) -> str:
    return (
        ", ".join(f"{name} ({obj.qualified_name})" for name, obj in nets.items()) or "no networks"
    )


def select_network(tree: Mapping, network: str | None, path) -> tuple[str, PersistentObject]:
    """The generator entry to load: ``network`` when given, else ``G_ema``; never a silent fallback.

    Raises:
      CheckpointFormatError: no ``G_ema`` and no ``network`` (the message lists the networks and how
        to pick one), ``network`` absent, or the chosen entry (or every entry) is not a generator.
    """
    nets = {str(k): v for k, v in tree.items() if isinstance(v, PersistentObject)}
    gens = [k for k, v in nets.items() if v.class_name == "Generator"]
    name = DEFAULT_NETWORK if network is None else network
    if name in nets and nets[name].class_name == "Generator":
        return name, nets[name]
    if name in nets:
        raise CheckpointFormatError(
            f"{path}: {name} is a {nets[name].qualified_name}, not a generator; this "
            f"file holds {_listing(nets)}." + _choose(path, gens)
        )
    if not gens:
        raise _no_generator_error(nets, path)
    if network is None:
        raise CheckpointFormatError(
            f"{path} has no G_ema, the exponential-moving-average generator that NVIDIA's tools "
            "and released "
            "models use (NVIDIA's legacy.load_network_pkl refuses such a file); it holds "
            f"{_listing(nets)}." + _choose(path, gens)
        )
    raise CheckpointFormatError(
        f"{path} has no network {network!r}; it holds {_listing(nets)}." + _choose(path, gens)
    )


def _no_generator_error(nets: Mapping[str, PersistentObject], path) -> CheckpointFormatError:
    """The error for a file without a generator, saying whether it holds only a discriminator."""
    only_d = nets and all(
        v.class_name == "Discriminator" or k.startswith("D")
        for k, v in nets.items()
        if v.class_name != "AugmentPipe"
    )
    what = "only a discriminator" if only_d else "no generator"
    return CheckpointFormatError(
        f"{path} holds {what} ({_listing(nets)}); a generator is needed. Use the full network "
        "snapshot (network-snapshot-*.pkl), which holds G, D and G_ema."
    )


def _choose(path, gens: list[str]) -> str:
    if not gens:
        return ""
    g = gens[0]
    return (
        f" To load a generator it holds ({', '.join(gens)}), name it: converters.load(path, "
        f"network={g!r}) or, in the launchers, --config.model '{path}:{g}'."
    )


def generator_kind(g: PersistentObject, sd: Mapping, path) -> str:
    """'stylegan2' | 'stylegan3', from the parameters, checked against the class where it is
    recognised."""
    by_structure = (
        "stylegan2"
        if "synthesis.b4.const" in sd
        else "stylegan3"
        if "synthesis.input.freqs" in sd
        else None
    )
    by_class = NVLABS_KINDS.get(g.qualified_name)
    if by_structure is None:
        raise CheckpointFormatError(
            f"{path}: the generator entry is a {g.qualified_name} whose parameters match neither "
            "the StyleGAN2 "
            "(synthesis.b4.const) nor the StyleGAN3 (synthesis.input.freqs) generator; only "
            f"{sorted(NVLABS_KINDS)} are supported."
        )
    if by_class is not None and by_class != by_structure:
        raise CheckpointFormatError(
            f"{path}: class {g.qualified_name} implies {by_class} but its parameters are "
            f"those of {by_structure}; the file is inconsistent."
        )
    return by_structure


# ---- init_kwargs -> the port's config ------------------------------------------------------------


def port_config(class_name: str | None, kind: str, init_kwargs: Mapping[str, Any], path) -> dict:
    """Maps an official Generator's init_kwargs to the config the port's converter validates.

    StyleGAN3 and stylegan2-ada-pytorch kwargs are the port's layouts already. stylegan3's
    ``training.networks_stylegan2.Generator`` takes the synthesis options flat: they move under
    ``synthesis_kwargs``, omitted ones get that class's defaults, ``fused_modconv_default`` is
    validated and dropped. For an unrecognised module (a modified copy) the kwargs' shape decides:
    nested ``synthesis_kwargs`` means the stylegan2-ada-pytorch layout, anything else the flat one.

    Raises:
      ConversionError: flat kwargs with keys that class does not take, or an inconsistent mix of
        both layouts.
    """
    config = _plain_json(dict(init_kwargs))
    if kind == "stylegan3" or class_name == "training.networks.Generator":
        return config
    if class_name is None and "synthesis_kwargs" in config:
        return config
    return _nest_flat_stylegan2(config, path)


def _nest_flat_stylegan2(config: dict, path) -> dict:
    _check_flat_stylegan2(config, path)
    synthesis = {
        **_FLAT_DEFAULTS,
        **{k: config.pop(k) for k in sorted(_FLAT_SYNTHESIS_KEYS & set(config))},
    }
    mapping = config.get("mapping_kwargs") or {}
    if not isinstance(mapping, Mapping):
        raise ConversionError(
            f"{path}: mapping_kwargs must be a dict, got {type(mapping).__name__}."
        )
    config["mapping_kwargs"] = {**_FLAT_MAPPING_DEFAULTS, **mapping}
    config["synthesis_kwargs"] = synthesis
    return config


def _check_flat_stylegan2(config: dict, path) -> None:
    """Checks flat networks_stylegan2 kwargs (and drops ``fused_modconv_default`` from them)."""
    if "synthesis_kwargs" in config:
        raise ConversionError(
            f"{path}: stylegan3's networks_stylegan2.Generator takes its synthesis options flat, "
            "but these init_kwargs nest them under synthesis_kwargs; the file is inconsistent."
        )
    fused = config.pop("fused_modconv_default", True)
    if not (fused is True or fused is False or fused == "inference_only"):
        raise ConversionError(
            f"{path}: fused_modconv_default={fused!r}; the official values are True, False and "
            "'inference_only'."
        )
    unknown = sorted(set(config) - _GENERATOR_KEYS - _FLAT_SYNTHESIS_KEYS)
    if unknown:
        raise ConversionError(
            f"{path}: init_kwargs {unknown} are not options of stylegan3's "
            "training.networks_stylegan2.Generator "
            f"(it takes {sorted(_GENERATOR_KEYS)}, fused_modconv_default and the synthesis options "
            f"{sorted(_FLAT_SYNTHESIS_KEYS)})."
        )


def _plain_json(value: Any) -> Any:
    """Turns numpy scalars/arrays and tuples inside a config into JSON types."""
    if isinstance(value, Mapping):
        return {str(k): _plain_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain_json(v) for v in value]
    if isinstance(value, np.ndarray):
        return _plain_json(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    return value


# ---- the whole snapshot --------------------------------------------------------------------------


def read_snapshot(
    tree: Any, path: pathlib.Path, network: str | None = None
) -> tuple[str, dict, dict, str]:
    """An NVlabs pickle's chosen generator as (kind, official state_dict, port config, source
    description).

    Args:
      tree: the unpickled top level: a snapshot dict, or a single pickled persistent network.
      path: the file (for messages).
      network: the entry to take (e.g. 'G'); None takes 'G_ema' and refuses a file without it.
    """
    if isinstance(tree, PersistentObject):
        if network is not None:
            raise CheckpointFormatError(
                f"{path} holds a single pickled {tree.qualified_name}, not a snapshot dict "
                f"of named networks; network={network!r} cannot select anything in it."
            )
        name, g = f"single pickled {tree.class_name}", tree
        if g.class_name != "Generator":
            raise CheckpointFormatError(
                f"{path} holds a single {g.qualified_name}, not a generator."
            )
    else:
        name, g = select_network(tree, network, path)
    sd = module_state_dict(g)
    kind = generator_kind(g, sd, path)
    kwargs = dict(g.init_kwargs)
    # strict=False: a pickle may pass only the first few constructor arguments positionally.
    for key, value in zip(_POSITIONAL, g.init_args, strict=False):
        kwargs.setdefault(key, value)
    config = port_config(g.qualified_name if g.module_name else None, kind, kwargs, path)
    return kind, sd, config, f"NVlabs pickle {path} [{name}: {g.qualified_name}]"
