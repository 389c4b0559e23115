"""Cross-resolution retrieval: LR queries against HR references (precision@1, R-precision, MAP@R)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch
from datasets import Dataset

from ..data.transforms import EvalTransform, apply_transform
from ..image_processing_dcr import DCRImageProcessor
from ..metrics import retrieval_metrics
from ._inputs import check_raw, column, model_kind
from .embeddings import HR, EmbeddingView, check_sizes, compute_embedding_views, get_dcr_model, processor_for


def evaluate_retrieval(
    model: torch.nn.Module,
    dataset: Dataset,
    sizes: Sequence[int] | None = None,
    flip_tta: bool = False,
    batch_size: int = 64,
    accelerator: Any | None = None,
    num_workers: int = 0,
    image_processor: DCRImageProcessor | None = None,
    metric: Literal["cosine", "l2"] = "cosine",
    show_progress: bool = True,
) -> dict[str, Any]:
    """Cross-resolution retrieval: LR queries against HR references (precision@1, R-precision, MAP@R).

    Every image of `dataset` (`image`, `label`) is embedded at HR and at each LR size in one pass.
    Column s: queries = the LR-s embeddings, references = the HR embeddings of all images (as the
    original; a query's own HR image is among its references). Column `"hr"`: HR queries against the
    other HR images (the query itself left out).

    Returns:
        `{"protocol", "model_kind", "sizes", "num_images", "by_resolution": {"8": {"precision_at_1",
        "r_precision", "map_at_r", "num_queries", "num_unmatched_queries"}, ..., "hr": {...}},
        "mean_lr_precision_at_1"}`.
    """
    dcr = get_dcr_model(model)
    sizes = check_sizes(dcr, sizes)
    check_raw(dataset, "retrieval", ("image", "label"))
    labels = column(dataset, "label", "retrieval")
    transform = EvalTransform(processor_for(dcr, image_processor), low_resolution_sizes=sizes)
    data = apply_transform(dataset.select_columns(["image"]), transform)
    views = [EmbeddingView(HR, "pixel_values", HR)] + [
        EmbeddingView(str(size), "low_resolution_pixel_values", size, index) for index, size in enumerate(sizes)
    ]
    embeddings = compute_embedding_views(
        model, data, views, accelerator, flip_tta, batch_size, num_workers, desc="Retrieval",
        show_progress=show_progress,
    )

    def summarize(result) -> dict[str, Any]:
        return {
            "precision_at_1": result.precision_at_1,
            "r_precision": result.r_precision,
            "map_at_r": result.mean_average_precision_at_r,
            "num_queries": result.num_queries,
            "num_unmatched_queries": result.num_unmatched_queries,
        }

    by_resolution = {
        str(size): summarize(retrieval_metrics(embeddings[str(size)], labels, embeddings[HR], labels, metric=metric))
        for size in sizes
    }
    low = [by_resolution[str(size)]["precision_at_1"] for size in sizes]
    by_resolution[HR] = summarize(retrieval_metrics(embeddings[HR], labels, metric=metric))
    return {
        "protocol": "retrieval",
        "model_kind": model_kind(dcr),
        "sizes": list(sizes),
        "flip_tta": flip_tta,
        "metric": metric,
        "num_images": len(labels),
        "by_resolution": by_resolution,
        "mean_lr_precision_at_1": float(np.mean(low)) if low else None,
    }


__all__ = ["evaluate_retrieval"]
