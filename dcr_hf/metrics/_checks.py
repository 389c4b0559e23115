"""Input checks shared by the metric modules.

Each helper turns one argument into the array layout a metric needs (1-D, boolean, float32
embeddings) or checks arguments against each other (lengths, classes, dimensions), and raises
`ValueError` naming the argument at fault.
"""

from __future__ import annotations

import numpy as np
import torch
from numpy.typing import ArrayLike

from ..errors_dcr import DCRInputError


def _as_1d(name: str, values: ArrayLike, finite: bool = False) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1:
        raise DCRInputError(f"`{name}` must be 1-D, got an array of shape {array.shape}.")
    if array.size == 0:
        raise DCRInputError(f"`{name}` is empty; at least one value is needed.")
    if finite:
        if not np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.complexfloating):
            raise DCRInputError(f"`{name}` must hold real numbers, got dtype {array.dtype}.")
        num_bad = int(array.size - np.count_nonzero(np.isfinite(array)))
        if num_bad:
            raise DCRInputError(f"`{name}` holds {num_bad} NaN or infinite value(s) out of {array.size}.")
    return array


def _as_binary(name: str, values: ArrayLike) -> np.ndarray:
    array = _as_1d(name, values)
    if array.dtype != bool:
        bad = ~np.isin(array, (0, 1))
        if bad.any():
            raise DCRInputError(
                f"`{name}` must be boolean or 0/1, got {int(bad.sum())} other value(s), "
                f"e.g. {array[bad][0]!r} at index {int(np.flatnonzero(bad)[0])}."
            )
    return array.astype(bool)


def _as_embeddings(name: str, values: ArrayLike) -> np.ndarray:
    """[num, dim] finite float32 C-contiguous copy (faiss needs that layout)."""
    array = np.array(values, dtype=np.float32, order="C", copy=True)
    if array.ndim != 2:
        raise DCRInputError(f"`{name}` must be 2-D [num, dim], got an array of shape {array.shape}.")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise DCRInputError(f"`{name}` is empty (shape {array.shape}).")
    num_bad = int(array.shape[0] - np.count_nonzero(np.isfinite(array).all(axis=1)))
    if num_bad:
        raise DCRInputError(f"`{name}` has {num_bad} row(s) with NaN or infinite values out of {array.shape[0]}.")
    return array


def _as_float_tensor(name: str, values: ArrayLike | torch.Tensor, sets: bool = False) -> torch.Tensor:
    """A non-empty 2-D `[num, dim]` float tensor (with `sets`, also 3-D `[sets, num, dim]`), without
    a copy where possible: a tensor stays on its device, a numpy array is shared; float32/float64
    keep their precision, half precisions become float32 and other dtypes float64. Values are not
    checked here (see the callers)."""
    if torch.is_tensor(values):
        tensor = values.detach()
    else:
        array = np.asarray(values)
        if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer) or array.dtype == bool):
            raise DCRInputError(f"`{name}` must hold real numbers, got dtype {array.dtype}.")
        tensor = torch.from_numpy(np.ascontiguousarray(array) if array.dtype != np.float16 else array.astype(np.float32))
    if tensor.ndim not in ((2, 3) if sets else (2,)) or tensor.numel() == 0:
        expected = "2-D [num_pairs, dim] or 3-D [sets, num_pairs, dim]" if sets else "2-D [num_pairs, dim]"
        raise DCRInputError(f"`{name}` must be a non-empty {expected} array, got shape {tuple(tensor.shape)}.")
    if tensor.dtype in (torch.float16, torch.bfloat16):
        return tensor.float()
    return tensor if tensor.dtype in (torch.float32, torch.float64) else tensor.double()


def _check_lengths(**arrays: np.ndarray) -> None:
    lengths = {name: len(array) for name, array in arrays.items()}
    if len(set(lengths.values())) > 1:
        described = ", ".join(f"`{name}` has {length}" for name, length in lengths.items())
        raise DCRInputError(f"Mismatched lengths: {described}; they must be equal.")


def _check_both_classes(is_same: np.ndarray) -> tuple[int, int]:
    num_same = int(is_same.sum())
    num_different = len(is_same) - num_same
    if num_same == 0 or num_different == 0:
        raise DCRInputError(
            f"`is_same` must hold both classes, got {num_same} same and {num_different} different pair(s)."
        )
    return num_same, num_different


def _check_dims(query_name: str, queries: np.ndarray, reference_name: str, references: np.ndarray) -> None:
    if queries.shape[1] != references.shape[1]:
        raise DCRInputError(
            f"`{query_name}` has dimension {queries.shape[1]} but `{reference_name}` has {references.shape[1]}."
        )


def _labelled_sets(
    query_name: str, queries: ArrayLike, query_labels: ArrayLike,
    reference_name: str, references: ArrayLike, reference_labels: ArrayLike,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Query and reference embeddings `[n, dim]` with their labels `[n]`, checked: 2-D and finite,
    the same dim, one label per row. Labels are named `<query_name without _embeddings>_labels`."""
    query_set, reference_set = _as_embeddings(query_name, queries), _as_embeddings(reference_name, references)
    _check_dims(query_name, query_set, reference_name, reference_set)
    query_label_name = query_name.replace("_embeddings", "_labels")
    reference_label_name = reference_name.replace("_embeddings", "_labels")
    query_labels, reference_labels = _as_1d(query_label_name, query_labels), _as_1d(reference_label_name, reference_labels)
    _check_lengths(**{query_name: query_set, query_label_name: query_labels})
    _check_lengths(**{reference_name: reference_set, reference_label_name: reference_labels})
    return query_set, query_labels, reference_set, reference_labels
