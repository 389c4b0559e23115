"""The synthetic splits as `datasets`: which faces each split shows, in which order, and `load_synthetic`.

Each split is built with the shared schema of its kind (`dcr_hf.data.features`), so code tested
on the synthetic stand-ins sees the columns and types of the real data sets: `train` and
`retrieval` as CASIA-WebFace / LFW identities, `pairs` as LFW's verification pairs, `gallery` and
`probe` as SCface's mugshots and surveillance images.
"""

from __future__ import annotations

import numpy as np
import torch
from datasets import ClassLabel, Dataset, DatasetDict
from transformers.utils import logging

from ...errors_dcr import DCRInputError
from ...configuration_dcr import DCRConfig
from ...image_processing_dcr import simulate_low_resolution
from ..features import PAIRS_FEATURES, gallery_features, identity_features, probe_features, subject_name
from .appearance import (
    _IDENTITIES,
    _PAIRS,
    _VIEWS,
    CAMERAS,
    PROBE_SIZES,
    _camera_views,
    _draw_identities,
    _draw_views,
    _neutral_views,
    _rng,
    _torch_generator,
)
from .render import _atlas, _canonical_size, _render_canonical, _render_views


logger = logging.get_logger(__name__)

#: Splits returned by `load_synthetic`, in order.
SYNTHETIC_SPLITS = ("train", "retrieval", "pairs", "gallery", "probe")


def _encode(images: torch.Tensor) -> list[bytes]:
    """uint8 images [n, H, W, 3] -> binary PPM files, one per image.

    PPM (a one-line header and the raw RGB bytes) rather than PNG: encoding one noisy 120 x 120
    PNG costs ~2.5 ms, which would dominate the build time. It is lossless and PIL decodes it to
    an RGB image.
    """
    array = images.numpy()
    header = b"P6\n%d %d\n255\n" % (array.shape[2], array.shape[1])
    return [header + item.tobytes() for item in array]


def _identity_images(
    seed: int, role: str, num_identities: int, images_per_identity: int, image_size: int
) -> tuple[list[bytes], np.ndarray]:
    """Render `images_per_identity` unconstrained views of each identity of a role.

    Returns the encoded images, identity-major, and their labels `[num_identities * images_per_identity]`.
    """
    ids = _draw_identities(_rng(seed, role, _IDENTITIES), num_identities)
    atlas = _atlas(_render_canonical(ids, _canonical_size(image_size)))
    labels = np.repeat(np.arange(num_identities), images_per_identity)
    views = _draw_views(_rng(seed, role, _VIEWS), len(labels))
    images = _render_views(atlas, ids, torch.as_tensor(labels), views, image_size, _torch_generator(seed, role))
    return _encode(images), labels


def _class_label(role: str, n: int) -> ClassLabel:
    return ClassLabel(names=[f"{role}_{i:04d}" for i in range(n)])


def _image_dataset(images: list[bytes], labels: np.ndarray, role: str, n: int) -> Dataset:
    features = identity_features(_class_label(role, n))
    return Dataset.from_dict({"image": images, "label": labels.tolist()}, features=features)


def _fold_candidates(group: np.ndarray, by_identity: list[np.ndarray]) -> tuple[list, list]:
    """All same-identity and all different-identity pairs of image indices among a fold's identities."""
    same = [(a, b) for i in group for j, a in enumerate(by_identity[i]) for b in by_identity[i][j + 1 :]]
    different = [
        (a, b) for j, i in enumerate(group) for k in group[j + 1 :] for a in by_identity[i] for b in by_identity[k]
    ]
    return same, different


def _pairs_dataset(seed: int, images: list[bytes], labels: np.ndarray, num_identities: int, num_pairs: int) -> Dataset:
    """LFW-style pairs: 10 folds of equal size, half same and half different identity each.

    As in LFW's View 2, the folds are identity-disjoint: fold k draws only from the k-th tenth of
    the identities. Pairs are distinct and in fold order (the folds are contiguous blocks).
    """
    rng = _rng(seed, "verification", _PAIRS)
    per_class = num_pairs // 20
    by_identity = [np.flatnonzero(labels == i) for i in range(num_identities)]
    rows: dict[str, list] = {"image_a": [], "image_b": [], "is_same": [], "fold": []}
    for fold, group in enumerate(np.array_split(np.arange(num_identities), 10)):
        same, different = _fold_candidates(group, by_identity)
        if min(len(same), len(different)) < per_class:
            raise DCRInputError(
                f"num_pairs={num_pairs} needs {per_class} same and {per_class} different pairs per fold, but fold "
                f"{fold} has {len(group)} identities giving only {len(same)} same and {len(different)} different "
                "pairs; lower num_pairs or raise num_verification_identities / images_per_identity."
            )
        for is_same, candidates in ((True, same), (False, different)):
            for choice in rng.choice(len(candidates), size=per_class, replace=False):
                a, b = candidates[choice]
                if rng.random() < 0.5:  # the first image is not always the lower index
                    a, b = b, a
                rows["image_a"].append(images[a])
                rows["image_b"].append(images[b])
                rows["is_same"].append(is_same)
                rows["fold"].append(fold)
    return Dataset.from_dict(rows, features=PAIRS_FEATURES)


