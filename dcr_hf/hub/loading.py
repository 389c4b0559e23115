"""Loading a DCR model folder (or Hub repo) with its image processor.

`load_model_and_processor` checks the folder first (`dcr_hf.model_files`), refuses a non-DCR
config before any weights load, and pairs the embedder with the processor saved beside it; a
folder saved without one (no `preprocessor_config.json`) is evaluated with the default processor
for its image size, and a warning names every value that assumes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from transformers.utils import logging

from ..errors_dcr import DCRInputError
from ..configuration_dcr import DCRConfig
from ..image_processing_dcr import DCRImageProcessor
from ..model_files import check_model_source, load_config, load_pretrained

logger = logging.get_logger(__name__)

PROCESSOR_FILE = "preprocessor_config.json"


def assumed_processor_values(processor: DCRImageProcessor) -> str:
    """The preprocessing a default processor applies, in one phrase (what a warning names)."""
    size = processor.image_size
    return (
        f"image size {size}x{size}, mean {list(processor.image_mean)}, std {list(processor.image_std)}, "
        f"LR operator {processor.downsample_interpolation} down / {processor.upsample_interpolation} up"
    )


def _default_processor(name_or_path: str, image_size: int, reason: str) -> DCRImageProcessor:
    processor = DCRImageProcessor(image_size=image_size)
    # Once per folder: a run evaluates a model many times, one warning says it all.
    logger.warning_once(
        f"'{name_or_path}' {reason}; assuming DCRImageProcessor's defaults: {assumed_processor_values(processor)}. "
        f"Save the processor the model was trained with ({PROCESSOR_FILE}) to use its own values."
    )
    return processor


def load_image_processor(name_or_path: str, image_size: int, **from_pretrained_kwargs: Any) -> DCRImageProcessor:
    """The `DCRImageProcessor` saved with a model folder or Hub repo.

    A folder saved without a processor gets a default `DCRImageProcessor(image_size=image_size)`,
    with one warning naming the values assumed; a processor of another class or image size raises
    `ValueError`.
    """
    from transformers import AutoImageProcessor

    from ..auto_classes import register_auto_classes

    register_auto_classes()
    folder = Path(name_or_path).expanduser()
    if folder.is_dir() and not (folder / PROCESSOR_FILE).is_file():
        return _default_processor(name_or_path, image_size, f"has no {PROCESSOR_FILE}")
    try:
        # Never asked on the terminal: a processor needing remote code is "no image processor" here.
        kwargs = {"trust_remote_code": False, **from_pretrained_kwargs}
        processor = AutoImageProcessor.from_pretrained(name_or_path, **kwargs)
    except (OSError, ValueError) as error:
        return _default_processor(name_or_path, image_size, f"has no image processor ({error})")
    if not isinstance(processor, DCRImageProcessor):
        raise DCRInputError(f"'{name_or_path}' saved a {type(processor).__name__}; DCR models need a DCRImageProcessor.")
    if processor.image_size != image_size:
        raise DCRInputError(
            f"'{name_or_path}' saved a processor for {processor.image_size}x{processor.image_size} images, but its "
            f"model expects image_size={image_size}."
        )
    return processor


def load_model_and_processor(
    name_or_path: str, option: str = "model", **from_pretrained_kwargs: Any
) -> tuple[Any, DCRImageProcessor]:
    """Load a DCR embedder (`DCRModel`) and its image processor from a folder or a Hub id.

    The folder (or id) is checked first (`model_files.check_model_source`: a missing folder, a broken
    config or weight file is named in one line, `option` first), then the config, so that a non-DCR
    checkpoint fails with a `ValueError` before any weights are loaded; weights the folder lacks are
    refused. The model comes back channels-last (faster convolutions on CPU and GPU).
    """
    import torch
    from transformers import AutoConfig, AutoModel

    from ..auto_classes import register_auto_classes

    register_auto_classes()
    config_file = Path(name_or_path).expanduser() / "config.json"
    if config_file.is_file():
        # Read before transformers: another model's folder may name its own code to run (auto_map).
        check_model_source(name_or_path, option, weights=False)
        model_type = json.loads(config_file.read_text(encoding="utf-8"))["model_type"]
        if model_type != DCRConfig.model_type:
            raise DCRInputError(
                f"{option} {name_or_path} holds a model of type {model_type!r} ({config_file}); dcr_hf evaluates DCR "
                "models only (model_type='dcr') and never runs a folder's own code."
            )
    config = load_config(AutoConfig, name_or_path, option, **from_pretrained_kwargs)
    if config.model_type != DCRConfig.model_type:
        raise DCRInputError(
            f"'{name_or_path}' holds a {type(config).__name__} (model_type={config.model_type!r}); "
            "dcr_hf evaluates DCR models only (model_type='dcr')."
        )
    model = load_pretrained(AutoModel, name_or_path, option, config=config, **from_pretrained_kwargs)
    processor = load_image_processor(name_or_path, config.image_size, **from_pretrained_kwargs)
    model = getattr(model, "dcr", model)
    return model.to(memory_format=torch.channels_last), processor


__all__ = ["PROCESSOR_FILE", "assumed_processor_values", "load_image_processor", "load_model_and_processor"]
