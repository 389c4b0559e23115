"""Face datasets as Hugging Face `datasets`, on-the-fly low-resolution transforms and samplers.

Loaders: `load_casia`, `load_lfw_pairs`, `load_lfw_identities`, `load_scface`,
`load_scface_finetune`, `load_image_folder`, `load_face_dataset`, `load_synthetic`.
Transforms (for `apply_transform` / `Dataset.with_transform`): `TrainTransform`, `PairTransform`,
`EvalTransform`, `FinetuneTransform`. Sampler: `MPerClassSampler`.
"""

from .casia import load_casia
from .generic import load_face_dataset, load_image_folder
from .lfw import load_lfw_identities, load_lfw_pairs
from .sampler import MPerClassSampler
from .scface import load_scface, load_scface_finetune
from .synthetic import load_synthetic
from .transforms import (
    EvalTransform,
    FinetuneTransform,
    PairTransform,
    TrainTransform,
    apply_transform,
    make_low_resolution_copies,
)

__all__ = [
    "EvalTransform",
    "FinetuneTransform",
    "MPerClassSampler",
    "PairTransform",
    "TrainTransform",
    "apply_transform",
    "load_casia",
    "load_face_dataset",
    "load_image_folder",
    "load_lfw_identities",
    "load_lfw_pairs",
    "load_scface",
    "load_scface_finetune",
    "load_synthetic",
    "make_low_resolution_copies",
]