def _surveillance_datasets(seed: int, num_subjects: int, image_size: int, split: str | None) -> dict[str, Dataset]:
    """SCface-style gallery (one neutral mugshot per subject) and probes (5 cameras x 3 distances each).

    The gallery is rendered even when only the probes are asked for: both draw from one noise
    stream, so the probes' pixels do not depend on `split`.
    """
    ids = _draw_identities(_rng(seed, "surveillance", _IDENTITIES), num_subjects)
    atlas = _atlas(_render_canonical(ids, _canonical_size(image_size)))
    generator = _torch_generator(seed, "surveillance")
    label = _class_label("surveillance", num_subjects)
    subjects = np.arange(num_subjects)
    datasets = {}

    gallery = _render_views(atlas, ids, torch.as_tensor(subjects), _neutral_views(num_subjects), image_size, generator)
    if split in (None, "gallery"):
        rows = {"image": _encode(gallery), "label": subjects.tolist(), "subject": _subject_names(subjects)}
        datasets["gallery"] = Dataset.from_dict(rows, features=gallery_features(label))
    if split in (None, "probe"):
        datasets["probe"] = _probe_dataset(seed, atlas, ids, label, image_size, generator)
    return datasets


def _subject_names(labels: np.ndarray) -> list[str]:
    return [subject_name(int(label)) for label in labels]


def _probe_dataset(
    seed: int,
    atlas: tuple[torch.Tensor, int],
    ids: dict[str, torch.Tensor],
    label: ClassLabel,
    image_size: int,
    generator: torch.Generator,
) -> Dataset:
    """One probe per subject, camera and distance: rendered, brought down to the distance's size, noised."""
    cameras = np.array(sorted(CAMERAS))
    distances = np.array(sorted(PROBE_SIZES))
    # Subject-major, then camera, then distance: the order of SCface's file listing.
    subject, camera, distance = (
        a.ravel() for a in np.meshgrid(np.arange(label.num_classes), cameras, distances, indexing="ij")
    )
    views, noise = _camera_views(_rng(seed, "surveillance", _VIEWS), camera, distance)
    rendered = _render_views(atlas, ids, torch.as_tensor(subject), views, image_size, generator)
    probes = rendered.permute(0, 3, 1, 2).float() / 255.0
    for d, probe_size in PROBE_SIZES.items():
        at = torch.as_tensor(distance == d)
        # The synthetic probes' own operator, fixed so that their pixels do not follow the processor's default.
        probes[at] = simulate_low_resolution(
            probes[at], probe_size, downsample_interpolation="bicubic", upsample_interpolation="bilinear", clamp=(0.0, 1.0)
        )
    probes += torch.randn(probes.shape, generator=generator) * (noise + 0.01).view(-1, 1, 1, 1)
    probes = probes.clamp_(0.0, 1.0).mul_(255.0).round_().to(torch.uint8).permute(0, 2, 3, 1).contiguous()
    rows = {
        "image": _encode(probes),
        "label": subject.tolist(),
        "subject": _subject_names(subject),
        "distance": distance.tolist(),
        "camera": camera.tolist(),
    }
    return Dataset.from_dict(rows, features=probe_features(label))


def _check_arguments(split: str | None, num_pairs: int, **sizes: int) -> None:
    """Reject an unknown split and sizes that cannot make every split (see `load_synthetic`)."""
    if split is not None and split not in SYNTHETIC_SPLITS:
        raise DCRInputError(f"split={split!r} is not a synthetic split; expected None or one of {SYNTHETIC_SPLITS}.")
    minimums = {
        "num_identities": 1,
        "images_per_identity": 2,
        "verification_images_per_identity": 2,
        "num_verification_identities": 20,
        "num_surveillance_subjects": 1,
        "image_size": max(PROBE_SIZES.values()) + 1,
    }
    for name, minimum in minimums.items():
        value = sizes[name]
        if not isinstance(value, int) or value < minimum:
            raise DCRInputError(f"{name} must be an integer >= {minimum}, got {value!r}.")
    if not isinstance(num_pairs, int) or num_pairs <= 0 or num_pairs % 20:
        raise DCRInputError(f"num_pairs must be a positive multiple of 20 (10 folds x same/different), got {num_pairs!r}.")


