"""TinyFace (Cheng et al., 2018): native low-resolution faces, probes against a match gallery plus distractors.

Layout (under the data root): `Testing_Set/{Probe,Gallery_Match,Gallery_Distractor}/` and the protocol
files `Testing_Set/probe_img_ID_pairs.mat` (`probe_set`, `probe_ids`) and
`Testing_Set/gallery_match_img_ID_pairs.mat` (`gallery_set`, `gallery_ids`): MATLAB v5 cell arrays of
file names and id vectors, the variable names AdaFace's `validation_lq/tinyface_helper.py` reads. The
identity of an image is its file name's first `_`-separated token (as AdaFace's `get_label`);
every image of `Gallery_Distractor/` is a distractor with no identity (label -1). An aligned copy
(e.g. `aligned_pad_0.1_pad_high/` with the same three sub-folders and file names) can stand in for
the images, the `.mat` files still read from `Testing_Set/`; the probes' native sizes are always read
from the published `Testing_Set/Probe/` images.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from datasets import DatasetDict, Features, Image, Value

from ..errors_dcr import DCRFileNotFoundError, DCRInputError
from ._layout import PathLike, confine_to_root, image_dataset, image_extensions, image_sizes, list_files, relative_image_path, require_dir
from .matlab import cell_strings, id_vector, read_mat

TESTING_DIR = "Testing_Set"
PROBE_DIR, MATCH_DIR, DISTRACTOR_DIR = "Probe", "Gallery_Match", "Gallery_Distractor"
PROBE_MAT, GALLERY_MAT = "probe_img_ID_pairs.mat", "gallery_match_img_ID_pairs.mat"
#: Label of a distractor (no identity).
DISTRACTOR_LABEL = -1


def tinyface_identity(name: str, source: PathLike) -> int:
    """The identity of a TinyFace file name: its first `_`-separated token, an integer."""
    token = Path(name).name.split("_", 1)[0]
    if not token.isdigit():
        raise DCRInputError(f"'{source}': file name {name!r} does not start with an identity number followed by '_'.")
    return int(token)


def _listed(mat: PathLike, variables: tuple[str, str], root: Path, follow: bool) -> list[str]:
    values = read_mat(mat, root, "tinyface", variables, follow_symlinks_outside_root=follow)
    names = cell_strings(values[variables[0]], mat, variables[0])
    id_vector(values[variables[1]], len(names), mat, variables[1])
    return [relative_image_path(name, mat, index + 1, Path(mat).parent) for index, name in enumerate(names)]


def _require_present(names: list[str], folder: Path, root: Path, mat: PathLike, follow: bool) -> None:
    present = list_files(require_dir(folder, "tinyface", "TinyFace image folder"), root, follow_symlinks_outside_root=follow)
    missing = [name for name in names if name not in present]
    if missing:
        raise DCRFileNotFoundError(
            f"'{folder / missing[0]}' is listed in '{mat}' but absent ({len(missing)} of {len(names)} listed images "
            "are); the protocol needs every listed image."
        )


def load_tinyface(
    data_root: PathLike,
    aligned_dir: str | None = None,
    distractors: bool = True,
    *,
    follow_symlinks_outside_root: bool = False,
) -> DatasetDict:
    """TinyFace's identification test: `probe` (`image`, `label`, `width`, `height`: the native size)
    and `gallery` (`image`, `label`; the match gallery, then the distractors with label -1 unless
    `distractors=False`), in the order of the `.mat` lists (distractors sorted by name).

    `aligned_dir` (relative to `data_root`) reads the images from an aligned copy. A missing
    `.mat` file or a listed image that is absent raises one line naming it.
    """
    root = Path(data_root)
    follow = follow_symlinks_outside_root
    testing = require_dir(root / TESTING_DIR, "tinyface", "TinyFace test folder")
    images = testing if aligned_dir is None else require_dir(root / aligned_dir, "tinyface", "--tinyface_aligned_dir folder")
    confine_to_root(images, root, follow_symlinks_outside_root=follow)
    probe_mat, gallery_mat = testing / PROBE_MAT, testing / GALLERY_MAT
    probes = _listed(probe_mat, ("probe_set", "probe_ids"), root, follow)
    matches = _listed(gallery_mat, ("gallery_set", "gallery_ids"), root, follow)
    # The native sizes come from the published probes, the pixels from `images` (the aligned copy if given).
    _require_present(probes, testing / PROBE_DIR, root, probe_mat, follow)
    if images != testing:
        _require_present(probes, images / PROBE_DIR, root, probe_mat, follow)
    _require_present(matches, images / MATCH_DIR, root, gallery_mat, follow)
    sizes = image_sizes([testing / PROBE_DIR / name for name in probes])
    probe = image_dataset(
        {"image": [str(images / PROBE_DIR / name) for name in probes],
         "label": [tinyface_identity(name, probe_mat) for name in probes],
         "width": sizes[:, 0], "height": sizes[:, 1]},
        Features({"image": Image(), "label": Value("int64"), "width": Value("int32"), "height": Value("int32")}),
    )
    gallery_paths = [str(images / MATCH_DIR / name) for name in matches]
    gallery_labels = [tinyface_identity(name, gallery_mat) for name in matches]
    if distractors:
        folder = require_dir(images / DISTRACTOR_DIR, "tinyface", "TinyFace distractor folder")
        extensions = image_extensions()
        found = sorted(name for name in list_files(folder, root, follow_symlinks_outside_root=follow)
                       if Path(name).suffix.lower() in extensions)
        gallery_paths += [str(folder / name) for name in found]
        gallery_labels += [DISTRACTOR_LABEL] * len(found)
    gallery = image_dataset(
        {"image": gallery_paths, "label": np.asarray(gallery_labels, dtype=np.int64)},
        Features({"image": Image(), "label": Value("int64")}),
    )
    return DatasetDict({"probe": probe, "gallery": gallery})


__all__ = ["DISTRACTOR_LABEL", "load_tinyface", "tinyface_identity"]
