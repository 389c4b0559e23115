"""Helpers shared by the dataset loaders: on-disk layouts, layout errors, prepared directories.

Private to `dcr_hf.data`; the public entry points are the `load_*` functions of the dataset modules.
"""

from __future__ import annotations

import codecs
import json
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path, PurePosixPath

import numpy as np
import pyarrow as pa
from datasets import ClassLabel, Dataset, DatasetDict, Features, Image, Value, config, load_from_disk
from PIL import Image as PILImage
from transformers.utils import logging

from ..errors_dcr import DCRFileNotFoundError, DCRInputError
from ..saving import write_text_atomic

logger = logging.get_logger(__name__)

PathLike = str | os.PathLike

# Written by `dcr_hf.data.prepare` next to `dataset_dict.json`; says which loader the directory belongs to.
PREPARED_MARKER = "dcr_hf_prepared.json"
PREPARED_FORMAT_VERSION = 1

# Expected trees under the data root, shown in "not found" errors so the user can fix the layout.
LAYOUTS: dict[str, str] = {
    "casia": (
        "DATA_ROOT/\n"
        "  Casia/\n"
        "    casia_cleaned_list.txt      one line per image: '<relative/path.jpg> <subject_id>'\n"
        "    120x120_120/\n"
        "      0000045/001.jpg           (paths as written in the list)\n"
        "      ..."
    ),
    "lfw": (
        "DATA_ROOT/\n"
        "  LFW/\n"
        "    lfw_test_pair.txt           'Name_A/Name_A_0001.jpg Name_B/Name_B_0003.jpg 0|1' per line\n"
        "      or pairs.txt              official View 2 pairs ('10\\t300' header optional)\n"
        "    LFW_120x120_120/\n"
        "      Aaron_Peirsol/Aaron_Peirsol_0001.jpg\n"
        "      ..."
    ),
    "scface": (
        "DATA_ROOT/\n"
        "  SCface/\n"
        "    mugshot_frontal_cropped_all/\n"
        "      001_frontal.JPG           one frontal mugshot per subject\n"
        "    surveillance_cameras_distance_1/\n"
        "      **/001_cam1_1.jpg         NNN_camK_D.jpg (camera K, distance D)\n"
        "    surveillance_cameras_distance_2/\n"
        "    surveillance_cameras_distance_3/"
    ),
    "tinyface": (
        "DATA_ROOT/\n"
        "  Testing_Set/\n"
        "    probe_img_ID_pairs.mat        probe_set (cell of names), probe_ids\n"
        "    gallery_match_img_ID_pairs.mat gallery_set (cell of names), gallery_ids\n"
        "    Probe/1_1.jpg                 identity = the name's first '_' token\n"
        "    Gallery_Match/1_2.jpg\n"
        "    Gallery_Distractor/*.jpg      no identity\n"
        "  aligned_pad_0.1_pad_high/       optional aligned copy (--tinyface_aligned_dir): Probe/, Gallery_Match/,\n"
        "                                  Gallery_Distractor/ with the same names"
    ),
    "survface": (
        "DATA_ROOT/\n"
        "  Face_Verification_Test_Set/\n"
        "    positive_pairs_names.mat      positive_pairs_names: N x 2 cell of names\n"
        "    negative_pairs_names.mat      negative_pairs_names: N x 2 cell of names\n"
        "    verification_images/*.jpg\n"
        "  Face_Identification_Test_Set/\n"
        "    gallery_img_ID_pairs.mat      gallery_set (cell of names), gallery_ids\n"
        "    mated_probe_img_ID_pairs.mat  mated_probe_set (cell of names), mated_probe_ids\n"
        "    gallery/*.jpg  mated_probe/*.jpg  unmated_probe/*.jpg"
    ),
    "bin": (
        "path/to/lfw.bin                   insightface's pickle of (list of encoded images, issame list),\n"
        "                                  images 2i and 2i+1 forming pair i"
    ),
    "folder": (
        "ROOT/\n"
        "  <identity_1>/image_0001.jpg   one sub-folder per identity\n"
        "  <identity_2>/image_0001.jpg\n"
        "  ..."
    ),
}


