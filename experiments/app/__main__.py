r"""Serves the interactive editor: ``python -m experiments.app [--config CONFIG.py[:arg]] [--port
7860]``.

Without ``--config`` it opens the shipped demo model (``experiments/configs/demo_faces.py``); any
figure config works, with ``--config.model`` pointing at a checkpoint exactly as for
``experiments.find_directions``. Needs the ``[app]`` extra (``pip install -e '.[app]'``). A model
that fails to load is reported on the page, which stays up so that another one can be loaded from
it.
"""

import os

# Small host-side matrices (64 x 64 eigen-solves, LowRankGAN's robust PCA): multi-threaded OpenBLAS
# only spins on shared cores (see experiments/demo.py). Must be set before numpy is imported.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file(
    "config",
    None,
    "Experiment config file (path.py[:arg]); default: the "
    "shipped demo model (experiments/configs/demo_faces.py).",
)
_PORT = flags.DEFINE_integer("port", 7860, "Port to serve on.")
_HOST = flags.DEFINE_string(
    "host", "127.0.0.1", "Interface to serve on (0.0.0.0: every interface)."
)
_WARM_UP = flags.DEFINE_bool(
    "warm_up", True, "Compile the Jacobian and render paths before serving."
)


def main(argv):
    del argv
    from experiments.app import core, ui
    from experiments.configs import demo_faces

    cfg = _CONFIG.value if _CONFIG.value is not None else demo_faces.get_config()
    editor = ui.EditorApp.from_config(cfg)
    if _WARM_UP.value and editor.load_error is None:
        logging.info("warming up (compiling the Jacobian and render paths)...")
        core.warm_up(editor.model())
    ui.launch(ui.build(editor), host=_HOST.value, port=_PORT.value)


if __name__ == "__main__":
    app.run(main)
