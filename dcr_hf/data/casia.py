"""CASIA-WebFace: the training set, with the original subject-level 10-fold split.

Layout (under the data root): `Casia/120x120_120/<relative/path.jpg>` and
`Casia/casia_cleaned_list.txt` with one `relative/path.jpg subject_id` line per image.

Labels: each split gets a contiguous `ClassLabel` 0..n-1 over its own subjects (sorted by id) whose
names are the original subject ids as strings, so a classifier trained on the `train` split has
exactly `n` outputs and `features["label"].int2str(label)` gives back the id from the list file.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow as pa
from datasets import Dataset, DatasetDict, concatenate_datasets

from ..errors_dcr import DCRInputError
from ._layout import (
    PathLike,
    column_numpy,
    confine_listed,
    confine_to_root,
    contiguous_labels,
    image_dataset,
    list_files,
    load_prepared,
    malformed_line,
    read_lines,
    read_marker,
    relabel,
    relative_image_path,
    report_missing,
    require_dir,
    require_file,
)
from .features import identity_features

CASIA_DIR = "Casia"
CASIA_IMAGE_DIR = "120x120_120"
CASIA_LIST_FILE = "casia_cleaned_list.txt"
CASIA_NUM_SUBJECTS = 10575
NUM_FOLDS = 10


def casia_validation_mask(
    subjects: np.ndarray, fold: int | None, num_subjects: int = CASIA_NUM_SUBJECTS
) -> np.ndarray:
    """Which of `subjects` ([n] int) are validation subjects for `fold`.

    Fold k in 0..9 takes the subject ids in [k/10 * num_subjects, (k+1)/10 * num_subjects); `None` or
    k >= 10 takes none (train on everything, as the published recipe with k = 11).
    """
    subjects = np.asarray(subjects)
    if fold is None or fold >= NUM_FOLDS:
        return np.zeros(subjects.shape, dtype=bool)
    if fold < 0:
        raise DCRInputError(f"fold must be None or >= 0 (0..9 hold out a tenth of the subjects), got {fold}.")
    low, high = fold * num_subjects / NUM_FOLDS, (fold + 1) * num_subjects / NUM_FOLDS
    return (subjects >= low) & (subjects < high)


def read_casia_list(
    list_file: PathLike, num_subjects: int = CASIA_NUM_SUBJECTS, image_dir: PathLike | None = None
) -> tuple[list[str], np.ndarray]:
    """Parse the CASIA list: relative image paths and their subject ids ([n] int64).

    Raises `ValueError` with the file and line number for a malformed line, an id outside
    [0, num_subjects), or a path that leaves the image folder (absolute or with `..`).
    """
    expected = "'<relative/path.jpg> <subject_id>'"
    paths: list[str] = []
    subjects: list[int] = []
    image_dir = image_dir if image_dir is not None else Path(list_file).parent / CASIA_IMAGE_DIR
    for line_number, line in read_lines(list_file):
        # rsplit keeps paths that contain spaces intact; the id is always the last field.
        fields = line.rsplit(None, 1)
        if len(fields) != 2:
            raise malformed_line(list_file, line_number, line, expected)
        try:
            subject = int(fields[1])
        except ValueError:
            raise malformed_line(list_file, line_number, line, expected) from None
        if not 0 <= subject < num_subjects:
            raise DCRInputError(
                f"{list_file}:{line_number}: subject id {subject} is outside [0, {num_subjects}); "
                f"pass num_subjects= with the number of subjects of your list."
            )
        paths.append(relative_image_path(fields[0].strip(), list_file, line_number, image_dir))
        subjects.append(subject)
    return paths, np.asarray(subjects, dtype=np.int64)


def _load_from_layout(
    data_root: Path,
    fold: int | None,
    num_subjects: int,
    list_file: PathLike | None,
    verify_files: bool,
    strict: bool,
    follow: bool,
) -> DatasetDict:
    require_dir(data_root, "casia", "Data root")
    casia_dir = confine_to_root(
        require_dir(data_root / CASIA_DIR, "casia", "CASIA folder"), data_root, follow_symlinks_outside_root=follow
    )
    list_path = require_file(
        list_file if list_file is not None else casia_dir / CASIA_LIST_FILE, "casia", "CASIA list file"
    )
    if list_file is None:  # a list the user names is their explicit choice; the default one lies in the root
        confine_to_root(list_path, data_root, follow_symlinks_outside_root=follow)
    image_dir = require_dir(casia_dir / CASIA_IMAGE_DIR, "casia", "CASIA image folder")

    paths, subjects = read_casia_list(list_path, num_subjects, image_dir)
    if not verify_files:
        confine_listed(paths, image_dir, data_root, follow_symlinks_outside_root=follow)
    else:
        present = list_files(image_dir, data_root, follow_symlinks_outside_root=follow)
        keep = np.fromiter((path in present for path in paths), dtype=bool, count=len(paths))
        report_missing([p for p, k in zip(paths, keep) if not k], len(paths), "images", list_path, strict)
        paths = [p for p, k in zip(paths, keep) if k]
        subjects = subjects[keep]
    if not paths:
        raise DCRInputError(f"'{list_path}' lists no usable images.")

    # Plain string concatenation: pathlib joins cost ~20 s for CASIA's 450k paths.
    prefix = str(image_dir) + os.sep
    absolute = pa.array([prefix + path for path in paths], type=pa.string())
    validation = casia_validation_mask(subjects, fold, num_subjects)
    splits = {"train": ~validation, "validation": validation} if validation.any() else {"train": ~validation}
    result = DatasetDict()
    for name, mask in splits.items():
        labels, feature = contiguous_labels(subjects[mask])
        result[name] = image_dataset(
            {"image": absolute.filter(pa.array(mask)), "label": labels}, identity_features(feature)
        )
    return result


def _subjects_of(split: Dataset) -> np.ndarray:
    names = np.asarray(split.features["label"].names, dtype=np.int64)
    return names[column_numpy(split, "label")]


def _resplit_prepared(prepared: DatasetDict, fold: int | None, num_subjects: int) -> DatasetDict:
    """Apply `fold` to a prepared CASIA directory, whatever fold it was prepared with.

    The label names carry the original subject ids, so the splits can be merged and cut again;
    only labels and an indices mapping are written, never the embedded image bytes.
    """
    subjects = {name: _subjects_of(split) for name, split in prepared.items()}
    everything = np.concatenate(list(subjects.values()))
    if everything.size and (everything.min() < 0 or everything.max() >= num_subjects):
        raise DCRInputError(
            f"Prepared CASIA subject ids span [{everything.min()}, {everything.max()}], outside [0, {num_subjects}); "
            "pass num_subjects= with the number of subjects the directory was prepared with."
        )
    wanted = {"train": ~casia_validation_mask(everything, fold, num_subjects)}
    if not wanted["train"].all():
        wanted["validation"] = ~wanted["train"]

    # Already in the requested split: return as is (no indices mapping, fastest reads).
    if set(prepared) == set(wanted) and all(
        set(np.unique(subjects[name]).tolist()) == set(np.unique(everything[wanted[name]]).tolist()) for name in wanted
    ):
        return prepared

    merged = concatenate_datasets([prepared[name].remove_columns("label") for name in prepared])
    result = DatasetDict()
    for name, mask in wanted.items():
        rows = np.flatnonzero(mask)
        labels, feature = contiguous_labels(everything[rows])
        full_labels = np.zeros(len(everything), dtype=np.int64)
        full_labels[rows] = labels
        result[name] = relabel(merged, full_labels, feature, rows)
    return result


def load_casia(
    data_root: PathLike,
    fold: int | None = None,
    num_subjects: int | None = None,
    *,
    list_file: PathLike | None = None,
    verify_files: bool = True,
    strict: bool = False,
    follow_symlinks_outside_root: bool = False,
) -> DatasetDict:
    """Load CASIA-WebFace as a `DatasetDict` with `image` (Image) and `label` (ClassLabel) columns.

    Args:
        data_root: the data root holding `Casia/`, or a directory written by
            `python -m dcr_hf.data prepare --dataset casia` (any fold; re-split on load).
        fold: 0..9 -> `train` + `validation` (subjects in the k-th tenth of [0, num_subjects));
            `None` or >= 10 -> `train` only, all subjects.
        num_subjects: N of the fold formula; subject ids must lie in [0, N). Defaults to 10575, or
            for a prepared directory to the value it was prepared with.
        list_file: another list file instead of `Casia/casia_cleaned_list.txt`.
        verify_files: check that listed images exist with one walk of the image folder; listed but
            missing images are dropped and counted in one warning.
        strict: raise `FileNotFoundError` for missing images instead of dropping them.
        follow_symlinks_outside_root: read files whose symbolic links point outside `data_root`
            (refused by default with `DCRInputError` naming the link).

    Each split's labels are contiguous 0..n-1 over its subjects; label names are the subject ids.
    """
    if fold is not None and fold < 0:
        raise DCRInputError(f"fold must be None or >= 0 (0..9 hold out a tenth of the subjects), got {fold}.")
    prepared = load_prepared(data_root, "casia", splits=("train",))
    if prepared is not None:
        if list_file is not None:
            raise DCRInputError(f"list_file= cannot be used with the prepared directory '{data_root}'.")
        if num_subjects is None:
            marker = read_marker(data_root) or {}
            num_subjects = marker.get("options", {}).get("num_subjects") or CASIA_NUM_SUBJECTS
        return _resplit_prepared(prepared, fold, num_subjects)
    num_subjects = CASIA_NUM_SUBJECTS if num_subjects is None else num_subjects
    return _load_from_layout(
        Path(data_root), fold, num_subjects, list_file, verify_files, strict, follow_symlinks_outside_root
    )
