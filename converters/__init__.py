"""PyTorch checkpoints -> regfac_jax generators. The only package that knows PyTorch file formats.

Public contract:

* ``convert_state_dict(kind, state_dict, config)`` -> generator object, where ``state_dict`` maps
  official key names to numpy arrays and ``config`` is the official constructor kwargs. Strict:
  every key used exactly once.
* ``load(path, network=None)`` -> generator object; the file format is detected by content (see
  ``converters.formats``). ``network`` names the entry of a multi-network file to load (NVlabs
  snapshots: ``'G_ema'`` by default, ``'G'`` on request; see ``converters.nvlabs``).
* ``load_lpips(vgg16_path, linear_path=None)`` -> LPIPS/VGG16 parameters (see ``converters.lpips``).
"""

from __future__ import annotations

import importlib

from converters.common import ConversionError

_CONVERTERS = {
    "stylegan2": "converters.stylegan2",
    "stylegan3": "converters.stylegan3",
    "biggan": "converters.biggan",
}


def convert_state_dict(kind: str, state_dict, config: dict):
    """Converts an official state_dict (key -> array) with its constructor kwargs to a generator
    object."""
    if kind not in _CONVERTERS:
        raise ConversionError(
            f"Unknown generator kind {kind!r}; expected one of {sorted(_CONVERTERS)}."
        )
    return importlib.import_module(_CONVERTERS[kind]).convert(state_dict, config)


def load(path, network: str | None = None):
    """Loads any supported checkpoint file or directory; the format is detected by content.

    ``network`` picks an entry of a multi-network file: an NVlabs snapshot's ``'G_ema'`` (the
    default, which a file must hold unless another entry is named) or ``'G'``; a Hammer file's
    ``'generator_smooth'`` or ``'generator'``.
    """
    from converters import formats  # local import: keeps `import converters` light

    return formats.load(path, network=network)


def load_lpips(vgg16_path, linear_path=None):
    """LPIPS (VGG16) parameters from torchvision's VGG16 file and the lpips package's linear
    heads."""
    from converters import lpips  # local import, as above

    return lpips.load(vgg16_path, linear_path)


__all__ = ["ConversionError", "convert_state_dict", "load", "load_lpips"]
