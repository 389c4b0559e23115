"""DCR registered with the transformers Auto classes (`AutoConfig`, `AutoModel`,
`AutoModelForImageClassification`, `AutoImageProcessor`), so that a DCR folder loads with plain
`from_pretrained` in a process that imported dcr_hf (without `trust_remote_code`)."""

from __future__ import annotations

from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoModelForImageClassification

from .configuration_dcr import DCRConfig
from .image_processing_dcr import DCRImageProcessor
from .modeling_dcr import DCRForImageClassification, DCRModel


def register_auto_classes() -> None:
    """Register DCR's config, models and processor with the Auto classes (again: a no-op)."""
    AutoConfig.register(DCRConfig.model_type, DCRConfig, exist_ok=True)
    AutoModel.register(DCRConfig, DCRModel, exist_ok=True)
    AutoModelForImageClassification.register(DCRConfig, DCRForImageClassification, exist_ok=True)
    AutoImageProcessor.register(DCRConfig, slow_image_processor_class=DCRImageProcessor, exist_ok=True)


__all__ = ["register_auto_classes"]
