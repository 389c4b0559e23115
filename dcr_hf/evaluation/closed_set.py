"""Closed-set identification against a gallery with distractors (TinyFace): rank-k, mAP, the CMC
curve, and the same per native probe size."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from datasets import Dataset

from ..image_processing_dcr import DCRImageProcessor
from ..metrics.search import gallery_search
from ._inputs import check_raw, column, model_kind
from .embeddings import HR, get_dcr_model
from .native import embed_images, native_routes, native_sides, routing_table

#: Native probe size bins (shorter side, pixels, inclusive upper edges) of the per-size columns.
SIZE_BINS = ((8, "<=8px"), (12, "9-12px"), (16, "13-16px"), (20, "17-20px"), (32, "21-32px"), (None, ">32px"))
#: The CMC curve runs over ranks 1..CMC_RANKS.
CMC_RANKS = 100


def size_bin(side: int) -> str:
    """The `SIZE_BINS` column of a probe whose shorter side is `side`."""
    return next(name for edge, name in SIZE_BINS if edge is None or side <= edge)


def evaluate_closed_set_identification(
    model: torch.nn.Module,
    gallery: Dataset,
    probe: Dataset,
    ranks: Sequence[int] = (1, 5, 20),
    route_probes: bool = True,
    flip_tta: bool = False,
    batch_size: int = 64,
    accelerator: Any | None = None,
    num_workers: int = 0,
    image_processor: DCRImageProcessor | None = None,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Every probe searched over the whole gallery (matches and distractors) by cosine similarity.

    Gallery (`image`, `label`, distractors -1) embedded at HR (HR branch of a branch model); probes
    (`image`, `label`, native `width`, `height`) used as they are, each through the branch nearest
    its shorter side (`route_probes`, branch models) or the trunk. Image-level ranking: rank-k is the
    share of probes with a mate among the k best-scored gallery images; mAP over the full ranking.

    Returns:
        `{"protocol", "model_kind", "ranks", "flip_tta", "num_probes", "num_gallery", "num_distractors",
        "by_probe_size": {"all": {"rank_1", "rank_5", "rank_20", "map", "num_probes"}, "<=8px": {...}, ...},
        "cmc": [CMC_RANKS], "probe_size_histogram": {side: count}, "routing": [...], "mean_rank1"}`.
    """
    dcr = get_dcr_model(model)
    check_raw(gallery, "gallery", ("image", "label"))
    check_raw(probe, "probe", ("image", "label", "width", "height"))
    common = dict(accelerator=accelerator, flip_tta=flip_tta, batch_size=batch_size, num_workers=num_workers,
                  show_progress=show_progress)
    gallery_labels = column(gallery, "label", "gallery")
    probe_labels = column(probe, "label", "probe")
    sides = native_sides(probe, "probe")
    routes = native_routes(dcr, sides, route_probes)
    gallery_embeddings = embed_images(model, gallery, [HR] * len(gallery), image_processor, "Gallery", **common)
    probe_embeddings = embed_images(model, probe, routes, image_processor, "Probes", **common)
    search = gallery_search(probe_embeddings, probe_labels, gallery_embeddings, gallery_labels)

    def score(rows: np.ndarray) -> dict[str, Any]:
        first = search.first_mate_rank[rows]
        out: dict[str, Any] = {f"rank_{k}": float(np.mean((first > 0) & (first <= k))) for k in ranks}
        out.update(map=float(search.average_precision[rows].mean()), num_probes=int(len(rows)))
        return out

    bins = np.asarray([size_bin(int(side)) for side in sides])
    by_size = {"all": score(np.arange(len(probe)))}
    for _, name in SIZE_BINS:
        rows = np.flatnonzero(bins == name)
        if len(rows):
            by_size[name] = score(rows)
    sides_found, counts = np.unique(sides, return_counts=True)
    return {
        "protocol": "closed-set-identification",
        "model_kind": model_kind(dcr),
        "ranks": sorted(int(k) for k in ranks),
        "flip_tta": flip_tta,
        "num_probes": len(probe),
        "num_gallery": len(gallery),
        "num_distractors": int(np.sum(gallery_labels == -1)),
        "num_unmatched_probes": int(np.sum(search.first_mate_rank == 0)),
        "by_probe_size": by_size,
        "cmc": search.cmc(CMC_RANKS).tolist(),
        "probe_size_histogram": {str(side): int(count) for side, count in zip(sides_found.tolist(), counts.tolist())},
        "routing": routing_table(sides, routes),
        "mean_rank1": by_size["all"]["rank_1"],
    }


__all__ = ["CMC_RANKS", "SIZE_BINS", "evaluate_closed_set_identification", "size_bin"]
