"""Write a dataset once with its image bytes embedded in a few large Arrow shards.

Training then reads a handful of files instead of ~450k small JPEGs, and the prepared directory no
longer needs the source tree. Every `load_*` loader accepts the prepared directory as its data root.

Only decodable images are embedded, and the output appears only when it is complete: it is written
to a temporary folder next to the target and swapped in at the end, so a failed run (a malformed
list, an unreadable image, a full disk) leaves an earlier prepared set untouched.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import PIL.Image
from datasets import DatasetDict, Image
from transformers.utils import logging

from ..alignment_dcr import TEMPLATE_SIZE
from ..errors_dcr import DCRFileExistsError, DCRInputError
from ._layout import PathLike, is_saved_dataset, read_marker, write_marker
from .casia import CASIA_NUM_SUBJECTS, load_casia
from .generic import load_image_folder
from .landmarks import align_dataset_dict, read_landmarks_file
from .lfw import load_lfw_identities, load_lfw_pairs
from .registry import PREPARABLE_DATASETS
from .scface import load_scface_images

logger = logging.get_logger(__name__)


def build_dataset_dict(
    dataset: str,
    data_root: PathLike,
    *,
    fold: int | None = None,
    num_subjects: int = CASIA_NUM_SUBJECTS,
    pairs_file: PathLike | None = None,
    strict: bool = False,
    follow_symlinks_outside_root: bool = False,
    cache_dir: PathLike | None = None,
) -> DatasetDict:
    """The `DatasetDict` that `prepare_dataset` writes for `dataset` (images still as file paths).

    casia: `train` (+ `validation` for fold 0..9); lfw: `pairs` + `identities` (every identity);
    scface: `mugshot` + `surveillance` (every subject; the 50/80 split is applied on load);
    folder: `train`; recordio: `train` (the image bytes already embedded, each checked to decode;
    written to Arrow under `cache_dir`, default the `datasets` cache). Symbolic links pointing outside `data_root` are refused unless
    `follow_symlinks_outside_root`.
    """
    links = {"follow_symlinks_outside_root": follow_symlinks_outside_root}
    if dataset == "casia":
        return load_casia(data_root, fold=fold, num_subjects=num_subjects, strict=strict, **links)
    if dataset == "lfw":
        return DatasetDict(
            {
                "pairs": load_lfw_pairs(data_root, pairs_file, strict=strict, **links),
                "identities": load_lfw_identities(data_root, min_images_per_identity=1, **links),
            }
        )
    if dataset == "scface":
        return load_scface_images(data_root, **links)
    if dataset == "folder":
        return DatasetDict({"train": load_image_folder(data_root, **links)})
    if dataset == "recordio":
        from .recordio import pack_to_dataset

        return DatasetDict({"train": pack_to_dataset(data_root, cache_dir=cache_dir, **links)})
    raise DCRInputError(f"Unknown dataset '{dataset}'; expected one of {PREPARABLE_DATASETS}.")


def _per_split_shards(dataset_dict: DatasetDict, num_shards: int | None) -> dict[str, int] | None:
    # save_to_disk cannot write more shards than rows, and small splits (validation) need fewer.
    if num_shards is None:
        return None
    return {name: max(1, min(num_shards, len(split))) for name, split in dataset_dict.items()}


def undecodable_images(dataset_dict: DatasetDict, limit: int = 20) -> tuple[int, list[str]]:
    """How many distinct image files of `dataset_dict` PIL cannot decode, and the first `limit` of them
    (`path: error`). Images are given as paths (before `save_to_disk` embeds them)."""
    failures: list[str] = []
    count = 0
    seen: set[str] = set()
    for split in dataset_dict.values():
        for column, feature in split.features.items():
            if not isinstance(feature, Image):
                continue
            for value in split.cast_column(column, Image(decode=False))[column]:
                path = value["path"] if isinstance(value, dict) else value
                if path is None or path in seen:
                    continue
                seen.add(path)
                try:
                    with PIL.Image.open(path) as image:
                        image.verify()
                except (OSError, SyntaxError, ValueError, EOFError, PIL.Image.DecompressionBombError) as error:
                    count += 1
                    if len(failures) < limit:
                        failures.append(f"{path}: {error}")
    return count, failures


def _check_output_dir(output_dir: Path, overwrite: bool) -> None:
    if output_dir.exists() and not output_dir.is_dir():
        raise DCRFileExistsError(f"Output '{output_dir}' is a file; expected a directory to write the dataset to.")
    if output_dir.exists() and any(output_dir.iterdir()):
        if not overwrite:
            raise DCRFileExistsError(
                f"Output directory '{output_dir}' is not empty; pass overwrite=True (--overwrite) to replace it."
            )
        # Only ever replace what this command wrote, never an arbitrary user directory.
        if read_marker(output_dir) is None:
            raise DCRFileExistsError(
                f"'{output_dir}' is not empty and was not written by this command; refusing to replace it."
            )


def _swap_in(staging: Path, output_dir: Path) -> None:
    """Put the complete `staging` folder at `output_dir`, replacing an earlier prepared set last."""
    if output_dir.exists():
        retired = output_dir.with_name(f".{output_dir.name}.replaced-{uuid.uuid4().hex[:8]}")
        os.replace(output_dir, retired)
        os.replace(staging, output_dir)
        shutil.rmtree(retired)
    else:
        os.replace(staging, output_dir)


def prepare_dataset(
    dataset: str,
    data_root: PathLike,
    output_dir: PathLike,
    *,
    fold: int | None = None,
    num_subjects: int = CASIA_NUM_SUBJECTS,
    pairs_file: PathLike | None = None,
    strict: bool = False,
    follow_symlinks_outside_root: bool = False,
    num_shards: int | None = None,
    max_shard_size: str | int | None = None,
    num_proc: int | None = None,
    overwrite: bool = False,
    landmarks_file: PathLike | None = None,
    align_size: int = TEMPLATE_SIZE,
    push_to_hub: str | None = None,
    private: bool | None = None,
    token: str | None = None,
    revision: str | None = None,
) -> DatasetDict:
    """Load `dataset` from its layout under `data_root` and save it to `output_dir` with embedded bytes.

    `num_shards` (per split, capped at the split's rows) or `max_shard_size` (e.g. "500MB") size the
    Arrow shards. A symbolic link pointing outside `data_root` stops it before anything is written
    (unless `follow_symlinks_outside_root`). Every image file is checked to decode first (`ValueError`
    listing those that do not).
    With `landmarks_file` (see `dcr_hf.data.landmarks`: one line `<path relative to data_root> x1 y1
    ... x5 y5` per image) every image is stored aligned to the ArcFace template, `align_size` square
    (112 by default, the crop of insightface's and AdaFace's trunks), as PNG.
    With `push_to_hub` the prepared dict is also uploaded (`DatasetDict.push_to_hub`, Parquet with
    embedded bytes) with `private`, `token` and `revision`; a failed upload raises `HubPushError`
    saying how to push the saved folder later. Returns the prepared dict, read back from `output_dir`.
    """
    if num_shards is not None and max_shard_size is not None:
        raise DCRInputError("Pass either num_shards or max_shard_size, not both.")
    if num_shards is not None and num_shards < 1:
        raise DCRInputError(f"num_shards must be >= 1, got {num_shards}.")
    if isinstance(align_size, bool) or not isinstance(align_size, int) or align_size < 2:
        raise DCRInputError(f"align_size must be an integer >= 2 (pixels), got {align_size!r}.")
    # Read (and every line checked) before the dataset is listed: a malformed line fails at once.
    landmarks = read_landmarks_file(landmarks_file, data_root) if landmarks_file is not None else None
    output_dir = Path(output_dir)
    _check_output_dir(output_dir, overwrite)
    if is_saved_dataset(data_root):
        raise DCRInputError(f"'{data_root}' is already a prepared directory; point --data_root at the raw data root.")

    # A RecordIO pack is copied to Arrow once before `save_to_disk`: in a scratch folder next to the
    # output (same disk), removed at the end, rather than a lasting copy in the user's datasets cache.
    scratch = output_dir.with_name(f".{output_dir.name}.scratch-{uuid.uuid4().hex[:8]}") if dataset == "recordio" else None
    try:
        return _prepare(dataset, data_root, output_dir, scratch, fold=fold, num_subjects=num_subjects,
                        pairs_file=pairs_file, strict=strict, follow_symlinks_outside_root=follow_symlinks_outside_root,
                        num_shards=num_shards, max_shard_size=max_shard_size, num_proc=num_proc, push_to_hub=push_to_hub,
                        private=private, token=token, revision=revision, landmarks=landmarks,
                        landmarks_file=landmarks_file, align_size=align_size)
    finally:
        if scratch is not None and scratch.exists():
            shutil.rmtree(scratch)


def _prepare(dataset: str, data_root: PathLike, output_dir: Path, scratch: Path | None, *, fold, num_subjects, pairs_file,
             strict, follow_symlinks_outside_root, num_shards, max_shard_size, num_proc, push_to_hub, private, token,
             revision, landmarks, landmarks_file, align_size) -> DatasetDict:
    dataset_dict = build_dataset_dict(
        dataset, data_root, fold=fold, num_subjects=num_subjects, pairs_file=pairs_file, strict=strict,
        follow_symlinks_outside_root=follow_symlinks_outside_root, cache_dir=scratch,
    )
    count, failures = undecodable_images(dataset_dict)
    if count:
        shown = "\n  ".join(failures) + (f"\n  ... and {count - len(failures)} more" if count > len(failures) else "")
        raise DCRInputError(
            f"{count} image file(s) under '{data_root}' cannot be decoded, so nothing was written; remove them "
            f"from the list or replace them:\n  {shown}"
        )
    if landmarks is not None:
        dataset_dict = align_dataset_dict(dataset_dict, data_root, landmarks, align_size, num_proc=num_proc)
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = output_dir.with_name(f".{output_dir.name}.partial-{uuid.uuid4().hex[:8]}")
    try:
        # save_to_disk embeds the bytes of local image files in the Arrow shards.
        dataset_dict.save_to_disk(
            str(staging),
            num_shards=_per_split_shards(dataset_dict, num_shards),
            max_shard_size=max_shard_size,
            num_proc=num_proc,
        )
        options = {"fold": fold, "num_subjects": num_subjects} if dataset == "casia" else {}
        if follow_symlinks_outside_root:  # the prepared set says that links outside its root were read
            options["follow_symlinks_outside_root"] = True
        if landmarks is not None:  # and that its faces are aligned crops, not the source images
            options["aligned"] = {"template": "arcface", "image_size": align_size, "landmarks_file": Path(landmarks_file).name}
        write_marker(staging, dataset, options)
        DatasetDict.load_from_disk(str(staging))  # complete and readable before it replaces anything
        _swap_in(staging, output_dir)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    prepared = DatasetDict.load_from_disk(str(output_dir))
    logger.info(f"Prepared {dataset} in {output_dir}.")
    if push_to_hub is not None:
        _push(prepared, output_dir, push_to_hub, private=private, token=token, revision=revision,
              num_shards=_per_split_shards(prepared, num_shards), max_shard_size=max_shard_size)
    return prepared


def push_prepared(
    prepared: DatasetDict | PathLike,
    repo_id: str,
    *,
    private: bool | None = None,
    token: str | None = None,
    revision: str | None = None,
    num_shards: dict[str, int] | None = None,
    max_shard_size: str | int | None = None,
) -> None:
    """Upload a prepared dict (or the folder `prepare_dataset` wrote) to the Hub dataset repo `repo_id`.

    Splits that share their columns go up as one dataset (`DatasetDict.push_to_hub`); splits that do
    not (LFW's pairs and identities, SCface's mugshots and captures, a CASIA fold's disjoint labels)
    go up as one config each, named after the split (`load_dataset(repo_id, "pairs")`), since a
    Hub dataset config holds one schema.
    """
    if not isinstance(prepared, DatasetDict):
        prepared = DatasetDict.load_from_disk(str(prepared))
    options = dict(private=private, token=token, revision=revision, max_shard_size=max_shard_size)
    if len({repr(split.features) for split in prepared.values()}) == 1:
        prepared.push_to_hub(repo_id, num_shards=num_shards, **options)
        return
    for name, split in prepared.items():
        split.push_to_hub(repo_id, config_name=name, split=name, num_shards=(num_shards or {}).get(name), **options)


def _push(prepared: DatasetDict, output_dir: Path, repo_id: str, **push_kwargs) -> None:
    """`push_prepared`; a Hub failure says the prepared folder is saved and how to push it later."""
    from ..hub import HubPushError, hub_failures, hub_reason

    try:
        push_prepared(prepared, repo_id, **push_kwargs)
    except hub_failures() as error:
        options = "".join(f", {key}={push_kwargs[key]!r}" for key in ("private", "revision") if push_kwargs.get(key))
        later = (f"python -c \"from dcr_hf.data.prepare import push_prepared; push_prepared('{output_dir}', "
                 f"'{repo_id}'{options})\"")
        raise HubPushError(
            f"pushing to {repo_id} failed ({hub_reason(error)}); the prepared dataset is saved in {output_dir}. "
            f"Push it later with: {later}"
        ) from error
