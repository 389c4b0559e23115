"""Embedding native low-resolution faces (TinyFace, QMUL-SurvFace): each image as it is, through the
branch of its native size (a DCR branch model) or the trunk."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from datasets import Dataset

from ..data.transforms import EvalTransform
from ..image_processing_dcr import DCRImageProcessor
from ..pipeline_dcr import nearest_resolution
from ._inputs import column
from .embeddings import HR, embed_row_groups, get_dcr_model, processor_for


def native_sides(dataset: Dataset, what: str) -> np.ndarray:
    """`[num_images]` shorter side of each image's native size (the `width` and `height` columns)."""
    return np.minimum(column(dataset, "width", what), column(dataset, "height", what)).astype(np.int64)


def native_routes(model: torch.nn.Module, sides: np.ndarray, route: bool = True) -> list[int | str]:
    """The branch of each image: for a branch model (and `route`) the one nearest its shorter side
    (`dcr_hf.pipeline_dcr.nearest_resolution`, as the pipeline routes a face), else `"hr"`."""
    config = get_dcr_model(model).config
    if not (route and config.use_branches):
        return [HR] * len(sides)
    sizes, image_size = list(config.low_resolution_sizes), config.image_size
    chosen = {side: nearest_resolution(int(side), sizes, image_size) for side in np.unique(sides).tolist()}
    return [chosen[int(side)] for side in sides]


def routing_table(sides: np.ndarray, routes: list[int | str]) -> list[dict[str, Any]]:
    """`[{"branch", "num_images", "min_side", "max_side"}]`, one row per branch used, smallest first."""
    table = []
    for branch in sorted(set(routes), key=lambda r: (r == HR, r if r != HR else 0)):
        chosen = sides[np.asarray([r == branch for r in routes])]
        table.append({"branch": str(branch), "num_images": int(len(chosen)), "min_side": int(chosen.min()),
                      "max_side": int(chosen.max())})
    return table


def embed_images(
    model: torch.nn.Module, images: Dataset, routes: list[int | str], image_processor: DCRImageProcessor | None,
    desc: str, **common: Any,
) -> np.ndarray:
    """`[num_images, dim]` embeddings, in dataset order, of images used as they are (resized to the
    model's input size only), each through its route (`"hr"` or an LR branch size)."""
    dcr = get_dcr_model(model)
    transform = EvalTransform(processor_for(dcr, image_processor), low_resolution_sizes=())
    routes_array = np.asarray([str(route) for route in routes])
    groups = (
        (np.flatnonzero(routes_array == str(route)), route, f"{desc} ({'HR' if route == HR else f'branch {route}'})")
        for route in dict.fromkeys(routes)
    )
    return embed_row_groups(model, images, groups, transform, **common)


__all__ = ["embed_images", "native_routes", "native_sides", "routing_table"]
