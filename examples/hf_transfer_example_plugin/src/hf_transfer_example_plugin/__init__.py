"""Example hf_transfer plugin: the `bitfit` strategy and the `tweet_classification` recipe.

hf_transfer imports `bitfit` and `tweets` through its entry point groups `hf_transfer.strategies`
and `hf_transfer.recipes` (see this package's pyproject.toml); importing them registers them.
"""
