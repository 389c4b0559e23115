"""LFW: verification pairs (original list or official View 2 `pairs.txt`) and identities for retrieval.

Layout (under the data root): `LFW/LFW_120x120_120/<Name>/<Name>_0001.jpg` plus a pairs file,
`LFW/lfw_test_pair.txt` (original implementation) or `LFW/pairs.txt` (official View 2).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from datasets import ClassLabel, Dataset

from ..errors_dcr import DCRInputError
from ._layout import (
    PathLike,
    column_numpy,
    confine_listed,
    confine_to_root,
    image_dataset,
    load_prepared,
    malformed_line,
    read_lines,
    relative_image_path,
    missing_path_error,
    relabel,
    report_missing,
    require_dir,
    require_file,
)
from .features import PAIRS_FEATURES
from .generic import load_image_folder

LFW_DIR = "LFW"
LFW_IMAGE_DIR = "LFW_120x120_120"
# Looked up in this order when no pairs_file is given.
LFW_PAIRS_FILES = ("lfw_test_pair.txt", "pairs.txt")
NUM_FOLDS = 10


_ORIGINAL_LINE = "'Name_A/Name_A_0001.jpg Name_B/Name_B_0003.jpg 0|1'"
_MATCHED_LINE = "a matched pair 'name<TAB>n1<TAB>n2'"
_MISMATCHED_LINE = "a mismatched pair 'name1<TAB>n1<TAB>name2<TAB>n2'"


def _is_int(text: str) -> bool:
    return text.lstrip("+-").isdigit()


def _official_image(name: str, number: str) -> str:
    return f"{name}/{name}_{int(number):04d}.jpg"


def _read_original(
    path: Path, lines: list[tuple[int, str]], image_dir: PathLike
) -> tuple[list[str], list[str], list[bool], None]:
    first, second, same = [], [], []
    for line_number, line in lines:
        fields = line.split()
        if len(fields) != 3 or fields[2] not in ("0", "1"):
            raise malformed_line(path, line_number, line, _ORIGINAL_LINE)
        first.append(relative_image_path(fields[0], path, line_number, image_dir))
        second.append(relative_image_path(fields[1], path, line_number, image_dir))
        same.append(fields[2] == "1")
    return first, second, same, None


def _read_official(
    path: Path, lines: list[tuple[int, str]], image_dir: PathLike
) -> tuple[list[str], list[str], list[bool], list[int]]:
    """Official View 2 pairs: sets of `set_size` matched then `set_size` mismatched lines.

    With a header (`num_sets<TAB>set_size`, or just `set_size` for one set) the position of each
    line is checked against it; without one a set ends where a matched line follows mismatched ones.
    """
    header_line, header = lines[0][0], lines[0][1].split()
    set_size = None
    if all(_is_int(field) for field in header) and len(header) in (1, 2):
        num_sets, set_size = (int(header[0]), int(header[1])) if len(header) == 2 else (1, int(header[0]))
        lines = lines[1:]
        if len(lines) != 2 * num_sets * set_size:
            raise DCRInputError(
                f"{path}:{header_line}: the header announces {num_sets} sets of "
                f"{set_size} matched + {set_size} mismatched pairs ({2 * num_sets * set_size} lines), "
                f"but the file has {len(lines)} pair lines."
            )
    first, second, same, sets = [], [], [], []
    current_set, previous_matched = 0, True
    for index, (line_number, line) in enumerate(lines):
        fields = line.split()
        matched = len(fields) == 3
        if set_size is not None:
            current_set, position = divmod(index, 2 * set_size)
            expected_matched = position < set_size
            if matched != expected_matched or len(fields) not in (3, 4):
                raise malformed_line(path, line_number, line, _MATCHED_LINE if expected_matched else _MISMATCHED_LINE)
        elif matched and not previous_matched:
            current_set += 1
        if matched and _is_int(fields[1]) and _is_int(fields[2]):
            first.append(_official_image(fields[0], fields[1]))
            second.append(_official_image(fields[0], fields[2]))
        elif len(fields) == 4 and _is_int(fields[1]) and _is_int(fields[3]):
            first.append(_official_image(fields[0], fields[1]))
            second.append(_official_image(fields[2], fields[3]))
        else:
            raise malformed_line(path, line_number, line, f"{_MATCHED_LINE} or {_MISMATCHED_LINE}")
        for name in (first[-1], second[-1]):
            relative_image_path(name, path, line_number, image_dir)
        same.append(matched)
        sets.append(current_set)
        previous_matched = matched
    return first, second, same, sets


def read_lfw_pairs(
    pairs_file: PathLike, image_dir: PathLike = LFW_IMAGE_DIR
) -> tuple[list[str], list[str], list[bool], list[int] | None]:
    """Parse a pairs file, auto-detecting its format.

    Returns the two relative image paths of each pair, whether it is a same-person pair, and for
    the official format the set (fold) of each pair (`None` for the original list, whose folds are
    contiguous tenths). A malformed line, or an image path leaving `image_dir` (absolute or with
    `..`), raises `ValueError` with the file and line number.
    """
    path = Path(pairs_file)
    lines = read_lines(path)
    if not lines:
        raise DCRInputError(f"{path}: the pairs file is empty.")
    fields = lines[0][1].split()
    # The original list has an image path as second field; the official file a number (or a header).
    if len(fields) == 3 and not _is_int(fields[1]):
        return _read_original(path, lines, image_dir)
    return _read_official(path, lines, image_dir)


def contiguous_folds(num_pairs: int, num_folds: int = NUM_FOLDS) -> np.ndarray:
    """Fold of each of `num_pairs` pairs in file order: `num_folds` contiguous blocks, the first ones
    one pair longer when the count does not divide (as scikit-learn's unshuffled `KFold`)."""
    sizes = [len(block) for block in np.array_split(np.arange(num_pairs), num_folds)]
    return np.repeat(np.arange(num_folds, dtype=np.int32), sizes)


def _lfw_dir(data_root: PathLike, follow_symlinks_outside_root: bool) -> Path:
    require_dir(data_root, "lfw", "Data root")
    lfw_dir = require_dir(Path(data_root) / LFW_DIR, "lfw", "LFW folder")
    return confine_to_root(lfw_dir, data_root, follow_symlinks_outside_root=follow_symlinks_outside_root)


def _find_pairs_file(lfw_dir: Path, pairs_file: PathLike | None, data_root: PathLike, follow: bool) -> Path:
    if pairs_file is not None:
        path = Path(pairs_file)
        if not path.is_absolute() and not path.exists():
            path = lfw_dir / path
            # A pairs file the user names outside the root is their explicit choice; one found in it is confined.
            confine_to_root(path, data_root, follow_symlinks_outside_root=follow)
        return require_file(path, "lfw", "LFW pairs file")
    for name in LFW_PAIRS_FILES:
        if (lfw_dir / name).is_file():
            return confine_to_root(lfw_dir / name, data_root, follow_symlinks_outside_root=follow)
    raise missing_path_error(lfw_dir / LFW_PAIRS_FILES[0], "lfw", f"LFW pairs file ({' or '.join(LFW_PAIRS_FILES)})")


def load_lfw_pairs(
    data_root: PathLike,
    pairs_file: PathLike | None = None,
    *,
    strict: bool = False,
    follow_symlinks_outside_root: bool = False,
) -> Dataset:
    """Load LFW verification pairs: `image_a`, `image_b` (Image), `is_same` (bool), `fold` (int).

    Args:
        data_root: the data root holding `LFW/`, or a directory written by
            `python -m dcr_hf.data prepare --dataset lfw`.
        pairs_file: the pairs file (absolute, or relative to `LFW/`); by default `LFW/lfw_test_pair.txt`,
            else `LFW/pairs.txt`. Its format is detected from its content.
        strict: raise `FileNotFoundError` for pairs naming missing images instead of dropping them
            (dropped pairs are counted in one warning).

    `fold` is the set of the official file, or for the original list the contiguous tenth (in file
    order, after dropping pairs with missing images) that the verification protocol tests on.
    """
    prepared = load_prepared(data_root, "lfw", splits=("pairs",))
    if prepared is not None:
        if pairs_file is not None:
            raise DCRInputError(f"pairs_file= cannot be used with the prepared directory '{data_root}'.")
        return prepared["pairs"]

    follow = follow_symlinks_outside_root
    lfw_dir = _lfw_dir(data_root, follow)
    path = _find_pairs_file(lfw_dir, pairs_file, data_root, follow)
    image_dir = require_dir(lfw_dir / LFW_IMAGE_DIR, "lfw", "LFW image folder")

    first, second, same, sets = read_lfw_pairs(path, image_dir)
    confine_listed(sorted(set(first) | set(second)), image_dir, data_root, follow_symlinks_outside_root=follow)
    # LFW has ~13k images, so one stat per distinct image is cheap.
    exists = {name: (image_dir / name).is_file() for name in set(first) | set(second)}
    keep = np.asarray([exists[a] and exists[b] for a, b in zip(first, second)], dtype=bool)
    missing = sorted(name for name, found in exists.items() if not found)
    if missing:
        report_missing(
            [f"pair {i + 1}: {a} {b}" for i, (a, b) in enumerate(zip(first, second)) if not keep[i]],
            len(first),
            f"pairs (naming {len(missing)} missing images under '{image_dir}')",
            path,
            strict,
        )
    if not keep.any():
        raise DCRInputError(f"None of the {len(first)} pairs of '{path}' has both images under '{image_dir}'.")

    folds = np.asarray(sets, dtype=np.int32)[keep] if sets is not None else contiguous_folds(int(keep.sum()))
    columns = {
        "image_a": [str(image_dir / name) for name, k in zip(first, keep) if k],
        "image_b": [str(image_dir / name) for name, k in zip(second, keep) if k],
        "is_same": np.asarray(same, dtype=bool)[keep],
        "fold": folds,
    }
    return image_dataset(columns, PAIRS_FEATURES)


def load_lfw_identities(
    data_root: PathLike,
    min_images_per_identity: int = 2,
    *,
    cache_dir: PathLike | None = None,
    follow_symlinks_outside_root: bool = False,
) -> Dataset:
    """LFW images with one class per identity sub-folder, for retrieval: `image`, `label` (ClassLabel).

    Identities with fewer than `min_images_per_identity` images are left out (a query needs at least
    one other image of its identity); labels are contiguous over the kept identities, whose folder
    names are the class names. `data_root` may also be a directory prepared with `--dataset lfw`.
    Symbolic links pointing outside `data_root` are refused unless `follow_symlinks_outside_root`.
    """
    if min_images_per_identity < 1:
        raise DCRInputError(f"min_images_per_identity must be >= 1, got {min_images_per_identity}.")
    prepared = load_prepared(data_root, "lfw", splits=("identities",))
    if prepared is not None:
        dataset = prepared["identities"]
    else:
        lfw_dir = _lfw_dir(data_root, follow_symlinks_outside_root)
        image_dir = require_dir(lfw_dir / LFW_IMAGE_DIR, "lfw", "LFW image folder")
        dataset = load_image_folder(image_dir, cache_dir=cache_dir, data_root=data_root,
                                    follow_symlinks_outside_root=follow_symlinks_outside_root)

    labels = column_numpy(dataset, "label")
    names = dataset.features["label"].names
    counts = np.bincount(labels, minlength=len(names))
    kept = np.flatnonzero(counts >= min_images_per_identity)
    if len(kept) == len(names):
        return dataset
    if len(kept) == 0:
        raise DCRInputError(f"No LFW identity in '{data_root}' has {min_images_per_identity} or more images.")
    new_label = np.full(len(names), 0, dtype=np.int64)
    new_label[kept] = np.arange(len(kept))
    rows = np.flatnonzero(np.isin(labels, kept))
    return relabel(dataset, new_label[labels], ClassLabel(names=[names[i] for i in kept]), rows)
