"""Decoding the image values of a dataset batch with an image processor, and naming bad files.

A transform attached with `apply_transform` sees undecoded `{"bytes", "path"}` dicts (or paths,
or PIL images). `decode_rows` turns a batch of such rows into one uint8 tensor through
`DCRImageProcessor.load_image` (the one decoding definition) and skips, or reports by name, the
files that cannot be decoded.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import PIL.Image
import torch
from datasets import Image
from datasets.utils.file_utils import is_local_path
from transformers.utils import logging

from ..errors_dcr import DCRInputError
from ..image_processing_dcr import DCRImageProcessor

logger = logging.get_logger(__name__)

#: What PIL raises on unreadable, truncated or hostile files.
DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, PIL.Image.DecompressionBombError)


class CorruptImageError(DCRInputError):
    """An image could not be decoded; the message names the file (or the embedded bytes)."""


def describe_image(value: Any) -> str:
    """Name an image value in messages: its path when known, else what it is."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        if value.get("path"):
            return str(value["path"])
        if value.get("bytes") is not None:
            return f"<embedded image of {len(value['bytes'])} bytes, no path>"
    if isinstance(value, PIL.Image.Image):
        return getattr(value, "filename", "") or f"<decoded {value.mode} image {value.size}>"
    return f"<{type(value).__name__}>"


def decode_image(value: Any, processor: DCRImageProcessor) -> np.ndarray:
    """One image value -> uint8 `[image_size, image_size, 3]`, as `processor.load_image` makes it.

    Remote or chained paths without bytes (`hf://`, `zip://...`) are fetched by `datasets` first.
    """
    if isinstance(value, str):
        value = {"path": value, "bytes": None}
    if isinstance(value, dict) and value.get("bytes") is None and value.get("path") and not is_local_path(value["path"]):
        value = Image().decode_example(value)
    return processor.load_image(value)


def decode_rows(
    rows: list[list[Any]], processor: DCRImageProcessor, columns: Sequence[str], strict: bool
) -> tuple[torch.Tensor, list[int]]:
    """Decode each row's images (`slots` per row) to uint8 `[rows_kept, slots, 3, H, W]`.

    A row with an unreadable image is skipped with a warning naming the file, or raises
    `CorruptImageError` when `strict`; a batch in which every row fails gives an empty tensor (and
    one more warning), which the training step skips. Returns the tensor and the indices of the
    kept rows.
    """
    arrays, kept, failures = [], [], []
    for row_index, row in enumerate(rows):
        decoded = []
        for value in row:
            try:
                decoded.append(decode_image(value, processor))
            except DECODE_ERRORS as error:
                message = f"Cannot decode image {describe_image(value)} (columns {list(columns)}): {error}"
                if strict:
                    raise CorruptImageError(message) from error
                logger.warning("%s; skipping this sample.", message)
                failures.append(describe_image(value))
                break
        else:
            arrays.extend(decoded)
            kept.append(row_index)
    size = processor.image_size
    slots = len(rows[0]) if rows else 0
    if not kept:
        if rows:
            logger.warning(f"No row of this batch of {len(rows)} could be decoded ({failures}); the batch is empty.")
        return torch.empty((0, slots, 3, size, size), dtype=torch.uint8), kept
    # One numpy stack for the whole batch, then NHWC -> NCHW in contiguous memory.
    stacked = torch.from_numpy(np.stack(arrays)).view(len(kept), slots, size, size, 3)
    return stacked.permute(0, 1, 4, 2, 3).contiguous(), kept


__all__ = ["CorruptImageError", "DECODE_ERRORS", "decode_image", "decode_rows", "describe_image"]
