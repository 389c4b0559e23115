"""Checks of the raw datasets the protocol runners take, shared by the runners."""

from __future__ import annotations

from typing import Any

import numpy as np
from datasets import Dataset

from ..errors_dcr import DCRInputError
from ..modeling_dcr import DCRModel


def column(dataset: Dataset, name: str, what: str) -> np.ndarray:
    """One column as a numpy array; `KeyError` naming the dataset's columns when it is absent."""
    if name not in dataset.column_names:
        raise KeyError(f"The {what} dataset has no column {name!r}; it has {dataset.column_names}.")
    return np.asarray(dataset.select_columns([name]).with_format("numpy")[name])


def check_raw(dataset: Any, what: str, columns: tuple[str, ...] = ()) -> None:
    """A runner takes a non-empty `datasets.Dataset` with no transform attached (it attaches its own)."""
    if not isinstance(dataset, Dataset):
        raise TypeError(f"The {what} must be a datasets.Dataset, got {type(dataset).__name__}.")
    if dataset.format["type"] is not None:
        raise DCRInputError(
            f"The {what} dataset already has a format/transform ({dataset.format['type']!r}); pass the raw "
            "dataset from dcr_hf.data (the evaluation attaches its own transform)."
        )
    if len(dataset) == 0:
        raise DCRInputError(f"The {what} dataset is empty.")
    for name in columns:
        if name not in dataset.column_names:
            raise KeyError(f"The {what} dataset has no column {name!r}; it has {dataset.column_names}.")


def model_kind(model: DCRModel) -> str:
    return "branch" if model.config.use_branches else "trunk"
