"""SCface-style closed-set identification: an HR mugshot gallery against real low-resolution probes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from datasets import Dataset

from ..errors_dcr import DCRInputError
from ..data.transforms import EvalTransform, apply_transform
from ..image_processing_dcr import DCRImageProcessor
from ..metrics import identification_accuracy
from ..modeling_dcr import DCRModel
from ._inputs import check_raw, column, model_kind
from .embeddings import (
    HR, EmbeddingView, Resolution, check_resolution, compute_embedding_views, embed_row_groups, get_dcr_model, processor_for,
)


def default_probe_resolutions(model: torch.nn.Module, distances: Sequence[int]) -> dict[int, int | str]:
    """Default branch for real LR probes of each distance (a branch model only needs one).

    The k-th distance in ascending id order (SCface: d1 = 4.2 m, the farthest and smallest faces)
    goes to the k-th LR branch (`config.low_resolution_sizes[k - 1]`); distances beyond the number of
    branches go to the last one. This is the layout of the SCface fine-tuning samples (HR mugshot,
    then the captures of d1, d2, d3 as resolution copies 1, 2, 3), and, for the default sizes
    8/12/16/20, pairs the farthest probes with the smallest size. A trunk model ignores it.
    """
    config = get_dcr_model(model).config
    if not config.use_branches:
        return {int(d): HR for d in sorted(distances)}
    sizes = config.low_resolution_sizes
    return {int(d): sizes[min(k, len(sizes) - 1)] for k, d in enumerate(sorted(distances))}


def _probe_resolution_map(
    model: DCRModel, distances: Sequence[int], probe_resolution: Mapping[int, Resolution] | Resolution | str | None
) -> dict[int, int | str]:
    if probe_resolution is None:
        mapping = default_probe_resolutions(model, distances)
    elif isinstance(probe_resolution, Mapping):
        given = {int(d): r for d, r in probe_resolution.items()}
        missing = sorted(set(map(int, distances)) - set(given))
        if missing:
            raise DCRInputError(
                f"probe_resolution {dict(probe_resolution)} names no resolution for distance(s) {missing}; "
                f"the probes have distances {sorted(map(int, distances))}."
            )
        mapping = {int(d): given[int(d)] for d in distances}
    else:
        mapping = {int(d): probe_resolution for d in distances}
    return {d: check_resolution(model, r) for d, r in sorted(mapping.items())}


def evaluate_identification(
    model: torch.nn.Module,
    gallery: Dataset,
    probe: Dataset,
    probe_resolution: Mapping[int, Resolution] | Resolution = None,
    ranks: Sequence[int] = (1, 5),
    flip_tta: bool = False,
    batch_size: int = 64,
    accelerator: Any | None = None,
    num_workers: int = 0,
    image_processor: DCRImageProcessor | None = None,
    distance_column: str = "distance",
    show_progress: bool = True,
) -> dict[str, Any]:
    """SCface-style closed-set identification: HR gallery vs real low-resolution probes.

    The gallery (`image`, `label`) is embedded at HR (HR branch of a branch model). Probes (`image`,
    `label`, optionally `distance`) are used as they are (real captures, only resized to the model's
    input size) and embedded through the branch `probe_resolution` names for their distance: a
    mapping `{distance: size or "hr"}`, one value for all, or `None` for `default_probe_resolutions`.
    A trunk model uses its trunk embedding for everything. Rank-k accuracy by cosine similarity, per
    distance (`"d1"`, ...) and over all probes (`"all"`). Probes whose subject is not in the gallery
    are counted (`num_unmatched_probes`) and scored as misses in `rank_k_all_probes`.

    Returns:
        `{"protocol", "model_kind", "ranks", "probe_resolution", "num_gallery", "by_distance":
        {"d1": {"rank_1", "rank_5", "rank_1_all_probes", ..., "num_probes", "num_unmatched_probes",
        "probe_resolution"}, ..., "all": {...}}, "mean_rank1"}`; `mean_rank1`, the mean rank-1 accuracy
        over the distances, is the SCface validation criterion.
    """
    dcr = get_dcr_model(model)
    check_raw(gallery, "gallery", ("image", "label"))
    check_raw(probe, "probe", ("image", "label"))
    probe_labels = column(probe, "label", "probe")
    gallery_labels = column(gallery, "label", "gallery")
    has_distance = distance_column in probe.column_names
    distances = column(probe, distance_column, "probe").astype(np.int64) if has_distance else np.zeros(len(probe), np.int64)
    resolution_of = _probe_resolution_map(dcr, np.unique(distances).tolist(), probe_resolution)
    common = dict(
        accelerator=accelerator, flip_tta=flip_tta, batch_size=batch_size, num_workers=num_workers,
        show_progress=show_progress,
    )
    transform = EvalTransform(processor_for(dcr, image_processor), low_resolution_sizes=())
    gallery_embeddings = compute_embedding_views(
        model, apply_transform(gallery.select_columns(["image"]), transform), [EmbeddingView("gallery")],
        desc="Gallery", **common,
    )["gallery"]
    probe_embeddings = _embed_probes(model, probe, distances, resolution_of, transform, common)

    def score(rows: np.ndarray) -> dict[str, Any]:
        result = identification_accuracy(
            probe_embeddings[rows], probe_labels[rows], gallery_embeddings, gallery_labels, ranks=ranks
        )
        out: dict[str, Any] = {f"rank_{k}": v for k, v in result.accuracy_at_rank.items()}
        out.update({f"rank_{k}_all_probes": v for k, v in result.accuracy_at_rank_all_probes.items()})
        out.update(num_probes=result.num_probes, num_unmatched_probes=result.num_unmatched_probes)
        return out

    by_distance: dict[str, dict[str, Any]] = {}
    if has_distance:
        for distance, resolution in resolution_of.items():
            by_distance[f"d{distance}"] = {**score(np.flatnonzero(distances == distance)), "probe_resolution": resolution}
    by_distance["all"] = score(np.arange(len(probe)))
    per_distance = [values["rank_1"] for key, values in by_distance.items() if key != "all"]
    return {
        "protocol": "identification",
        "model_kind": model_kind(dcr),
        "ranks": sorted(int(k) for k in ranks),
        "probe_resolution": {str(d): r for d, r in resolution_of.items()},
        "flip_tta": flip_tta,
        "num_gallery": len(gallery),
        "by_distance": by_distance,
        "mean_rank1": float(np.mean(per_distance)) if per_distance else by_distance["all"]["rank_1"],
    }


def _embed_probes(
    model: torch.nn.Module, probe: Dataset, distances: np.ndarray, resolution_of: Mapping[int, int | str],
    transform: EvalTransform, common: dict[str, Any],
) -> np.ndarray:
    """Embeddings of every probe, in dataset order, each distance through its branch."""
    groups = (
        (np.flatnonzero(distances == distance), resolution, f"Probes d{distance}")
        for distance, resolution in resolution_of.items()
    )
    return embed_row_groups(model, probe, groups, transform, **common)


__all__ = ["default_probe_resolutions", "evaluate_identification"]
