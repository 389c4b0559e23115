"""SCface: mugshot gallery vs surveillance probes, and the fine-tuning form of the original recipe.

Layout (under the data root): `SCface/mugshot_frontal_cropped_all/NNN_frontal.JPG` and
`SCface/surveillance_cameras_distance_{1,2,3}/**/NNN_camK_D.jpg` (camera K, distance D; d1 = 4.2 m is
the farthest). Subject label = int(NNN) - 1; subjects 0..49 are for fine-tuning, 50..129 for testing.

`label` is one `ClassLabel` over all subjects (names "001".."130") in the gallery and probes, so a
probe's label is the index of its subject and matches the gallery's. The fine-tuning form instead has
contiguous labels over its own subjects (equal to int(NNN) - 1 for the default 0..49 split).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from datasets import ClassLabel, Dataset, DatasetDict
from transformers.utils import logging

from ..errors_dcr import DCRInputError
from ._layout import (
    PathLike,
    column_numpy,
    confine_to_root,
    image_dataset,
    image_extensions,
    list_files,
    load_prepared,
    report_missing,
    require_dir,
)
from .features import finetune_features, gallery_features, probe_features

logger = logging.get_logger(__name__)

SCFACE_DIR = "SCface"
MUGSHOT_DIR = "mugshot_frontal_cropped_all"
SURVEILLANCE_DIR = "surveillance_cameras_distance_{}"
DISTANCES = (1, 2, 3)
CAMERAS = (1, 2, 3, 4, 5)
SCFACE_NUM_SUBJECTS = 130
NUM_FINETUNE_SUBJECTS = 50

_MUGSHOT_NAME = re.compile(r"^(\d+)_frontal\.\w+$")
_SURVEILLANCE_NAME = re.compile(r"^(\d+)_cam(\d+)_(\d+)\.\w+$")


def _label_feature(num_subjects: int) -> ClassLabel:
    return ClassLabel(names=[f"{subject:03d}" for subject in range(1, num_subjects + 1)])


def _subject_label(subject: str, path: Path) -> int:
    label = int(subject) - 1
    if label < 0:
        raise DCRInputError(f"'{path}': subject number {subject} must be >= 1 (label = subject - 1).")
    return label


def _scan_mugshots(mugshot_dir: Path, extensions: frozenset[str], unrecognized: list[str]) -> dict[int, tuple[str, Path]]:
    """`{label: (subject number as written, path)}` of the `NNN_frontal.*` mugshots."""
    mugshots: dict[int, tuple[str, Path]] = {}
    for path in sorted(mugshot_dir.iterdir()):
        if path.suffix.lower() not in extensions:
            continue
        match = _MUGSHOT_NAME.match(path.name)
        if match is None:
            unrecognized.append(str(path))
            continue
        label = _subject_label(match.group(1), path)
        if label in mugshots:
            raise DCRInputError(f"Two mugshots for subject {match.group(1)}: '{mugshots[label][1]}' and '{path}'.")
        mugshots[label] = (match.group(1), path)
    return mugshots


def _scan_surveillance(
    scface_dir: Path, extensions: frozenset[str], unrecognized: list[str], data_root: PathLike, follow: bool
) -> dict[tuple[int, int, int], tuple[str, Path]]:
    """`{(label, camera, distance): (subject number as written, path)}` of the `NNN_camK_D.*` images."""
    shots: dict[tuple[int, int, int], tuple[str, Path]] = {}
    for distance in DISTANCES:
        distance_dir = require_dir(
            scface_dir / SURVEILLANCE_DIR.format(distance), "scface", "SCface surveillance folder"
        )
        # The walk refuses links leaving the data root (folder links are not descended, as os.walk).
        for relative in sorted(list_files(distance_dir, data_root, follow_symlinks_outside_root=follow)):
            path = distance_dir / relative
            if path.suffix.lower() not in extensions:
                continue
            match = _SURVEILLANCE_NAME.match(path.name)
            if match is None:
                unrecognized.append(str(path))
                continue
            subject, camera, file_distance = match.group(1), int(match.group(2)), int(match.group(3))
            if file_distance != distance:
                raise DCRInputError(f"'{path}' is named for distance {file_distance} but lies in '{distance_dir}'.")
            key = (_subject_label(subject, path), camera, distance)
            if key in shots:
                raise DCRInputError(
                    f"Two images for subject {subject}, camera {camera}, distance {distance}: "
                    f"'{shots[key][1]}' and '{path}'."
                )
            shots[key] = (subject, path)
    return shots


def _scan_layout(data_root: PathLike, follow: bool) -> DatasetDict:
    """Scan the SCface tree into a `mugshot` and a `surveillance` split covering every subject."""
    require_dir(data_root, "scface", "Data root")
    scface_dir = require_dir(Path(data_root) / SCFACE_DIR, "scface", "SCface folder")
    mugshot_dir = require_dir(scface_dir / MUGSHOT_DIR, "scface", "SCface mugshot folder")
    extensions = image_extensions()
    unrecognized: list[str] = []
    mugshots = _scan_mugshots(mugshot_dir, extensions, unrecognized)
    for _, path in mugshots.values():
        confine_to_root(path, data_root, follow_symlinks_outside_root=follow)
    shots = _scan_surveillance(scface_dir, extensions, unrecognized, data_root, follow)
    if unrecognized:
        logger.warning(
            f"Ignored {len(unrecognized)} images under '{scface_dir}' whose names are neither NNN_frontal.* nor "
            f"NNN_camK_D.*, e.g. '{unrecognized[0]}'."
        )
    if not mugshots or not shots:
        raise DCRInputError(
            f"No SCface {'mugshots' if not mugshots else 'surveillance images'} found under '{scface_dir}'."
        )
    label_feature = _label_feature(max(SCFACE_NUM_SUBJECTS, max(mugshots) + 1, max(key[0] for key in shots) + 1))
    mugshot_labels = sorted(mugshots)
    shot_keys = sorted(shots)
    mugshot_columns = {
        "image": [str(mugshots[label][1]) for label in mugshot_labels],
        "label": np.asarray(mugshot_labels, dtype=np.int64),
        "subject": [mugshots[label][0] for label in mugshot_labels],
    }
    shot_columns = {
        "image": [str(shots[key][1]) for key in shot_keys],
        "label": np.asarray([key[0] for key in shot_keys], dtype=np.int64),
        "subject": [shots[key][0] for key in shot_keys],
        "distance": np.asarray([key[2] for key in shot_keys], dtype=np.int32),
        "camera": np.asarray([key[1] for key in shot_keys], dtype=np.int32),
    }
    return DatasetDict(
        {
            "mugshot": image_dataset(mugshot_columns, gallery_features(label_feature)),
            "surveillance": image_dataset(shot_columns, probe_features(label_feature)),
        }
    )


def load_scface_images(data_root: PathLike, *, follow_symlinks_outside_root: bool = False) -> DatasetDict:
    """Every SCface image: `mugshot` (image, label, subject) and `surveillance` (+ distance, camera).

    This is what `python -m dcr_hf.data prepare --dataset scface` writes; `data_root` may be such a
    prepared directory. `load_scface` and `load_scface_finetune` derive their splits from it. An image
    whose symbolic link points outside `data_root` raises `DCRInputError` unless `follow_symlinks_outside_root`.
    """
    prepared = load_prepared(data_root, "scface", splits=("mugshot", "surveillance"))
    return prepared if prepared is not None else _scan_layout(data_root, follow_symlinks_outside_root)


def _check_split(num_finetune_subjects: int, cameras: Sequence[int]) -> None:
    if num_finetune_subjects < 0:
        raise DCRInputError(f"num_finetune_subjects must be >= 0, got {num_finetune_subjects}.")
    if not cameras:
        raise DCRInputError("cameras must name at least one camera (1..5).")


def _warn_unknown_cameras(found: np.ndarray, cameras: Sequence[int], data_root: PathLike) -> None:
    """Say so when images of cameras other than SCface's five are left out by the camera filter."""
    unknown = sorted(set(found.tolist()) - set(CAMERAS) - set(cameras))
    if unknown:
        count = int(np.isin(found, unknown).sum())
        logger.warning(
            f"Left out {count} surveillance images of camera(s) {unknown} under '{data_root}': SCface has cameras "
            f"{CAMERAS[0]}..{CAMERAS[-1]}; pass cameras= (e.g. {tuple(CAMERAS) + tuple(unknown)}) to use them."
        )


