"""Face datasets as Hugging Face `datasets`, the dataset registry, on-the-fly transforms and samplers.

Loaders: `load_casia`, `load_lfw_pairs`, `load_lfw_identities`, `load_scface`,
`load_scface_finetune`, `load_image_folder`, `load_face_dataset`, `load_synthetic`, the native
low-resolution test sets `load_tinyface`, `load_survface_verification`,
`load_survface_identification` and insightface's `.bin` pairs `load_bin`; the registry
(`dcr_hf.data.registry`) says which loader serves which command and protocol. Schemas:
`dcr_hf.data.features`. Transforms (for `apply_transform` / `Dataset.with_transform`), built
from a `DCRImageProcessor`: `TrainTransform`, `PairTransform`, `EvalTransform`,
`FinetuneTransform`. Sampler: `MPerClassSampler`.
"""

from .._lazy import lazy_exports

#: Where each name lives; imported when first used, so that a command's `--help` (which needs only
#: `registry.DatasetOptions`) does not load `datasets`.
_EXPORTS = {
    "load_bin": "bin",
    "load_casia": "casia",
    "load_face_dataset": "generic",
    "load_image_folder": "generic",
    "load_lfw_identities": "lfw",
    "load_lfw_pairs": "lfw",
    "DATASETS": "registry",
    "DatasetOptions": "registry",
    "load_protocol_data": "registry",
    "load_training_split": "registry",
    "MPerClassSampler": "sampler",
    "load_scface": "scface",
    "load_scface_finetune": "scface",
    "load_survface_identification": "survface",
    "load_survface_verification": "survface",
    "load_synthetic": "synthetic",
    "load_tinyface": "tinyface",
    "EvalTransform": "transforms",
    "FinetuneTransform": "transforms",
    "PairTransform": "transforms",
    "TrainTransform": "transforms",
    "apply_transform": "transforms",
}


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = [
    "DATASETS",
    "DatasetOptions",
    "EvalTransform",
    "FinetuneTransform",
    "MPerClassSampler",
    "PairTransform",
    "TrainTransform",
    "apply_transform",
    "load_bin",
    "load_casia",
    "load_face_dataset",
    "load_image_folder",
    "load_lfw_identities",
    "load_lfw_pairs",
    "load_protocol_data",
    "load_scface",
    "load_scface_finetune",
    "load_survface_identification",
    "load_survface_verification",
    "load_synthetic",
    "load_tinyface",
    "load_training_split",
]
