"""Embedding extraction: the DCR embedder inside a model, probe sizes it can take, batched views.

Which embedding is used: a trunk model (`config.use_branches=False`) uses its trunk embedding
whatever the resolution; a branch model sends HR images through the HR branch and an s x s
probe through branch s.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from datasets import Dataset
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ..errors_dcr import DCRInputError
from ..configuration_dcr import DCRConfig, check_low_resolution_sizes
from ..data.transforms import EvalTransform, apply_transform
from ..image_processing_dcr import DCRImageProcessor
from ..modeling_dcr import DCRModel

#: Key of the high-resolution column in the results.
HR = "hr"

Resolution = int | str | None


def get_dcr_model(model: torch.nn.Module) -> DCRModel:
    """The `DCRModel` inside `model`: itself, `.dcr` of a `DCRForImageClassification`, or either of
    them wrapped by DDP/Accelerate (`.module`) or `torch.compile` (`._orig_mod`)."""
    inner = model
    for attribute in ("module", "_orig_mod"):
        while hasattr(inner, attribute) and isinstance(getattr(inner, attribute), torch.nn.Module):
            inner = getattr(inner, attribute)
    model_type = getattr(getattr(inner, "config", None), "model_type", None)
    if model_type != DCRConfig.model_type:
        raise DCRInputError(
            f"Expected a DCR model (config.model_type='dcr'), got {type(inner).__name__} with "
            f"model_type={model_type!r}. Only DCR models (DCRModel, DCRForImageClassification) can be evaluated."
        )
    inner = getattr(inner, "dcr", inner)
    if not isinstance(inner, DCRModel):
        raise DCRInputError(f"Expected a DCRModel or a model with a `.dcr` DCRModel, got {type(inner).__name__}.")
    return inner


def check_sizes(model: torch.nn.Module, sizes: Iterable[int] | None) -> tuple[int, ...]:
    """LR probe sizes for `model`, checked before any image is decoded (`None`: the model's own sizes).

    A branch model also needs a branch for every size (its `config.low_resolution_sizes`).
    """
    config = get_dcr_model(model).config
    if sizes is None:
        return tuple(config.low_resolution_sizes)
    checked = check_low_resolution_sizes(sizes, config.image_size, name="sizes")
    for size in checked:
        if config.use_branches and size not in config.low_resolution_sizes:
            raise DCRInputError(
                f"This branch model has no branch for {size}x{size} probes; its branches are HR "
                f"({config.image_size}) and the low-resolution sizes {config.low_resolution_sizes}. "
                "Evaluate one of those sizes (e.g. --sizes " + " ".join(map(str, config.low_resolution_sizes)) + ")."
            )
    return tuple(checked)


def check_resolution(model: DCRModel, resolution: Resolution) -> int | str:
    """`"hr"` for the HR aliases (`None`, `"hr"`, `image_size`), else a checked LR size."""
    if resolution is None or (isinstance(resolution, str) and resolution.lower() == HR):
        return HR
    if resolution == model.config.image_size:
        return HR
    return check_sizes(model, [resolution])[0]


def processor_for(model: torch.nn.Module, image_processor: DCRImageProcessor | None) -> DCRImageProcessor:
    """The processor to preprocess for `model`: the given one (checked against the model's image
    size) or a default `DCRImageProcessor` at the model's `image_size`."""
    config = get_dcr_model(model).config
    if image_processor is None:
        return DCRImageProcessor(image_size=config.image_size)
    if not isinstance(image_processor, DCRImageProcessor):
        raise TypeError(f"image_processor must be a DCRImageProcessor, got {type(image_processor).__name__}.")
    if image_processor.image_size != config.image_size:
        raise DCRInputError(
            f"The image processor makes {image_processor.image_size}x{image_processor.image_size} images but the "
            f"model expects image_size={config.image_size}."
        )
    return image_processor


@dataclass(frozen=True)
class EmbeddingView:
    """One image tensor of each batch to embed, and through which branch.

    Attributes:
        name: key of the result.
        input_name: batch key of the pixels, `[batch, 3, H, W]` or `[batch, resolutions, 3, H, W]`.
        resolution: `"hr"` or an LR size; picks the branch of a branch model (ignored by a trunk model).
        copy_index: position on the resolutions axis when `input_name` is 5-D.
    """

    name: str
    input_name: str = "pixel_values"
    resolution: int | str = HR
    copy_index: int | None = None


def _select_pixels(batch: Mapping[str, torch.Tensor], view: EmbeddingView) -> torch.Tensor:
    if view.input_name not in batch:
        raise KeyError(f"The batches have no {view.input_name!r} (view {view.name!r}); they have {sorted(batch)}.")
    pixels = batch[view.input_name]
    if view.copy_index is not None:
        if pixels.ndim != 5:
            raise DCRInputError(
                f"{view.input_name!r} has shape {tuple(pixels.shape)}; copy_index needs [batch, resolutions, 3, H, W]."
            )
        pixels = pixels[:, view.copy_index]
    if pixels.ndim != 4:
        raise DCRInputError(f"{view.input_name!r} has shape {tuple(pixels.shape)}; expected [batch, 3, H, W].")
    return pixels


def _embed_batch(
    dcr: DCRModel, batch: Mapping[str, torch.Tensor], views: Sequence[EmbeddingView], flip_tta: bool
) -> dict[str, torch.Tensor]:
    """All views of one batch in one forward pass; a branch model routes each row to its view's branch."""
    parameter = next(dcr.parameters())
    pixels = [_select_pixels(batch, view).to(parameter.device, parameter.dtype, non_blocking=True) for view in views]
    counts = [p.shape[0] for p in pixels]
    stacked = torch.cat(pixels)
    resolution = None
    if dcr.config.use_branches:
        per_view = {view.resolution for view in views}
        resolution = (
            next(iter(per_view))
            if len(per_view) == 1
            else [view.resolution for view, n in zip(views, counts) for _ in range(n)]
        )
    if flip_tta:
        stacked = torch.cat([stacked, stacked.flip(-1)])
        if isinstance(resolution, list):
            resolution = resolution + resolution
    embeddings = dcr(stacked, resolution=resolution).pooler_output.float()
    if flip_tta:
        half = embeddings.shape[0] // 2
        # The mean keeps the embedding's scale; cosine scores are the same as for the sum.
        embeddings = (embeddings[:half] + embeddings[half:]) / 2
    return dict(zip([view.name for view in views], torch.split(embeddings, counts)))


def compute_embedding_views(
    model: torch.nn.Module,
    data: DataLoader | Dataset,
    views: Sequence[EmbeddingView],
    accelerator: Any | None = None,
    flip_tta: bool = False,
    batch_size: int = 64,
    num_workers: int = 0,
    desc: str = "Embedding",
    show_progress: bool = True,
) -> dict[str, np.ndarray]:
    """Embed several views of every batch (e.g. the HR image and its LR copies) in one pass per batch.

    Args:
        model: a DCR model (see `get_dcr_model`); put in eval mode and restored afterwards. The
            inputs go to the model's device and dtype.
        data: a `DataLoader`, or a dataset whose transform yields the views' `input_name`s (batched
            with `batch_size`, in order).
        views: what to embed; names must be unique.
        accelerator: an `accelerate.Accelerator`: the DataLoader is sharded over processes and the
            embeddings gathered with `gather_for_metrics`, so every sample counts exactly once.
        flip_tta: also embed the horizontally flipped images and average the two embeddings.

    Returns:
        `{view.name: float32 [num_samples, dim]}`.
    """
    dcr = get_dcr_model(model)
    if not views:
        raise DCRInputError("views is empty; give at least one EmbeddingView.")
    names = [view.name for view in views]
    if len(set(names)) != len(names):
        raise DCRInputError(f"View names must be unique, got {names}.")
    views = [EmbeddingView(v.name, v.input_name, check_resolution(dcr, v.resolution), v.copy_index) for v in views]
    # shuffle=False keeps dataset order, which the protocols rely on (pairs, folds, labels).
    dataloader = data if isinstance(data, DataLoader) else DataLoader(data, batch_size=batch_size, num_workers=num_workers)
    if accelerator is not None:
        dataloader = accelerator.prepare(dataloader)
    is_main = accelerator.is_local_main_process if accelerator is not None else True
    autocast = accelerator.autocast() if accelerator is not None else contextlib.nullcontext()
    collected: dict[str, list[np.ndarray]] = {name: [] for name in names}
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(), autocast:
            for batch in tqdm(dataloader, desc=desc, disable=not (show_progress and is_main)):
                outputs = _embed_batch(dcr, batch, views, flip_tta)
                if accelerator is not None:
                    outputs = accelerator.gather_for_metrics(outputs)
                for name, value in outputs.items():
                    collected[name].append(value.cpu().numpy())
    finally:
        model.train(was_training)
    if not collected[names[0]]:
        raise DCRInputError("The data yielded no batch; nothing to embed.")
    return {name: np.concatenate(chunks) for name, chunks in collected.items()}


def _is_raw_image_dataset(data: Any) -> bool:
    return isinstance(data, Dataset) and data.format["type"] is None and "image" in data.column_names


def compute_embeddings(
    model: torch.nn.Module,
    data: DataLoader | Dataset,
    accelerator: Any | None = None,
    resolution: Resolution = None,
    flip_tta: bool = False,
    batch_size: int = 64,
    num_workers: int = 0,
    image_processor: DCRImageProcessor | None = None,
    input_name: str = "pixel_values",
    show_progress: bool = True,
) -> np.ndarray:
    """Embeddings `[num_samples, dim]` of every image of `data`, in order.

    `data` is either a raw `datasets.Dataset` with an `image` column (no transform attached):
    images are preprocessed by `image_processor` (default: the model's image size) and, when
    `resolution` is an LR size s, made into s x s probes, then embedded through branch s (a branch
    model) or the trunk; or a DataLoader / transformed dataset yielding `input_name`
    `[batch, 3, H, W]`, embedded as it is (`resolution` only picks the branch, e.g. for real LR
    probes). See `compute_embedding_views` for `accelerator` and `flip_tta`.
    """
    dcr = get_dcr_model(model)
    resolution = check_resolution(dcr, resolution)
    view = EmbeddingView("embeddings", input_name, resolution)
    if _is_raw_image_dataset(data):
        sizes = () if resolution == HR else (resolution,)
        transform = EvalTransform(processor_for(dcr, image_processor), low_resolution_sizes=sizes)
        data = apply_transform(data.select_columns(["image"]), transform)
        if sizes:
            view = EmbeddingView("embeddings", "low_resolution_pixel_values", resolution, copy_index=0)
    return compute_embedding_views(
        model, data, [view], accelerator=accelerator, flip_tta=flip_tta, batch_size=batch_size,
        num_workers=num_workers, show_progress=show_progress,
    )["embeddings"]


def embed_row_groups(
    model: torch.nn.Module, images: Dataset, groups: Iterable[tuple[np.ndarray, Resolution, str]],
    transform: EvalTransform, **common: Any,
) -> np.ndarray:
    """`[len(images), dim]` embeddings in dataset order, each group `(rows, resolution, desc)` of rows
    embedded through its branch (`transform` applied to their `image` column)."""
    embeddings = None
    for rows, resolution, desc in groups:
        subset = apply_transform(images.select(rows).select_columns(["image"]), transform)
        embedded = compute_embedding_views(
            model, subset, [EmbeddingView("images", resolution=resolution)], desc=desc, **common
        )["images"]
        if embeddings is None:
            embeddings = np.empty((len(images), embedded.shape[1]), dtype=np.float32)
        embeddings[rows] = embedded
    return embeddings


__all__ = [
    "EmbeddingView",
    "HR",
    "check_resolution",
    "check_sizes",
    "compute_embedding_views",
    "compute_embeddings",
    "embed_row_groups",
    "get_dcr_model",
    "processor_for",
]
