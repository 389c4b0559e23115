"""Open-set identification of native low-resolution faces (QMUL-SurvFace): TPIR at FPIR at rank 1 and 20."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from datasets import Dataset

from ..image_processing_dcr import DCRImageProcessor
from ..metrics.open_set import open_set_identification
from ._inputs import check_raw, column, model_kind
from .embeddings import HR, get_dcr_model
from .native import embed_images, native_routes, native_sides, routing_table

#: Points of the TPIR-FPIR curve kept in the results (evenly spaced along the curve).
CURVE_POINTS = 200


def _thin(values: np.ndarray) -> list[float]:
    keep = np.unique(np.linspace(0, len(values) - 1, min(len(values), CURVE_POINTS)).round().astype(int))
    return values[keep].tolist()


def evaluate_open_set_identification(
    model: torch.nn.Module,
    gallery: Dataset,
    mated_probe: Dataset,
    unmated_probe: Dataset,
    fpir_targets: Sequence[float] = (0.3, 0.2, 0.1),
    ranks: Sequence[int] = (1, 20),
    route_probes: bool = True,
    flip_tta: bool = False,
    batch_size: int = 64,
    accelerator: Any | None = None,
    num_workers: int = 0,
    image_processor: DCRImageProcessor | None = None,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Mated and unmated probes against one template per gallery identity (`dcr_hf.metrics.open_set`).

    The gallery is embedded at HR, the probes as they are through the branch nearest their native
    shorter side (`route_probes`, branch models).

    Returns:
        `{"protocol", "model_kind", "flip_tta", "num_gallery", "num_templates", "num_mated", "num_unmated",
        "by_rank": {"rank_1": {"tpir@fpir=0.3", ...}, "rank_20": {...}}, "fpir": {target: reached},
        "tpir_curves": {"rank_20": {"fpir": [...], "tpir": [...]}}, "routing": [...], "mean_tpir"}`.
    """
    dcr = get_dcr_model(model)
    check_raw(gallery, "gallery", ("image", "label"))
    check_raw(mated_probe, "mated probe", ("image", "label", "width", "height"))
    check_raw(unmated_probe, "unmated probe", ("image", "width", "height"))
    common = dict(accelerator=accelerator, flip_tta=flip_tta, batch_size=batch_size, num_workers=num_workers,
                  show_progress=show_progress)
    gallery_embeddings = embed_images(model, gallery, [HR] * len(gallery), image_processor, "Gallery", **common)
    sides = np.concatenate([native_sides(mated_probe, "mated probe"), native_sides(unmated_probe, "unmated probe")])
    routes = native_routes(dcr, sides, route_probes)
    mated_routes, unmated_routes = routes[:len(mated_probe)], routes[len(mated_probe):]
    mated = embed_images(model, mated_probe, mated_routes, image_processor, "Mated probes", **common)
    unmated = embed_images(model, unmated_probe, unmated_routes, image_processor, "Unmated probes", **common)
    result = open_set_identification(
        mated, column(mated_probe, "label", "mated probe"), gallery_embeddings, column(gallery, "label", "gallery"),
        unmated, fpir_targets=fpir_targets, ranks=ranks,
    )
    by_rank = {
        f"rank_{rank}": {f"tpir@fpir={target:g}": value for target, value in values.items()}
        for rank, values in result.tpir.items()
    }
    top = f"rank_{max(result.tpir)}"
    return {
        "protocol": "open-set-identification",
        "model_kind": model_kind(dcr),
        "flip_tta": flip_tta,
        "num_gallery": len(gallery),
        "num_templates": result.num_templates,
        "num_mated": result.num_mated,
        "num_unmated": result.num_unmated,
        "by_rank": by_rank,
        "fpir": {f"{target:g}": value for target, value in result.fpir.items()},
        "thresholds": {f"{target:g}": value for target, value in result.thresholds.items()},
        "tpir_curves": {f"rank_{rank}": {"fpir": _thin(fpir), "tpir": _thin(tpir)} for rank, (fpir, tpir) in result.curves.items()},
        "routing": routing_table(sides, routes),
        "mean_tpir": float(np.mean(list(by_rank[top].values()))),
    }


__all__ = ["CURVE_POINTS", "evaluate_open_set_identification"]
