"""Converts a PyTorch checkpoint to a regfac-jax generator directory.

    python -m converters --src stylegan2-ffhq-1024x1024.pkl --dst converted/sg2_ffhq [--overwrite]
    [--network G]

The source format is detected from its content (see :mod:`converters.formats`); nothing in it is
executed. The destination (an orbax checkpoint plus generator.json) is written to a temporary
directory and renamed into place, so it is either complete or absent. Load it with
``regfac_jax.checkpoint.load_generator(DST)``.
"""

from __future__ import annotations

import argparse
import logging
import pathlib
import sys

import numpy as np

log = logging.getLogger("converters")


def _num_params(tree) -> int:
    if isinstance(tree, dict):
        return sum(_num_params(v) for v in tree.values())
    return int(np.size(tree))


def _describe(gen) -> str:
    res = getattr(gen, "img_resolution", None)
    try:
        res = int(res)
    except (TypeError, NotImplementedError):
        res = gen.config.get("img_resolution", gen.config.get("output_dim"))
    return (
        f"kind={gen.kind} resolution={res} params={_num_params(gen.params):,} "
        f"buffers={_num_params(gen.buffers):,}"
    )


def _parser() -> argparse.ArgumentParser:
    """The command line's options."""
    parser = argparse.ArgumentParser(
        prog="python -m converters", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--src",
        required=True,
        type=pathlib.Path,
        help="checkpoint file or directory (NVlabs .pkl, Hammer .pth, state_dict + "
        "JSON, BigGAN dir)",
    )
    parser.add_argument(
        "--dst", required=True, type=pathlib.Path, help="output directory (must not exist)"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace --dst if it exists")
    parser.add_argument(
        "--network",
        default=None,
        help="entry of a multi-network file to convert (NVlabs snapshot: G_ema by default, or G)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parses arguments, converts, writes; returns the process exit code."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")  # orbax/absl stay quiet
    log.setLevel(logging.INFO)

    if args.dst.exists() and not args.overwrite:
        log.error("%s already exists; pass --overwrite to replace it.", args.dst)
        return 2
    from converters import formats
    from regfac_jax import checkpoint

    try:
        gen = formats.load(args.src, network=args.network)
    # format, safety and conversion errors all derive from these
    except (ValueError, FileNotFoundError) as err:
        log.error("cannot convert %s: %s", args.src, err)
        return 1
    checkpoint.save_generator(gen, args.dst, overwrite=args.overwrite)
    log.info("loaded %s: %s -> wrote %s", args.src, _describe(gen), args.dst)
    return 0


if __name__ == "__main__":
    sys.exit(main())
