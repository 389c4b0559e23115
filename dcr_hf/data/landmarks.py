"""Five-point landmarks files, and the alignment `python -m dcr_hf.data prepare --landmarks_file` applies.

The file holds one line per image, `<relative/path> x1 y1 x2 y2 x3 y3 x4 y4 x5 y5`: the image's path
relative to the data root (`--data_root`), then the five landmarks (left eye, right eye, nose tip,
left and right mouth corners) in pixel x, y of the image as stored, from any face detector
(RetinaFace / SCRFD from insightface, MTCNN; none is bundled). Fields are separated by whitespace
or commas (a CSV with those 11 columns reads as well); empty lines and lines starting with `#` are
skipped. Every image of the prepared set must have a line; lines for images the set does not hold
are ignored.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import PIL.Image
from datasets import DatasetDict, Image
from transformers.utils import logging

from ..alignment_dcr import NUM_LANDMARKS, TEMPLATE_SIZE
from ..errors_dcr import DCRInputError
from ..image_processing_dcr import DCRImageProcessor
from ._layout import PathLike, malformed_line, read_lines, relative_image_path

logger = logging.get_logger(__name__)

_EXPECTED = f"'<relative/path> x1 y1 ... x{NUM_LANDMARKS} y{NUM_LANDMARKS}' ({2 * NUM_LANDMARKS} numbers after the path)"


def read_landmarks_file(path: PathLike, data_root: PathLike) -> dict[str, np.ndarray]:
    """The landmarks `[5, 2]` (float64) of each image a landmarks file names, by its path relative
    to `data_root` (POSIX separators).

    `DCRInputError` naming the file and line for a line without a path and 10 finite numbers, a path
    that leaves the data root (absolute, `..`) and an image listed twice.
    """
    landmarks: dict[str, np.ndarray] = {}
    lines: dict[str, int] = {}
    for number, line in read_lines(path):
        if line.lstrip().startswith("#"):
            continue
        # The numbers are the last fields, so a path may hold spaces; commas separate like spaces.
        fields = line.replace(",", " ").rsplit(None, 2 * NUM_LANDMARKS)
        if len(fields) != 2 * NUM_LANDMARKS + 1:
            raise malformed_line(path, number, line, _EXPECTED)
        try:
            values = np.array([float(value) for value in fields[1:]])
        except ValueError:
            raise malformed_line(path, number, line, _EXPECTED) from None
        if not np.isfinite(values).all():
            raise malformed_line(path, number, line, _EXPECTED.replace("numbers", "finite numbers"))
        relative = relative_image_path(fields[0].strip(), path, number, data_root).replace("\\", "/")
        relative = os.path.normpath(relative).replace(os.sep, "/")
        if relative in landmarks:
            raise DCRInputError(f"{path}:{number}: {relative!r} is listed twice (first on line {lines[relative]}).")
        landmarks[relative], lines[relative] = values.reshape(NUM_LANDMARKS, 2), number
    if not landmarks:
        raise DCRInputError(f"{path} lists no landmarks; expected lines {_EXPECTED}.")
    return landmarks


def align_dataset_dict(
    dataset_dict: DatasetDict,
    data_root: PathLike,
    landmarks: dict[str, np.ndarray],
    image_size: int = TEMPLATE_SIZE,
    num_proc: int | None = None,
) -> DatasetDict:
    """Every image column of `dataset_dict` (images given as paths under `data_root`) replaced by the
    PNG bytes of its `image_size` crop aligned to the ArcFace template with its `landmarks` (lossless,
    so the prepared set holds exactly the aligned pixels). `DCRInputError` listing the images that have
    no landmarks, before any image is aligned."""
    root = os.path.abspath(data_root)
    missing: list[str] = []
    for split in dataset_dict.values():
        for column in _image_columns(split):
            for value in split.cast_column(column, Image(decode=False))[column]:
                if _key(value["path"], root) not in landmarks:
                    missing.append(value["path"])
    if missing:
        shown = "\n  ".join(missing[:20]) + (f"\n  ... and {len(missing) - 20} more" if len(missing) > 20 else "")
        raise DCRInputError(
            f"{len(missing)} image(s) have no line in the landmarks file (paths relative to '{data_root}'), so nothing "
            f"was written:\n  {shown}"
        )
    processor = DCRImageProcessor(image_size=image_size)

    def align(batch: dict, columns: list[str]) -> dict:
        for column in columns:
            aligned = []
            for value in batch[column]:
                face = processor.align_image(value["path"], landmarks[_key(value["path"], root)])
                buffer = io.BytesIO()
                PIL.Image.fromarray(face).save(buffer, format="PNG")
                aligned.append({"bytes": buffer.getvalue(), "path": Path(value["path"]).stem + ".png"})
            batch[column] = aligned
        return batch

    result = DatasetDict()
    for name, split in dataset_dict.items():
        columns = _image_columns(split)
        for column in columns:
            split = split.cast_column(column, Image(decode=False))
        split = split.map(align, batched=True, batch_size=64, fn_kwargs={"columns": columns}, num_proc=num_proc,
                          desc=f"Aligning {name}")
        for column in columns:
            split = split.cast_column(column, Image())
        result[name] = split
    return result


def _image_columns(split) -> list[str]:
    return [column for column, feature in split.features.items() if isinstance(feature, Image)]


def _key(path: str, root: str) -> str:
    """An image path of a dataset as the landmarks file names it: relative to the data root `root`
    (absolute; links not resolved, so a tree of links keeps the names the user sees), POSIX."""
    return os.path.relpath(os.path.abspath(path), root).replace(os.sep, "/")


__all__ = ["align_dataset_dict", "read_landmarks_file"]
