"""Any face dataset: an identity-per-folder tree, a saved (prepared) dataset or a Hub dataset id.

Whatever the source, the result has an `image` (Image) and a `label` (ClassLabel) column, the
names the rest of `dcr_hf` (transforms, sampler, training) expects.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from datasets import ClassLabel, Dataset, DatasetDict, Features, Image, Value, load_dataset, load_from_disk

from ..errors_dcr import DCRFileNotFoundError, DCRInputError
from ._layout import (
    PathLike,
    column_numpy,
    image_extensions,
    is_saved_dataset,
    list_files,
    load_prepared,
    require_dir,
)


def _identity_tree(root: PathLike) -> Path:
    """`root` as a `Path` when it is a folder of identity sub-folders (no loose images)."""
    root = require_dir(root, "folder", "Image folder")
    extensions = image_extensions()
    loose = sorted(p.name for p in root.iterdir() if p.is_file() and p.suffix.lower() in extensions)
    if loose:
        raise DCRInputError(
            f"'{root}' holds images directly ({loose[0]}, ...); expected one sub-folder per identity, "
            f"e.g. '{root}/<identity>/{loose[0]}'."
        )
    if not any(p.is_dir() for p in root.iterdir()):
        raise DCRFileNotFoundError(f"'{root}' has no identity sub-folders; expected '{root}/<identity>/<image>'.")
    return root


def load_image_folder(
    root: PathLike,
    *,
    cache_dir: PathLike | None = None,
    data_root: PathLike | None = None,
    follow_symlinks_outside_root: bool = False,
) -> Dataset:
    """Load `root/<identity>/<image>` as `image` (Image) + `label` (ClassLabel named by the folders).

    Uses the `imagefolder` builder of `datasets` (offline, cached under `cache_dir`). Every file is
    forced into one `train` split, because the builder would otherwise take identity folders or file
    names containing "train"/"test"/"val" for split names. `root` may also be a directory prepared
    with `python -m dcr_hf.data prepare --dataset folder`. A symbolic link (image or identity folder)
    pointing outside `data_root` (default `root`) raises `DCRInputError` unless `follow_symlinks_outside_root`.
    """
    prepared = load_prepared(root, "folder", splits=("train",))
    if prepared is not None:
        return prepared["train"]
    root = _identity_tree(root)
    # One walk checks every link before the builder reads (and would embed) what they point to.
    if not follow_symlinks_outside_root:
        list_files(root, root if data_root is None else data_root)
    return load_dataset(
        "imagefolder",
        data_dir=str(root),
        data_files={"train": "**"},
        split="train",
        drop_labels=False,
        drop_metadata=True,
        cache_dir=None if cache_dir is None else str(cache_dir),
    )


class FolderIndex:
    """The file list of an identity-per-folder tree, compact: every relative path in one bytes blob
    with int64 `[images + 1]` offsets into it, and int32 `labels` `[images]` (identities in sorted
    folder order, as the `imagefolder` builder numbers them): ~12 bytes an image plus its path.
    An `indexed.ImageIndex`."""

    def __init__(self, root: str, names: list[str], blob: bytes, ends: np.ndarray, labels: np.ndarray) -> None:
        self.root, self._names, self._blob, self._ends, self.labels = root, names, blob, ends, labels

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def label_names(self) -> list[str]:
        return self._names

    def path(self, position: int) -> str:
        relative = self._blob[self._ends[position] : self._ends[position + 1]].decode("utf-8", "surrogateescape")
        return os.path.join(self.root, relative)

    def image(self, position: int) -> dict[str, Any]:
        return {"bytes": None, "path": self.path(position)}


def index_image_folder(root: PathLike, *, follow_symlinks_outside_root: bool = False) -> FolderIndex:
    """`root/<identity>/<image>` as a `FolderIndex`, in one walk of the tree and without a Python
    object per image kept: what `--streaming` trains from (images are read when their row is fetched).

    The layout is checked as `load_image_folder` checks it; a symbolic link pointing outside `root`
    raises `DCRInputError` unless `follow_symlinks_outside_root`.
    """
    root = _identity_tree(root)
    extensions = image_extensions()
    identities = sorted(entry.name for entry in os.scandir(root) if entry.is_dir())
    blob, ends, labels = bytearray(), [np.zeros(1, dtype=np.int64)], []
    for label, identity in enumerate(identities):
        folder = root / identity
        files = sorted(name for name in list_files(folder, root, follow_symlinks_outside_root=follow_symlinks_outside_root)
                       if os.path.splitext(name)[1].lower() in extensions)
        lengths = np.empty(len(files), dtype=np.int64)
        for position, name in enumerate(files):
            encoded = f"{identity}/{name}".encode("utf-8", "surrogateescape")
            blob += encoded
            lengths[position] = len(encoded)
        ends.append(ends[-1][-1:] + np.cumsum(lengths))
        labels.append(np.full(len(files), label, dtype=np.int32))
    return FolderIndex(str(root), identities, bytes(blob), np.concatenate(ends), np.concatenate(labels))


def _standardize(dataset: Dataset, image_column: str, label_column: str) -> Dataset:
    """Rename the image/label columns to `image`/`label` and give them `Image`/`ClassLabel` features."""
    for role, column in (("image", image_column), ("label", label_column)):
        if column not in dataset.column_names:
            raise DCRInputError(
                f"The dataset has no {role} column '{column}'; its columns are {dataset.column_names}. "
                f"Pass {role}_column= with the right name."
            )
    mapping = {old: new for old, new in ((image_column, "image"), (label_column, "label")) if old != new}
    clashes = [new for new in mapping.values() if new in dataset.column_names and new not in mapping]
    if clashes:
        raise DCRInputError(f"Cannot rename to {clashes}: the dataset already has such columns ({dataset.column_names}).")
    dataset = dataset.rename_columns(mapping) if mapping else dataset

    image = dataset.features["image"]
    if isinstance(image, Value) and image.dtype in ("string", "large_string"):
        dataset = dataset.cast_column("image", Image())
    elif not isinstance(image, Image):
        raise DCRInputError(f"Column '{image_column}' must hold images (Image feature or file paths), got {image}.")

    label = dataset.features["label"]
    if isinstance(label, ClassLabel):
        return dataset
    if isinstance(label, Value) and label.dtype in ("string", "large_string"):
        return dataset.class_encode_column("label")
    if isinstance(label, Value) and label.dtype.startswith(("int", "uint")):
        # A cast (not a re-encoding) keeps the integer ids and does not rewrite the images.
        values = column_numpy(dataset, "label")
        if values.size and values.min() < 0:
            raise DCRInputError(f"Column '{label_column}' has negative labels (min {values.min()}).")
        num_classes = int(values.max()) + 1 if values.size else 0
        return dataset.cast_column("label", ClassLabel(names=[str(i) for i in range(num_classes)]))
    raise DCRInputError(f"Column '{label_column}' must hold class labels (ClassLabel, int or str), got {label}.")


def _looks_like_path(name_or_path: str) -> bool:
    # Hub ids are "name" or "owner/name"; anything else that is not on disk is a mistyped path.
    return os.path.isabs(name_or_path) or name_or_path.startswith((".", "~")) or name_or_path.count("/") > 1


def load_face_dataset(
    name_or_path: PathLike,
    split: str | None = None,
    image_column: str = "image",
    label_column: str = "label",
    *,
    cache_dir: PathLike | None = None,
    follow_symlinks_outside_root: bool = False,
) -> Dataset | DatasetDict:
    """Load a face dataset from a folder tree, a saved dataset directory or a Hub dataset id.

    Args:
        name_or_path: an identity-per-folder tree, a directory written by `save_to_disk` (including
            `python -m dcr_hf.data prepare`), or a Hub dataset id (`owner/name`).
        split: the split to return; `None` returns what the source holds (a `DatasetDict` for saved
            dataset dicts and Hub datasets, a `Dataset` for a folder tree).
        image_column, label_column: the source's column names, renamed to `image` and `label`.

    The label column becomes a `ClassLabel` (string labels are encoded, integer ids kept). A folder
    tree's symbolic links must stay inside it unless `follow_symlinks_outside_root`.
    """
    name = str(name_or_path)
    path = Path(name).expanduser()
    if path.is_dir():
        loaded = load_from_disk(str(path)) if is_saved_dataset(path) else load_image_folder(
            path, cache_dir=cache_dir, follow_symlinks_outside_root=follow_symlinks_outside_root
        )
    elif path.exists() or _looks_like_path(name):
        raise DCRFileNotFoundError(
            f"'{name}' is not a directory; expected an identity-per-folder tree, a saved dataset "
            "directory or a Hub dataset id ('owner/name')."
        )
    else:
        loaded = load_dataset(name, split=split, cache_dir=None if cache_dir is None else str(cache_dir))

    if isinstance(loaded, DatasetDict):
        if split is not None:
            if split not in loaded:
                raise DCRInputError(f"'{name}' has no split '{split}'; its splits are {list(loaded)}.")
            loaded = loaded[split]
    if isinstance(loaded, DatasetDict):
        return DatasetDict({key: _standardize(value, image_column, label_column) for key, value in loaded.items()})
    return _standardize(loaded, image_column, label_column)


def holds_data_files(path: PathLike) -> bool:
    """Whether a folder is in the Hub's dataset layout (`*.parquet` shards at its top or under `data/`,
    as `push_to_hub` writes them), which `load_dataset(path, streaming=True)` streams."""
    path = Path(path)
    return path.is_dir() and (any(path.glob("*.parquet")) or any(path.glob("data/**/*.parquet")))


def load_face_stream(name_or_path: PathLike, image_column: str = "image", label_column: str = "label",
                     num_classes: int | None = None, split: str = "train"):
    """Stream the `split` of a Hub dataset id or a folder in the Hub's layout (`holds_data_files`)
    without downloading it or reading its index: a `datasets.IterableDataset` of `image` (undecoded,
    `{"bytes", "path"}`) and `label` (a `ClassLabel`) only.

    The number of classes comes from the label column's `ClassLabel`, or `num_classes` for an int
    column (`--num_classes`); a missing column, a label column of another type, or an int column
    without `num_classes`, is one `DCRInputError`, before any image is read.
    """
    stream = load_dataset(str(name_or_path), split=split, streaming=True)
    features = stream.features
    if features is None:  # a format without a schema (JSON lines, ...): nothing names the columns up front
        raise DCRInputError(f"the streamed dataset {name_or_path} declares no features; stream parquet shards or an "
                            "imagefolder (their features are known before any row is read).")
    for option, column in (("--image_column", image_column), ("--label_column", label_column)):
        if column not in features:
            raise DCRInputError(f"{option} {column!r}: the streamed dataset {name_or_path} has no such column; "
                                f"it has {list(features)}.")
    label = features[label_column]
    if isinstance(label, ClassLabel):
        if num_classes is not None and num_classes != label.num_classes:
            raise DCRInputError(f"--num_classes {num_classes}: the label column {label_column!r} of {name_or_path} "
                                f"is a ClassLabel of {label.num_classes} classes; leave --num_classes out.")
    elif isinstance(label, Value) and label.dtype.startswith(("int", "uint")):
        if num_classes is None:
            raise DCRInputError(f"the label column {label_column!r} of {name_or_path} holds ints, not a ClassLabel: "
                                "give --num_classes N (its labels are 0..N-1) to stream it.")
        label = ClassLabel(num_classes=num_classes)
    else:
        raise DCRInputError(f"--label_column {label_column!r} of {name_or_path} must hold class ids (a ClassLabel, or "
                            f"ints with --num_classes) to stream it, got {label}.")
    if not isinstance(features[image_column], Image):
        raise DCRInputError(f"--image_column {image_column!r} of {name_or_path} must be an Image column, "
                            f"got {features[image_column]}.")
    stream = stream.select_columns([image_column, label_column])
    if image_column != "image":
        stream = stream.rename_column(image_column, "image")
    if label_column != "label":
        stream = stream.rename_column(label_column, "label")
    return stream.cast(Features({"image": Image(decode=False), "label": label}))
