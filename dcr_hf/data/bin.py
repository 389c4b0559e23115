"""insightface's packed verification sets (`lfw.bin`, `cfp_fp.bin`, `agedb_30.bin`, `calfw.bin`, `cplfw.bin`).

A `.bin` file is a pickle of `(bins, issame_list)`: `bins` a list of encoded images (JPEG/PNG bytes),
images `2i` and `2i + 1` forming pair `i`, and `issame_list` a list of booleans or a numpy bool array
(as insightface's `recognition/arcface_torch/eval/verification.py` writes and reads it). It is read by
`SafeBinUnpickler`, which builds nothing but those: a pickle naming any other global (the way a
pickle runs code) is refused before anything of it runs.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np
from datasets import Dataset, Features, Image, Value

from ..errors_dcr import DCRFileError, DCRInputError
from ._layout import PathLike, require_file

#: insightface's 10 folds: `sklearn.model_selection.KFold(10)` without shuffling (contiguous blocks,
#: the first `n % 10` one pair longer).
NUM_FOLDS = 10
_NUMPY_MODULES = ("numpy.core.multiarray", "numpy._core.multiarray")
_NUMERIC_MODULES = ("numpy.core.numeric", "numpy._core.numeric")
_BOOL_DTYPES = ("b1", "?", "bool")


class RefusedPickleContent(pickle.UnpicklingError):
    """A `.bin` pickle names something other than what a `.bin` holds (raised before it is built)."""


def _bool_dtype(name: Any, align: Any = False, copy: Any = True) -> np.dtype:
    """`numpy.dtype(...)` for the one dtype a `.bin` holds, bool; any other is refused."""
    text = name.decode("latin-1") if isinstance(name, bytes) else name
    if text not in _BOOL_DTYPES:
        raise RefusedPickleContent(f"numpy dtype {text!r} (only bool arrays are accepted)")
    return np.dtype(text, align, copy)


def _reconstruct(cls: Any, shape: Any, dtype: Any) -> np.ndarray:
    """numpy's array-unpickling constructor, for `numpy.ndarray` only (its data is set from the pickle after)."""
    if cls is not np.ndarray:
        raise RefusedPickleContent(f"array class {cls!r} (only numpy.ndarray is accepted)")
    return np.ndarray.__new__(np.ndarray, shape, dtype)


def _frombuffer(buffer: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
    """numpy's protocol-5 array constructor, for bool arrays only (the dtype comes through `_bool_dtype`)."""
    if not isinstance(dtype, np.dtype) or dtype != np.bool_:
        raise RefusedPickleContent(f"array dtype {dtype!r} (only bool arrays are accepted)")
    return np.frombuffer(bytes(buffer), dtype=dtype).reshape(shape, order=order).copy()


class SafeBinUnpickler(pickle.Unpickler):
    """An unpickler for `.bin` files: lists, tuples, bytes, bools and numpy bool arrays, nothing else.

    `find_class` is the only way a pickle reaches code; it answers only numpy's array
    constructors (`_reconstruct` for `ndarray`, and protocol 5's `_frombuffer`), `ndarray` and a
    `dtype` limited to bool.
    """

    def find_class(self, module: str, name: str) -> Any:
        if module in _NUMPY_MODULES and name == "_reconstruct":
            return _reconstruct
        if module in _NUMERIC_MODULES and name == "_frombuffer":
            return _frombuffer
        if module == "numpy" and name == "ndarray":
            return np.ndarray
        if module == "numpy" and name == "dtype":
            return _bool_dtype
        raise RefusedPickleContent(f"global {module}.{name}")


def read_bin(path: PathLike) -> tuple[list[bytes], np.ndarray]:
    """`(encoded images, is_same [pairs] bool)` of a `.bin` file, checked: one line names what is wrong."""
    path = require_file(path, "bin", "insightface .bin file")
    try:
        with open(path, "rb") as stream:
            loaded = SafeBinUnpickler(io.BufferedReader(stream), encoding="bytes").load()
    except RefusedPickleContent as error:
        raise DCRFileError(f"'{path}' is refused: its pickle holds {error}; a .bin holds only (list of encoded images, "
                           "issame list).") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError, MemoryError) as error:
        raise DCRFileError(f"'{path}' is not a readable insightface .bin pickle ({type(error).__name__}: {error}).") from None
    if not isinstance(loaded, (tuple, list)) or len(loaded) != 2:
        raise DCRInputError(f"'{path}' holds a {type(loaded).__name__}; expected the pair (list of encoded images, issame list).")
    bins, issame = loaded
    if not isinstance(bins, (list, tuple)) or not all(isinstance(item, bytes) for item in bins):
        raise DCRInputError(f"'{path}': the images must be a list of encoded image bytes.")
    if isinstance(issame, np.ndarray):
        if issame.dtype != np.bool_ or issame.ndim != 1:
            raise DCRInputError(f"'{path}': issame is a {issame.dtype} array of shape {issame.shape}; expected 1-D bool.")
    elif not isinstance(issame, (list, tuple)) or not all(isinstance(item, bool) for item in issame):
        raise DCRInputError(f"'{path}': issame must be a list of booleans or a numpy bool array.")
    issame = np.asarray(issame, dtype=bool)
    if len(bins) != 2 * len(issame) or not len(issame):
        raise DCRInputError(f"'{path}' holds {len(bins)} images for {len(issame)} pairs; expected two images per pair.")
    return list(bins), issame


def load_bin(path: PathLike) -> Dataset:
    """The pairs of a `.bin` file: `image_a`, `image_b` (encoded bytes), `is_same` and insightface's `fold`."""
    bins, issame = read_bin(path)
    num_pairs = len(issame)
    if num_pairs < NUM_FOLDS:
        raise DCRInputError(f"'{path}' holds {num_pairs} pairs; the 10-fold protocol needs at least {NUM_FOLDS}.")
    folds = np.concatenate([np.full(len(block), fold) for fold, block in enumerate(np.array_split(np.arange(num_pairs), NUM_FOLDS))])
    name = Path(path).name
    features = Features({"image_a": Image(), "image_b": Image(), "is_same": Value("bool"), "fold": Value("int64")})
    return Dataset.from_dict({
        "image_a": [{"bytes": data, "path": f"{name}#{2 * i}"} for i, data in enumerate(bins[0::2])],
        "image_b": [{"bytes": data, "path": f"{name}#{2 * i + 1}"} for i, data in enumerate(bins[1::2])],
        "is_same": issame.tolist(),
        "fold": folds.tolist(),
    }, features=features)


__all__ = ["NUM_FOLDS", "RefusedPickleContent", "SafeBinUnpickler", "load_bin", "read_bin"]
