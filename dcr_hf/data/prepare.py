"""Write a dataset once with its image bytes embedded in a few large Arrow shards.

Training then reads a handful of files instead of ~450k small JPEGs, and the prepared directory no
longer needs the source tree. Every `load_*` loader accepts the prepared directory as its data root.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from datasets import DatasetDict

from ._layout import PathLike, is_saved_dataset, read_marker, write_marker
from .casia import CASIA_NUM_SUBJECTS, load_casia
from .generic import load_image_folder
from .lfw import load_lfw_identities, load_lfw_pairs
from .registry import PREPARABLE_DATASETS
from .scface import load_scface_images


def build_dataset_dict(
    dataset: str,
    data_root: PathLike,
    *,
    fold: int | None = None,
    num_subjects: int = CASIA_NUM_SUBJECTS,
    pairs_file: PathLike | None = None,
    strict: bool = False,
) -> DatasetDict:
    """The `DatasetDict` that `prepare_dataset` writes for `dataset` (images still as file paths).

    casia: `train` (+ `validation` for fold 0..9); lfw: `pairs` + `identities` (every identity);
    scface: `mugshot` + `surveillance` (every subject; the 50/80 split is applied on load);
    folder: `train`.
    """
    if dataset == "casia":
        return load_casia(data_root, fold=fold, num_subjects=num_subjects, strict=strict)
    if dataset == "lfw":
        return DatasetDict(
            {
                "pairs": load_lfw_pairs(data_root, pairs_file, strict=strict),
                "identities": load_lfw_identities(data_root, min_images_per_identity=1),
            }
        )
    if dataset == "scface":
        return load_scface_images(data_root)
    if dataset == "folder":
        return DatasetDict({"train": load_image_folder(data_root)})
    raise ValueError(f"Unknown dataset '{dataset}'; expected one of {PREPARABLE_DATASETS}.")


def _per_split_shards(dataset_dict: DatasetDict, num_shards: int | None) -> dict[str, int] | None:
    # save_to_disk cannot write more shards than rows, and small splits (validation) need fewer.
    if num_shards is None:
        return None
    return {name: max(1, min(num_shards, len(split))) for name, split in dataset_dict.items()}


def prepare_dataset(
    dataset: str,
    data_root: PathLike,
    output_dir: PathLike,
    *,
    fold: int | None = None,
    num_subjects: int = CASIA_NUM_SUBJECTS,
    pairs_file: PathLike | None = None,
    strict: bool = False,
    num_shards: int | None = None,
    max_shard_size: str | int | None = None,
    num_proc: int | None = None,
    overwrite: bool = False,
    push_to_hub: str | None = None,
    private: bool | None = None,
) -> DatasetDict:
    """Load `dataset` from its layout under `data_root` and save it to `output_dir` with embedded bytes.

    `num_shards` (per split, capped at the split's rows) or `max_shard_size` (e.g. "500MB") size the
    Arrow shards. With `push_to_hub` the prepared dict is also uploaded (`DatasetDict.push_to_hub`,
    Parquet with embedded bytes). Returns the prepared dict, read back from `output_dir`.
    """
    if num_shards is not None and max_shard_size is not None:
        raise ValueError("Pass either num_shards or max_shard_size, not both.")
    if num_shards is not None and num_shards < 1:
        raise ValueError(f"num_shards must be >= 1, got {num_shards}.")
    output_dir = Path(output_dir)
    if output_dir.exists() and any(output_dir.iterdir()):
        if not overwrite:
            raise FileExistsError(
                f"Output directory '{output_dir}' is not empty; pass overwrite=True (--overwrite) to replace it."
            )
        # Only ever delete what this command wrote, never an arbitrary user directory.
        if read_marker(output_dir) is None:
            raise FileExistsError(
                f"'{output_dir}' is not empty and was not written by this command; refusing to delete it."
            )
        shutil.rmtree(output_dir)
    if is_saved_dataset(data_root):
        raise ValueError(f"'{data_root}' is already a prepared directory; point --data_root at the raw data root.")

    dataset_dict = build_dataset_dict(
        dataset, data_root, fold=fold, num_subjects=num_subjects, pairs_file=pairs_file, strict=strict
    )
    # save_to_disk embeds the bytes of local image files in the Arrow shards.
    dataset_dict.save_to_disk(
        str(output_dir),
        num_shards=_per_split_shards(dataset_dict, num_shards),
        max_shard_size=max_shard_size,
        num_proc=num_proc,
    )
    options = {"fold": fold, "num_subjects": num_subjects} if dataset == "casia" else {}
    write_marker(output_dir, dataset, options)
    prepared = DatasetDict.load_from_disk(str(output_dir))
    if push_to_hub is not None:
        prepared.push_to_hub(
            push_to_hub,
            private=private,
            num_shards=_per_split_shards(prepared, num_shards),
            max_shard_size=max_shard_size,
        )
    return prepared
