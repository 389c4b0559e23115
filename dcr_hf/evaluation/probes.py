"""The probe figure (`eval_hf.py --show_probes`): one face at every probe size, resized only and
degraded, as the model sees them (brought back to `image_size`), so a person sees what the model
is asked to match."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from datasets import Dataset, DatasetDict

from ..errors_dcr import DCRInputError
from ..degradation import Degradation
from ..image_processing_dcr import DCRImageProcessor
from ..low_resolution import make_low_resolution_copies
from ..saving import atomic_path

#: The image column shown, by preference: the probe side of a pair, then a single image.
_COLUMNS = ("image_b", "image", "image_a")


def first_face(data: Dataset | DatasetDict) -> Any:
    """The first probe image of protocol data (a pair's second image, or the first image)."""
    splits = list(data.values()) if isinstance(data, DatasetDict) else [data]
    for split in splits:
        for column in _COLUMNS:
            if column in split.column_names and len(split):
                return split[0][column]
    raise DCRInputError(f"--show_probes: the data has no image column {list(_COLUMNS)} with a row to show.")


def probe_rows(image: Any, processor: DCRImageProcessor, sizes: Sequence[int],
               degradation: Degradation) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(HR, resized-only copies, degraded copies) of one image as [0, 1] HWC arrays (`[sizes, H, W, 3]`)."""
    # Pixels in [0, 1], as the LR operator makes the copies before normalizing them.
    pixels = processor(image, do_normalize=False, return_tensors="pt")["pixel_values"]
    clean = make_low_resolution_copies(pixels, sizes, processor)[0]
    degraded = degradation.low_resolution_copies(pixels, sizes, processor)[0]

    def display(batch: torch.Tensor) -> np.ndarray:
        return batch.clamp(0, 1).movedim(-3, -1).numpy()

    return display(pixels[0]), display(clean), display(degraded)


def write_probe_figure(image: Any, processor: DCRImageProcessor, sizes: Sequence[int], degradation: Degradation,
                       path: str | Path, label: str = "degraded") -> Path:
    """Write the PNG: a row resized only and a row through `degradation`, a column per size (plus HR)."""
    from matplotlib.figure import Figure

    hr, clean, degraded = probe_rows(image, processor, list(sizes), degradation)
    columns = len(sizes) + 1
    figure = Figure(figsize=(1.8 * columns, 4.0))
    axes = figure.subplots(2, columns, squeeze=False)
    for row, (name, copies) in enumerate((("resized only", clean), (label, degraded))):
        for column in range(columns):
            axis = axes[row][column]
            axis.imshow(hr if column == 0 else copies[column - 1], interpolation="nearest")
            axis.set_xticks([])
            axis.set_yticks([])
            if row == 0:
                axis.set_title("HR" if column == 0 else f"{sizes[column - 1]}x{sizes[column - 1]}", fontsize=9)
            if column == 0:
                axis.set_ylabel(name, fontsize=9)
    figure.suptitle(f"Probes as the model sees them (brought back to {processor.image_size}x{processor.image_size})", fontsize=10)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=100)
    return path


__all__ = ["first_face", "probe_rows", "write_probe_figure"]
