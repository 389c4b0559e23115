"""Convolution weight gradients as bf16 GEMMs on a CPU, where oneDNN's own kernel is slower.

On a CPU with AVX512-BF16 but no AMX, oneDNN (torch 2.13, oneDNN 3.12) computes the forward and
input-gradient passes of a bf16 convolution with its brgemm kernels, at about a bf16 GEMM's rate,
but the weight gradient with its older `jit_bf16` kernel, 1.3-2x slower than the forward on the
trunk's late, small feature maps. There, the weight gradient computed as one GEMM per kernel offset
(`weight_grad_by_offsets`: `grad_weight[o, c, a, b] = sum over n, y, x of grad_output[n, o, y, x] *
pixels[n, c, y + a - p, x + b - p]`, the outputs that read padding left out) is faster.
`gemm_weight_grad` routes the training step's `F.conv2d` calls of such layers
(`uses_gemm_weight_grad`) through `GemmWeightGradConv2d`: the same forward (`F.conv2d`), the same
input gradient (`aten.convolution_backward`), the weight gradient by `torch.mm` in bf16 (float32
accumulation, one bf16 rounding, as oneDNN's); everything else computes as without it.

Hand-written: no library offers a weight-gradient-only convolution backward to choose by shape.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from ..cpu_flags import cpu_flag_sets

#: Convolutions of at least this many input channels whose kernel is 1x1 or whose output maps have
#: at most `MAX_GEMM_OUTPUT_PIXELS` pixels take the GEMM path: the layers measured faster that way on
#: this project's 2-core EPYC (Zen 5, AVX512-BF16, no AMX), see `docs/training.md`. Narrower layers
#: gain nothing there (the 64-channel 1x1 shortcut ran as fast both ways) and pay the Python around it.
MIN_GEMM_IN_CHANNELS = 128
MAX_GEMM_OUTPUT_PIXELS = 16


def gemm_weight_grad_helps(cpuinfo: str | None = None) -> bool:
    """Whether this CPU is of the kind where the GEMM weight gradient was measured faster: x86 with
    AVX512-BF16 and without AMX (oneDNN has a brgemm weight-gradient kernel for AMX, not measured
    here, so AMX CPUs keep the stock path)."""
    flags = (cpu_flag_sets(cpuinfo) or {}).get("flags", set())
    return "avx512_bf16" in flags and "amx_bf16" not in flags


def uses_gemm_weight_grad(input_shape: torch.Size, weight_shape: torch.Size, stride: tuple[int, int],
                          padding: tuple[int, int]) -> bool:
    """Whether a convolution of input `[N, C, H, W]` and weight `[O, C, kh, kw]` takes the GEMM
    weight gradient: the layers measured faster that way (`MIN_GEMM_IN_CHANNELS`, `MAX_GEMM_OUTPUT_PIXELS`)."""
    if input_shape[1] < MIN_GEMM_IN_CHANNELS:
        return False
    out_h = (input_shape[2] + 2 * padding[0] - weight_shape[2]) // stride[0] + 1
    out_w = (input_shape[3] + 2 * padding[1] - weight_shape[3]) // stride[1] + 1
    return weight_shape[2] * weight_shape[3] == 1 or out_h * out_w <= MAX_GEMM_OUTPUT_PIXELS


def _pair(value: int | tuple[int, ...]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


def _kernel_offsets(size: int, out_size: int, kernel: int, stride: int, padding: int) -> Iterator[tuple[int, int, int, int]]:
    """For each kernel offset along one axis: `(offset, first, end, first_input)`, the outputs
    `first..end-1` whose input `stride * out + offset - padding` lies inside the map (the others read
    padding), and the input of the first."""
    for offset in range(kernel):
        first = max(0, -((offset - padding) // stride))  # ceil((padding - offset) / stride)
        end = min(out_size, (size - 1 + padding - offset) // stride + 1)
        yield offset, first, max(first, end), stride * first + offset - padding


def weight_grad_by_offsets(grad_output: torch.Tensor, pixels: torch.Tensor, kernel: tuple[int, int],
                           stride: tuple[int, int], padding: tuple[int, int]) -> torch.Tensor:
    """The weight gradient `[O, C, kh, kw]` (channels-last memory) of a convolution (dilation 1, one
    group) of `pixels` `[N, C, H, W]` with output gradient `grad_output` `[N, O, oh, ow]`: one GEMM
    per kernel offset `(a, b)`, `grad_weight[:, :, a, b] = grad_output[n, :, y, x]^T @ pixels[n, :,
    stride * y + a - padding, stride * x + b - padding]` summed over the outputs whose input lies inside
    the map. The padding's zeros are never multiplied (on a 4x4 map, 31% of a padded 3x3 kernel's
    products), which made it 1.5x faster than one GEMM over the unfolded input there."""
    channels, out_channels = pixels.shape[1], grad_output.shape[1]
    inputs, grads = pixels.permute(0, 2, 3, 1), grad_output.permute(0, 2, 3, 1)  # views when channels-last
    grad_weight = grad_output.new_empty(out_channels, kernel[0], kernel[1], channels)
    rows = _kernel_offsets(pixels.shape[2], grad_output.shape[2], kernel[0], stride[0], padding[0])
    for a, y0, y1, first_row in rows:
        columns = _kernel_offsets(pixels.shape[3], grad_output.shape[3], kernel[1], stride[1], padding[1])
        for b, x0, x1, first_column in columns:
            if y0 == y1 or x0 == x1:  # every output of this offset reads padding
                grad_weight[:, a, b].zero_()
                continue
            window = inputs[:, first_row:first_row + stride[0] * (y1 - y0):stride[0],
                            first_column:first_column + stride[1] * (x1 - x0):stride[1]]
            # [O, rows] as the transposed view of a [rows, O] copy: measured faster than a [O, rows] copy.
            torch.mm(grads[:, y0:y1, x0:x1].reshape(-1, out_channels).t(), window.reshape(-1, channels),
                     out=grad_weight[:, a, b])
    return grad_weight.permute(0, 3, 1, 2)  # [O, kh, kw, C] memory: the channels-last layout of the weight


class GemmWeightGradConv2d(torch.autograd.Function):
    """`F.conv2d(pixels, weight, bias, stride, padding)` (dilation 1, one group) whose backward
    computes the weight gradient by GEMMs (`weight_grad_by_offsets`) and the input gradient by
    `aten.convolution_backward`, as the stock backward does."""

    @staticmethod
    def forward(ctx, pixels, weight, bias, stride, padding):
        ctx.save_for_backward(pixels, weight)
        ctx.stride, ctx.padding, ctx.has_bias = stride, padding, bias is not None
        return F.conv2d(pixels, weight, bias, stride, padding)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_output):
        pixels, weight = ctx.saved_tensors
        need_input, need_weight, need_bias = ctx.needs_input_grad[:3]
        grad_input = grad_weight = grad_bias = None
        if need_input or need_bias:
            grad_input, _, grad_bias = torch.ops.aten.convolution_backward(
                grad_output, pixels, weight, [weight.shape[0]] if ctx.has_bias else None, list(ctx.stride),
                list(ctx.padding), [1, 1], False, [0, 0], 1, [need_input, False, need_bias and ctx.has_bias],
            )
        if need_weight:
            kernel = (weight.shape[2], weight.shape[3])
            grad_weight = weight_grad_by_offsets(grad_output, pixels, kernel, ctx.stride, ctx.padding)
            if not weight.is_contiguous(memory_format=torch.channels_last):
                grad_weight = grad_weight.contiguous()
        return grad_input, grad_weight, grad_bias, None, None


class _GemmWeightGradMode(TorchFunctionMode):
    """Routes `F.conv2d` calls that `select` accepts, under CPU bf16 autocast, through `GemmWeightGradConv2d`."""

    def __init__(self, select: Callable[[torch.Size, torch.Size, tuple[int, int], tuple[int, int]], bool]):
        super().__init__()
        self.select = select

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.conv2d:
            routed = self._routed(*args, **kwargs)
            if routed is not None:
                return routed
        return func(*args, **kwargs)

    def _routed(self, pixels, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
        stride, dilation = _pair(stride), _pair(dilation)
        if (
            isinstance(padding, str) or groups != 1 or dilation != (1, 1) or pixels.dim() != 4
            or pixels.device.type != "cpu" or not torch.is_grad_enabled() or not weight.requires_grad
            or not torch.is_autocast_enabled("cpu") or torch.get_autocast_dtype("cpu") != torch.bfloat16
        ):
            return None
        padding = _pair(padding)
        if not self.select(pixels.shape, weight.shape, stride, padding):
            return None
        # What CPU autocast does for a convolution: its inputs cast to bf16, the forward in bf16.
        low = [None if tensor is None else tensor.to(torch.bfloat16) for tensor in (pixels, weight, bias)]
        with torch.autocast("cpu", enabled=False):
            return GemmWeightGradConv2d.apply(*low, stride, padding)


@contextlib.contextmanager
def gemm_weight_grad(
    select: Callable[[torch.Size, torch.Size, tuple[int, int], tuple[int, int]], bool] = uses_gemm_weight_grad,
) -> Iterator[None]:
    """Within the block, the bf16-autocast CPU convolutions that `select(input_shape, weight_shape,
    stride, padding)` accepts (default `uses_gemm_weight_grad`) compute their weight gradient by a GEMM."""
    with _GemmWeightGradMode(select):
        yield


__all__ = [
    "GemmWeightGradConv2d", "MAX_GEMM_OUTPUT_PIXELS", "MIN_GEMM_IN_CHANNELS", "gemm_weight_grad", "gemm_weight_grad_helps",
    "uses_gemm_weight_grad", "weight_grad_by_offsets",
]
