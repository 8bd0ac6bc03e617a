"""Datasets the integration pipeline can generate, convert and evaluate."""
