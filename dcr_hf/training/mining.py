"""The batch-hard miner of DCR's center terms: pytorch-metric-learning's `BatchHardMiner`.

`losses_dcr.py` travels to the Hub and cannot import pytorch-metric-learning, so the model's loss takes
the miner as an argument of the forward pass; `DCRTrainer` passes the one built here.
"""

from __future__ import annotations

from pytorch_metric_learning.distances import LpDistance
from pytorch_metric_learning.miners import BatchHardMiner

from ..configuration_dcr import DCRConfig


def build_miner(config: DCRConfig) -> BatchHardMiner | None:
    """The miner the stage of `config` asks for: `branch_miner` for a model with branches,
    `trunk_miner` otherwise; `None` when the stage does not mine (or drops its center term)."""
    name = config.branch_miner if config.use_branches else config.trunk_miner
    if name is None or (not config.use_branches and config.trunk_mining_reference == "none"):
        return None
    # `name` is "batch_hard", the one miner `DCRConfig` accepts (it checked the field).
    # Euclidean distance between the vectors as they are: the library's default distance would
    # L2-normalize embeddings and centers first, and centers are not unit vectors.
    return BatchHardMiner(distance=LpDistance(normalize_embeddings=False, p=2, power=1))


__all__ = ["build_miner"]
