"""Finds region-based directions: ``python -m experiments.find_directions --config CONFIG.py[:tiny] --workdir DIR``.

See ``experiments/configs/base.py`` for every config field and ``experiments/pipeline.py`` for what is written.
"""
from absl import app, flags
from ml_collections import config_flags

from experiments import pipeline

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file (path.py[:arg]).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory (re-running on it resumes).", required=True)
_DISTRIBUTED = flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize() first (multi-host).")


def main(argv):
    del argv
    if _DISTRIBUTED.value:
        import jax
        jax.distributed.initialize()
    pipeline.find_directions(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
    flags.mark_flags_as_required(["config"])
    app.run(main)