def missing_path_error(path: PathLike, dataset: str, what: str) -> FileNotFoundError:
    """A `FileNotFoundError` naming `path` and showing the expected layout of `dataset`."""
    return DCRFileNotFoundError(f"{what} not found: '{path}'.\nExpected layout:\n{LAYOUTS[dataset]}")


def require_dir(path: PathLike, dataset: str, what: str) -> Path:
    path = Path(path)
    if not path.is_dir():
        raise missing_path_error(path, dataset, what)
    return path


def require_file(path: PathLike, dataset: str, what: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise missing_path_error(path, dataset, what)
    return path


def malformed_line(path: PathLike, line_number: int, line: str, expected: str) -> ValueError:
    """A `ValueError` pointing at `path:line_number` and saying what the line should look like."""
    return DCRInputError(f"{path}:{line_number}: malformed line {line.rstrip(chr(10))!r}; expected {expected}.")


def read_lines(path: PathLike) -> list[tuple[int, str]]:
    """The non-empty lines of a list or pairs file with their 1-based numbers.

    A UTF-8 byte order mark (Windows editors write one) is skipped instead of corrupting the first
    line; a byte that is not UTF-8 raises `ValueError` naming the file, the line and the byte.
    """
    data = Path(path).read_bytes()
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8) :]
    lines = []
    for number, raw in enumerate(data.split(b"\n"), start=1):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as error:
            raise DCRInputError(
                f"{path}:{number}: byte {raw[error.start]:#04x} at column {error.start + 1} is not UTF-8; "
                "list and pairs files must be UTF-8 text."
            ) from None
        text = text.rstrip("\r")
        if text.strip():
            lines.append((number, text))
    return lines


_WINDOWS_DRIVE = re.compile(r"^[A-Za-z]:[\\/]")


def relative_image_path(relative: str, path: PathLike, line_number: int, image_dir: PathLike) -> str:
    """`relative` when it names a file inside `image_dir`; `ValueError` naming `path:line_number` otherwise.

    List and pairs files name images relative to their image folder. An absolute path or a `..`
    step would let a list pull any file of the machine into a dataset (and from there into a
    prepared dataset or the Hub), so both are refused instead of followed.
    """
    parts = PurePosixPath(relative.replace("\\", "/")).parts
    if relative.startswith(("/", "\\")) or _WINDOWS_DRIVE.match(relative) or ".." in parts:
        raise DCRInputError(
            f"{path}:{line_number}: image path {relative!r} leaves the image folder '{image_dir}'; expected a path "
            "relative to it (no absolute path, no '..')."
        )
    return relative


def confine_to_root(path: PathLike, root: PathLike, *, follow_symlinks_outside_root: bool = False) -> Path:
    """`path` when its real path (every symbolic link resolved) lies inside the real path of `root`.

    The one rule of every loader: a dataset reads only files of its data root, so a link that
    points elsewhere (which would pull any file of the machine into a prepared dataset or onto the
    Hub) raises `DCRInputError` naming the link and its target, unless `follow_symlinks_outside_root`
    (for data roots that are trees of links). Links that stay inside the root are followed.
    """
    path = Path(path)
    if follow_symlinks_outside_root:
        return path
    real_root = os.path.realpath(root)
    if _contains(real_root, os.path.realpath(path)):
        return path
    # Name the first link on the way that leads out of the root; a link above the root (macOS's /tmp) leads
    # to one of its ancestors and is not it. Error path only, so the extra stats are free.
    link = next((p for p in (*reversed(path.parents), path) if p.is_symlink() and not _contains(
        real_root, os.path.realpath(p)) and not _contains(os.path.realpath(p), real_root)), path)
    target = os.readlink(link) if link.is_symlink() else os.path.realpath(path)
    raise DCRInputError(
        f"'{link}' is a symbolic link to '{target}', outside the data root '{real_root}'; copy the file into the "
        "data root, or pass --follow_symlinks_outside_root (follow_symlinks_outside_root=True) if the data root "
        "is a tree of links."
    )


