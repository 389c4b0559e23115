"""Retrieval: LR queries against HR references (cross-resolution) or against LR references of the
same size (intra, the original's "IR"): precision@1, R-precision, MAP@R and k-means NMI/AMI."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch
from datasets import Dataset

from ..errors_dcr import DCRInputError
from ..data.transforms import EvalTransform, apply_transform
from ..degradation import Degradation
from ..image_processing_dcr import DCRImageProcessor
from ..metrics import RETRIEVAL_RULES, clustering_metrics, retrieval_metrics
from ._inputs import check_raw, column, model_kind
from .embeddings import HR, EmbeddingView, check_sizes, compute_embedding_views, get_dcr_model, processor_for


def _column(
    queries: np.ndarray, references: np.ndarray, labels: np.ndarray, metric: str, rule: str, clustering: bool
) -> dict[str, Any]:
    """One column of the table: reference i is query i's own image (in another form, or itself)."""
    result = retrieval_metrics(queries, labels, references, labels, metric=metric, rule=rule)
    summary = {
        "precision_at_1": result.precision_at_1,
        "r_precision": result.r_precision,
        "map_at_r": result.mean_average_precision_at_r,
        "num_queries": result.num_queries,
        "num_unmatched_queries": result.num_unmatched_queries,
    }
    if clustering:
        clusters = clustering_metrics(queries, labels, metric=metric)
        summary.update(nmi=clusters.nmi, ami=clusters.ami)
    return summary


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
    rule: str = "exclude_own",
    intra: bool = False,
    clustering: bool = True,
    show_progress: bool = True,
    degradation: Degradation | None = None,
) -> dict[str, Any]:
    """Retrieval of every image of `dataset` (`image`, `label`) among the others, one column per LR size plus HR.

    Every image is embedded at HR and at each LR size in one pass. Column s: queries = the LR-s
    embeddings; references = the HR embeddings of all images, or with `intra=True` the LR-s
    embeddings (the original's IR). Column `"hr"`: HR queries against HR references. In every
    column each query's own image is among the references; `rule` keeps it out (see
    `dcr_hf.metrics.RETRIEVAL_RULES`: "exclude_own" leaves out that very image, "original" drops
    the first neighbour as the original did) and R counts the other images of the identity.
    With `clustering`, NMI/AMI of faiss k-means clusters of the queries (one per identity).

    Returns:
        `{"protocol", "model_kind", "sizes", "flip_tta", "metric", "retrieval_rule", "num_images",
        "by_resolution": {"8": {"precision_at_1", "r_precision", "map_at_r", "nmi", "ami",
        "num_queries", "num_unmatched_queries"}, ..., "hr": {...}}, "mean_lr_precision_at_1"}`.
    """
    if rule not in RETRIEVAL_RULES:
        raise DCRInputError(f"rule={rule!r} is not one of {RETRIEVAL_RULES}.")
    dcr = get_dcr_model(model)
    sizes = check_sizes(dcr, sizes)
    check_raw(dataset, "retrieval", ("image", "label"))
    labels = column(dataset, "label", "retrieval")
    transform = EvalTransform(processor_for(dcr, image_processor), low_resolution_sizes=sizes, degradation=degradation)
    data = apply_transform(dataset.select_columns(["image"]), transform)
    views = [EmbeddingView(HR, "pixel_values", HR)] + [
        EmbeddingView(str(size), "low_resolution_pixel_values", size, index) for index, size in enumerate(sizes)
    ]
    protocol = "intra-retrieval" if intra else "retrieval"
    embeddings = compute_embedding_views(
        model, data, views, accelerator, flip_tta, batch_size, num_workers, desc=protocol.capitalize(),
        show_progress=show_progress,
    )
    by_resolution = {}
    for key in [*map(str, sizes), HR]:
        references = embeddings[key] if intra else embeddings[HR]
        by_resolution[key] = _column(embeddings[key], references, labels, metric, rule, clustering)
    low = [by_resolution[str(size)]["precision_at_1"] for size in sizes]
    return {
        "protocol": protocol,
        "model_kind": model_kind(dcr),
        "sizes": list(sizes),
        "flip_tta": flip_tta,
        "probe_degradation": degradation.settings if degradation is not None else None,
        "metric": metric,
        "retrieval_rule": rule,
        "num_images": len(labels),
        "by_resolution": by_resolution,
        "mean_lr_precision_at_1": float(np.mean(low)) if low else None,
    }


__all__ = ["evaluate_retrieval"]
