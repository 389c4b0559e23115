"""LFW-style verification of HR gallery images against LR probes (the original's protocol)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch
from datasets import Dataset
from transformers.utils import logging

from ..data.transforms import PairTransform, apply_transform
from ..degradation import Degradation
from ..image_processing_dcr import DCRImageProcessor
from ..metrics import cosine_similarity_pairs, roc_metrics, verification_accuracy
from ..metrics.verification import _fold_ids
from ._inputs import check_raw, column, model_kind
from .embeddings import HR, EmbeddingView, check_sizes, compute_embedding_views, get_dcr_model, processor_for

logger = logging.get_logger(__name__)

#: insightface's verification thresholds (`np.arange(0, 4, 0.01)` on the squared L2 distance of normalized
#: embeddings, "same" when below) as cosine thresholds: `d < t` is `cos > 1 - t / 2`.
INSIGHTFACE_THRESHOLD_GRID = 1.0 - np.arange(0, 4, 0.01) / 2

#: Fewer pairs than this in a fold make its accuracy coarse (steps of 1/n) and the std over folds noise.
MIN_PAIRS_PER_FOLD = 10


def warn_small_folds(folds: np.ndarray | None, num_pairs: int) -> None:
    """Warn (once per message) when a verification fold holds fewer than `MIN_PAIRS_PER_FOLD` pairs:
    the 10-fold figures (e.g. "0.00±0.00" from 5 pairs) would look like results without being any."""
    fold_ids, num_folds = _fold_ids(folds, num_pairs, None)
    sizes = np.bincount(fold_ids, minlength=num_folds)
    if sizes.min() < MIN_PAIRS_PER_FOLD:
        logger.warning_once(
            f"verification: {num_pairs} pairs in {num_folds} folds ({sizes.min()} to {sizes.max()} per fold): "
            f"with fewer than {MIN_PAIRS_PER_FOLD} pairs in a fold, its accuracy and the std over folds mean little "
            "(LFW's protocol has 10 folds of 600 pairs)."
        )


def _pair_views(sizes: Sequence[int], intra: bool) -> list[EmbeddingView]:
    views = [EmbeddingView("a_hr", "pixel_values_a", HR), EmbeddingView("b_hr", "pixel_values_b", HR)]
    for index, size in enumerate(sizes):
        views.append(EmbeddingView(f"b_{size}", "low_resolution_pixel_values_b", size, index))
        if intra:
            views.append(EmbeddingView(f"a_{size}", "low_resolution_pixel_values_a", size, index))
    return views


def _score_column(
    first: np.ndarray, second: np.ndarray, is_same: np.ndarray, folds: np.ndarray | None, threshold_grid: Any,
    far_targets: Sequence[float],
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """One column of the table (an LR size, or HR): 10-fold accuracy and ROC figures, and the curve."""
    scores = cosine_similarity_pairs(first, second)
    verification = verification_accuracy(scores, is_same, folds, threshold_grid=threshold_grid)
    roc = roc_metrics(scores, is_same, far_targets)
    summary = {
        "accuracy": verification.accuracy,
        "accuracy_std": verification.accuracy_std,
        "threshold": verification.threshold,
        "fold_accuracies": verification.fold_accuracies.tolist(),
        "auc": roc.auc,
        "eer": roc.eer,
        "tar_at_far": {f"{far:g}": tar for far, tar in roc.tar_at_far.items()},
    }
    return summary, {"fpr": roc.fpr, "tpr": roc.tpr}


def evaluate_verification(
    model: torch.nn.Module,
    pairs_dataset: Dataset,
    sizes: Sequence[int] | None = None,
    intra: bool = False,
    flip_tta: bool = False,
    batch_size: int = 64,
    accelerator: Any | None = None,
    threshold_grid: Literal["original"] | Sequence[float] | np.ndarray | None = None,
    num_workers: int = 0,
    image_processor: DCRImageProcessor | None = None,
    far_targets: Sequence[float] = (1e-3, 1e-2, 1e-1),
    show_progress: bool = True,
    degradation: Degradation | None = None,
) -> dict[str, Any]:
    """Verification of HR images against LR probes, one column per probe size plus HR.

    The first image of a pair at HR, the second at each LR size (simulated by `image_processor`);
    cosine similarity; 10-fold accuracy with the threshold chosen on the other 9 folds (the
    dataset's `fold` column, else 10 contiguous blocks). The `"hr"` column has both images at HR;
    with `intra=True` both images are at the same LR size. Each pair is decoded once and all its
    views embedded in one forward pass.

    Args:
        pairs_dataset: raw pairs with `image_a`, `image_b`, `is_same` and optionally `fold`.
        sizes: LR probe sizes (checked against the model before any image is read; default: the
            model's `low_resolution_sizes`).
        threshold_grid: `None` = every distinct decision (exact), `"original"` = the original's grid
            -1.0..1.0 step 0.005, or an array (see `dcr_hf.metrics.verification_accuracy`).
        far_targets: false accept rates at which the true accept rate is reported.
        degradation: a `dcr_hf.degradation.Degradation` the LR probes go through (blur, noise, JPEG
            after the downsampling); the HR images are left clean.

    Returns:
        `{"protocol", "model_kind", "num_pairs", "sizes", "flip_tta", "threshold_grid", "by_resolution":
        {"8": {...}, ..., "hr": {...}}, "mean_lr_accuracy", "curves"}`; a column holds `accuracy`,
        `accuracy_std`, `threshold`, `fold_accuracies`, `auc`, `eer`, `tar_at_far`; `curves` holds
        numpy `fpr`/`tpr` per column. `mean_lr_accuracy` is the published recipe's validation criterion.
    """
    dcr = get_dcr_model(model)
    sizes = check_sizes(dcr, sizes)
    check_raw(pairs_dataset, "pairs", ("image_a", "image_b", "is_same"))
    is_same = column(pairs_dataset, "is_same", "pairs").astype(bool)
    folds = column(pairs_dataset, "fold", "pairs").astype(np.int64) if "fold" in pairs_dataset.column_names else None
    warn_small_folds(folds, len(is_same))
    transform = PairTransform(processor_for(dcr, image_processor), low_resolution_sizes=sizes, intra_scale=intra,
                              degradation=degradation)
    data = apply_transform(pairs_dataset.select_columns(["image_a", "image_b", "is_same"]), transform)
    protocol = "intra-verification" if intra else "verification"
    embeddings = compute_embedding_views(
        model, data, _pair_views(sizes, intra), accelerator, flip_tta, batch_size, num_workers,
        desc=protocol.capitalize(), show_progress=show_progress,
    )
    by_resolution: dict[str, dict[str, Any]] = {}
    curves: dict[str, dict[str, np.ndarray]] = {}
    for key in [*map(str, sizes), HR]:
        first = embeddings[f"a_{key}"] if intra and key != HR else embeddings["a_hr"]
        by_resolution[key], curves[key] = _score_column(
            first, embeddings[f"b_{key}"], is_same, folds, threshold_grid, far_targets
        )
    low = [by_resolution[str(size)]["accuracy"] for size in sizes]
    return {
        "protocol": protocol,
        "model_kind": model_kind(dcr),
        "num_pairs": len(is_same),
        "sizes": list(sizes),
        "flip_tta": flip_tta,
        "probe_degradation": degradation.settings if degradation is not None else None,
        "threshold_grid": threshold_grid if threshold_grid is None or isinstance(threshold_grid, str) else "custom",
        "by_resolution": by_resolution,
        "mean_lr_accuracy": float(np.mean(low)) if low else None,
        "curves": curves,
    }


__all__ = ["INSIGHTFACE_THRESHOLD_GRID", "MIN_PAIRS_PER_FOLD", "evaluate_verification", "warn_small_folds"]