def _contains(outer: str, inner: str) -> bool:
    """Whether the real path `inner` is the real path `outer` or lies under it."""
    return inner == outer or inner.startswith(outer.rstrip(os.sep) + os.sep)


def confine_listed(
    relatives: Iterable[str], image_dir: PathLike, root: PathLike, *, follow_symlinks_outside_root: bool = False
) -> None:
    """`confine_to_root` for the files a list or pairs file names relative to `image_dir` (missing ones skipped).

    Folders are resolved once each and files need one `lstat`, not a full `realpath` per line.
    """
    if follow_symlinks_outside_root:
        return
    image_dir = Path(image_dir)
    confine_to_root(image_dir, root)
    folders: dict[str, bool] = {}
    for relative in relatives:
        parent, _, _ = relative.rpartition("/")
        if parent not in folders:
            folder = image_dir / parent
            folders[parent] = folder.is_dir()
            if folders[parent]:
                confine_to_root(folder, root)
        path = image_dir / relative
        if folders[parent] and path.is_symlink():
            confine_to_root(path, root)


def report_missing(missing: Sequence[str], total: int, what: str, source: PathLike, strict: bool) -> None:
    """Say, once, that `len(missing)` of `total` `what` were dropped because files are missing.

    With `strict=True` raise a `FileNotFoundError` listing them instead.
    """
    if not missing:
        return
    shown = "\n  ".join(missing[:20])
    more = f"\n  ... and {len(missing) - 20} more" if len(missing) > 20 else ""
    if strict:
        raise DCRFileNotFoundError(f"{len(missing)} of {total} {what} in '{source}' name missing files:\n  {shown}{more}")
    logger.warning(
        f"Dropped {len(missing)} of {total} {what} from '{source}' because their files are missing "
        f"(pass strict=True to raise instead). First missing: {missing[0]}"
    )


def image_extensions() -> frozenset[str]:
    """Lower-case file extensions (with the dot) that Pillow can open."""
    return frozenset(ext for ext, fmt in PILImage.registered_extensions().items() if fmt in PILImage.OPEN)


def list_files(
    top: Path, root: PathLike | None = None, *, follow_symlinks_outside_root: bool = False
) -> set[str]:
    """Relative POSIX paths of all files under `top`, with a single directory walk.

    One walk costs a few seconds for CASIA's ~450k images, where one `os.path.exists` per list
    line would cost one `stat` each (slow on network file systems). Every symbolic link met (file
    or folder; folder links are not descended, as `os.walk`) goes through `confine_to_root` with the
    data root `root` (default `top`); the walk's own entries say which are links, so plain files cost nothing.
    """
    root = top if root is None else root
    confine_to_root(top, root, follow_symlinks_outside_root=follow_symlinks_outside_root)
    found: set[str] = set()
    pending = [(str(top), "")]
    while pending:
        directory, prefix = pending.pop()
        with os.scandir(directory) as entries:
            for entry in entries:
                if entry.is_symlink():
                    confine_to_root(entry.path, root, follow_symlinks_outside_root=follow_symlinks_outside_root)
                    if entry.is_file():
                        found.add(prefix + entry.name)
                elif entry.is_dir():
                    pending.append((entry.path, prefix + entry.name + "/"))
                elif entry.is_file():
                    found.add(prefix + entry.name)
    return found


def image_sizes(paths: Sequence[PathLike]) -> np.ndarray:
    """`[len(paths), 2]` int32 (width, height) of each image, read from the file header only (no decoding)."""
    sizes = np.empty((len(paths), 2), dtype=np.int32)
    for index, path in enumerate(paths):
        try:
            with PILImage.open(path) as image:
                sizes[index] = image.size
        except (OSError, ValueError) as error:
            raise DCRInputError(f"'{path}' is not a readable image ({error}).") from None
    return sizes