def load_synthetic(
    split: str | None = None,
    num_identities: int = 200,
    images_per_identity: int = 10,
    image_size: int = DCRConfig.image_size,
    seed: int = 0,
    num_pairs: int = 600,
    num_verification_identities: int = 50,
    num_surveillance_subjects: int = 40,
    verification_images_per_identity: int = 10,
) -> DatasetDict | Dataset:
    """Build a synthetic face-identity data set for every protocol, deterministically from `seed`.

    Three disjoint groups of identities, each drawn from its own random stream and sized by its own
    options only (so the held-out faces, pairs and probes do not change with the training split's
    `num_identities` / `images_per_identity`); every split has the shared schema of its kind
    (`dcr_hf.data.features`):

    - `train`: `num_identities` identities x `images_per_identity` views; columns `image`
      (RGB PIL image, `image_size` x `image_size`) and `label` (`ClassLabel`, names `train_NNNN`).
    - `retrieval`: `num_verification_identities` held-out identities x
      `verification_images_per_identity` views (an LFW stand-in); columns `image`, `label` (names `verification_NNNN`).
    - `pairs`: `num_pairs` LFW-style verification pairs of `retrieval` images (`PAIRS_FEATURES`);
      columns `image_a`, `image_b`, `is_same` (bool), `fold` (int32, 0..9: contiguous blocks of
      `num_pairs / 10` pairs, half same, half different, identity-disjoint across folds).
    - `gallery`: one frontal, neutral, evenly lit mugshot for each of
      `num_surveillance_subjects` other held-out subjects; columns `image`, `label`
      (names `surveillance_NNNN`), `subject` (SCface's subject number as a string, "001" for label 0).
    - `probe`: SCface-style surveillance views, one per subject, camera (1..5, see `CAMERAS`) and
      distance (1 farthest .. 3, see `PROBE_SIZES`): rendered at `image_size`, brought down to
      16 / 24 / 40 pixels and back with `simulate_low_resolution`, darker and noisier when
      farther; columns `image`, `label`, `subject`, `distance`, `camera` (int32).

    Views vary pose (rotation, shift, scale, yaw/pitch-like warp), expression (smile, open
    mouth, brows, blinks), lighting (gain, colour cast, gradient), background and noise.

    Args:
        split: one of `SYNTHETIC_SPLITS` to build only that split, or `None` for all of them.
        num_identities: training identities.
        images_per_identity: views per training identity (>= 2).
        image_size: side of every image, in pixels (> 40, the largest probe size).
        seed: the same seed gives the same pixels, a different seed different faces.
        num_pairs: verification pairs, a multiple of 20 (10 folds x same/different).
        num_verification_identities: held-out identities of `retrieval` and `pairs` (>= 20).
        verification_images_per_identity: views per held-out identity of `retrieval` and `pairs` (>= 2).
        num_surveillance_subjects: held-out subjects of `gallery` and `probe`.

    Returns:
        A `DatasetDict` with the splits above, or the one `Dataset` asked for by `split`.
    """
    _check_arguments(
        split,
        num_pairs,
        num_identities=num_identities,
        images_per_identity=images_per_identity,
        verification_images_per_identity=verification_images_per_identity,
        num_verification_identities=num_verification_identities,
        num_surveillance_subjects=num_surveillance_subjects,
        image_size=image_size,
    )
    splits: dict[str, Dataset] = {}
    if split in (None, "train"):
        images, labels = _identity_images(seed, "train", num_identities, images_per_identity, image_size)
        splits["train"] = _image_dataset(images, labels, "train", num_identities)
    if split in (None, "retrieval", "pairs"):
        num_held_out = num_verification_identities
        images, labels = _identity_images(seed, "verification", num_held_out, verification_images_per_identity, image_size)
        if split in (None, "retrieval"):
            splits["retrieval"] = _image_dataset(images, labels, "verification", num_held_out)
        if split in (None, "pairs"):
            splits["pairs"] = _pairs_dataset(seed, images, labels, num_held_out, num_pairs)
    if split in (None, "gallery", "probe"):
        splits.update(_surveillance_datasets(seed, num_surveillance_subjects, image_size, split))
    logger.info("Built synthetic splits %s.", {name: len(ds) for name, ds in splits.items()})
    return splits[split] if split is not None else DatasetDict(splits)
