"""Batched fast path of the low-resolution (LR) operator, built on the image processor's matrices.

`DCRImageProcessor.simulate_low_resolution` is the definition: `downsample` to s x s, `upsample`
back to `image_size`. Both steps are separable: along each axis a step is one matrix
(`processor.resize_matrix`, `[s, L]` down and `[L, s]` up), applied to the width, then to the
height, with PIL's 8-bit rounding after every pass when `processor.low_resolution_in_8_bits`
(the original's Lanczos operator); the torch modes are linear (no rounding, clamped once at the
end). `make_low_resolution_copies` makes every LR copy of a batch with a few large matrix
products on the processor's own matrices and rounding points: the downsample along the width is
one product for all sizes at once. Equal to the processor's simulation to the bit in 8-bit mode,
to float rounding (~1e-6) in the torch modes; on any device. Hand-written: no library exposes
resize matrices, and torch has no Lanczos resize.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .configuration_dcr import check_low_resolution_sizes
from .image_processing_dcr import DCRImageProcessor, exact_dtype, round_to_8_bits


def _check_batch(pixel_values: torch.Tensor, processor: DCRImageProcessor) -> None:
    if not torch.is_tensor(pixel_values) or not pixel_values.is_floating_point() or pixel_values.ndim != 4:
        raise ValueError(f"pixel_values must be a float tensor [batch, 3, H, W], got {pixel_values!r:.80}.")
    height, width = pixel_values.shape[-2:]
    length = processor.image_size
    if (height, width) != (length, length):
        raise ValueError(f"pixel_values are {height}x{width}; the processor's LR operator needs {length}x{length} images.")


#: `(down, up)` matrices already on a device, by (image_size, operator, size, device, dtype): moving
#: them for every batch would be eight host-to-device copies, each making the host wait.
_DEVICE_MATRICES: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}


def device_matrices(processor: DCRImageProcessor, sizes: Sequence[int], device, dtype) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """`(down [s, L], up [L, s])` per size, on `device` in `dtype` (moved there once)."""
    operator = (processor.image_size, processor.downsample_interpolation, processor.upsample_interpolation)
    matrices = []
    for size in sizes:
        key = (*operator, size, torch.device(device), dtype)
        if key not in _DEVICE_MATRICES:
            _DEVICE_MATRICES[key] = tuple(
                processor.resize_matrix(step, size).to(device=device, dtype=dtype) for step in ("downsample", "upsample")
            )
        matrices.append(_DEVICE_MATRICES[key])
    return matrices


def _can_leave_8_bits(processor: DCRImageProcessor, size: int) -> bool:
    """Whether the upsampling pass of `size` can round 8-bit levels outside 0..255, i.e. whether its
    clipping does anything: the extremes of a row are 255 x the sums of its negative and positive
    weights (read off the CPU matrix: on a device, reading them would wait for it)."""
    matrix = processor.resize_matrix("upsample", size)
    lowest = 255.0 * matrix.clamp(max=0.0).sum(dim=1).min().item()
    highest = 255.0 * matrix.clamp(min=0.0).sum(dim=1).max().item()
    return lowest + 0.5 < 0.0 or highest + 0.5 >= 256.0


def _narrow_all_sizes(images: torch.Tensor, matrices: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """The width pass of every downsample at once: `[N, L, L]` -> `[N, L, sum(sizes)]` (one product)."""
    count, length = images.shape[0], images.shape[-1]
    downs = torch.cat([down for down, _ in matrices])
    return (images.reshape(-1, length) @ downs.T).view(count, length, downs.shape[0])  # also for count = 0


def make_low_resolution_copies(
    pixel_values: torch.Tensor,
    sizes: Sequence[int],
    processor: DCRImageProcessor,
    normalized: bool = False,
) -> torch.Tensor:
    """Every LR copy of a batch, as `processor.simulate_low_resolution` makes them, on its own device.

    Args:
        pixel_values: float `[batch, 3, image_size, image_size]`: pixels in [0, 1], or with
            `normalized=True` already normalized by `processor` (the result then stays normalized
            and is clamped to the normalized image of [0, 1]; the 8-bit operator denormalizes to
            8-bit levels first).
        sizes: LR sides (checked against the processor's `image_size`); the output keeps their order.
        processor: the `DCRImageProcessor` whose LR operator to apply.

    Returns:
        `[batch, len(sizes), 3, image_size, image_size]`, same dtype and device.
    """
    _check_batch(pixel_values, processor)
    if torch.is_autocast_enabled(pixel_values.device.type):
        # Under bf16/fp16 autocast (mixed-precision training and validation) the products would come
        # out in half precision: the operator runs as without autocast, in the input's precision.
        with torch.autocast(pixel_values.device.type, enabled=False):
            return make_low_resolution_copies(pixel_values, sizes, processor, normalized)
    sizes = check_low_resolution_sizes(sizes, processor.image_size, name="sizes")
    if processor.low_resolution_in_8_bits:
        copies = _copies_8_bit(pixel_values, sizes, processor, normalized)
    else:
        copies = _copies_linear(pixel_values, sizes, processor, normalized)
    return copies.to(pixel_values.dtype)


def _copies_8_bit(
    pixel_values: torch.Tensor, sizes: Sequence[int], processor: DCRImageProcessor, normalized: bool
) -> torch.Tensor:
    """PIL's operator: 8-bit levels, rounded after each of the four passes; float32 `[batch, sizes, 3, L, L]`."""
    batch, channels, length, _ = pixel_values.shape
    device, dtype = pixel_values.device, exact_dtype(pixel_values.device)
    levels = pixel_values.to(dtype, copy=True)
    if normalized and processor.do_normalize:
        for channel, (mean, std) in enumerate(zip(processor.image_mean, processor.image_std)):
            levels[:, channel].mul_(std).add_(mean)
    levels = levels.mul_(255.0).round_().clamp_(0.0, 255.0).view(batch * channels, length, length)
    matrices = device_matrices(processor, sizes, device, dtype)
    narrow = round_to_8_bits(_narrow_all_sizes(levels, matrices))
    # The levels are no longer needed: their buffer takes each restored copy (fresh large
    # allocations cost page faults on CPU).
    restored = levels
    copies = torch.empty((batch, len(sizes), channels, length, length), dtype=torch.float32, device=device)
    offset = 0
    for index, (down, up) in enumerate(matrices):
        size = down.shape[0]
        small = round_to_8_bits(down @ narrow[:, :, offset : offset + size])  # [N, s, s]: the LR image
        offset += size
        clips = _can_leave_8_bits(processor, size)
        wide = (small.reshape(-1, size) @ up.T).view(-1, size, length)  # width first, as PIL
        wide = round_to_8_bits(wide, clip=clips)
        # The height pass with PIL's +0.5 of rounding folded into the product: a row of ones under
        # the image and a column of 0.5 beside the matrix (exact in float64).
        ones = torch.ones((wide.shape[0], 1, length), dtype=dtype, device=device)
        half = torch.full((length, 1), 0.5, dtype=dtype, device=device)
        torch.matmul(torch.cat([up, half], dim=1), torch.cat([wide, ones], dim=1), out=restored)
        restored.floor_()
        if clips:
            restored.clamp_(0.0, 255.0)
        target = copies[:, index]
        target.copy_(restored.view(batch, channels, length, length))
        # The float32 rescale and normalization of the processor's own path, to the bit; per
        # channel with scalars: a broadcast [3, 1, 1] operand is several times slower on CPU.
        target.mul_(1 / 255)
        if normalized and processor.do_normalize:
            for channel, (mean, std) in enumerate(zip(processor.image_mean, processor.image_std)):
                target[:, channel].sub_(mean).div_(std)
    return copies


def _copies_linear(
    pixel_values: torch.Tensor, sizes: Sequence[int], processor: DCRImageProcessor, normalized: bool
) -> torch.Tensor:
    """Torch's linear modes: `U_s D_s X D_s^T U_s^T` per size, clamped to the pixel range."""
    batch, channels, length, _ = pixel_values.shape
    work_dtype = pixel_values.dtype if pixel_values.dtype in (torch.float32, torch.float64) else torch.float32
    device = pixel_values.device
    # Python floats for the clamp bounds: a scalar clamp is several times faster than a broadcast one.
    lower, upper = processor.pixel_range() if normalized else ([0.0] * channels, [1.0] * channels)
    matrices = device_matrices(processor, sizes, device, work_dtype)
    narrow = _narrow_all_sizes(pixel_values.to(work_dtype).reshape(batch * channels, length, length), matrices)
    copies = torch.empty((batch, len(sizes), channels, length, length), dtype=work_dtype, device=device)
    # One scratch buffer for every size: fresh large allocations cost page faults on CPU.
    restored = torch.empty((batch * channels * length, length), dtype=work_dtype, device=device)
    offset = 0
    for index, (down, up) in enumerate(matrices):
        size = down.shape[0]
        small = down @ narrow[:, :, offset : offset + size]  # [N, size, size]: the LR image
        offset += size
        # Linear: the height pass may come first, which makes the large product a plain GEMM.
        torch.mm((up @ small).reshape(-1, size), up.T, out=restored)
        planes = restored.view(batch, channels, length * length)
        if len(set(lower)) == 1 and len(set(upper)) == 1:
            planes.clamp_(lower[0], upper[0])
        else:
            for channel in range(channels):
                planes[:, channel].clamp_(lower[channel], upper[channel])
        copies[:, index] = planes.view(batch, channels, length, length)
    return copies


__all__ = ["device_matrices", "make_low_resolution_copies"]
