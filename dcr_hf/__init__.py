"""dcr-hf: Deep Coupled ResNet for low-resolution face recognition on the Hugging Face stack.

Importing the package registers DCR with the transformers Auto classes.
"""

from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoModelForImageClassification

from .configuration_dcr import DCRConfig
from .configuration_dcr import check_low_resolution_sizes
from .convert import branch_model_from_trunk
from .image_processing_dcr import DCRImageProcessor, convert_to_rgb, simulate_low_resolution
from .low_resolution import make_low_resolution_copies
from .modeling_dcr import (
    DCRForImageClassification,
    DCRImageClassifierOutput,
    DCRModel,
    DCRModelOutput,
    DCRPreTrainedModel,
)
from .pipeline_dcr import DCRFeatureExtractionPipeline

__version__ = "0.1.0"

AutoConfig.register(DCRConfig.model_type, DCRConfig, exist_ok=True)
AutoModel.register(DCRConfig, DCRModel, exist_ok=True)
AutoModelForImageClassification.register(DCRConfig, DCRForImageClassification, exist_ok=True)
AutoImageProcessor.register(DCRConfig, slow_image_processor_class=DCRImageProcessor, exist_ok=True)

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
    "simulate_low_resolution",
]
