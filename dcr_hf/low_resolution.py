"""The batched LR copies of training, validation and evaluation: the processor's one LR operator
(`dcr_hf.image_processing_dcr.low_resolution_copies`) on a batch at the processor's `image_size`.

The operator makes every size in a few large matrix products on the batch's own device (its
resize matrices are moved there once) and runs without autocast, so the copies are the same
under mixed precision.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .errors_dcr import DCRInputError
from .image_processing_dcr import DCRImageProcessor


def make_low_resolution_copies(
    pixel_values: torch.Tensor,
    sizes: Sequence[int],
    processor: DCRImageProcessor,
    normalized: bool = False,
) -> torch.Tensor:
    """Every LR copy of a batch, as `processor(image, low_resolution_size=s)` makes them, on its own device.

    Args:
        pixel_values: float `[batch, 3, image_size, image_size]`: pixels in [0, 1], or with
            `normalized=True` already normalized by `processor` (the result then stays normalized
            and is clamped to the normalized image of [0, 1]).
        sizes: LR sides (checked against the processor's `image_size`); the output keeps their order.
        processor: the `DCRImageProcessor` whose LR operator to apply.

    Returns:
        `[batch, len(sizes), 3, image_size, image_size]`, same dtype and device.
    """
    if not torch.is_tensor(pixel_values) or not pixel_values.is_floating_point() or pixel_values.ndim != 4:
        raise DCRInputError(f"pixel_values must be a float tensor [batch, 3, H, W], got {pixel_values!r:.80}.")
    height, width = pixel_values.shape[-2:]
    length = processor.image_size
    if (height, width) != (length, length):
        raise DCRInputError(f"pixel_values are {height}x{width}; the processor's LR operator needs {length}x{length} images.")
    return processor.low_resolution_copies(pixel_values, sizes, normalized=normalized)


__all__ = ["make_low_resolution_copies"]
