"""On-the-fly dataset transforms: decoding, augmentation and low-resolution copies.

Each transform is a small picklable class to hand to `datasets.Dataset.with_transform` (best via
`apply_transform`, which also switches the image columns to undecoded bytes/paths so that decoding,
JPEG draft-mode downscaling and corrupt-file handling happen here). A transform receives a whole
batch (a dict of lists) and returns a dict of batched tensors:

- `TrainTransform`: `pixel_values` [batch, 3, H, W], `low_resolution_pixel_values`
  [batch, resolutions, 3, H, W] and `labels` [batch]; one augmentation draw per sample, and the
  low-resolution copies are made from that same augmented view.
- `PairTransform`: verification pairs, `image_a` at HR and `image_b` at every LR size.
- `EvalTransform`: gallery/probe/retrieval images, optionally with LR copies; with no LR sizes the
  images are used as they are (real low-resolution probes such as SCface).
- `FinetuneTransform`: an HR image plus a list of real low-resolution images of the same subject.

`make_low_resolution_copies` is the batched LR synthesis on normalized tensors; the train transform
uses it, and a trainer can call it on the accelerator instead (`defer_low_resolution=True`).
"""

from __future__ import annotations

import functools
import io
from collections.abc import Sequence
from typing import Any

import numpy as np
import PIL.Image
import PIL.ImageOps
import torch
from datasets import Dataset, Image, LargeList, List
from datasets.utils.file_utils import is_local_path
from transformers.utils import logging

from ..image_processing_dcr import INTERPOLATION_MODES, convert_to_rgb, simulate_low_resolution


logger = logging.get_logger(__name__)

#: Train-time augmentations: `"flip"` (random horizontal flip, the original's default), `"none"`,
#: and `"aug_plus"` (random resized crop, colour jitter, grayscale, blur and flip).
AUGMENTATIONS = ("flip", "none", "aug_plus")
DEFAULT_LOW_RESOLUTION_SIZES = (8, 12, 16, 20)

# What PIL raises on unreadable, truncated or hostile files.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, PIL.Image.DecompressionBombError)

# PIL filters used when an image must be brought to `image_size`, chosen to match the interpolation
# options of the low-resolution simulation (PIL filters are always antialiased when reducing).
_PIL_FILTERS = {
    "bicubic": PIL.Image.Resampling.BICUBIC,
    "bilinear": PIL.Image.Resampling.BILINEAR,
    "area": PIL.Image.Resampling.BOX,
    "nearest": PIL.Image.Resampling.NEAREST,
}


class CorruptImageError(ValueError):
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


def _open_image(value: Any) -> PIL.Image.Image:
    if isinstance(value, PIL.Image.Image):
        return value
    if isinstance(value, str):
        value = {"path": value, "bytes": None}
    if not isinstance(value, dict):
        raise TypeError(
            f"Expected an image as a PIL image or a dict with 'bytes'/'path', got {type(value).__name__}."
        )
    data, path = value.get("bytes"), value.get("path")
    if data is None and path is not None:
        if not is_local_path(path):
            # Remote or chained URLs (hf://, zip://...): let datasets fetch them.
            return Image().decode_example(value)
        with open(path, "rb") as file:
            data = file.read()
    if data is None:
        raise ValueError("the image has neither 'bytes' nor 'path'")
    return PIL.Image.open(io.BytesIO(data))


