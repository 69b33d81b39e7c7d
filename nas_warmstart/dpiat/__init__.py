"""DPIAT (Czyzewski et al. 2022): architecture signatures, the dynamic-programming score and
matching, similarity, and parameter transfer across architectures (``docs/dpiat.md``).

Imports nothing of the other stages: pools, training and search build on it.
"""
