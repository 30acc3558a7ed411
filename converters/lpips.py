"""torchvision VGG16 state_dict + the ``lpips`` package's linear heads -> :mod:`regfac_jax.lpips`
parameters.

Inputs (read without PyTorch by :mod:`converters.torch_pickle`; nothing is downloaded):

* the VGG16 file: ``torch.save(torchvision.models.vgg16(weights=...).state_dict())``, e.g.
  torchvision's ``vgg16-397923af.pth``. Only ``features.*`` (the convolutional trunk) is used; the
  classifier entries (``classifier.*``) are accepted and ignored. Each convolution weight
  ``[out, in, 3, 3]`` becomes HWIO.
* the linear heads: the ``lpips`` package's ``weights/v0.1/vgg.pth`` (``lin{k}.model.1.weight``
  ``[1, C, 1, 1]``, becoming ``[C]``). By default it is found inside the installed ``lpips`` package
  (located, not imported).

Command line (writes one ``.npz`` that :func:`load` also reads)::

    python -m converters.lpips --vgg16 vgg16-397923af.pth --dst lpips_vgg.npz
"""

from __future__ import annotations

import importlib.util
import os
import pathlib
from typing import Mapping

import numpy as np

from converters.common import ConversionError, StrictStateDict, conv_weight, flatten, nest
from regfac_jax import lpips as lpips_lib

LINEAR_FILE = ("weights", "v0.1", "vgg.pth")


def default_linear_path() -> pathlib.Path:
    """The linear-head file shipped inside the installed ``lpips`` package (found without importing
    it)."""
    spec = importlib.util.find_spec("lpips")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "The LPIPS linear heads come from the `lpips` package's weights/v0.1/vgg.pth: "
            "`pip install lpips --no-deps` (it ships them), or pass the file's path."
        )
    path = pathlib.Path(list(spec.submodule_search_locations)[0]).joinpath(*LINEAR_FILE)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing from the installed lpips package; pass the vgg.pth path."
        )
    return path


def convert(
    vgg_state_dict: Mapping[str, np.ndarray], linear_state_dict: Mapping[str, np.ndarray]
) -> dict:
    """Converts the two state_dicts to LPIPS parameters (strict: every trunk and head key used
    once).

    Args:
      vgg_state_dict: torchvision ``vgg16().state_dict()`` (``features.*``; ``classifier.*`` is
        ignored).
      linear_state_dict: lpips' ``lin{k}.model.1.weight`` ``[1, C_k, 1, 1]`` for k = 0..4.
    Returns:
      The nested parameter dict documented in :mod:`regfac_jax.lpips`.
    Raises:
      ConversionError: listing every missing, unexpected or misshaped entry.
    """
    trunk = {k: v for k, v in vgg_state_dict.items() if not k.startswith("classifier.")}
    sd = StrictStateDict(trunk, "VGG16 state_dict (torchvision vgg16().state_dict())")
    flat = {}
    for stage in lpips_lib.STAGES:
        for idx, cin, cout in stage:
            w = sd.take(f"features.{idx}.weight", (cout, cin, 3, 3))
            b = sd.take(f"features.{idx}.bias", (cout,))
            if w is not None and w.shape == (cout, cin, 3, 3):
                flat[f"features.{idx}.weight"] = conv_weight(w)
            flat[f"features.{idx}.bias"] = b
    _finish(
        sd,
        "a torchvision VGG16 (configuration D, 13 convolutions), not VGG16-BN or another network",
    )
    heads = StrictStateDict(linear_state_dict, "LPIPS linear heads (lpips weights/v0.1/vgg.pth)")
    for k, c in enumerate(lpips_lib.CHANNELS):
        w = heads.take(f"lin{k}.model.1.weight", (1, c, 1, 1))
        if w is not None:
            flat[f"lin{k}.weight"] = np.ascontiguousarray(w.reshape(-1))
    _finish(
        heads,
        "the lpips package's VGG heads (weights/v0.1/vgg.pth), not the AlexNet or SqueezeNet ones",
    )
    return nest(flat)


def _finish(sd: StrictStateDict, expected: str) -> None:
    """``sd.finish()`` with the advice line replaced by what this file should have been."""
    try:
        sd.finish()
    except ConversionError as err:
        lines = [
            line
            for line in str(err).splitlines()
            if not line.strip().startswith("Check that the config")
        ]
        lines[0] = lines[0].replace(
            "does not match the generator built from its config", "is not complete"
        )
        raise ConversionError("\n".join(lines + [f"  Expected {expected}."])) from None


def load(vgg16_path: str | os.PathLike, linear_path: str | os.PathLike | None = None) -> dict:
    """LPIPS parameters from a VGG16 ``.pth`` (plus the heads' ``.pth``), or from an ``.npz`` this
    module wrote.

    Args:
      vgg16_path: torchvision VGG16 state_dict file, or a converted ``.npz``.
      linear_path: lpips' ``weights/v0.1/vgg.pth``; None finds it in the installed ``lpips``
        package.
    Returns:
      Parameters for :func:`regfac_jax.lpips.distance` (numpy arrays).
    """
    from converters import torch_pickle

    path = pathlib.Path(vgg16_path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"VGG16 weights {path} not found (torchvision's vgg16-397923af.pth, or an .npz "
            "written by `python -m converters.lpips`)."
        )
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as data:
            params = nest({k: data[k] for k in data.files})
    else:
        lin = pathlib.Path(linear_path).expanduser() if linear_path else default_linear_path()
        params = convert(torch_pickle.read_state_dict(path), torch_pickle.read_state_dict(lin))
    try:
        lpips_lib.check_params(params)
    except ValueError as err:
        raise ConversionError(f"{path}: {err}") from None
    return params


def save_npz(params: dict, dst: str | os.PathLike) -> None:
    """Writes converted parameters as one ``.npz`` (atomically)."""
    from regfac_jax import io_utils

    io_utils.save_npz(dst, **{k: np.asarray(v) for k, v in flatten(params).items()})


def main(argv=None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description="Convert VGG16 + LPIPS linear heads to one .npz.")
    parser.add_argument("--vgg16", required=True, help="torchvision VGG16 state_dict (.pth)")
    parser.add_argument(
        "--linear", default=None, help="lpips weights/v0.1/vgg.pth (default: installed package)"
    )
    parser.add_argument("--dst", required=True, help="output .npz")
    args = parser.parse_args(argv)
    save_npz(load(args.vgg16, args.linear), args.dst)
    print(f"wrote {args.dst}")


__all__ = ["ConversionError", "convert", "default_linear_path", "load", "save_npz"]

if __name__ == "__main__":
    main()