def load_image_array(value: Any, image_size: int, upsample: str = "bilinear", downsample: str = "bicubic") -> np.ndarray:
    """Decode one image value to an RGB uint8 array `[image_size, image_size, 3]`.

    `value` is a PIL image, a path, or a `{"bytes", "path"}` dict (an undecoded `datasets.Image`).
    Any mode (grey, CMYK, RGBA, 16-bit...) becomes 8-bit RGB via `convert_to_rgb`; an image of
    another size is resized with the PIL filter matching `upsample`/`downsample`.
    Raises PIL's own errors (OSError...) on unreadable files.
    """
    image = _open_image(value)
    target = (image_size, image_size)
    if image.size != target:
        # JPEG files are decoded directly at 1/2, 1/4 or 1/8 scale when that stays >= target:
        # several times faster, and the DCT-domain reduction is itself antialiased.
        # (A no-op for other formats and for already decoded images.)
        image.draft(None, target)
    image.load()
    if image.getexif().get(PIL.Image.ExifTags.Base.Orientation) is not None:
        # Same orientation handling as `datasets.Image` decoding.
        image = PIL.ImageOps.exif_transpose(image)
    image = convert_to_rgb(image)
    if image.size != target:
        enlarging = image.size[0] * image.size[1] < image_size * image_size
        image = image.resize(target, _PIL_FILTERS[upsample if enlarging else downsample])
    return np.asarray(image)


