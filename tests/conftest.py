"""Shared test fixtures: the reference data folder and a float64 switch."""

from __future__ import annotations

import pathlib

import jax
import pytest

from experiments import pipeline

# The official reference fixtures live beside the checkout (CI lays them out the same way), or at
# $REGFAC_FIXTURES: the launchers' 'fixture:<name>' models resolve through the same function.
FIXTURES = pipeline.default_fixtures_dir()


@pytest.fixture(scope="session")
def fixtures_dir() -> pathlib.Path:
    if not FIXTURES.is_dir():
        pytest.fail(f"reference fixtures not found at {FIXTURES} (set REGFAC_FIXTURES)")
    return FIXTURES


@pytest.fixture
def x64():
    """Runs a test with float64 enabled, restoring the previous setting afterwards."""
    with jax.enable_x64(True):
        yield
