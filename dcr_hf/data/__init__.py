"""Face datasets as Hugging Face `datasets`, the dataset registry, on-the-fly transforms and samplers.

Loaders: `load_casia`, `load_lfw_pairs`, `load_lfw_identities`, `load_scface`,
`load_scface_finetune`, `load_image_folder`, `load_face_dataset`, `load_synthetic`; the registry
(`dcr_hf.data.registry`) says which loader serves which command and protocol. Schemas:
`dcr_hf.data.features`. Transforms (for `apply_transform` / `Dataset.with_transform`), built
from a `DCRImageProcessor`: `TrainTransform`, `PairTransform`, `EvalTransform`,
`FinetuneTransform`. Sampler: `MPerClassSampler`.
"""

from .casia import load_casia
from .generic import load_face_dataset, load_image_folder
from .lfw import load_lfw_identities, load_lfw_pairs
from .registry import DATASETS, DatasetOptions, load_protocol_data, load_training_split
from .sampler import MPerClassSampler
from .scface import load_scface, load_scface_finetune
from .synthetic import load_synthetic
from .transforms import EvalTransform, FinetuneTransform, PairTransform, TrainTransform, apply_transform

__all__ = [
    "DATASETS",
    "DatasetOptions",
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
    "load_protocol_data",
    "load_scface",
    "load_scface_finetune",
    "load_synthetic",
    "load_training_split",
]