def load_scface(
    data_root: PathLike,
    num_finetune_subjects: int = NUM_FINETUNE_SUBJECTS,
    *,
    cameras: Sequence[int] = CAMERAS,
    strict: bool = False,
    follow_symlinks_outside_root: bool = False,
) -> DatasetDict:
    """The SCface identification test: `gallery` (mugshots) and `probe` (surveillance images).

    Only test subjects (label >= `num_finetune_subjects`) are kept. `gallery` has `image`, `label`,
    `subject`; `probe` adds `distance` (1..3, d1 farthest) and `camera`. Probes of a subject without
    a mugshot cannot be identified: they are dropped and counted in one warning (`strict=True` raises).
    """
    _check_split(num_finetune_subjects, cameras)
    images = load_scface_images(data_root, follow_symlinks_outside_root=follow_symlinks_outside_root)
    mugshot_labels = column_numpy(images["mugshot"], "label")
    probe_labels = column_numpy(images["surveillance"], "label")
    probe_cameras = column_numpy(images["surveillance"], "camera")
    _warn_unknown_cameras(probe_cameras, cameras, data_root)

    gallery_rows = np.flatnonzero(mugshot_labels >= num_finetune_subjects)
    candidates = (probe_labels >= num_finetune_subjects) & np.isin(probe_cameras, list(cameras))
    has_mugshot = np.isin(probe_labels, mugshot_labels)
    orphans = np.flatnonzero(candidates & ~has_mugshot)
    names = images["surveillance"].features["label"].names
    report_missing(
        [f"probe of subject {names[probe_labels[i]]} (no mugshot)" for i in orphans],
        int(candidates.sum()),
        "probes",
        data_root,
        strict,
    )
    return DatasetDict(
        {
            "gallery": images["mugshot"].select(gallery_rows),
            "probe": images["surveillance"].select(np.flatnonzero(candidates & has_mugshot)),
        }
    )


