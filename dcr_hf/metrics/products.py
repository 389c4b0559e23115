"""Blocks of inner products `queries @ references.T` at the CPU's matrix rate, for the exact searches.

On this project's CPUs torch's float32 `torch.mm` (MKL) runs at about half the rate oneDNN's
kernels reach on the same cores (AMD EPYC, AVX-512: 164 against 342 GFLOP/s for a block of
1024 x 5000 x 512; MKL takes a generic path on AMD). torch reaches oneDNN's float32 kernels
for a matrix product only through a convolution, so a block of queries `[block, dim]` is the
input of a 1 x 1 convolution whose `[references, dim, 1, 1]` filters are the references: the
same products, in IEEE float32 (oneDNN's reduced-precision modes are refused below), written
as `[block, references]` without a copy (channels-last). Elsewhere (a GPU, no oneDNN, other
dtypes) the block is a `torch.mm`.
"""

from __future__ import annotations

import torch


def _onednn_float32() -> bool:
    """Whether CPU convolutions run in oneDNN at full float32 precision (no bf16/tf32 down-casts a
    user may have asked of `torch.backends.mkldnn`)."""
    if not torch.backends.mkldnn.is_available():
        return False
    precisions = [getattr(torch.backends.mkldnn, "fp32_precision", "none")]
    conv = getattr(torch.backends.mkldnn, "conv", None)
    if conv is not None:
        precisions.append(getattr(conv, "fp32_precision", "none"))
    return all(precision in ("none", "ieee") for precision in precisions)


class InnerProducts:
    """`block @ references.T (+ bias)` for blocks of queries against fixed references.

    Args:
        references: `[num_references, dim]` float tensor.
        bias: `[num_references]` added to every row of the products, or None.
    """

    def __init__(self, references: torch.Tensor, bias: torch.Tensor | None = None) -> None:
        self.references, self.bias = references, bias
        self.by_convolution = references.device.type == "cpu" and references.dtype == torch.float32 and _onednn_float32()
        if self.by_convolution:
            self.filters = references.contiguous().view(*references.shape, 1, 1)

    def __call__(self, block: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """`[len(block), num_references]` products of `block` `[n, dim]`; `out` (a buffer of at least
        that many rows) is used by the `torch.mm` path only."""
        rows = len(block)
        if self.by_convolution:
            # [1, dim, rows, 1] with channels-last strides is the block's own memory, unmoved.
            image = block.contiguous().view(1, rows, 1, block.shape[1]).permute(0, 3, 1, 2)
            products = torch.nn.functional.conv2d(image, self.filters, self.bias)
            # [1, references, rows, 1] channels-last is [rows, references] in memory: a view (reshape
            # copies only if a torch version returned another layout; the values are the same).
            return products.permute(0, 2, 3, 1).reshape(rows, len(self.references))
        products = torch.mm(block, self.references.T, out=None if out is None else out[:rows])
        return products if self.bias is None else products.add_(self.bias)


__all__ = ["InnerProducts"]
