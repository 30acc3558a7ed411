"""Everything that exists only to train and show the shipped demo model.

The library's method (``jacobian``, ``directions``, ``regions``, ``edit``) never imports from here.

* :mod:`regfac_jax.demo.faces`: procedural cartoon faces whose factors live in known boxes.
* :mod:`regfac_jax.demo.discriminator`, :mod:`regfac_jax.demo.training`: the GAN that trained the
  shipped model.
* :mod:`regfac_jax.demo.runner`: loading the shipped generator, and the measured ReSeFa demo on it.

The runner's public names are re-exported here, so ``from regfac_jax import demo;
demo.load_demo_generator()``.
"""

from regfac_jax.demo.runner import (
    CONFIG_FILE,
    DATA_DIR,
    DATA_PACKAGE,
    DEMO_REGIONS,
    GENERATOR_FILE,
    RUN_FILE,
    SUMS_FILE,
    DemoConfig,
    demo_generator_config,
    distribution_check,
    export_generator,
    format_distribution,
    format_markdown,
    format_table,
    gen_shape,
    image_grid,
    load_demo_generator,
    restore_training,
    run_demo,
    save_training,
    sha256,
    write_sample_docs,
)

__all__ = [
    "CONFIG_FILE",
    "DATA_DIR",
    "DATA_PACKAGE",
    "DEMO_REGIONS",
    "GENERATOR_FILE",
    "RUN_FILE",
    "SUMS_FILE",
    "DemoConfig",
    "demo_generator_config",
    "distribution_check",
    "export_generator",
    "format_distribution",
    "format_markdown",
    "format_table",
    "gen_shape",
    "image_grid",
    "load_demo_generator",
    "restore_training",
    "run_demo",
    "save_training",
    "sha256",
    "write_sample_docs",
]
