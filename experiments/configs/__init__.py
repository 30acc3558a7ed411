"""One config per reproduced figure; each ``get_config(arg)`` accepts ``'tiny'`` for a CPU smoke run."""