@functools.lru_cache(maxsize=64)
def _resize_factors(
    length: int, size: int, downsample_interpolation: str, upsample_interpolation: str, antialias: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Factors `(up [length, size], down [size, length])` of `simulate_low_resolution` along one axis.

    Resizing (every mode, with or without antialiasing) is linear and separable, so on an image X
    `simulate_low_resolution(X, size) == A_h @ X @ A_w.T` with one `[length, length]` matrix per
    axis, of rank `size`. A is read off `simulate_low_resolution` itself (on the basis images
    e_i 1^T, whose result is column i of A times the all-ones row, as resize weights sum to one),
    then split into its rank-`size` factors. Hand-written: no library exposes these matrices.
    """
    basis = torch.eye(length, dtype=torch.float64)[:, None, :, None].expand(length, 1, length, length)
    probed = simulate_low_resolution(
        basis.contiguous(),
        size,
        downsample_interpolation=downsample_interpolation,
        upsample_interpolation=upsample_interpolation,
        antialias=antialias,
    )
    operator = probed[:, 0, :, 0].T
    left, singular, right = torch.linalg.svd(operator)
    return left[:, :size] * singular[:size], right[:size]


def make_low_resolution_copies(
    pixel_values: torch.Tensor,
    sizes: Sequence[int],
    image_mean: Sequence[float] = (0.5, 0.5, 0.5),
    image_std: Sequence[float] = (0.5, 0.5, 0.5),
    downsample_interpolation: str = "bicubic",
    upsample_interpolation: str = "bilinear",
    antialias: bool = True,
) -> torch.Tensor:
    """Low-resolution copies of a normalized batch at every size, on its own device.

    Gives the result of `simulate_low_resolution(pixel_values, size, ...)` for each size (to
    float32 rounding, ~1e-6), computed as matrix products with that function's own resize
    matrices: a few large GEMMs instead of two interpolation passes per size, 3-5x faster on CPU.

    Args:
        pixel_values: normalized float tensor `[batch, 3, H, W]`.
        sizes: low-resolution sides, each smaller than H and W; the output keeps this order.
        image_mean / image_std: the normalization of `pixel_values`; results are clamped to the
            normalized image of the `[0, 1]` pixel range, as an 8-bit image file would be.
        downsample_interpolation / upsample_interpolation / antialias: as in
            `simulate_low_resolution`.

    Returns:
        `[batch, len(sizes), 3, H, W]`, same dtype and device.
    """
    if not torch.is_tensor(pixel_values) or not pixel_values.is_floating_point() or pixel_values.ndim != 4:
        raise ValueError(f"pixel_values must be a float tensor [batch, 3, H, W], got {pixel_values!r:.80}.")
    batch, channels, height, width = pixel_values.shape
    for size in sizes:
        if not 0 < int(size) < min(height, width):
            raise ValueError(f"low-resolution size {size} must be in [1, {min(height, width) - 1}] for {height}x{width} images.")
    work_dtype = pixel_values.dtype if pixel_values.dtype in (torch.float32, torch.float64) else torch.float32
    device = pixel_values.device
    # Python floats for the clamp bounds: a scalar clamp is several times faster than a broadcast one.
    lower = [(0.0 - mean) / std for mean, std in zip(image_mean, image_std)]
    upper = [(1.0 - mean) / std for mean, std in zip(image_mean, image_std)]
    options = (downsample_interpolation, upsample_interpolation, antialias)
    factors = [
        [
            tuple(factor.to(device=device, dtype=work_dtype) for factor in _resize_factors(length, int(size), *options))
            for length in (height, width)
        ]
        for size in sizes
    ]
    images = pixel_values.to(work_dtype).reshape(batch * channels, height, width)
    # Downsample along the width for every size at once: one [N*H, W] x [W, sum(sizes)] GEMM.
    narrow = (images.reshape(-1, width) @ torch.cat([down_w for _, (_, down_w) in factors]).T).view(
        batch * channels, height, -1
    )
    copies = torch.empty((batch, len(sizes), channels, height, width), dtype=work_dtype, device=device)
    # One scratch buffer for every size: fresh large allocations cost page faults on CPU.
    restored = torch.empty((batch * channels * height, width), dtype=work_dtype, device=device)
    offset = 0
    for index, ((up_h, down_h), (up_w, _)) in enumerate(factors):
        size = up_h.shape[1]
        small = down_h @ narrow[:, :, offset : offset + size]  # [N, size, size]: the LR image
        offset += size
        torch.mm((up_h @ small).reshape(-1, size), up_w.T, out=restored)
        planes = restored.view(batch, channels, height * width)
        if len(set(lower)) == 1 and len(set(upper)) == 1:
            planes.clamp_(lower[0], upper[0])
        else:
            for channel in range(channels):
                planes[:, channel].clamp_(lower[channel], upper[channel])
        copies[:, index] = planes.view(batch, channels, height, width)
    return copies.to(pixel_values.dtype)


def build_aug_plus(image_size: int) -> torch.nn.Module:
    """The original's "aug-plus" set, less its final horizontal flip, as one kornia pipeline on
    `[batch, 3, H, W]` images in [0, 1].

    `TrainTransform` flips the uint8 images before this pipeline instead, which is cheaper and draws
    from the same distribution: the colour and blur steps commute with a flip, and the random
    crop's position distribution is mirror-symmetric.

    Parameters are drawn per sample from the global torch RNG (kornia takes no generator), so
    `torch.manual_seed` / `transformers.set_seed` and DataLoader worker seeding make it repeatable.
    """
    import kornia.augmentation as K

    max_sigma = 2.0
    # Wide enough for the largest sigma (3 sigma on each side).
    kernel_size = 2 * int(np.ceil(3 * max_sigma)) + 1
    return K.ImageSequential(
        K.RandomResizedCrop((image_size, image_size), scale=(0.2, 1.0)),
        K.ColorJitter(0.4, 0.4, 0.4, 0.1, p=0.8),
        K.RandomGrayscale(p=0.2),
        K.RandomGaussianBlur((kernel_size, kernel_size), sigma=(0.1, max_sigma), p=0.5),
    )


def apply_transform(dataset: Dataset, transform: _ImageTransform) -> Dataset:
    """Attach `transform` to `dataset`, with its image columns left undecoded.

    The transform then sees `{"bytes", "path"}` dicts: it decodes them itself (draft mode for large
    JPEGs) and can skip or report a corrupt file by name instead of failing inside `datasets`.
    """
    for column in transform.image_columns:
        if column not in dataset.column_names:
            raise KeyError(f"The dataset has no column {column!r}; it has {dataset.column_names}.")
        feature = dataset.features[column]
        if isinstance(feature, Image):
            undecoded: Any = Image(decode=False)
        elif isinstance(feature, (List, LargeList)) and isinstance(feature.feature, Image):
            undecoded = type(feature)(Image(decode=False))
        else:
            raise TypeError(f"Column {column!r} must be an Image feature (or a list of them), got {feature}.")
        if feature != undecoded:
            dataset = dataset.cast_column(column, undecoded)
    return dataset.with_transform(transform)


class _ImageTransform:
    """Shared options, validation, decoding and normalization of the transforms below."""

    image_columns: tuple[str, ...] = ()

    def __init__(
        self,
        image_size: int = 120,
        low_resolution_sizes: Sequence[int] = DEFAULT_LOW_RESOLUTION_SIZES,
        image_mean: Sequence[float] = (0.5, 0.5, 0.5),
        image_std: Sequence[float] = (0.5, 0.5, 0.5),
        downsample_interpolation: str = "bicubic",
        upsample_interpolation: str = "bilinear",
        antialias: bool = True,
        strict: bool = True,
    ) -> None:
        if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size <= 0:
            raise ValueError(f"image_size must be a positive integer, got {image_size!r}.")
        sizes = tuple(low_resolution_sizes)
        for size in sizes:
            if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size <= 0:
                raise ValueError(f"low_resolution_sizes must hold positive integers, got {size!r} in {sizes}.")
            if size >= image_size:
                raise ValueError(
                    f"low-resolution size {size} must be smaller than image_size={image_size} "
                    f"(low_resolution_sizes={sizes}); index 0, the HR image, is not listed."
                )
        if len(set(sizes)) != len(sizes):
            raise ValueError(f"low_resolution_sizes has duplicates: {sizes}.")
        if len(image_mean) != 3 or len(image_std) != 3:
            raise ValueError(f"image_mean and image_std need 3 values (RGB), got {image_mean} and {image_std}.")
        if min(image_std) <= 0:
            raise ValueError(f"image_std must be positive, got {image_std}.")
        for name, mode in (
            ("downsample_interpolation", downsample_interpolation),
            ("upsample_interpolation", upsample_interpolation),
        ):
            if mode not in INTERPOLATION_MODES:
                raise ValueError(f"{name}={mode!r} is not supported; expected one of {INTERPOLATION_MODES}.")
        self.image_size = image_size
        self.low_resolution_sizes = tuple(int(size) for size in sizes)
        self.image_mean = tuple(float(value) for value in image_mean)
        self.image_std = tuple(float(value) for value in image_std)
        self.downsample_interpolation = downsample_interpolation
        self.upsample_interpolation = upsample_interpolation
        self.antialias = antialias
        self.strict = strict
        self._mean = torch.tensor(self.image_mean).view(3, 1, 1)
        self._std = torch.tensor(self.image_std).view(3, 1, 1)

    def _column(self, batch: dict[str, list], name: str) -> list:
        if name not in batch:
            raise KeyError(f"{type(self).__name__} needs a column {name!r}; the batch has {sorted(batch)}.")
        return batch[name]

    def _decode_rows(self, rows: list[list[Any]], columns: Sequence[str]) -> tuple[torch.Tensor, list[int]]:
        """Decode each row's images (`slots` of them) to uint8 `[rows_kept, slots, 3, H, W]`.

        A row with an unreadable image is skipped with a warning naming the file, or raises
        `CorruptImageError` when `strict`. Returns the tensor and the indices of the kept rows.
        """
        arrays, kept, failures = [], [], []
        for row_index, row in enumerate(rows):
            decoded = []
            for value in row:
                try:
                    decoded.append(
                        load_image_array(
                            value, self.image_size, self.upsample_interpolation, self.downsample_interpolation
                        )
                    )
                except _DECODE_ERRORS as error:
                    message = f"Cannot decode image {describe_image(value)} (columns {list(columns)}): {error}"
                    if self.strict:
                        raise CorruptImageError(message) from error
                    logger.warning("%s; skipping this sample.", message)
                    failures.append(describe_image(value))
                    break
            else:
                arrays.extend(decoded)
                kept.append(row_index)
        if not kept and rows:
            # Nothing to return: a batch made only of unreadable files points at a broken dataset
            # (or a wrong path), so report it instead of handing an empty batch to the model.
            raise CorruptImageError(
                f"Every image of this batch of {len(rows)} failed to decode: {failures}. Check the files "
                "(or drop them from the dataset before training)."
            )
        slots = len(rows[0]) if rows else 0
        if not rows:
            return torch.empty((0, slots, 3, self.image_size, self.image_size), dtype=torch.uint8), kept
        # One numpy stack and one conversion for the whole batch, then NHWC -> NCHW in contiguous memory.
        stacked = torch.from_numpy(np.stack(arrays)).view(len(kept), slots, self.image_size, self.image_size, 3)
        return stacked.permute(0, 1, 4, 2, 3).contiguous(), kept

    def _normalize(self, pixels01: torch.Tensor) -> torch.Tensor:
        """[..., 3, H, W] floats in [0, 1] -> normalized float32."""
        return pixels01.sub_(self._mean).div_(self._std)

    def _to_normalized(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 [..., 3, H, W] -> normalized float32."""
        return self._normalize(images.to(torch.float32).div_(255.0))

    def _low_resolution(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return make_low_resolution_copies(
            pixel_values,
            self.low_resolution_sizes,
            self.image_mean,
            self.image_std,
            self.downsample_interpolation,
            self.upsample_interpolation,
            self.antialias,
        )

    def __repr__(self) -> str:
        options = ", ".join(f"{key}={value!r}" for key, value in vars(self).items() if not key.startswith("_"))
        return f"{type(self).__name__}({options})"


def _random_flip(images: torch.Tensor) -> torch.Tensor:
    """Flip each sample (dim 0) horizontally with probability 1/2, all of its copies alike."""
    flip = torch.rand(images.shape[0]) < 0.5
    return torch.where(flip.view(-1, *([1] * (images.ndim - 1))), images.flip(-1), images)


class TrainTransform(_ImageTransform):
    """Training batches: decode, augment once per sample, then HR and LR copies of that view.

    Input columns `image` (Image feature) and `label`. Output:
    `pixel_values` float32 `[batch, 3, H, W]`, `low_resolution_pixel_values` float32
    `[batch, resolutions, 3, H, W]` in the order of `low_resolution_sizes` (omitted when
    `defer_low_resolution=True` or no sizes are given), `labels` int64 `[batch]`.

    Randomness comes from the global torch RNG (seeded by `transformers.set_seed` and per
    DataLoader worker). A sample whose image cannot be decoded is dropped from its batch with a
    warning naming the file (`strict=True` raises `CorruptImageError` instead); a batch in which
    every image is unreadable raises `CorruptImageError`, since that means a broken dataset.
    """

    image_columns = ("image",)

    def __init__(
        self,
        image_size: int = 120,
        low_resolution_sizes: Sequence[int] = DEFAULT_LOW_RESOLUTION_SIZES,
        augmentation: str = "flip",
        defer_low_resolution: bool = False,
        image_mean: Sequence[float] = (0.5, 0.5, 0.5),
        image_std: Sequence[float] = (0.5, 0.5, 0.5),
        downsample_interpolation: str = "bicubic",
        upsample_interpolation: str = "bilinear",
        antialias: bool = True,
        strict: bool = False,
        image_column: str = "image",
        label_column: str = "label",
    ) -> None:
        super().__init__(
            image_size,
            low_resolution_sizes,
            image_mean,
            image_std,
            downsample_interpolation,
            upsample_interpolation,
            antialias,
            strict,
        )
        if augmentation not in AUGMENTATIONS:
            raise ValueError(f"augmentation={augmentation!r} is not supported; expected one of {AUGMENTATIONS}.")
        self.augmentation = augmentation
        self.defer_low_resolution = defer_low_resolution
        self.image_column = image_column
        self.label_column = label_column
        self.image_columns = (image_column,)
        self._aug_plus = build_aug_plus(image_size) if augmentation == "aug_plus" else None

    def __call__(self, batch: dict[str, list]) -> dict[str, torch.Tensor]:
        images = self._column(batch, self.image_column)
        labels = self._column(batch, self.label_column)
        decoded, kept = self._decode_rows([[image] for image in images], [self.image_column])
        decoded = decoded[:, 0]
        if self.augmentation in ("flip", "aug_plus"):
            decoded = _random_flip(decoded)
        if self._aug_plus is not None:
            pixel_values = self._normalize(self._aug_plus(decoded.to(torch.float32).div_(255.0)))
        else:
            pixel_values = self._to_normalized(decoded)
        output = {
            "pixel_values": pixel_values,
            "labels": torch.tensor([labels[index] for index in kept], dtype=torch.int64),
        }
        if self.low_resolution_sizes and not self.defer_low_resolution:
            output["low_resolution_pixel_values"] = self._low_resolution(pixel_values)
        return output


class PairTransform(_ImageTransform):
    """Verification pairs: `image_a` at HR, `image_b` at HR and at every LR size. No augmentation.

    Output: `pixel_values_a`, `pixel_values_b` float32 `[batch, 3, H, W]`,
    `low_resolution_pixel_values_b` `[batch, resolutions, 3, H, W]`, `is_same` bool `[batch]`;
    with `intra_scale=True` also `low_resolution_pixel_values_a` (both images at the same scale).
    Unreadable images raise `CorruptImageError` (skipping would shift the protocol's folds).
    """

    def __init__(
        self,
        image_size: int = 120,
        low_resolution_sizes: Sequence[int] = DEFAULT_LOW_RESOLUTION_SIZES,
        intra_scale: bool = False,
        image_mean: Sequence[float] = (0.5, 0.5, 0.5),
        image_std: Sequence[float] = (0.5, 0.5, 0.5),
        downsample_interpolation: str = "bicubic",
        upsample_interpolation: str = "bilinear",
        antialias: bool = True,
        image_a_column: str = "image_a",
        image_b_column: str = "image_b",
        is_same_column: str = "is_same",
    ) -> None:
        super().__init__(
            image_size,
            low_resolution_sizes,
            image_mean,
            image_std,
            downsample_interpolation,
            upsample_interpolation,
            antialias,
            strict=True,
        )
        self.intra_scale = intra_scale
        self.image_a_column = image_a_column
        self.image_b_column = image_b_column
        self.is_same_column = is_same_column
        self.image_columns = (image_a_column, image_b_column)

    def __call__(self, batch: dict[str, list]) -> dict[str, torch.Tensor]:
        images_a = self._column(batch, self.image_a_column)
        images_b = self._column(batch, self.image_b_column)
        is_same = self._column(batch, self.is_same_column)
        decoded, _ = self._decode_rows([list(pair) for pair in zip(images_a, images_b)], self.image_columns)
        pixel_values = self._to_normalized(decoded)
        output = {
            "pixel_values_a": pixel_values[:, 0].contiguous(),
            "pixel_values_b": pixel_values[:, 1].contiguous(),
            "is_same": torch.tensor([bool(value) for value in is_same], dtype=torch.bool),
        }
        if self.low_resolution_sizes:
            output["low_resolution_pixel_values_b"] = self._low_resolution(output["pixel_values_b"])
            if self.intra_scale:
                output["low_resolution_pixel_values_a"] = self._low_resolution(output["pixel_values_a"])
        return output


class EvalTransform(_ImageTransform):
    """Single evaluation images (gallery, probes, retrieval). No augmentation.

    Output: `pixel_values` float32 `[batch, 3, H, W]`; `low_resolution_pixel_values`
    `[batch, resolutions, 3, H, W]` when `low_resolution_sizes` is not empty; `labels` int64
    when the batch has the label column. With `low_resolution_sizes=()` images are used as they
    are (real low-resolution probes such as SCface): decoded, made RGB and resized to
    `image_size` only. Unreadable images raise `CorruptImageError`.
    """

    def __init__(
        self,
        image_size: int = 120,
        low_resolution_sizes: Sequence[int] = DEFAULT_LOW_RESOLUTION_SIZES,
        image_mean: Sequence[float] = (0.5, 0.5, 0.5),
        image_std: Sequence[float] = (0.5, 0.5, 0.5),
        downsample_interpolation: str = "bicubic",
        upsample_interpolation: str = "bilinear",
        antialias: bool = True,
        image_column: str = "image",
        label_column: str = "label",
    ) -> None:
        super().__init__(
            image_size,
            low_resolution_sizes,
            image_mean,
            image_std,
            downsample_interpolation,
            upsample_interpolation,
            antialias,
            strict=True,
        )
        self.image_column = image_column
        self.label_column = label_column
        self.image_columns = (image_column,)

    def __call__(self, batch: dict[str, list]) -> dict[str, torch.Tensor]:
        images = self._column(batch, self.image_column)
        decoded, _ = self._decode_rows([[image] for image in images], self.image_columns)
        pixel_values = self._to_normalized(decoded[:, 0])
        output = {"pixel_values": pixel_values}
        if self.low_resolution_sizes:
            output["low_resolution_pixel_values"] = self._low_resolution(pixel_values)
        if self.label_column in batch:
            output["labels"] = torch.tensor(batch[self.label_column], dtype=torch.int64)
        return output


class FinetuneTransform(_ImageTransform):
    """Fine-tuning on real low-resolution images (e.g. SCface): an HR image plus its LR captures.

    Input columns `image` (the HR mugshot), `low_resolution_images` (a list of images, the same
    number in every row of a batch, e.g. one per distance) and `label`. Output:
    `pixel_values` float32 `[batch, 3, H, W]`, `low_resolution_pixel_values`
    `[batch, resolutions, 3, H, W]` (the real images resized to `image_size`, in list order),
    `labels` int64. `augmentation="flip"` flips all copies of a sample together. Unreadable rows
    are skipped with a warning (`strict=True` raises), as in `TrainTransform`.
    """

    def __init__(
        self,
        image_size: int = 120,
        augmentation: str = "flip",
        image_mean: Sequence[float] = (0.5, 0.5, 0.5),
        image_std: Sequence[float] = (0.5, 0.5, 0.5),
        upsample_interpolation: str = "bilinear",
        downsample_interpolation: str = "bicubic",
        strict: bool = False,
        image_column: str = "image",
        low_resolution_column: str = "low_resolution_images",
        label_column: str = "label",
    ) -> None:
        super().__init__(
            image_size,
            (),
            image_mean,
            image_std,
            downsample_interpolation,
            upsample_interpolation,
            strict=strict,
        )
        if augmentation not in ("flip", "none"):
            raise ValueError(f"augmentation={augmentation!r} is not supported here; expected 'flip' or 'none'.")
        self.augmentation = augmentation
        self.image_column = image_column
        self.low_resolution_column = low_resolution_column
        self.label_column = label_column
        self.image_columns = (image_column, low_resolution_column)

    def __call__(self, batch: dict[str, list]) -> dict[str, torch.Tensor]:
        images = self._column(batch, self.image_column)
        low_resolution = self._column(batch, self.low_resolution_column)
        labels = self._column(batch, self.label_column)
        counts = {len(captures) for captures in low_resolution}
        if len(counts) > 1 or 0 in counts:
            raise ValueError(
                f"Every row of a batch needs the same, non-zero number of {self.low_resolution_column!r} "
                f"images; got counts {sorted(counts)}."
            )
        rows = [[image, *captures] for image, captures in zip(images, low_resolution)]
        decoded, kept = self._decode_rows(rows, self.image_columns)
        if self.augmentation == "flip":
            decoded = _random_flip(decoded)
        pixel_values = self._to_normalized(decoded)
        return {
            "pixel_values": pixel_values[:, 0].contiguous(),
            "low_resolution_pixel_values": pixel_values[:, 1:].contiguous(),
            "labels": torch.tensor([labels[index] for index in kept], dtype=torch.int64),
        }