def _image_values(dataset: Dataset) -> list[bytes | str]:
    """The stored image of each row, as embedded bytes or as a file path, without decoding it."""
    structs = dataset.select_columns(["image"]).with_format("arrow")[:].column("image").to_pylist()
    return [struct["bytes"] if struct["bytes"] is not None else struct["path"] for struct in structs]


def load_scface_finetune(
    data_root: PathLike,
    num_finetune_subjects: int = NUM_FINETUNE_SUBJECTS,
    *,
    cameras: Sequence[int] = CAMERAS,
    strict: bool = False,
    follow_symlinks_outside_root: bool = False,
) -> Dataset:
    """The SCface fine-tuning form: one row per (fine-tuning subject, camera).

    Columns: `image` (the subject's mugshot, HR), `low_resolution_images` (that camera's images at
    distances d1, d2, d3, in this order), `label` (contiguous over the fine-tuning subjects, named
    "NNN"), `camera`. A (subject, camera) lacking a mugshot or any distance is dropped and counted
    in one warning (`strict=True` raises `FileNotFoundError`).
    """
    _check_split(num_finetune_subjects, cameras)
    images = load_scface_images(data_root, follow_symlinks_outside_root=follow_symlinks_outside_root)
    names = images["mugshot"].features["label"].names
    mugshot_labels = column_numpy(images["mugshot"], "label")
    shot_labels = column_numpy(images["surveillance"], "label")
    shot_cameras = column_numpy(images["surveillance"], "camera")
    _warn_unknown_cameras(shot_cameras, cameras, data_root)
    shot_keys = zip(
        shot_labels.tolist(),
        shot_cameras.tolist(),
        column_numpy(images["surveillance"], "distance").tolist(),
    )
    shot_row = {key: row for row, key in enumerate(shot_keys)}
    mugshot_row = {label: row for row, label in enumerate(mugshot_labels.tolist())}

    subjects = sorted(set(mugshot_labels.tolist()) | set(shot_labels.tolist()))
    rows: list[tuple[int, int, list[int]]] = []
    missing: list[str] = []
    for subject in (s for s in subjects if s < num_finetune_subjects):
        for camera in cameras:
            distance_rows = [shot_row.get((subject, camera, distance)) for distance in DISTANCES]
            absent = [f"d{d}" for d, row in zip(DISTANCES, distance_rows) if row is None]
            if subject not in mugshot_row:
                missing.append(f"subject {names[subject]} camera {camera}: no mugshot")
            elif absent:
                missing.append(f"subject {names[subject]} camera {camera}: no {', '.join(absent)} image")
            else:
                rows.append((subject, camera, distance_rows))
    report_missing(missing, len(missing) + len(rows), "fine-tuning (subject, camera) rows", data_root, strict)
    if not rows:
        raise DCRInputError(
            f"No complete SCface fine-tuning row (mugshot + {len(DISTANCES)} distances) in '{data_root}'."
        )

    mugshot_images = _image_values(images["mugshot"])
    shot_images = _image_values(images["surveillance"])
    kept_subjects = sorted({subject for subject, _, _ in rows})
    contiguous = {subject: index for index, subject in enumerate(kept_subjects)}
    features = finetune_features(ClassLabel(names=[names[subject] for subject in kept_subjects]))
    return Dataset.from_dict(
        {
            "image": [mugshot_images[mugshot_row[subject]] for subject, _, _ in rows],
            "low_resolution_images": [[shot_images[row] for row in distance_rows] for _, _, distance_rows in rows],
            "label": [contiguous[subject] for subject, _, _ in rows],
            "camera": [camera for _, camera, _ in rows],
        },
        features=features,
    )
