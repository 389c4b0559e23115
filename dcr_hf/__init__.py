"""dcr-hf: Deep Coupled ResNet for low-resolution face recognition on the Hugging Face stack.

Importing the package is light (no torch, no transformers), so that the console commands answer
`--help` at once; the names below load on first use. DCR is registered with the transformers Auto
classes (`dcr_hf.auto_classes.register_auto_classes`) on the first use of any of them, by dcr_hf's
own loading code, and at import when torch is already imported (`import torch, dcr_hf`, then
`AutoModel.from_pretrained(folder)`).
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

__version__ = "0.1.0"

#: Public name -> the module (relative to this package) that defines it.
_EXPORTS = {
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
}


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from .auto_classes import register_auto_classes

    register_auto_classes()
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})


if "torch" in sys.modules:
    # The heavy libraries are loaded already: registering costs nothing and keeps
    # `import dcr_hf` + `AutoModel.from_pretrained(folder)` working as it always did.
    from .auto_classes import register_auto_classes as _register

    _register()

__all__ = sorted(_EXPORTS)
