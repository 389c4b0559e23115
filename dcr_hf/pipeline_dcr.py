"""The DCR face-embedding pipeline (`"image-feature-extraction"`), with routing of low-resolution faces.

Every saved DCR folder holds this file and names it in `config.json` under `custom_pipelines`, so

    pipe = pipeline("image-feature-extraction", model="org/dcr-branch", trust_remote_code=True)

builds it where dcr_hf is not installed. It travels with the model files, so it imports only
torch, transformers, PIL, numpy and `.errors_dcr`.
"""

from __future__ import annotations

from typing import Any

import PIL.Image
import torch
from transformers import AutoModel, Pipeline
from transformers.image_utils import load_image
from transformers.pipelines.base import PipelineRegistry

from .errors_dcr import DCRInputError

#: The task the pipeline serves.
TASK = "image-feature-extraction"
_HIGH_RESOLUTION = ("hr", "HR")


def nearest_resolution(side: int, low_resolution_sizes: list[int], image_size: int) -> int | str:
    """The branch for a face whose shorter side is `side` pixels.

    `"hr"` when `side >= image_size`; otherwise the size among `low_resolution_sizes` and
    `image_size` (standing for HR) with the smallest absolute difference to `side`, a tie going to
    the smaller size (the branch trained on no more detail than the face has).
    """
    if side >= image_size:
        return "hr"
    candidates = sorted({*low_resolution_sizes, image_size})
    best = min(candidates, key=lambda size: (abs(size - side), size))
    return "hr" if best == image_size else best


class DCRFeatureExtractionPipeline(Pipeline):
    """Face embeddings of a DCR model, one per image, through the branch that fits each face.

    `pipe(image)` returns the embedding (`pooler_output`) as a nested list `[1, embedding_size]`
    (`return_tensors=True`: a tensor), exactly `model(processor(image, low_resolution_size=s),
    resolution=r).pooler_output` for the branch `r` below. Images: PIL images, local paths, URLs or
    encoded bytes.

    Which branch a model with branches uses (`resolution_for` tells it for an image):

    - `resolution=r` forces branch r (`"hr"` or `image_size` for the HR gallery branch, an LR size
      such as 8); the image is preprocessed as it is.
    - `low_resolution_size=s` makes the image a simulated s x s probe (the processor's LR
      simulation) and routes it as an s x s face.
    - otherwise a face whose shorter side is at least `image_size` goes to the HR branch, and a
      smaller one (a native LR crop, e.g. 8x8 or 11x13) to the branch whose size is nearest its
      shorter side, HR counting as `image_size`; a tie goes to the smaller size (10 -> 8 between 8
      and 12). The processor resizes the crop to `image_size` first.

    A trunk-only model (`use_branches=False`) has one embedding for every resolution and ignores
    `resolution`.
    """

    _load_processor = False
    _load_image_processor = True
    _load_feature_extractor = False
    _load_tokenizer = False
    _load_video_processor = False

    def __init__(self, model, *args, **kwargs):
        # A training head (DCRForImageClassification) embeds through its `.dcr` DCRModel.
        super().__init__(getattr(model, "dcr", model), *args, **kwargs)

    def _sanitize_parameters(self, resolution=None, low_resolution_size=None, return_tensors=None, timeout=None):
        preprocess = {"resolution": resolution, "low_resolution_size": low_resolution_size, "timeout": timeout}
        postprocess = {} if return_tensors is None else {"return_tensors": return_tensors}
        return {k: v for k, v in preprocess.items() if v is not None}, {}, postprocess

    def _open(self, image: Any, timeout: float | None = None) -> PIL.Image.Image:
        if isinstance(image, str) and image.startswith(("http://", "https://")):
            return load_image(image, timeout=timeout)
        if not isinstance(image, (PIL.Image.Image, str, bytes, bytearray, dict)) and not hasattr(image, "__fspath__"):
            raise DCRInputError(
                f"the DCR pipeline takes PIL images, paths, URLs or encoded bytes, got {type(image).__name__}; "
                "for arrays and tensors call the image processor and the model directly."
            )
        return self.image_processor.open_image(image)

    def resolution_for(self, image: Any, resolution: int | str | None = None, low_resolution_size: int | None = None,
                       timeout: float | None = None) -> int | str:
        """The branch `pipe(image, resolution=..., low_resolution_size=...)` uses: `"hr"` or an LR size."""
        config = self.model.config
        if resolution is not None:
            return "hr" if resolution in _HIGH_RESOLUTION or resolution == config.image_size else int(resolution)
        if low_resolution_size is not None:
            side = int(low_resolution_size)
        else:
            side = min(self._open(image, timeout).size)
        return nearest_resolution(side, list(config.low_resolution_sizes), config.image_size)

    def preprocess(self, image, resolution=None, low_resolution_size=None, timeout=None) -> dict[str, torch.Tensor]:
        image = self._open(image, timeout)
        branch = self.resolution_for(image, resolution, low_resolution_size)
        pixel_values = self.image_processor(image, low_resolution_size=low_resolution_size, return_tensors="pt").pixel_values
        # The branch as a [1] tensor (HR = image_size), so that batched calls collate it like the pixels.
        size = self.model.config.image_size if branch == "hr" else branch
        return {"pixel_values": pixel_values.to(self.dtype), "resolution": torch.tensor([size])}

    def _forward(self, model_inputs: dict[str, torch.Tensor]):
        values = model_inputs["resolution"].tolist()
        # One value for the batch takes the model's single-branch path, the same call as model(x, resolution=r).
        resolution = values[0] if len(set(values)) == 1 else values
        return self.model(pixel_values=model_inputs["pixel_values"], resolution=resolution)

    def postprocess(self, model_outputs, return_tensors: bool = False):
        embeddings = model_outputs["pooler_output"]
        return embeddings if return_tensors else embeddings.tolist()


# Registered on a registry of its own rather than transformers' global PIPELINE_REGISTRY: that would
# replace the built-in "image-feature-extraction" pipeline for every model in the process. The
# registration gives the class the `_registered_impl` from which `Pipeline.save_pretrained` writes
# `config.custom_pipelines`, the entry every DCR folder carries (`modeling_dcr.CUSTOM_PIPELINES`).
PipelineRegistry(supported_tasks={}, task_aliases={}).register_pipeline(
    TASK, pipeline_class=DCRFeatureExtractionPipeline, pt_model=AutoModel, type="image"
)

__all__ = ["DCRFeatureExtractionPipeline", "TASK", "nearest_resolution"]
