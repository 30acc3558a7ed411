"""Procedural datasets with known factors of variation (ground truth for region-based editing)."""
