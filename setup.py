"""Packaging for regfac-jax (Region-Based Semantic Factorization in GANs, in JAX/Flax)."""

from setuptools import find_packages, setup

setup(
    name="regfac-jax",
    version="0.1.0",
    description="Region-based semantic factorization (ReSeFa) of GAN latent spaces in JAX/Flax",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(
        include=[
            "regfac_jax",
            "regfac_jax.*",
            "converters",
            "converters.*",
            "experiments",
            "experiments.*",
        ]
    ),
    package_data={"regfac_jax": ["data/*", "data/*/*"]},
    install_requires=[
        # Pinned to one generation: a future JAX/Flax release must not silently change numerics.
        "jax>=0.10,<0.11",
        "jaxlib>=0.10,<0.11",
        "flax>=0.12,<0.13",
        "optax>=0.2.5,<0.3",
        "orbax-checkpoint>=0.12,<0.13",
        "absl-py>=2.1,<3",
        "ml_collections>=1.0,<2",
        "numpy>=1.26,<3",
        "pillow>=10,<14",
        "matplotlib>=3.8,<4",  # labelled edit grids and spectra (regfac_jax.plots)
        "tqdm>=4.66,<5",
    ],
    extras_require={
        # torch is only ever used by tests and benchmarks, to cross-check against the official code.
        # lpips: the LPIPS parity test (its torchvision import is replaced inside the test, see
        # test_inversion.py).
        "test": [
            "pytest>=8,<10",
            "pytest-xdist>=3.5,<4",
            # exact: CI's `ruff format --check` must lay code out as the release that formatted it.
            "ruff==0.17.6",
            "chex>=0.1.90,<0.2",
            "scipy>=1.11,<2",
            "torch==2.13.0",
            "pytorch-pretrained-biggan==0.1.1",
            "lpips==0.1.4",
            # The editor's tests: its server through gradio_client, its page in Debian's
            # headless Chromium.
            "gradio>=6,<7",
            "gradio_client>=2,<3",
            "selenium>=4.20,<5",
        ],
        # The interactive editor (python -m experiments.app).
        "app": ["gradio>=6,<7", "gradio_client>=2,<3"],
    },
)
