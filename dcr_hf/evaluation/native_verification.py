"""Verification of native low-resolution pairs (QMUL-SurvFace): both images as they are."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from datasets import Dataset

from ..image_processing_dcr import DCRImageProcessor
from ._inputs import check_raw, column, model_kind
from .embeddings import get_dcr_model
from .native import embed_images, native_routes, native_sides, routing_table
from .verification import _score_column

#: The false accept rates QMUL-SurvFace reports the true accept rate at.
SURVFACE_FAR_TARGETS = (0.3, 0.1, 0.01, 0.001)
#: The column of the results (both images native).
NATIVE = "native"


def evaluate_native_verification(
    model: torch.nn.Module,
    images: Dataset,
    pairs: Dataset,
    far_targets: Sequence[float] = SURVFACE_FAR_TARGETS,
    route_images: bool = True,
    threshold_grid: Any = None,
    flip_tta: bool = False,
    batch_size: int = 64,
    accelerator: Any | None = None,
    num_workers: int = 0,
    image_processor: DCRImageProcessor | None = None,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Each image (`image`, `width`, `height`) embedded once as it is, through the branch nearest its
    native shorter side (`route_images`, branch models); pairs (`index_a`, `index_b`, `is_same`,
    `fold`) scored by cosine similarity: 10-fold accuracy, AUC, EER and TAR at `far_targets`.

    Returns:
        `{"protocol", "model_kind", "num_pairs", "num_images", "flip_tta", "by_resolution": {"native":
        {"accuracy", "accuracy_std", "auc", "eer", "tar_at_far", ...}}, "routing", "mean_accuracy", "curves"}`.
    """
    dcr = get_dcr_model(model)
    check_raw(images, "images", ("image", "width", "height"))
    check_raw(pairs, "pairs", ("index_a", "index_b", "is_same"))
    sides = native_sides(images, "images")
    routes = native_routes(dcr, sides, route_images)
    common = dict(accelerator=accelerator, flip_tta=flip_tta, batch_size=batch_size, num_workers=num_workers,
                  show_progress=show_progress)
    embeddings = embed_images(model, images, routes, image_processor, "Verification images", **common)
    first = embeddings[column(pairs, "index_a", "pairs").astype(np.int64)]
    second = embeddings[column(pairs, "index_b", "pairs").astype(np.int64)]
    is_same = column(pairs, "is_same", "pairs").astype(bool)
    folds = column(pairs, "fold", "pairs").astype(np.int64) if "fold" in pairs.column_names else None
    summary, curve = _score_column(first, second, is_same, folds, threshold_grid, far_targets)
    return {
        "protocol": "native-verification",
        "model_kind": model_kind(dcr),
        "num_pairs": len(pairs),
        "num_images": len(images),
        "flip_tta": flip_tta,
        "by_resolution": {NATIVE: summary},
        "routing": routing_table(sides, routes),
        "mean_accuracy": summary["accuracy"],
        "curves": {NATIVE: curve},
    }


__all__ = ["NATIVE", "SURVFACE_FAR_TARGETS", "evaluate_native_verification"]
