"""MATLAB `.mat` protocol files (TinyFace, QMUL-SurvFace): read with `scipy.io.loadmat`, checked once.

The published lists are MATLAB v5 files holding cell arrays of file names (`{N x 1}` or `{N x 2}`
cells of char arrays, which `loadmat` returns as numpy object arrays of 1-element string arrays)
and numeric id vectors (`N x 1`). Every file is confined to its data root like an image is.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors_dcr import DCRFileError, DCRFileNotFoundError, DCRInputError
from ._layout import PathLike, confine_to_root


def read_mat(path: PathLike, root: PathLike, dataset: str, variables: tuple[str, ...], *,
             follow_symlinks_outside_root: bool = False) -> dict[str, np.ndarray]:
    """`{name: array}` of `variables` from the MATLAB file `path` (one line naming the file and what
    is wrong when it is missing, outside `root`, unreadable or lacks a variable)."""
    path = Path(path)
    if not path.is_file():
        raise DCRFileNotFoundError(f"{dataset} protocol file '{path}' not found; expected the MATLAB file the dataset "
                                   "ships there (layout: docs/datasets.md).")
    confine_to_root(path, root, follow_symlinks_outside_root=follow_symlinks_outside_root)
    from scipy.io import loadmat

    try:
        contents = loadmat(str(path))
    except NotImplementedError:  # scipy's answer to MATLAB v7.3 (HDF5) files
        raise DCRFileError(f"'{path}' is a MATLAB v7.3 file; expected the MATLAB v5 file the dataset ships.") from None
    except (ValueError, TypeError, OSError) as error:
        raise DCRFileError(f"'{path}' is not a readable MATLAB .mat file ({error}).") from None
    missing = [name for name in variables if name not in contents]
    if missing:
        found = sorted(name for name in contents if not name.startswith("__"))
        raise DCRInputError(f"'{path}' has no variable {missing[0]!r}; it holds {found}, expected {list(variables)}.")
    return {name: contents[name] for name in variables}


def cell_strings(values: np.ndarray, path: PathLike, name: str) -> list[str]:
    """The strings of a MATLAB cell array column (`loadmat` gives `[N, 1]` objects of `[1]` string arrays)."""
    names = []
    for index, cell in enumerate(np.asarray(values, dtype=object).reshape(-1)):
        flat = np.asarray(cell).reshape(-1)
        if flat.size != 1 or not isinstance(flat[0], str):
            raise DCRInputError(f"'{path}': {name}[{index}] is {cell!r}; expected a cell holding one file name.")
        names.append(str(flat[0]))
    return names


def id_vector(values: np.ndarray, count: int, path: PathLike, name: str) -> np.ndarray:
    """An integer id vector of `count` entries (`[N, 1]` or `[1, N]` numeric in the file)."""
    ids = np.asarray(values).reshape(-1)
    if ids.size != count or not np.issubdtype(ids.dtype, np.number) or not np.all(np.isfinite(ids)) or np.any(ids != np.round(ids)):
        raise DCRInputError(f"'{path}': {name} holds {ids.size} values of type {ids.dtype}; expected {count} integer ids.")
    return ids.astype(np.int64)


def pair_strings(values: np.ndarray, path: PathLike, name: str) -> tuple[list[str], list[str]]:
    """The two columns of an `{N x 2}` cell array of file names."""
    values = np.asarray(values, dtype=object)
    if values.ndim != 2 or values.shape[1] != 2:
        raise DCRInputError(f"'{path}': {name} has shape {values.shape}; expected an N x 2 cell array of file names.")
    return cell_strings(values[:, 0], path, name), cell_strings(values[:, 1], path, name)


__all__ = ["cell_strings", "id_vector", "pair_strings", "read_mat"]
