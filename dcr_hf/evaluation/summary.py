"""Result summaries: each protocol's criterion and a runner result as flat scalar metrics."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ..reports import COLUMN_KEYS

#: The criterion of each protocol: one number to select checkpoints on (the original's choices for
#: verification and SCface identification).
CRITERIA = {
    "verification": "mean_lr_accuracy",
    "intra-verification": "mean_lr_accuracy",
    "identification": "mean_rank1",
    "retrieval": "mean_lr_precision_at_1",
    "intra-retrieval": "mean_lr_precision_at_1",
    "closed-set-identification": "mean_rank1",
    "native-verification": "mean_accuracy",
    "open-set-identification": "mean_tpir",
}


def summary_metrics(results: Mapping[str, Any]) -> dict[str, float]:
    """The scalar metrics of a runner result as a flat `{name: float}`, for logging (`Trainer.log`,
    TensorBoard) and checkpoint selection: `"<metric>_<column>"` (`accuracy_8`, `auc_hr`,
    `tar@far=0.001_8`, `rank_1_d1`, `map_at_r_12`) plus the protocol's criterion (`CRITERIA`)."""
    columns = next((results[key] for key in COLUMN_KEYS if key in results), None)
    if columns is None:
        raise KeyError(f"Not a runner result: none of {COLUMN_KEYS} among {sorted(results)}.")
    flat: dict[str, float] = {}
    for key, values in columns.items():
        for name, value in values.items():
            if isinstance(value, Mapping):  # tar_at_far
                flat.update({f"tar@far={far}_{key}": float(tar) for far, tar in value.items()})
            elif isinstance(value, (int, float, np.number)) and not isinstance(value, bool):
                flat[f"{name}_{key}"] = float(value)
    criterion = CRITERIA.get(results.get("protocol"))
    if criterion is not None and results.get(criterion) is not None:
        flat[criterion] = float(results[criterion])
    return flat


__all__ = ["CRITERIA", "summary_metrics"]