def image_dataset(columns: dict[str, Iterable], features: Features) -> Dataset:
    """Build an in-memory `Dataset` whose `Image` columns are given as file paths.

    The paths go through Arrow as plain strings and are cast to `Image()` in one vectorised step,
    which is several times faster than letting `Dataset.from_dict` encode 450k paths one by one.
    """
    image_columns = [name for name, feature in features.items() if isinstance(feature, Image)]
    staging = Features({name: Value("string") if name in image_columns else f for name, f in features.items()})
    arrays = {
        name: (
            values
            if isinstance(values, pa.Array)
            else pa.array(values if isinstance(values, np.ndarray) else list(values))
        )
        for name, values in columns.items()
    }
    dataset = Dataset.from_dict(arrays, features=staging)
    for name in image_columns:
        dataset = dataset.cast_column(name, features[name])
    return dataset


def column_numpy(dataset: Dataset, name: str) -> np.ndarray:
    """One column as a NumPy array, read through Arrow without decoding the other columns."""
    table = dataset.select_columns([name]).with_format("arrow")[:]
    return table.column(name).to_numpy()


def contiguous_labels(subjects: np.ndarray) -> tuple[np.ndarray, ClassLabel]:
    """Map subject ids to 0..n-1 (sorted by id) and a `ClassLabel` whose names are the original ids."""
    unique, labels = np.unique(subjects, return_inverse=True)
    return labels.astype(np.int64), ClassLabel(names=[str(subject) for subject in unique.tolist()])


def relabel(dataset: Dataset, labels: np.ndarray, feature: ClassLabel, rows: np.ndarray) -> Dataset:
    """Replace `label` by `labels` (one per row of `dataset`) and keep `rows`.

    The column is swapped before selecting so that the (possibly embedded) image bytes are never
    rewritten: `add_column` would otherwise have to flatten the indices mapping of a selection.
    """
    dataset = dataset.remove_columns("label") if "label" in dataset.column_names else dataset
    dataset = dataset.add_column("label", labels.astype(np.int64), feature=feature)
    return dataset.select(rows)


def is_saved_dataset(path: PathLike) -> bool:
    """Whether `path` is a directory written by `Dataset.save_to_disk` / `DatasetDict.save_to_disk`."""
    path = Path(path)
    return (path / config.DATASETDICT_JSON_FILENAME).is_file() or (path / config.DATASET_STATE_JSON_FILENAME).is_file()


def write_marker(output_dir: PathLike, dataset: str, options: dict) -> None:
    marker = {"dataset": dataset, "options": options, "format_version": PREPARED_FORMAT_VERSION}
    write_text_atomic(Path(output_dir) / PREPARED_MARKER, json.dumps(marker, indent=2, sort_keys=True) + "\n")


def read_marker(path: PathLike) -> dict | None:
    marker = Path(path) / PREPARED_MARKER
    return json.loads(marker.read_text()) if marker.is_file() else None


def load_prepared(path: PathLike, dataset: str, splits: Sequence[str]) -> DatasetDict | None:
    """Load `path` when it is a prepared (saved) directory of `dataset`, else return `None`.

    Raises `ValueError` when the directory was prepared for another dataset or lacks `splits`.
    """
    if not is_saved_dataset(path):
        return None
    marker = read_marker(path)
    if marker is not None and marker.get("dataset") != dataset:
        raise DCRInputError(
            f"'{path}' holds a prepared '{marker.get('dataset')}' dataset, not '{dataset}'. "
            f"Point the {dataset} loader at a directory written by "
            f"`python -m dcr_hf.data prepare --dataset {dataset}` or at the raw data root."
        )
    loaded = load_from_disk(str(path))
    if isinstance(loaded, Dataset):
        loaded = DatasetDict({splits[0]: loaded})
    absent = [split for split in splits if split not in loaded]
    if absent:
        raise DCRInputError(
            f"Saved dataset '{path}' has splits {list(loaded)}, but the {dataset} loader needs {list(splits)}."
        )
    return loaded
