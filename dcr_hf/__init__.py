"""dcr-hf: Deep Coupled ResNet for low-resolution face recognition on the Hugging Face stack.

Importing the package is light (no torch, no transformers), so that the console commands answer
`--help` at once; the names below load on first use. DCR is registered with the transformers Auto
classes (`register_auto_classes`) on the first use of any of them, by dcr_hf's own loading code,
and at import when torch or transformers is already imported (`import torch, dcr_hf`, then
`AutoModel.from_pretrained(folder)`). A script that imports dcr_hf before both and then uses only
the Auto classes calls `dcr_hf.register_auto_classes()` first.
"""

from __future__ import annotations

import sys

from ._lazy import lazy_exports

__version__ = "0.1.0"


def _register() -> None:
    from .auto_classes import register_auto_classes

    register_auto_classes()


_load, __dir__ = lazy_exports(
    __name__,
    {
        "DCRConfig": "configuration_dcr",
        "check_low_resolution_sizes": "configuration_dcr",
        "DCRImageProcessor": "image_processing_dcr",
        "convert_to_rgb": "image_processing_dcr",
        "simulate_low_resolution": "image_processing_dcr",
        "make_low_resolution_copies": "low_resolution",
        "DCRForImageClassification": "modeling_dcr",
        "DCRImageClassifierOutput": "modeling_dcr",
        "DCRModel": "modeling_dcr",
        "DCRModelOutput": "modeling_dcr",
        "DCRPreTrainedModel": "modeling_dcr",
        "DCRFeatureExtractionPipeline": "pipeline_dcr",
        "register_auto_classes": "auto_classes",
        "branch_model_from_trunk": "convert",
    },
)


def __getattr__(name: str) -> object:
    value = _load(name)  # AttributeError for a name that is not exported
    _register()
    return value


if "torch" in sys.modules or "transformers" in sys.modules:
    # The heavy libraries are loaded already: registering now costs little and keeps
    # `import torch, dcr_hf` + `AutoModel.from_pretrained(folder)` working as it always did.
    _register()

__all__ = [
    "DCRConfig",
    "DCRFeatureExtractionPipeline",
    "DCRForImageClassification",
    "DCRImageClassifierOutput",
    "DCRImageProcessor",
    "DCRModel",
    "DCRModelOutput",
    "DCRPreTrainedModel",
    "branch_model_from_trunk",
    "check_low_resolution_sizes",
    "convert_to_rgb",
    "make_low_resolution_copies",
    "register_auto_classes",
    "simulate_low_resolution",
]
