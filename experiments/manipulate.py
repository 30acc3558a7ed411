"""Renders edits along directions: ``python -m experiments.manipulate --config CONFIG.py[:tiny]
--directions FILE.npy --workdir DIR`` writes a PNG grid per direction, a GIF per sample and an
``index.html``. ``--latents DIR/latents.npz`` (from ``experiments.invert``) edits those inverted
images instead of random samples and writes ``locality.json`` (the in-region share of each edit).
"""

from absl import flags
from ml_collections import config_flags

from experiments import cli, pipeline

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file (path.py[:arg]).", lock_config=True
)
_DIRECTIONS = flags.DEFINE_string(
    "directions", None, "Direction file ([k, d] .npy: ours or the paper's).", required=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory.", required=True)
_LATENTS = flags.DEFINE_string(
    "latents", None, "latents.npz of experiments.invert: edit those images."
)


def main(argv):
    del argv
    outputs = pipeline.manipulate(
        _CONFIG.value, _DIRECTIONS.value, _WORKDIR.value, latents_path=_LATENTS.value
    )
    print(
        f"wrote {sum(p.suffix == '.png' for p in outputs)} grids and "
        f"{sum(p.suffix == '.gif' for p in outputs)} GIFs; open {_WORKDIR.value}/index.html"
    )


if __name__ == "__main__":
    flags.mark_flags_as_required(["config"])
    cli.run(main)
