"""QMUL-SurvFace (Cheng, Zhu, Gong 2018): native surveillance faces, verification and open-set identification.

Layout (under the data root, the archive's `QMUL-SurvFace/` folder):

- `Face_Verification_Test_Set/positive_pairs_names.mat` (variable `positive_pairs_names`) and
  `negative_pairs_names.mat` (`negative_pairs_names`): `{N x 2}` cell arrays of file names in
  `verification_images/` (N = 5,320 each in the release);
- `Face_Identification_Test_Set/gallery_img_ID_pairs.mat` (`gallery_set`, `gallery_ids`) and
  `mated_probe_img_ID_pairs.mat` (`mated_probe_set`, `mated_probe_ids`): `{N x 1}` cell arrays of
  names in `gallery/` and `mated_probe/` and `N x 1` columns of positive integer ids; read from
  `Face_Identification_Evaluation/` when not in the test-set folder (one public loader reads them
  there). Every image of `unmated_probe/` is an unmated probe (labelled persons' `<person>_cam<c>_<f>.jpg`
  and unlabelled `distractors_<n>.jpg`); no `.mat` lists them.

What was checked, and against what. The dataset's own readme and MATLAB evaluation code
(`readme.txt`, `Face_Verification_Evaluation/`, `Face_Identification_Evaluation/` in the archive)
could not be reached: no stored copy of the archive, of qmul-survface.github.io's repository or of
a repository vendoring those files was found (searched: file-name and variable-name string search
over the public code index, semantic search of code, pages, docs and issues). What the names above
rest on instead:

- https://qmul-survface.github.io/protocols.html (the project page; its opening only): 3,000 of the
  5,319 multi-shot test identities form the watch list with half their images in the gallery; the
  probes are their other images plus every image of the other test identities; FPIR counts the
  unmated searches with a gallery candidate scoring "at or above" the threshold.
- A public audit script that opens the release zip itself and checks it (found by string search;
  its repository is not named by the index): the four `.mat` paths and variable names above, the
  `(5320, 2)` pair shape, cells holding one basename ending in `.jpg`, integer-valued positive ids
  consistent with the person prefix of the file names, the three identification folders, and
  `distractors_<n>.jpg` names only in `unmated_probe/`; the verification images are copies of
  test images.
- Loaders reading the same files: bioidiap/bob.bio.face `bob/bio/face/database/survface.py`
  (commit 1009646c2a4aab4b07137bfcdb1f1aa8aaead3be) and gist-ailab/feature-similarity-KD
  `face_recognition/test_qmul_id.py`, `test_qmul_ver.py` (commit 3774ab41f87e347b3aaad7d003f76c0a3d9cff7f).

Unverified (assumptions, see docs/evaluation.md): the fold split of the verification pairs, the
threshold sweep and TAR@FAR / TPIR@FPIR read-out of the official code, and whether it scores a
probe against identity templates or gallery images.

The loaders return each image once with its native size (`width`, `height`), so that each is
embedded once and routed by size.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from datasets import Dataset, DatasetDict, Features, Image, Value

from ..errors_dcr import DCRFileNotFoundError, DCRInputError
from ._layout import PathLike, confine_to_root, image_dataset, image_extensions, image_sizes, list_files, relative_image_path, require_dir
from .matlab import cell_strings, id_vector, pair_strings, read_mat

VERIFICATION_DIR = "Face_Verification_Test_Set"
IDENTIFICATION_DIR = "Face_Identification_Test_Set"
#: Where one public loader reads the identification `.mat` files from (the archive's evaluation-code folder).
IDENTIFICATION_EVALUATION_DIR = "Face_Identification_Evaluation"
#: Verification folds: pair i of each list goes to fold `i * NUM_FOLDS // len(list)` (an assumption, see docs).
NUM_FOLDS = 10
_IMAGE_FEATURES = Features({"image": Image(), "width": Value("int32"), "height": Value("int32")})


def _images(folder: Path, names: list[str], source: PathLike, root: Path, follow: bool) -> Dataset:
    present = list_files(require_dir(folder, "survface", "SurvFace image folder"), root, follow_symlinks_outside_root=follow)
    missing = [name for name in names if name not in present]
    if missing:
        raise DCRFileNotFoundError(
            f"'{folder / missing[0]}' is listed in '{source}' but absent ({len(missing)} of {len(names)} listed "
            "images are); the protocol needs every listed image."
        )
    paths = [folder / name for name in names]
    sizes = image_sizes(paths)
    return image_dataset({"image": list(map(str, paths)), "width": sizes[:, 0], "height": sizes[:, 1]}, _IMAGE_FEATURES)


def _checked(names: list[str], source: PathLike) -> list[str]:
    return [relative_image_path(name, source, index + 1, Path(source).parent) for index, name in enumerate(names)]


def load_survface_verification(data_root: PathLike, *, follow_symlinks_outside_root: bool = False) -> DatasetDict:
    """SurvFace verification: `images` (each listed image once: `image`, `width`, `height`) and
    `pairs` (`index_a`, `index_b` into `images`, `is_same`, `fold`): the positive pairs, then the negative.

    Folds: pair i of each list is in fold `i * 10 // len(list)`, so every fold holds a tenth of the
    positive and of the negative pairs (an assumption: no fold split ships with the dataset).
    """
    root, follow = Path(data_root), follow_symlinks_outside_root
    folder = require_dir(root / VERIFICATION_DIR, "survface", "SurvFace verification folder")
    firsts, seconds, same, folds = [], [], [], []
    for name, is_same in (("positive_pairs_names", True), ("negative_pairs_names", False)):
        mat = folder / f"{name}.mat"
        first, second = pair_strings(read_mat(mat, root, "survface", (name,), follow_symlinks_outside_root=follow)[name], mat, name)
        if not first:
            raise DCRInputError(f"'{mat}': {name} lists no pair.")
        firsts += _checked(first, mat)
        seconds += _checked(second, mat)
        same += [is_same] * len(first)
        folds += (np.arange(len(first)) * NUM_FOLDS // len(first)).tolist()
    names = list(dict.fromkeys(firsts + seconds))
    index = {name: position for position, name in enumerate(names)}
    images = _images(folder / "verification_images", names, folder / "positive_pairs_names.mat", root, follow)
    pairs = Dataset.from_dict({
        "index_a": [index[name] for name in firsts], "index_b": [index[name] for name in seconds],
        "is_same": same, "fold": folds,
    })
    return DatasetDict({"images": images, "pairs": pairs})


def load_survface_identification(data_root: PathLike, *, follow_symlinks_outside_root: bool = False) -> DatasetDict:
    """SurvFace open-set identification: `gallery` and `mated_probe` (`image`, `label`, `width`,
    `height`, in `.mat` order) and `unmated_probe` (`image`, `width`, `height`, sorted by name)."""
    root, follow = Path(data_root), follow_symlinks_outside_root
    folder = require_dir(root / IDENTIFICATION_DIR, "survface", "SurvFace identification folder")
    splits = {}
    for split, mat_name, (names_key, ids_key) in (
        ("gallery", "gallery_img_ID_pairs.mat", ("gallery_set", "gallery_ids")),
        ("mated_probe", "mated_probe_img_ID_pairs.mat", ("mated_probe_set", "mated_probe_ids")),
    ):
        mat = folder / mat_name
        if not mat.is_file():
            mat = root / IDENTIFICATION_EVALUATION_DIR / mat_name
            if not mat.is_file():
                raise DCRFileNotFoundError(
                    f"survface protocol file '{folder / mat_name}' not found (nor '{mat}'); expected the MATLAB "
                    "file the dataset ships (layout: docs/datasets.md)."
                )
        values = read_mat(mat, root, "survface", (names_key, ids_key), follow_symlinks_outside_root=follow)
        names = _checked(cell_strings(values[names_key], mat, names_key), mat)
        ids = id_vector(values[ids_key], len(names), mat, ids_key)
        splits[split] = _images(folder / split, names, mat, root, follow).add_column("label", ids)
    unmated_dir = require_dir(folder / "unmated_probe", "survface", "SurvFace unmated probe folder")
    confine_to_root(unmated_dir, root, follow_symlinks_outside_root=follow)
    extensions = image_extensions()
    unmated = sorted(name for name in list_files(unmated_dir, root, follow_symlinks_outside_root=follow)
                     if Path(name).suffix.lower() in extensions)
    if not unmated:
        raise DCRInputError(f"'{unmated_dir}' holds no image; open-set identification needs unmated probes.")
    splits["unmated_probe"] = _images(unmated_dir, unmated, unmated_dir, root, follow)
    return DatasetDict(splits)


__all__ = ["NUM_FOLDS", "load_survface_identification", "load_survface_verification"]
