"""One config per reproduced figure; each ``get_config(arg)`` parses its argument with
``base.parse_arg`` (``'tiny'`` for a CPU smoke run; ``key=value`` pairs where a config takes
them)."""
