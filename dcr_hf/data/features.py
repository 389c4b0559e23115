"""The `datasets.Features` of every kind of split, shared by the real loaders and the synthetic data.

One schema per kind of split, so that code tested on the synthetic stand-ins sees exactly the
column names and types of the real datasets:

- identities (CASIA-WebFace, LFW identities, image folders, synthetic `train`/`retrieval`):
  `image`, `label`;
- pairs (LFW, synthetic `pairs`): `image_a`, `image_b`, `is_same` (bool), `fold` (int32);
- gallery (SCface mugshots, synthetic `gallery`): `image`, `label`, `subject` (str, e.g. "051");
- probe (SCface surveillance images, synthetic `probe`): gallery columns + `distance`, `camera`
  (int32; distance 1 is the farthest);
- fine-tuning rows (SCface fine-tuning form): `image`, `low_resolution_images`, `label`, `camera`.

`label` is a `ClassLabel` whose names depend on the data, so the schemas are built from it.
"""

from __future__ import annotations

from datasets import ClassLabel, Features, Image, List, Value

PAIRS_FEATURES = Features({"image_a": Image(), "image_b": Image(), "is_same": Value("bool"), "fold": Value("int32")})


def identity_features(label: ClassLabel) -> Features:
    """Images with one identity each."""
    return Features({"image": Image(), "label": label})


def gallery_features(label: ClassLabel) -> Features:
    """High-resolution gallery images (one mugshot per subject)."""
    return Features({"image": Image(), "label": label, "subject": Value("string")})


def probe_features(label: ClassLabel) -> Features:
    """Real low-resolution probes with their capture distance and camera."""
    return Features(
        {"image": Image(), "label": label, "subject": Value("string"), "distance": Value("int32"), "camera": Value("int32")}
    )


def finetune_features(label: ClassLabel) -> Features:
    """Fine-tuning rows: an HR image plus real LR captures of the same subject, one per distance."""
    return Features(
        {"image": Image(), "low_resolution_images": List(Image()), "label": label, "camera": Value("int32")}
    )


def subject_name(label: int) -> str:
    """SCface's subject number of a 0-based label, as its file names write it ("001" for label 0)."""
    return f"{label + 1:03d}"


__all__ = [
    "PAIRS_FEATURES",
    "finetune_features",
    "gallery_features",
    "identity_features",
    "probe_features",
    "subject_name",
]
