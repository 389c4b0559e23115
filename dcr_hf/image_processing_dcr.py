"""Image processor for DCR models: the one definition of DCR's preprocessing.

Decoding (EXIF orientation included), conversion to 8-bit RGB, the resize to `image_size`,
rescaling to [0, 1], normalization and the low-resolution (LR) operator all live here. The
dataset transforms of `dcr_hf.data`, training, validation, evaluation, the probes and the
degradation model call a processor object instead of preprocessing on their own. The LR operator
is one function, `low_resolution_copies` (HR batch -> every LR copy, back at the model's input
size, with an optional hook between the two resizes); the default is the original's: PIL's
Lanczos, then PIL's bilinear, both in 8 bits, reproduced as batched tensor operations.

This file travels to every Hub repository next to the model files (for `trust_remote_code`), so
it imports only torch, transformers, PIL, numpy, `.configuration_dcr` and `.alignment_dcr` (the
five-point face alignment applied when landmarks are given). It is longer than a
module of one job should be because the LR operator (PIL's resize weights, the batched 8-bit and
linear passes) must travel with the processor and the model that use it.
"""

from __future__ import annotations

import copy
import functools
import io
import math
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import PIL.Image
import PIL.ImageOps
import torch
import torch.nn.functional as F
from transformers.image_processing_utils import BaseImageProcessor, BatchFeature
from transformers.image_utils import ChannelDimension, PILImageResampling
from transformers.processing_utils import ImagesKwargs
from transformers.utils import logging

from .errors_dcr import DCRInputError
from .alignment_dcr import align_face, check_landmarks
from .configuration_dcr import DCRConfig, check_low_resolution_sizes

logger = logging.get_logger(__name__)

#: Interpolation modes of the two resizes of the LR simulation. "lanczos" (downsample only) is PIL's
#: Lanczos resize in 8 bits, the original's operator; the others are torch's, on float pixels.
INTERPOLATION_MODES = ("lanczos", "bicubic", "bilinear", "area", "nearest")
#: Torch modes: linear resizes of float pixels (antialiased when shrinking).
TORCH_INTERPOLATION_MODES = ("bicubic", "bilinear", "area", "nearest")
#: Upsampling filters after a "lanczos" downsample: PIL's, in 8 bits as well.
PIL_UPSAMPLE_MODES = ("bilinear", "bicubic", "lanczos")
#: The default LR operator of new processors: the original's (PIL Lanczos down, PIL bilinear up, 8 bits).
DEFAULT_DOWNSAMPLE, DEFAULT_UPSAMPLE = "lanczos", "bilinear"

#: The torch mode that stands for a PIL filter when a float tensor (no PIL image) must be resized.
_TORCH_MODE_OF_RESAMPLE = {
    PILImageResampling.BILINEAR: "bilinear",
    PILImageResampling.BICUBIC: "bicubic",
    PILImageResampling.NEAREST: "nearest",
    PILImageResampling.BOX: "area",
}
_RESAMPLE_NAMES = {"bilinear": 2, "bicubic": 3, "nearest": 0, "box": 4, "lanczos": 1, "hamming": 5, "area": 4}


