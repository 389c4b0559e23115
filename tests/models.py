"""Tiny DCR configurations shared by the tests (fast on a CPU)."""

from dcr_hf import DCRConfig


def tiny_config(**overrides) -> DCRConfig:
    values = dict(
        depths=[1, 1, 1, 1],
        hidden_sizes=[8, 16, 16, 32],
        embedding_size=32,
        branch_hidden_size=32,
        image_size=32,
        low_resolution_sizes=[8, 12],
        num_labels=5,
    )
    values.update(overrides)
    return DCRConfig(**values)
