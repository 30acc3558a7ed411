"""Interactive editor in the browser: ``python -m experiments.app [--config CONFIG.py] [--port
7860]``.

* :mod:`experiments.app.core` -- sessions, regions, directions, edits and exports as plain functions
  (no gradio);
* :mod:`experiments.app.ui` -- the gradio page wired to them (needs the ``[app]`` extra);
* ``__main__`` -- the launcher.
"""