def convert_to_rgb(image: PIL.Image.Image) -> PIL.Image.Image:
    """Return an 8-bit RGB copy of any PIL image (L, LA, P, RGBA, CMYK, YCbCr, 16-bit, float).

    PIL's own `convert("RGB")` clips 16-bit grey levels at 255 (a 16-bit scan turns white), so
    wide integer and float modes are rescaled to 8 bits first. Transparent images are composited
    on black, the same as dropping the alpha channel.
    """
    mode = image.mode
    if mode == "RGB":
        return image
    if mode.startswith("I;16") or mode in ("I", "F"):
        array = np.asarray(image, dtype=np.float64)
        if mode == "F":
            peak = 1.0 if array.size and np.nanmax(array) <= 1.0 else 255.0
        elif mode == "I":
            peak = 65535.0 if array.size and array.max() > 255 else 255.0
        else:
            peak = 65535.0
        array = np.clip(np.nan_to_num(array) / peak * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return PIL.Image.fromarray(array, mode="L").convert("RGB")
    if mode == "P":
        image = image.convert("RGBA")
    return image.convert("RGB")


def check_interpolation_modes(downsample: str, upsample: str) -> None:
    """`ValueError` unless `(downsample, upsample)` is an LR operator this module can apply."""
    if downsample not in INTERPOLATION_MODES:
        raise DCRInputError(f"downsample_interpolation={downsample!r} is not supported; expected one of {INTERPOLATION_MODES}.")
    allowed = PIL_UPSAMPLE_MODES if downsample == "lanczos" else TORCH_INTERPOLATION_MODES
    if upsample not in allowed:
        raise DCRInputError(
            f"upsample_interpolation={upsample!r} is not supported after downsample_interpolation={downsample!r}; "
            f"expected one of {allowed}."
        )


def _resize_float(pixels: torch.Tensor, size: tuple[int, int], mode: str, antialias: bool = True) -> torch.Tensor:
    """Resize float pixels `[N, C, H, W]` to `size` with torch (antialiased when shrinking)."""
    kwargs = {"align_corners": False, "antialias": antialias} if mode in ("bilinear", "bicubic") else {}
    return F.interpolate(pixels, size=size, mode=mode, **kwargs)


@functools.lru_cache(maxsize=256)
def _torch_resize_matrix(in_size: int, out_size: int, mode: str, antialias: bool = True) -> torch.Tensor:
    """Torch's (linear) resize along one axis as a float64 `[out_size, in_size]` matrix (read-only, cached).

    The basis image that is 1 on row i (constant along the rows) resizes to column i of the matrix
    times a constant row, because resize weights sum to one; column 0 of the resized basis images
    gives the matrix.
    """
    basis = torch.eye(in_size, dtype=torch.float64)[:, None, :, None].expand(in_size, 1, in_size, in_size)
    return _resize_float(basis.contiguous(), (out_size, out_size), mode, antialias)[:, 0, :, 0].T.contiguous()


# -- PIL's resize in 8 bits, as batched matrix products ---------------------------------------
#
# Hand-written: PIL exposes no resize coefficients and torch has no Lanczos kernel. What PIL does
# (libImaging/Resample.c) for an 8-bit image: per output pixel along an axis, the filter is
# stretched by the reduction factor (support x max(1, in/out)), sampled at the input pixel
# centres inside the support, normalised to sum 1 and turned into fixed-point integers with 22
# fractional bits; the horizontal pass runs first, then the vertical one, each output rounded
# (half up) and clipped to 0..255. Here a pass is one product with an `[out, in]` matrix holding
# those integers / 2**22, followed by the same rounding; in float64 every product and sum is
# exact (integers below 2**53 scaled by a power of two), so the result is PIL's to the bit.

_PIL_PRECISION = float(1 << 22)


def _sinc(x: float) -> float:
    return 1.0 if x == 0.0 else math.sin(x * math.pi) / (x * math.pi)


def _pil_bilinear(x: float) -> float:
    x = abs(x)
    return 1.0 - x if x < 1.0 else 0.0


def _pil_bicubic(x: float) -> float:
    a, x = -0.5, abs(x)
    if x < 1.0:
        return ((a + 2.0) * x - (a + 3.0)) * x * x + 1
    if x < 2.0:
        return (((x - 5) * x + 8) * x - 4) * a
    return 0.0


def _pil_lanczos(x: float) -> float:
    return _sinc(x) * _sinc(x / 3) if -3.0 <= x < 3.0 else 0.0


#: PIL's kernels and their supports (in input pixels at a scale of 1).
_PIL_FILTERS = {"bilinear": (_pil_bilinear, 1.0), "bicubic": (_pil_bicubic, 2.0), "lanczos": (_pil_lanczos, 3.0)}


@functools.lru_cache(maxsize=256)
def pil_resize_matrix(in_size: int, out_size: int, mode: str) -> torch.Tensor:
    """PIL's 8-bit resize weights along one axis: float64 `[out_size, in_size]` (read-only, cached).

    Row i holds PIL's fixed-point coefficients of output pixel i divided by 2**22, computed in
    double precision in PIL's order of operations (Python's `math.sin` is the C library's).
    """
    kernel, support = _PIL_FILTERS[mode]
    scale = in_size / out_size
    filter_scale = max(scale, 1.0)
    support *= filter_scale
    inverse = 1.0 / filter_scale
    matrix = torch.zeros(out_size, in_size, dtype=torch.float64)
    for out in range(out_size):
        center = (out + 0.5) * scale
        first = max(int(center - support + 0.5), 0)
        stop = min(int(center + support + 0.5), in_size)
        weights = [kernel((x - center + 0.5) * inverse) for x in range(first, stop)]
        total = sum(weights)
        for x, weight in zip(range(first, stop), weights):
            weight = weight / total if total != 0.0 else weight
            # C's (int) truncates toward zero, as Python's int() does.
            fixed = int(weight * _PIL_PRECISION + (0.5 if weight >= 0 else -0.5))
            matrix[out, x] = fixed / _PIL_PRECISION
    return matrix


def round_to_8_bits(levels: torch.Tensor, clip: bool = True) -> torch.Tensor:
    """PIL's rounding of a filtered value: half up, then clipped to 0..255 (in place; `clip=False`
    where the filter cannot leave that range)."""
    levels.add_(0.5).floor_()
    return levels.clamp_(0.0, 255.0) if clip else levels


def to_8_bit_levels(pixel_values: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """[0, 1] pixels -> the 8-bit levels 0..255 of the image they came from, as `dtype`."""
    return pixel_values.to(dtype).mul(255.0).round_().clamp_(0.0, 255.0)


@functools.lru_cache(maxsize=64)
def channel_constants(values: tuple[float, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Per-channel constants as a `[C, 1, 1]` tensor on `device`, made once per device and dtype (not
    to be modified): a fresh host-to-device copy for every batch would make the host wait for the device."""
    return torch.tensor(values, dtype=dtype, device=device)[:, None, None]


def exact_dtype(device: torch.device) -> torch.dtype:
    """float64, in which the 8-bit passes are exact; float32 where the device has no float64 (MPS)."""
    return torch.float32 if device.type == "mps" else torch.float64


#: The hook of `low_resolution_copies` between its downsample and its upsample: `(small, size) ->
#: small`, `small` the LR images `[batch, C, size, size]` in pixels ([0, 1] for images in [0, 1]).
BetweenResizes = Callable[[torch.Tensor, int], torch.Tensor]


@functools.lru_cache(maxsize=512)
def _resize_matrix_on(
    in_size: int, out_size: int, mode: str, in_8_bits: bool, antialias: bool, device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    """One resize along one axis as an `[out_size, in_size]` matrix on `device` in `dtype` (read-only):
    made once per device, as a host-to-device copy for every batch would make the host wait."""
    matrix = pil_resize_matrix(in_size, out_size, mode) if in_8_bits else _torch_resize_matrix(in_size, out_size, mode, antialias)
    return matrix.to(device=device, dtype=dtype)


@functools.lru_cache(maxsize=256)
def _can_leave_8_bits(in_size: int, out_size: int, mode: str) -> bool:
    """Whether PIL's 8-bit pass with this matrix can round levels outside 0..255, i.e. whether its
    clipping does anything: the extremes of a row are 255 x the sums of its negative and positive weights."""
    matrix = pil_resize_matrix(in_size, out_size, mode)
    lowest = 255.0 * matrix.clamp(max=0.0).sum(dim=1).min().item()
    highest = 255.0 * matrix.clamp(min=0.0).sum(dim=1).max().item()
    return lowest + 0.5 < 0.0 or highest + 0.5 >= 256.0


def _per_channel(planes: torch.Tensor, values: Sequence[float], operation: str) -> None:
    """`planes[:, c].<operation>_(values[c])` in place for each channel of `[N, C, ...]`: with scalars, as
    a broadcast `[C, 1, 1]` operand is several times slower on CPU (and gives the same bits)."""
    for channel, value in enumerate(values):
        getattr(planes[:, channel], operation + "_")(value)


def _output_hw(output_size: int | Sequence[int] | None, height: int, width: int) -> tuple[int, int]:
    if output_size is None:
        return height, width
    if isinstance(output_size, int):
        return output_size, output_size
    return int(output_size[0]), int(output_size[1])


def low_resolution_copies(
    pixel_values: torch.Tensor,
    sizes: Sequence[int],
    output_size: int | Sequence[int] | None = None,
    downsample_interpolation: str = DEFAULT_DOWNSAMPLE,
    upsample_interpolation: str = DEFAULT_UPSAMPLE,
    antialias: bool = True,
    normalization: tuple[Sequence[float], Sequence[float]] | None = None,
    clamp: tuple[float, float] | None = None,
    between: BetweenResizes | None = None,
) -> torch.Tensor:
    """THE low-resolution (LR) operator: every image of a batch at every LR size, brought back.

    For each size s: downsample to s x s, `between(small, s)` when given (the degradation's blur,
    noise and JPEG), then upsample to `output_size`. Both resizes are separable: along each axis
    one matrix product, the width pass first, with every size's width downsample in one product.
    Hand-written: no library exposes resize matrices, and torch has no Lanczos resize.

    - `downsample_interpolation="lanczos"` is the original's operator exactly: PIL's Lanczos
      resize of the 8-bit image, then PIL's `upsample_interpolation` resize back, each pass
      rounded to 8 bits as PIL does (see `pil_resize_matrix`); `between` gets and gives the LR
      image as 8-bit pixels in [0, 1] (its result is rounded back to 8 bits). The result holds
      multiples of 1/255 (float32 arithmetic, as a decoded 8-bit image), or their normalization.
    - The torch modes are torch's linear resizes (antialiased when shrinking with `antialias`),
      read off as matrices: their result is the same before or after a per-channel
      normalization, so normalized pixels are resized as they are, unless `between` needs pixels.

    Args:
        pixel_values: float `[batch, C, H, W]`, pixels in [0, 1], or normalized with `normalization`.
        sizes: LR sides (positive, below the output size); the result keeps their order.
        output_size: side (or `(height, width)`) to bring the copies back to; default: the input's.
        downsample_interpolation / upsample_interpolation: see `check_interpolation_modes`.
        antialias: low-pass filter while downsampling (torch bilinear/bicubic only).
        normalization: `(mean, std)` per channel of normalized input; the result is normalized alike.
        clamp: `(min, max)` in pixels for the result of a torch mode (`(0, 1)`: the pixel range).
        between: optional hook on the LR images, see `BetweenResizes`.

    Returns:
        `[batch, len(sizes), C, out_h, out_w]`, same dtype and device (run without autocast).
    """
    if not torch.is_tensor(pixel_values) or not pixel_values.is_floating_point() or pixel_values.ndim != 4:
        described = type(pixel_values).__name__ + (f" {tuple(pixel_values.shape)} of {pixel_values.dtype}" if torch.is_tensor(pixel_values) else "")
        raise DCRInputError(f"pixel_values must be a floating point tensor [batch, C, H, W], got {described}.")
    check_interpolation_modes(downsample_interpolation, upsample_interpolation)
    height, width = pixel_values.shape[-2:]
    out_hw = _output_hw(output_size, height, width)
    sizes = list(sizes)
    for size in sizes:
        if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
            raise DCRInputError(f"size must be a positive integer, got {size!r}.")
        if size >= min(out_hw):
            raise DCRInputError(
                f"low-resolution size {size} must be smaller than the output size {out_hw}; "
                "the high-resolution image is not a low-resolution probe."
            )
    if torch.is_autocast_enabled(pixel_values.device.type):
        # Under bf16/fp16 autocast (mixed-precision training and validation) the products would come
        # out in half precision: the operator runs as without autocast, in the input's precision.
        with torch.autocast(pixel_values.device.type, enabled=False):
            return low_resolution_copies(pixel_values, sizes, out_hw, downsample_interpolation, upsample_interpolation,
                                         antialias, normalization, clamp, between)
    run = _copies_8_bit if downsample_interpolation == "lanczos" else _copies_linear
    copies = run(pixel_values, sizes, out_hw, downsample_interpolation, upsample_interpolation, antialias,
                 normalization, clamp, between)
    return copies.to(pixel_values.dtype)


def _copies_8_bit(pixel_values, sizes, out_hw, downsample, upsample, antialias, normalization, clamp, between) -> torch.Tensor:
    """PIL's operator: 8-bit levels, rounded after each of the four passes; float32 `[batch, sizes, C, h, w]`."""
    batch, channels, height, width = pixel_values.shape
    (out_h, out_w), device, dtype = out_hw, pixel_values.device, exact_dtype(pixel_values.device)

    def matrix(in_size: int, out_size: int, mode: str) -> torch.Tensor:
        return _resize_matrix_on(in_size, out_size, mode, True, True, device, dtype)

    levels = pixel_values.to(dtype, copy=True)
    if normalization is not None:
        _per_channel(levels, normalization[1], "mul")
        _per_channel(levels, normalization[0], "add")
    levels = levels.mul_(255.0).round_().clamp_(0.0, 255.0).view(batch * channels, height, width)
    columns = torch.cat([matrix(width, size, "lanczos") for size in sizes]) if sizes else levels.new_zeros(0, width)
    narrow = round_to_8_bits((levels.reshape(-1, width) @ columns.T).view(batch * channels, height, columns.shape[0]))
    # The levels are no longer needed: their buffer takes each restored copy (fresh large
    # allocations cost page faults on CPU).
    restored = levels if height * width == out_h * out_w else levels.new_empty(batch * channels, out_h, out_w)
    restored = restored.view(batch * channels, out_h, out_w)
    copies = torch.empty((batch, len(sizes), channels, out_h, out_w), dtype=torch.float32, device=device)
    offset = 0
    for index, size in enumerate(sizes):
        small = round_to_8_bits(matrix(height, size, "lanczos") @ narrow[:, :, offset : offset + size])  # [N, s, s]
        offset += size
        if between is not None:
            lr_image = between(small.to(torch.float32).mul_(1 / 255).view(batch, channels, size, size), size)
            small = to_8_bit_levels(lr_image, dtype).reshape(batch * channels, size, size)
        up_rows, up_columns = matrix(size, out_h, upsample), matrix(size, out_w, upsample)
        wide = (small.reshape(-1, size) @ up_columns.T).view(batch * channels, size, out_w)  # width first, as PIL
        wide = round_to_8_bits(wide, clip=_can_leave_8_bits(size, out_w, upsample))
        # The height pass with PIL's +0.5 of rounding folded into the product: a row of ones under
        # the image and a column of 0.5 beside the matrix (exact in float64).
        ones = torch.ones((wide.shape[0], 1, out_w), dtype=dtype, device=device)
        half = torch.full((out_h, 1), 0.5, dtype=dtype, device=device)
        torch.matmul(torch.cat([up_rows, half], dim=1), torch.cat([wide, ones], dim=1), out=restored)
        restored.floor_()
        if _can_leave_8_bits(size, out_h, upsample):
            restored.clamp_(0.0, 255.0)
        target = copies[:, index]
        target.copy_(restored.view(batch, channels, out_h, out_w))
        # The float32 rescale (`DCRImageProcessor.rescale_pixels`) and normalization of decoded images, to the bit.
        target.mul_(1 / 255)
        if normalization is not None:
            _per_channel(target, normalization[0], "sub")
            _per_channel(target, normalization[1], "div")
    return copies


def _copies_linear(pixel_values, sizes, out_hw, downsample, upsample, antialias, normalization, clamp, between) -> torch.Tensor:
    """Torch's linear modes: `U_s D_s X D_s^T U_s^T` per size, clamped to `clamp`; `[batch, sizes, C, h, w]`."""
    batch, channels, height, width = pixel_values.shape
    (out_h, out_w), device = out_hw, pixel_values.device
    # Products are fastest and best supported in float32; bf16/fp16 come back as given.
    dtype = pixel_values.dtype if pixel_values.dtype in (torch.float32, torch.float64) else torch.float32

    def matrix(in_size: int, out_size: int, mode: str) -> torch.Tensor:
        return _resize_matrix_on(in_size, out_size, mode, False, antialias, device, dtype)

    pixels = pixel_values.to(dtype)
    # `between` works on pixels: normalized input is brought back to them first (and normalized at the end).
    in_pixels = normalization is not None and between is not None
    if in_pixels:
        mean, std = (channel_constants(tuple(float(v) for v in values), dtype, device) for values in normalization)
        pixels = pixels * std + mean
    bounds = None
    if clamp is not None:
        bounds = [[float(clamp[0])] * channels, [float(clamp[1])] * channels]
        if normalization is not None and not in_pixels:
            mean, std = normalization
            bounds = [[(b - m) / s for b, m, s in zip(bound, mean, std)] for bound in bounds]
    rows_of_pixels = pixels.reshape(-1, width)
    copies = torch.empty((batch, len(sizes), channels, out_h, out_w), dtype=dtype, device=device)
    # One scratch buffer for every size: fresh large allocations cost page faults on CPU.
    restored = torch.empty((batch * channels * out_h, out_w), dtype=dtype, device=device)
    for index, size in enumerate(sizes):
        # Each size's own width pass (not one product for all sizes, as in 8 bits): float32 products
        # of other shapes round differently, and the copy must not depend on the other sizes asked for.
        narrow = (rows_of_pixels @ matrix(width, size, downsample).T).view(batch * channels, height, size)
        small = matrix(height, size, downsample) @ narrow  # [N, s, s]: the LR image
        if between is not None:
            small = between(small.view(batch, channels, size, size), size).to(dtype).reshape(batch * channels, size, size)
        # Linear: the height pass may come first, which makes the large product a plain GEMM.
        torch.mm((matrix(size, out_h, upsample) @ small).reshape(-1, size), matrix(size, out_w, upsample).T, out=restored)
        planes = restored.view(batch, channels, out_h * out_w)
        if bounds is not None and len(set(bounds[0])) == 1 and len(set(bounds[1])) == 1:
            planes.clamp_(bounds[0][0], bounds[1][0])  # a scalar clamp is several times faster than a broadcast one
        elif bounds is not None:
            for channel in range(channels):
                planes[:, channel].clamp_(bounds[0][channel], bounds[1][channel])
        if in_pixels:
            _per_channel(planes, normalization[0], "sub")
            _per_channel(planes, normalization[1], "div")
        copies[:, index] = planes.view(batch, channels, out_h, out_w)
    return copies


def simulate_low_resolution(
    pixel_values: torch.Tensor,
    size: int,
    output_size: int | Sequence[int] | None = None,
    downsample_interpolation: str = DEFAULT_DOWNSAMPLE,
    upsample_interpolation: str = DEFAULT_UPSAMPLE,
    antialias: bool = True,
    clamp: tuple[float, float] | None = None,
) -> torch.Tensor:
    """One LR copy of any float tensor `[..., C, H, W]` (one image, a batch, a multi-resolution batch):
    `low_resolution_copies` at one `size`, with the same arguments. Returns `[..., C, out_h, out_w]`."""
    if not torch.is_tensor(pixel_values) or not pixel_values.is_floating_point():
        described = type(pixel_values).__name__ + (f" of {pixel_values.dtype}" if torch.is_tensor(pixel_values) else "")
        raise DCRInputError(f"pixel_values must be a floating point tensor [..., C, H, W], got {described}.")
    if pixel_values.ndim < 3:
        raise DCRInputError(f"pixel_values must have shape [..., C, H, W], got {tuple(pixel_values.shape)}.")
    *lead, channels, height, width = pixel_values.shape
    out_hw = _output_hw(output_size, height, width)
    copies = low_resolution_copies(pixel_values.reshape(-1, channels, height, width), [size], out_hw, downsample_interpolation,
                                   upsample_interpolation, antialias, clamp=clamp)
    return copies[:, 0].reshape(*lead, channels, *out_hw)


def _resample_value(resample: Any) -> int:
    """A PIL resampling filter from its number, a `PILImageResampling` or its name ("bilinear")."""
    if isinstance(resample, str) and resample.lower() in _RESAMPLE_NAMES:
        return _RESAMPLE_NAMES[resample.lower()]
    if not isinstance(resample, bool) and isinstance(resample, (int, np.integer)) and int(resample) in range(6):
        return int(resample)
    raise DCRInputError(f"resample={resample!r} is not a PIL filter; expected one of {sorted(_RESAMPLE_NAMES)} or 0..5.")


class DCRImageProcessorKwargs(ImagesKwargs, total=False):
    """Per-call options of `DCRImageProcessor` beyond transformers' common image options."""

    image_size: int
    low_resolution_size: int | None
    landmarks: Any
    downsample_interpolation: str
    upsample_interpolation: str
    channel_order: str


#: `channel_order` values: the channel order of the model's input (the images are read as RGB).
CHANNEL_ORDERS = ("rgb", "bgr")


class DCRImageProcessor(BaseImageProcessor):
    r"""
    Prepares faces for a DCR model, and defines DCR's preprocessing for every other part of dcr_hf.

    Per image: decode (a PIL image, a file path, encoded bytes or a `datasets` `{"bytes", "path"}`
    dict; EXIF orientation applied) -> 8-bit RGB (grey, RGBA, CMYK, 16-bit included) -> resized to
    `image_size` x `image_size` by PIL in 8 bits with `resample` -> rescaled to [0, 1]; then, per
    batch: optionally turned into a simulated low-resolution probe (`low_resolution_size`) ->
    normalized with `image_mean` / `image_std`. A float tensor batch `[batch, 3, H, W]` in [0, 1]
    is processed as one batch on its own device (resized, when needed, by torch's antialiased
    filter of the same name).

    Args:
        image_size (`int`, defaults to `DCRConfig.image_size`): side of the square model input.
        do_resize (`bool`, defaults to `True`): resize inputs to `image_size`.
        resample (`PILImageResampling`, defaults to `BILINEAR`): filter of that resize (the
            original's `Resize(120)` is PIL bilinear).
        do_normalize (`bool`, defaults to `True`), image_mean / image_std (default 0.5 each).
        do_convert_rgb (`bool`, defaults to `True`): any mode becomes 8-bit RGB.
        low_resolution_size (`int`, *optional*): make every image an s x s LR probe; also per call.
        downsample_interpolation (`str`, defaults to `"lanczos"`), upsample_interpolation (`str`,
            defaults to `"bilinear"`): the two resizes of the LR simulation. `"lanczos"` is the
            original's operator: PIL's Lanczos, then PIL's upsample filter, both in 8 bits (as batched
            tensor operations); torch modes ("bicubic", ...) resize float pixels.
        channel_order (`str`, defaults to `"rgb"`): the channel order of the model's input. Images
            are read as RGB on every path; `"bgr"` (AdaFace's networks, trained on OpenCV-decoded
            images) reverses the channels in `normalize_pixels`, so `pixel_values` and everything
            normalized (training batches, LR copies) are BGR; `image_mean` / `image_std` stay in RGB order.
    """

    model_input_names = ["pixel_values"]
    valid_kwargs = DCRImageProcessorKwargs

    image_size = DCRConfig.image_size
    do_resize = True
    resample = PILImageResampling.BILINEAR
    do_normalize = True
    image_mean = [0.5, 0.5, 0.5]
    image_std = [0.5, 0.5, 0.5]
    do_convert_rgb = True
    low_resolution_size = None
    # Saved in preprocessor_config.json: folders saved with "bicubic" keep it when loaded.
    downsample_interpolation = DEFAULT_DOWNSAMPLE
    upsample_interpolation = DEFAULT_UPSAMPLE
    channel_order = "rgb"
    # Set on a call's copy only (see `_for_call`): a class attribute is not saved with the settings.
    _input_data_format: ChannelDimension | None = None

    #: The settings a processor is made of; each is also a per-call option of `preprocess`.
    settings = ("image_size", "do_resize", "resample", "do_normalize", "image_mean", "image_std", "do_convert_rgb",
                "low_resolution_size", "downsample_interpolation", "upsample_interpolation", "channel_order")

    def __init__(self, **kwargs: Any):
        if "interpolation" in kwargs:
            # Folders saved before `resample` existed name the HR resize filter `interpolation`.
            kwargs.setdefault("resample", kwargs.pop("interpolation"))
        options = {name: kwargs.pop(name, getattr(type(self), name)) for name in self.settings}
        super().__init__(**kwargs)
        self._set_settings(options)

    def _set_settings(self, options: dict[str, Any]) -> None:
        """Check and set every setting of `options` (all of `settings`); `ValueError` naming a bad one."""
        check_interpolation_modes(options["downsample_interpolation"], options["upsample_interpolation"])
        # One number stands for every channel, as in transformers' image processors.
        mean, std = ([value] * 3 if isinstance(value, (int, float)) else list(value)
                     for value in (options["image_mean"], options["image_std"]))
        if len(mean) != 3 or len(std) != 3 or any(float(s) <= 0 for s in std):
            raise DCRInputError(f"image_mean and image_std need 3 values (std > 0), got {mean} and {std}.")
        image_size = options["image_size"]
        if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size <= 1:
            raise DCRInputError(f"image_size must be an integer > 1, got {image_size!r}.")
        self.image_size = image_size
        self.do_resize = bool(options["do_resize"])
        self.resample = _resample_value(options["resample"])
        self.do_normalize = bool(options["do_normalize"])
        self.image_mean = [float(m) for m in mean]
        self.image_std = [float(s) for s in std]
        self.do_convert_rgb = bool(options["do_convert_rgb"])
        self.downsample_interpolation = options["downsample_interpolation"]
        self.upsample_interpolation = options["upsample_interpolation"]
        self.low_resolution_size = self.check_low_resolution_size(options["low_resolution_size"])
        if options["channel_order"] not in CHANNEL_ORDERS:
            raise DCRInputError(f"channel_order={options['channel_order']!r} is not one of {CHANNEL_ORDERS}.")
        self.channel_order = options["channel_order"]

    def _for_call(self, options: dict[str, Any], input_data_format: Any) -> DCRImageProcessor:
        """This processor, or a copy with one call's settings (checked as the constructor checks them)."""
        options = {name: value for name, value in options.items() if value is not None}
        if not options and input_data_format is None:
            return self
        other = copy.copy(self)
        other._set_settings({**{name: getattr(self, name) for name in self.settings}, **options})
        if input_data_format is not None:
            other._input_data_format = _channel_dimension(input_data_format, "input_data_format")
        return other

    #: The settings a model's config carries (besides `image_size`), so that a branch model given
    #: plain HR `pixel_values` makes the LR copies itself as this processor would.
    model_config_settings = ("do_normalize", "image_mean", "image_std", "downsample_interpolation", "upsample_interpolation",
                             "channel_order")

    @classmethod
    def from_model_config(cls, config: DCRConfig) -> DCRImageProcessor:
        """The processor a model's config records: its `image_size` and the `model_config_settings`
        `write_to_model_config` wrote there (the processor's defaults for a config without them)."""
        recorded = {name: getattr(config, name) for name in cls.model_config_settings if getattr(config, name, None) is not None}
        return cls(image_size=config.image_size, **recorded)

    def write_to_model_config(self, config: DCRConfig) -> None:
        """Record this processor's normalization and LR operator on the model's `config` (saved with it),
        where `from_model_config` reads them back: the processor stays their one source."""
        if config.image_size != self.image_size:
            raise DCRInputError(f"the processor makes {self.image_size}x{self.image_size} images but the model expects "
                                f"image_size={config.image_size}.")
        for name in self.model_config_settings:
            value = getattr(self, name)
            setattr(config, name, list(value) if isinstance(value, list) else value)

    # -- the steps, one method each (the dataset transforms call them) -----------------------

    def check_low_resolution_size(self, size: Any) -> int | None:
        """`None` or a valid LR size for this processor's `image_size` (as an int)."""
        if size is None:
            return None
        return check_low_resolution_sizes([size], self.image_size, name="low_resolution_size")[0]

    def open_image(self, image: Any) -> PIL.Image.Image:
        """A (lazily decoded) PIL image from a PIL image, a local path, bytes or a `{"bytes", "path"}` dict."""
        if isinstance(image, PIL.Image.Image):
            return image
        if isinstance(image, dict):
            data, path = image.get("bytes"), image.get("path")
            image = data if data is not None else path
            if image is None:
                raise DCRInputError("the image dict has neither 'bytes' nor 'path'.")
        if isinstance(image, (bytes, bytearray, memoryview)):
            return PIL.Image.open(io.BytesIO(bytes(image)))
        if isinstance(image, (str, os.PathLike)):
            with open(image, "rb") as file:
                return PIL.Image.open(io.BytesIO(file.read()))
        raise DCRInputError(f"cannot read an image from {type(image).__name__}; expected a PIL image, a path or bytes.")

    def decode_image(self, image: Any) -> PIL.Image.Image:
        """Decode one image at its own size: EXIF orientation applied (as `datasets.Image` decoding
        does), any mode made 8-bit RGB. Raises PIL's own errors (`OSError`, ...) on unreadable data."""
        image = self.open_image(image)
        image.load()
        if image.getexif().get(PIL.Image.ExifTags.Base.Orientation) is not None:
            image = PIL.ImageOps.exif_transpose(image)
        if self.do_convert_rgb:
            image = convert_to_rgb(image)
        elif image.mode != "RGB":
            raise DCRInputError(f"an image of mode {image.mode} with do_convert_rgb=False: the model takes RGB images (3 channels).")
        return image

    def load_image(self, image: Any) -> np.ndarray:
        """Decode one image to what the model sees before rescaling: uint8 `[image_size, image_size, 3]`.

        Decoded by `decode_image`, then resized by PIL with `resample` when its size differs.
        """
        image = self.decode_image(image)
        target = (self.image_size, self.image_size)
        if self.do_resize and image.size != target:
            image = image.resize(target, self.resample)
        return np.asarray(image)

    def rescale_pixels(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 `[..., 3, H, W]` -> float32 in [0, 1] (on the tensor's device)."""
        return images.to(torch.float32).mul_(self.rescale_factor)

    def normalize_pixels(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """RGB `[..., 3, H, W]` in [0, 1] -> the model's input: normalized with `image_mean` / `image_std`
        (not without `do_normalize`), then in `channel_order`."""
        if self.do_normalize:
            mean = channel_constants(tuple(self.image_mean), pixel_values.dtype, pixel_values.device)
            std = channel_constants(tuple(self.image_std), pixel_values.dtype, pixel_values.device)
            pixel_values = (pixel_values - mean) / std
        return self._model_channel_order(pixel_values)

    def denormalize_pixels(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The inverse of `normalize_pixels`: normalized `[..., 3, H, W]` -> RGB pixels in [0, 1] (up to rounding)."""
        pixel_values = self._model_channel_order(pixel_values)
        if not self.do_normalize:
            return pixel_values
        mean = channel_constants(tuple(self.image_mean), pixel_values.dtype, pixel_values.device)
        std = channel_constants(tuple(self.image_std), pixel_values.dtype, pixel_values.device)
        return pixel_values * std + mean

    # -- channel order (`channel_order`) ------------------------------------------------------

    def _model_channel_order(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """RGB <-> the model's channel order on the channel axis of `[..., 3, H, W]` (its own inverse)."""
        return pixel_values.flip(-3) if self.channel_order == "bgr" else pixel_values

    def _in_model_order(self, values: Sequence[float]) -> list[float]:
        """Per-channel RGB values (a mean, a std, a bound) in the order of the model's channels."""
        return list(values)[::-1] if self.channel_order == "bgr" else list(values)

    def pixel_range(self) -> tuple[list[float], list[float]]:
        """Per-channel lowest and highest normalized value (the images of pixels 0 and 1)."""
        if not self.do_normalize:
            return [0.0] * 3, [1.0] * 3
        low = [(0.0 - m) / s for m, s in zip(self.image_mean, self.image_std)]
        high = [(1.0 - m) / s for m, s in zip(self.image_mean, self.image_std)]
        return self._in_model_order(low), self._in_model_order(high)

    @property
    def low_resolution_in_8_bits(self) -> bool:
        """Whether the LR steps work on 8-bit levels, rounded after every pass (the PIL operator)."""
        return self.downsample_interpolation == "lanczos"

    def with_low_resolution_operator(self, downsample_interpolation: str, upsample_interpolation: str) -> DCRImageProcessor:
        """A copy of this processor with another LR operator (e.g. the original's, for one evaluation)."""
        check_interpolation_modes(downsample_interpolation, upsample_interpolation)
        other = copy.deepcopy(self)
        other.downsample_interpolation, other.upsample_interpolation = downsample_interpolation, upsample_interpolation
        return other

    def low_resolution_copies(
        self,
        pixel_values: torch.Tensor,
        sizes: Sequence[int],
        normalized: bool = False,
        between: BetweenResizes | None = None,
    ) -> torch.Tensor:
        """This processor's LR operator (`low_resolution_copies`) on a batch `[batch, 3, H, W]`, back at
        `image_size`: `[batch, len(sizes), 3, image_size, image_size]`, in [0, 1] as 8-bit image files
        would be; with `normalized=True` the input and the result are normalized by this processor."""
        return low_resolution_copies(
            pixel_values,
            check_low_resolution_sizes(sizes, self.image_size, name="sizes"),
            output_size=self.image_size,
            downsample_interpolation=self.downsample_interpolation,
            upsample_interpolation=self.upsample_interpolation,
            normalization=(
                (self._in_model_order(self.image_mean), self._in_model_order(self.image_std))
                if normalized and self.do_normalize else None
            ),
            clamp=(0.0, 1.0),
            between=between,
        )

    def simulate_low_resolution(self, pixel_values: torch.Tensor, size: int) -> torch.Tensor:
        """One LR copy (`low_resolution_copies` at `size`) of pixels `[..., 3, H, W]` in [0, 1] (any device)."""
        size = self.check_low_resolution_size(size)
        *lead, channels, height, width = pixel_values.shape
        copies = self.low_resolution_copies(pixel_values.reshape(-1, channels, height, width), [size])
        return copies[:, 0].reshape(*lead, channels, self.image_size, self.image_size)

    # -- whole preprocessing -----------------------------------------------------------------

    def _channels_first(self, shape: Sequence[int]) -> bool:
        """Whether a 3-D image array is `[C, H, W]`: as the call's `input_data_format` says, else guessed
        from its shape (channels first when only the first axis could hold 1 to 4 channels)."""
        if self._input_data_format is not None:
            return self._input_data_format == ChannelDimension.FIRST
        return shape[0] in (1, 2, 3, 4) and shape[-1] not in (1, 2, 3, 4)

    def _float_image(self, image: np.ndarray | torch.Tensor) -> torch.Tensor | None:
        """A float array or tensor image in [0, 1] as `[3, H, W]` float32, or `None` for other inputs."""
        tensor = torch.from_numpy(np.ascontiguousarray(image)) if isinstance(image, np.ndarray) else image
        if not torch.is_tensor(tensor) or not tensor.is_floating_point():
            return None
        if tensor.ndim == 2:
            tensor = tensor.unsqueeze(0)
        elif tensor.ndim == 3 and not self._channels_first(tensor.shape):
            tensor = tensor.permute(2, 0, 1)
        if tensor.ndim != 3 or tensor.shape[0] not in (1, 2, 3, 4):
            raise DCRInputError(f"an image must be [H, W], [C, H, W] or [H, W, C] with 1 to 4 channels, got {tuple(image.shape)}.")
        tensor = tensor[:1].expand(3, -1, -1) if tensor.shape[0] in (1, 2) else tensor[:3]
        return tensor.float().contiguous()

    def _pil_from_array(self, image: np.ndarray | torch.Tensor) -> PIL.Image.Image:
        """An integer array or tensor image (HW, HWC or CHW; 8 or 16 bits) as a PIL image."""
        array = image.detach().cpu().numpy() if torch.is_tensor(image) else np.asarray(image)
        if array.ndim == 3 and self._channels_first(array.shape):
            array = np.moveaxis(array, 0, -1)
        if array.ndim == 3 and array.shape[-1] in (1, 2):
            array = array[..., 0]
        elif array.ndim == 3 and array.shape[-1] == 4:
            array = array[..., :3]
        if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] != 3):
            raise DCRInputError(f"an image must be [H, W], [C, H, W] or [H, W, C] with 1 to 4 channels, got {array.shape}.")
        if array.dtype == np.bool_:
            array = array.astype(np.uint8) * 255
        if array.dtype != np.uint8:
            if array.ndim == 3:  # wide RGB: keep the top 8 bits of each channel
                peak = 65535.0 if array.max() > 255 else 255.0
                array = np.clip(array / peak * 255.0 + 0.5, 0, 255).astype(np.uint8)
            else:
                array = array.astype(np.uint16 if array.max() > 255 else np.uint8)
        return PIL.Image.fromarray(np.ascontiguousarray(array))

    def _pixels_of(self, image: Any) -> torch.Tensor:
        """One input image -> float32 `[3, image_size, image_size]` in [0, 1]."""
        if isinstance(image, (np.ndarray, torch.Tensor)):
            as_float = self._float_image(image)
            if as_float is not None:
                return self._resize_tensor(as_float.unsqueeze(0))[0]
            image = self._pil_from_array(image)
        return self.rescale_pixels(torch.from_numpy(self.load_image(image).copy()).permute(2, 0, 1))

    def _resize_tensor(self, batch: torch.Tensor) -> torch.Tensor:
        if not self.do_resize or batch.shape[-2:] == (self.image_size, self.image_size):
            return batch
        mode = _TORCH_MODE_OF_RESAMPLE.get(self.resample)
        if mode is None:
            raise DCRInputError(
                f"float tensors are resized by torch, which has no {PILImageResampling(self.resample).name} filter; "
                "pass uint8 images or PIL images, or images already at image_size."
            )
        return _resize_float(batch, (self.image_size, self.image_size), mode).clamp_(0.0, 1.0)

    def _batch_pixels(self, images: Any) -> torch.Tensor:
        """Any accepted input -> float32 `[batch, 3, image_size, image_size]` in [0, 1]."""
        if isinstance(images, np.ndarray) and images.ndim == 4:
            images = torch.from_numpy(np.ascontiguousarray(images))
        if torch.is_tensor(images) and images.ndim == 4 and self._input_data_format == ChannelDimension.LAST:
            images = images.permute(0, 3, 1, 2)
        if torch.is_tensor(images) and images.ndim == 4:
            if images.shape[1] != 3:
                raise DCRInputError(f"a batch tensor must be [batch, 3, H, W], got {tuple(images.shape)}.")
            if images.dtype == torch.uint8 and (not self.do_resize or images.shape[-2:] == (self.image_size,) * 2):
                return self.rescale_pixels(images)  # already decoded and sized: stays on its device
            if images.is_floating_point():
                return self._resize_tensor(images.float())
            return torch.stack([self._pixels_of(image) for image in images]).to(images.device)
        if not isinstance(images, (list, tuple)):
            images = [images]
        if len(images) == 0:
            raise DCRInputError("no images were given.")
        return torch.stack([self._pixels_of(image) for image in images])

    # -- five-point alignment (`landmarks=`) ----------------------------------------------------

    def align_image(self, image: Any, landmarks: np.ndarray) -> np.ndarray:
        """One image aligned to the ArcFace template at `image_size` (`alignment_dcr.align_face`) with
        its landmarks `[5, 2]` (pixel x, y of the image as `decode_image` gives it): uint8 `[S, S, 3]`."""
        if isinstance(image, (np.ndarray, torch.Tensor)):
            if self._float_image(image) is not None:
                raise DCRInputError(
                    "landmarks are applied to decoded 8-bit images (PIL images, paths, bytes, uint8 arrays); "
                    "got a float array: pass the image before rescaling."
                )
            image = self._pil_from_array(image)
        return np.asarray(align_face(self.decode_image(image), landmarks, self.image_size))

    def _aligned_batch_pixels(self, images: Any, landmarks: Any) -> torch.Tensor:
        """Images aligned by their `landmarks` `[batch, 5, 2]` -> float32 `[batch, 3, image_size, image_size]` in [0, 1]."""
        if isinstance(images, np.ndarray) and images.ndim == 4:
            images = torch.from_numpy(np.ascontiguousarray(images))
        if torch.is_tensor(images) and images.ndim == 4:
            images = list(images.permute(0, 3, 1, 2) if self._input_data_format == ChannelDimension.LAST else images)
        elif not isinstance(images, (list, tuple)):
            images = [images]
        if len(images) == 0:
            raise DCRInputError("no images were given.")
        points = check_landmarks(landmarks, len(images))
        aligned = np.stack([self.align_image(image, face) for image, face in zip(images, points)])
        return self.rescale_pixels(torch.from_numpy(aligned).permute(0, 3, 1, 2))

    def preprocess(
        self,
        images: Any,
        low_resolution_size: int | None = None,
        return_tensors: str | None = "pt",
        device: str | torch.device | None = None,
        input_data_format: str | ChannelDimension | None = None,
        data_format: str | ChannelDimension | None = ChannelDimension.FIRST,
        size: int | dict[str, int] | None = None,
        landmarks: Any = None,
        **kwargs: Any,
    ) -> BatchFeature:
        """Turn one image or a list / batch of images into `pixel_values` `[batch, 3, image_size, image_size]`.

        Every setting (`settings`: `image_size`, `image_mean`, `image_std`, `do_normalize`,
        `do_convert_rgb`, `do_resize`, `resample`, `low_resolution_size`, the LR interpolations) may
        be given for this call only, as in transformers' image processors; so may `size` (an int or a
        square `{"height", "width"}`: `image_size`), `input_data_format` (the channel axis of array
        and tensor inputs, guessed from their shape without it) and `data_format` (of the output:
        `"channels_last"` gives `[batch, H, W, 3]`).

        `landmarks` (`[batch, 5, 2]`, pixel x, y of each input image as decoded, EXIF orientation
        applied: eyes, nose tip, mouth corners, from a face detector) align every face to the ArcFace
        template (insightface's, scaled to `image_size`) by a similarity transform instead of
        resizing it; decoded 8-bit inputs only (PIL images, paths, bytes, uint8 arrays).
        """
        options = {name: kwargs.pop(name) for name in self.settings if name in kwargs}
        options["low_resolution_size"] = low_resolution_size
        if size is not None:
            options["image_size"] = _square_side(size)
        if kwargs:
            logger.warning("DCRImageProcessor ignores unknown arguments: %s", sorted(kwargs))
        output_format = _channel_dimension(data_format, "data_format") if data_format is not None else ChannelDimension.FIRST
        processor = self._for_call(options, input_data_format)
        if landmarks is not None:
            batch = processor._aligned_batch_pixels(images, landmarks)
        else:
            batch = processor._batch_pixels(images)
        if device is not None:
            batch = batch.to(device)
        if processor.low_resolution_size is not None:
            batch = processor.simulate_low_resolution(batch, processor.low_resolution_size)
        batch = processor.normalize_pixels(batch)
        if output_format == ChannelDimension.LAST:
            batch = batch.permute(0, 2, 3, 1).contiguous()
        if return_tensors in ("np", "numpy"):
            return BatchFeature({"pixel_values": batch.cpu().numpy()}, tensor_type="np")
        return BatchFeature({"pixel_values": batch}, tensor_type=None if return_tensors is None else "pt")


def _channel_dimension(value: str | ChannelDimension, name: str) -> ChannelDimension:
    """A channel layout option (`"channels_first"` / `"channels_last"`), or `ValueError` naming `name`."""
    if value in (ChannelDimension.FIRST, ChannelDimension.LAST, "channels_first", "channels_last"):
        return ChannelDimension(value)
    raise DCRInputError(f"{name}={value!r}: expected 'channels_first' or 'channels_last'.")


def _square_side(size: int | dict[str, int]) -> int:
    """transformers' `size` option as the side of a square image (`image_size`)."""
    if isinstance(size, dict) and set(size) == {"height", "width"} and size["height"] == size["width"]:
        return size["height"]
    if isinstance(size, dict) and set(size) == {"shortest_edge"}:
        return size["shortest_edge"]
    if isinstance(size, int) and not isinstance(size, bool):
        return size
    raise DCRInputError(f"size={size!r}: a DCR model takes square images; expected an int or {{'height': s, 'width': s}}.")

__all__ = [
    "BetweenResizes",
    "DCRImageProcessor",
    "INTERPOLATION_MODES",
    "check_interpolation_modes",
    "convert_to_rgb",
    "low_resolution_copies",
    "pil_resize_matrix",
    "simulate_low_resolution",
]

# `save_pretrained` then copies this file (and `configuration_dcr.py`, its relative import) into the
# folder and writes `auto_map` to `preprocessor_config.json`, so `AutoImageProcessor` loads the
# processor with `trust_remote_code=True` where dcr_hf is not installed.
DCRImageProcessor.register_for_auto_class("AutoImageProcessor")
