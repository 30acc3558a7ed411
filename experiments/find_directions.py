"""Finds region-based directions: ``python -m experiments.find_directions --config CONFIG.py[:tiny]
--workdir DIR``.

See ``experiments/configs/base.py`` for every config field and ``experiments/pipeline.py`` for what
is written. Multi-host (TPU pod, several GPU hosts): run the same command on every host with
``--distributed``; on Cloud TPU and SLURM JAX finds the coordinator itself, elsewhere add
``--coordinator HOST0:PORT --num_processes N --process_id I``. A preemption notice (SIGTERM) on any
host checkpoints and ends every process with status 143 (as SIGTERM would); re-running the same
command resumes.
"""

import sys

from absl import flags, logging
from ml_collections import config_flags

from experiments import cli

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file (path.py[:arg]).", lock_config=True
)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Output directory (re-running on it resumes).", required=True
)
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed", False, "Join a multi-process JAX job first (jax.distributed)."
)
_COORDINATOR = flags.DEFINE_string(
    "coordinator", None, "host:port of process 0 (not needed on TPU pods / SLURM)."
)
_NUM_PROCESSES = flags.DEFINE_integer(
    "num_processes", None, "Number of processes (not needed on TPU pods / SLURM)."
)
_PROCESS_ID = flags.DEFINE_integer(
    "process_id", None, "This process's index (not needed on TPU pods / SLURM)."
)
# 128 + SIGTERM: not 0, so that a scheduler does not count a preempted job as finished
PREEMPTED_EXIT = 143


def main(argv):
    del argv
    if _DISTRIBUTED.value:  # before any other JAX call
        from regfac_jax import distributed

        distributed.initialize_distributed(
            _COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value
        )
    from experiments import pipeline
    from regfac_jax import resumable

    try:
        results = pipeline.find_directions(_CONFIG.value, _WORKDIR.value)
    except resumable.Preempted as err:
        logging.warning("%s", err)
        sys.exit(PREEMPTED_EXIT)
    import jax

    if jax.process_index() == 0:  # one summary per run, not one per host
        print(pipeline.summarize_directions(results, _WORKDIR.value))


if __name__ == "__main__":
    flags.mark_flags_as_required(["config"])
    cli.run(main)
