"""Shared fixtures: a tiny DCR config, tiny synthetic splits, tiny trees in the real on-disk
layouts (CASIA, LFW, SCface), and face photos of several sizes and kinds.

Helper functions that take arguments live in `tests.layouts` (writing real-layout trees) and
`tests.models` (tiny configs); tests that start subprocesses or train end to end are marked `slow`
(`-m "not slow"` skips them; the README's test command runs everything; see CONTRIBUTING.md).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import PIL.Image
import pytest

from tests.layouts import lfw_name, make_casia, make_lfw, make_scface, smooth_photo, write_original_pairs
from tests.models import tiny_config


@pytest.fixture
def config():
    """A tiny trunk-stage `DCRConfig` (32x32 input, LR sizes 8 and 12, 5 classes)."""
    return tiny_config()


@pytest.fixture(scope="session")
def synthetic_splits():
    """Every synthetic split, small (48x48 faces): train, retrieval, pairs, gallery, probe."""
    from dcr_hf.data.synthetic import load_synthetic

    return load_synthetic(
        num_identities=6, images_per_identity=3, image_size=48, num_pairs=20, num_verification_identities=20,
        num_surveillance_subjects=3,
    )


@pytest.fixture(scope="session")
def casia_root(tmp_path_factory) -> Path:
    """A CASIA tree: subjects 0, 1, 1058 (fold 1), 5000 with two images each."""
    root = tmp_path_factory.mktemp("casia_root")
    make_casia(root, [0, 1, 1058, 5000])
    return root


@pytest.fixture(scope="session")
def lfw_root(tmp_path_factory) -> Path:
    """An LFW tree of four identities with an original-format pairs file of 20 pairs."""
    root = tmp_path_factory.mktemp("lfw_root")
    make_lfw(root, {"Ann": 3, "Bob": 3, "Cid": 2, "Dee": 2})
    names = [("Ann", 3), ("Bob", 3), ("Cid", 2), ("Dee", 2)]
    pairs = []
    for index in range(20):
        (a, count_a), (b, count_b) = names[index % 4], names[(index + 1) % 4]
        same = index % 2 == 0
        pairs.append((lfw_name(a, 1), lfw_name(a, count_a) if same else lfw_name(b, count_b), int(same)))
    write_original_pairs(root, pairs)
    return root


@pytest.fixture(scope="session")
def scface_root(tmp_path_factory) -> Path:
    """An SCface tree of subjects 1..3 (fine-tuning) and 51..52 (test), every camera and distance."""
    root = tmp_path_factory.mktemp("scface_root")
    make_scface(root, [1, 2, 3, 51, 52])
    return root


@pytest.fixture(scope="session")
def face_photos(tmp_path_factory) -> dict[str, str]:
    """JPEG photos a user meets: 250x250, 64x64, 120x120, a grayscale one and an EXIF-rotated one."""
    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(20)
    paths = {}
    for name, (height, width) in {"large": (250, 250), "small": (64, 64), "exact": (120, 120)}.items():
        paths[name] = str(root / f"{name}.jpg")
        PIL.Image.fromarray(smooth_photo(rng, height, width)).save(paths[name], quality=92)
    paths["grey"] = str(root / "grey.jpg")
    PIL.Image.fromarray(smooth_photo(rng, 150, 130)).convert("L").save(paths["grey"], quality=92)
    rotated = PIL.Image.fromarray(smooth_photo(rng, 90, 140))
    exif = rotated.getexif()
    exif[PIL.Image.ExifTags.Base.Orientation] = 6  # "rotate 90 CW to view": the stored pixels are sideways
    paths["exif"] = str(root / "exif.jpg")
    rotated.save(paths["exif"], quality=92, exif=exif)
    return paths
