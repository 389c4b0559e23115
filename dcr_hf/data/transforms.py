"""On-the-fly dataset transforms, built from a `DCRImageProcessor` and calling it.

Each transform is a small picklable class to attach with `apply_transform` (which leaves the
image columns undecoded, so that decoding and corrupt-file handling happen here). A transform
receives a whole batch (a dict of lists) and returns batched tensors preprocessed exactly as the
processor preprocesses one image (`processor(image, low_resolution_size=s)`):

- `TrainTransform`: `pixel_values` [batch, 3, H, W], `low_resolution_pixel_values`
  [batch, sizes, 3, H, W] and `labels`; one augmentation draw per sample, the LR copies made
  from that same augmented view. With `defer_low_resolution=True` it is the loader side of the
  device-first path: decoded uint8 `pixel_values` and `labels` only, and the training step runs
  `TrainTransform.model_inputs` (augmentation, normalization, LR copies) on its device;
- `PairTransform`: verification pairs, `image_a` at HR and `image_b` at HR and every LR size;
- `EvalTransform`: gallery / probe / retrieval images, optionally with LR copies; with no LR
  sizes images are used as they are (real LR probes such as SCface's);
- `FinetuneTransform`: an HR image plus real LR captures of the same subject.

LR copies come from `dcr_hf.low_resolution.make_low_resolution_copies`, the processor's LR
operator as matrix products.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from datasets import Dataset, Image, LargeList, List

from ..errors_dcr import DCRInputError
from ..configuration_dcr import DCRConfig, check_low_resolution_sizes
from ..degradation import Degradation
from ..image_processing_dcr import DCRImageProcessor
from ..low_resolution import make_low_resolution_copies
from .augment import build_aug_plus, check_augmentation, random_flip
from .decode import CorruptImageError, decode_rows

__all__ = [
    "CorruptImageError",
    "EvalTransform",
    "FinetuneTransform",
    "PairTransform",
    "TrainTransform",
    "apply_transform",
]


def apply_transform(dataset: Dataset, transform: _ImageTransform) -> Dataset:
    """Attach `transform` to `dataset`, with its image columns left undecoded.

    The transform then sees `{"bytes", "path"}` dicts: it decodes them itself and can skip or
    report a corrupt file by name instead of failing inside `datasets`.
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
    """The processor, the LR sizes and the decoding shared by the transforms below.

    `low_resolution_sizes=None` takes `DCRConfig`'s default sizes.
    """

    image_columns: tuple[str, ...] = ()

    def __init__(
        self,
        processor: DCRImageProcessor | None = None,
        low_resolution_sizes: Sequence[int] | None = None,
        strict: bool = True,
        degradation: Degradation | None = None,
    ) -> None:
        self.processor = processor if processor is not None else DCRImageProcessor()
        if not isinstance(self.processor, DCRImageProcessor):
            raise TypeError(f"processor must be a DCRImageProcessor, got {type(self.processor).__name__}.")
        sizes = DCRConfig.low_resolution_sizes if low_resolution_sizes is None else low_resolution_sizes
        self.low_resolution_sizes = tuple(check_low_resolution_sizes(sizes, self.processor.image_size))
        self.strict = strict
        if degradation is not None and not isinstance(degradation, Degradation):
            raise TypeError(f"degradation must be a dcr_hf.degradation.Degradation or None, got {type(degradation).__name__}.")
        self.degradation = degradation

    def _column(self, batch: dict[str, list], name: str) -> list:
        if name not in batch:
            raise KeyError(f"{type(self).__name__} needs a column {name!r}; the batch has {sorted(batch)}.")
        return batch[name]

    def _decode(self, rows: list[list[Any]]) -> tuple[torch.Tensor, list[int]]:
        return decode_rows(rows, self.processor, self.image_columns, self.strict)

    def _model_inputs(self, pixels: torch.Tensor, with_low_resolution: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """[0, 1] pixels `[batch, 3, H, W]` -> (normalized HR, normalized LR copies or `None`).

        The copies are made from the normalized batch, exactly as a training step does with
        `defer_low_resolution=True`, so both paths give the same tensors to the bit; through the
        degradation model when the transform has one.
        """
        hr = self.processor.normalize_pixels(pixels)
        low = None
        if with_low_resolution and self.low_resolution_sizes and self.degradation is not None:
            low = self.degradation.low_resolution_copies(hr, self.low_resolution_sizes, self.processor, normalized=True)
        elif with_low_resolution and self.low_resolution_sizes:
            low = make_low_resolution_copies(hr, self.low_resolution_sizes, self.processor, normalized=True)
        return hr, low

    def __repr__(self) -> str:
        options = ", ".join(f"{key}={value!r}" for key, value in vars(self).items() if not key.startswith("_"))
        return f"{type(self).__name__}({options})"


class TrainTransform(_ImageTransform):
    """Training batches: decode, augment once per sample, then HR and LR copies of that view.

    Input columns `image` (Image feature) and `label`. Output: `pixel_values` float32
    `[batch, 3, H, W]`, `low_resolution_pixel_values` float32 `[batch, sizes, 3, H, W]` in the
    order of `low_resolution_sizes`, `labels` int64 `[batch]`.

    `defer_low_resolution=True` splits the work between the loader and the training device: the
    transform only decodes (uint8 `pixel_values` `[batch, 3, H, W]`, 4x fewer bytes than float32,
    and `labels`), and the training step calls `model_inputs` on its device for the rest. Both
    ways give the same tensors to the bit for the same random draws.

    `degradation` (a `dcr_hf.degradation.Degradation`) puts every LR copy through blur, noise and
    JPEG between the resizes, drawn once per sample for all its copies.

    Randomness comes from the global CPU torch generator (see `dcr_hf.data.augment`), seeded by
    `transformers.set_seed` (and per DataLoader worker when the loader augments). A sample whose
    image cannot be decoded is dropped from its batch with a warning naming the file
    (`strict=True` raises `CorruptImageError` instead).
    """

    def __init__(
        self,
        processor: DCRImageProcessor | None = None,
        low_resolution_sizes: Sequence[int] | None = None,
        augmentation: str = "flip",
        defer_low_resolution: bool = False,
        strict: bool = False,
        image_column: str = "image",
        label_column: str = "label",
        degradation: Degradation | None = None,
    ) -> None:
        super().__init__(processor, low_resolution_sizes, strict, degradation)
        self.augmentation = check_augmentation(augmentation)
        self.defer_low_resolution = defer_low_resolution
        self.image_column = image_column
        self.label_column = label_column
        self.image_columns = (image_column,)
        self._aug_plus = build_aug_plus(self.processor.image_size) if augmentation == "aug_plus" else None

    def __call__(self, batch: dict[str, list]) -> dict[str, torch.Tensor]:
        images = self._column(batch, self.image_column)
        labels = self._column(batch, self.label_column)
        decoded, kept = self._decode([[image] for image in images])
        output = {"labels": torch.tensor([labels[i] for i in kept], dtype=torch.int64)}
        if self.defer_low_resolution:
            return {"pixel_values": decoded[:, 0], **output}
        return {**self.model_inputs(decoded[:, 0]), **output}

    def model_inputs(self, pixel_values: torch.Tensor) -> dict[str, torch.Tensor]:
        """Decoded uint8 images `[batch, 3, H, W]` on any device -> the model's training inputs there.

        One augmentation draw per sample (from the global CPU generator), then `pixel_values`
        float32 `[batch, 3, H, W]` normalized by the processor and `low_resolution_pixel_values`
        `[batch, sizes, 3, H, W]` made from that same view. Autocast is off inside: the pixels are
        the same under mixed precision.
        """
        if pixel_values.dtype != torch.uint8 or pixel_values.ndim != 4:
            raise DCRInputError(f"model_inputs takes uint8 images [batch, 3, H, W], got {pixel_values.dtype} {tuple(pixel_values.shape)}.")
        with torch.autocast(pixel_values.device.type, enabled=False):
            if self.augmentation in ("flip", "aug_plus"):
                pixel_values = random_flip(pixel_values)
            pixels = self.processor.rescale_pixels(pixel_values)
            if self._aug_plus is not None:
                pixels = self._aug_plus(pixels)
            hr, low = self._model_inputs(pixels, with_low_resolution=True)
        output = {"pixel_values": hr}
        if low is not None:
            output["low_resolution_pixel_values"] = low
        return output


class PairTransform(_ImageTransform):
    """Verification pairs: `image_a` at HR, `image_b` at HR and at every LR size. No augmentation.

    Output: `pixel_values_a`, `pixel_values_b` float32 `[batch, 3, H, W]`,
    `low_resolution_pixel_values_b` `[batch, sizes, 3, H, W]`, `is_same` bool `[batch]`; with
    `intra_scale=True` also `low_resolution_pixel_values_a` (both images at the same scale).
    Unreadable images raise `CorruptImageError` (skipping would shift the protocol's folds).
    """

    def __init__(
        self,
        processor: DCRImageProcessor | None = None,
        low_resolution_sizes: Sequence[int] | None = None,
        intra_scale: bool = False,
        image_a_column: str = "image_a",
        image_b_column: str = "image_b",
        is_same_column: str = "is_same",
        degradation: Degradation | None = None,
    ) -> None:
        super().__init__(processor, low_resolution_sizes, strict=True, degradation=degradation)
        self.intra_scale = intra_scale
        self.image_a_column = image_a_column
        self.image_b_column = image_b_column
        self.is_same_column = is_same_column
        self.image_columns = (image_a_column, image_b_column)

    def __call__(self, batch: dict[str, list]) -> dict[str, torch.Tensor]:
        images_a = self._column(batch, self.image_a_column)
        images_b = self._column(batch, self.image_b_column)
        is_same = self._column(batch, self.is_same_column)
        decoded, _ = self._decode([list(pair) for pair in zip(images_a, images_b)])
        pixels = self.processor.rescale_pixels(decoded)
        hr_a, low_a = self._model_inputs(pixels[:, 0].contiguous(), with_low_resolution=self.intra_scale)
        hr_b, low_b = self._model_inputs(pixels[:, 1].contiguous(), with_low_resolution=True)
        output = {
            "pixel_values_a": hr_a,
            "pixel_values_b": hr_b,
            "is_same": torch.tensor([bool(value) for value in is_same], dtype=torch.bool),
        }
        if low_b is not None:
            output["low_resolution_pixel_values_b"] = low_b
        if low_a is not None:
            output["low_resolution_pixel_values_a"] = low_a
        return output


class EvalTransform(_ImageTransform):
    """Single evaluation images (gallery, probes, retrieval). No augmentation.

    Output: `pixel_values` float32 `[batch, 3, H, W]`; `low_resolution_pixel_values`
    `[batch, sizes, 3, H, W]` unless `low_resolution_sizes=()`, with which images are used as
    they are (real LR probes such as SCface's: decoded and resized to `image_size` only);
    `labels` int64 when the batch has the label column. Unreadable images raise `CorruptImageError`.
    """

    def __init__(
        self,
        processor: DCRImageProcessor | None = None,
        low_resolution_sizes: Sequence[int] | None = None,
        image_column: str = "image",
        label_column: str = "label",
        degradation: Degradation | None = None,
    ) -> None:
        super().__init__(processor, low_resolution_sizes, strict=True, degradation=degradation)
        self.image_column = image_column
        self.label_column = label_column
        self.image_columns = (image_column,)

    def __call__(self, batch: dict[str, list]) -> dict[str, torch.Tensor]:
        images = self._column(batch, self.image_column)
        decoded, _ = self._decode([[image] for image in images])
        pixel_values, low = self._model_inputs(self.processor.rescale_pixels(decoded[:, 0]), with_low_resolution=True)
        output = {"pixel_values": pixel_values}
        if low is not None:
            output["low_resolution_pixel_values"] = low
        if self.label_column in batch:
            output["labels"] = torch.tensor(batch[self.label_column], dtype=torch.int64)
        return output


class FinetuneTransform(_ImageTransform):
    """Fine-tuning on real low-resolution images (e.g. SCface): an HR image plus its LR captures.

    Input columns `image` (the HR mugshot), `low_resolution_images` (a list of images, the same
    number in every row of a batch, e.g. one per distance) and `label`. Output: `pixel_values`
    float32 `[batch, 3, H, W]`, `low_resolution_pixel_values` `[batch, captures, 3, H, W]` (the
    real images resized to `image_size`, in list order), `labels` int64. `augmentation="flip"`
    flips all copies of a sample together. Unreadable rows are skipped with a warning
    (`strict=True` raises), as in `TrainTransform`.
    """

    def __init__(
        self,
        processor: DCRImageProcessor | None = None,
        augmentation: str = "flip",
        strict: bool = False,
        image_column: str = "image",
        low_resolution_column: str = "low_resolution_images",
        label_column: str = "label",
    ) -> None:
        super().__init__(processor, (), strict)
        self.augmentation = check_augmentation(augmentation, ("flip", "none"))
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
            raise DCRInputError(
                f"Every row of a batch needs the same, non-zero number of {self.low_resolution_column!r} "
                f"images; got counts {sorted(counts)}."
            )
        decoded, kept = self._decode([[image, *captures] for image, captures in zip(images, low_resolution)])
        if self.augmentation == "flip":
            decoded = random_flip(decoded)
        pixel_values = self.processor.normalize_pixels(self.processor.rescale_pixels(decoded))
        return {
            "pixel_values": pixel_values[:, 0].contiguous(),
            "low_resolution_pixel_values": pixel_values[:, 1:].contiguous(),
            "labels": torch.tensor([labels[index] for index in kept], dtype=torch.int64),
        }
