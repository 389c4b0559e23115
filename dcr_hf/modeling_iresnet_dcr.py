"""The face-recognition IResNet trunks of DCR (`config.trunk_type` `"iresnet"` / `"ir"`).

`"iresnet"` is the layout of insightface's arcface_torch `iresnet.py` (`r18`..`r200`), `"ir"` the
one of AdaFace's `net.py` (`ir_18`..`ir_101`, `ir_se_50` with squeeze-excitation): the same
"improved residual" block (BN - 3x3 conv - BN - PReLU - 3x3 conv carrying the stride - BN, plus a
shortcut), a flattened-feature-map embedding layer and a BatchNorm1d on the embedding. They differ
in two places, both read off the config: where a block keeps its width, insightface projects the
shortcut (1x1 conv + BN) and AdaFace only subsamples it (a 1x1 max-pool with the stride); and
insightface's embedding BatchNorm1d has a bias (its weight fixed at 1), AdaFace's has no affine
parameters. `dcr_hf.convert` maps their checkpoints onto these modules.

This file travels to every Hub repository next to `modeling_dcr.py`, which imports it (for
`trust_remote_code`), so it imports only torch, transformers and the other travelling files.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers.modeling_layers import GradientCheckpointingLayer

from .configuration_dcr import DCRConfig
from .errors_dcr import DCRInputError


def _conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False)


def feature_map_side(config: DCRConfig) -> int:
    """Side of the last feature map of an IResNet trunk: `image_size` halved (rounding up) per stage
    (7 for 112x112 inputs and four stages)."""
    side = config.image_size
    for _ in config.depths:
        side = (side + 1) // 2
    return side


class DCRIResNetEmbeddings(nn.Module):
    """The stem: 3x3 conv - BN - PReLU (one slope per channel), at full resolution."""

    def __init__(self, config: DCRConfig):
        super().__init__()
        self.convolution = _conv3x3(config.num_channels, config.stem_hidden_size)
        self.normalization = nn.BatchNorm2d(config.stem_hidden_size)
        self.activation = nn.PReLU(config.stem_hidden_size)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.activation(self.normalization(self.convolution(pixel_values)))


class DCRIResNetShortCut(nn.Module):
    """1x1 convolution (with the block's stride) + BN: the shortcut of a block that changes shape."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.convolution = nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False)
        self.normalization = nn.BatchNorm2d(out_channels)

    def forward(self, hidden_state: torch.Tensor) -> torch.Tensor:
        return self.normalization(self.convolution(hidden_state))


class DCRSqueezeExcitation(nn.Module):
    """Squeeze-excitation (Hu et al. 2018) as AdaFace's `SEModule`: global average pool, 1x1 conv to
    `channels // reduction`, ReLU, 1x1 conv back, sigmoid; the input scaled by the result per channel."""

    def __init__(self, channels: int, reduction: int):
        super().__init__()
        self.reduce = nn.Conv2d(channels, channels // reduction, kernel_size=1, bias=False)
        self.expand = nn.Conv2d(channels // reduction, channels, kernel_size=1, bias=False)

    def forward(self, hidden_state: torch.Tensor) -> torch.Tensor:
        scale = F.adaptive_avg_pool2d(hidden_state, 1)
        scale = torch.sigmoid(self.expand(F.relu(self.reduce(scale))))
        return hidden_state * scale


class DCRIResNetLayer(GradientCheckpointingLayer):
    """One improved residual block: `[batch, in, H, W]` -> `[batch, out, H / stride, W / stride]`.

    Residual: BN - 3x3 conv - BN - PReLU - 3x3 conv (stride) - BN (- squeeze-excitation); shortcut:
    1x1 conv + BN where the shape changes (`"iresnet"`: wherever the stride or width does; `"ir"`:
    where the width does, a stride-only subsampling elsewhere), the identity otherwise. No
    activation after the sum.
    """

    def __init__(self, config: DCRConfig, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        project = in_channels != out_channels or (stride != 1 and config.trunk_type == "iresnet")
        if project:
            self.shortcut = DCRIResNetShortCut(in_channels, out_channels, stride)
        elif stride != 1:
            self.shortcut = nn.MaxPool2d(kernel_size=1, stride=stride)
        else:
            self.shortcut = nn.Identity()
        self.input_normalization = nn.BatchNorm2d(in_channels)
        self.convolution1 = _conv3x3(in_channels, out_channels)
        self.normalization1 = nn.BatchNorm2d(out_channels)
        self.activation = nn.PReLU(out_channels)
        self.convolution2 = _conv3x3(out_channels, out_channels, stride)
        self.normalization2 = nn.BatchNorm2d(out_channels)
        reduction = config.squeeze_excitation_reduction
        self.squeeze_excitation = DCRSqueezeExcitation(out_channels, reduction) if reduction else nn.Identity()

    def forward(self, hidden_state: torch.Tensor) -> torch.Tensor:
        residual = self.convolution1(self.input_normalization(hidden_state))
        residual = self.convolution2(self.activation(self.normalization1(residual)))
        residual = self.squeeze_excitation(self.normalization2(residual))
        return residual + self.shortcut(hidden_state)


class DCRIResNetStage(nn.Module):
    """`depth` blocks; the first carries the stage's stride (2 in every stage) and width change."""

    def __init__(self, config: DCRConfig, in_channels: int, out_channels: int, depth: int):
        super().__init__()
        self.layers = nn.ModuleList(
            DCRIResNetLayer(config, in_channels if i == 0 else out_channels, out_channels, 2 if i == 0 else 1)
            for i in range(depth)
        )

    def forward(self, hidden_state: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            hidden_state = layer(hidden_state)
        return hidden_state


class DCRFixedScaleBatchNorm1d(nn.BatchNorm1d):
    """insightface's embedding BatchNorm1d: its weight stays as loaded (1 in arcface_torch, which
    sets `requires_grad = False` on it) while the bias and statistics train. The weight is detached
    in the forward pass rather than frozen by `requires_grad`, which loading a checkpoint resets."""

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.num_batches_tracked.add_(1)  # as nn.BatchNorm1d counts (its cumulative-average mode reads it)
        momentum = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
        return F.batch_norm(embedding, self.running_mean, self.running_var, self.weight.detach(), self.bias,
                            self.training, momentum if self.training else 0.0, self.eps)


class DCRIResNetHead(nn.Module):
    """The embedding of the last feature map: BN2d - dropout - flatten - linear - BatchNorm1d
    (`"iresnet"`: affine, its weight fixed at 1 as insightface keeps it; `"ir"`: without affine)."""

    def __init__(self, config: DCRConfig):
        super().__init__()
        channels, side = config.hidden_sizes[-1], feature_map_side(config)
        self.normalization = nn.BatchNorm2d(channels)
        self.dropout = nn.Dropout(config.trunk_dropout)
        self.projection = nn.Linear(channels * side * side, config.embedding_size)
        if config.trunk_type == "iresnet":
            self.features = DCRFixedScaleBatchNorm1d(config.embedding_size)
        else:
            self.features = nn.BatchNorm1d(config.embedding_size, affine=False)

    def forward(self, hidden_state: torch.Tensor) -> torch.Tensor:
        """`[batch, C, s, s]` -> `[batch, embedding_size]` (not normalized)."""
        return self.features(self.projection(self.dropout(self.normalization(hidden_state).flatten(1))))


class DCRIResNetTrunk(nn.Module):
    """An IResNet trunk with the interface of `modeling_dcr.DCRTrunk`: stem, four stride-2 stages,
    the embedding head, optionally L2-normalized. Inputs must be `image_size` x `image_size`."""

    def __init__(self, config: DCRConfig):
        super().__init__()
        self.config = config
        self.embedder = DCRIResNetEmbeddings(config)
        widths = [config.stem_hidden_size, *config.hidden_sizes]
        self.stages = nn.ModuleList(
            DCRIResNetStage(config, widths[i], widths[i + 1], depth) for i, depth in enumerate(config.depths)
        )
        self.head = DCRIResNetHead(config)

    def forward(
        self, pixel_values: torch.Tensor, output_hidden_states: bool = False, normalize: bool | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, ...] | None]:
        """`[batch, C, image_size, image_size]` -> (last feature map, embedding `[batch, embedding_size]`,
        hidden states: the stem's and each stage's feature maps, with `output_hidden_states`); the
        embedding L2-normalized with `normalize` (default: `config.normalize_embeddings`)."""
        size = self.config.image_size
        if tuple(pixel_values.shape[-2:]) != (size, size):
            raise DCRInputError(
                f"pixel_values are {pixel_values.shape[-2]}x{pixel_values.shape[-1]}; a {self.config.trunk_type!r} trunk "
                f"takes {size}x{size} images only (its embedding layer sees every position): resize them first "
                "(DCRImageProcessor does)."
            )
        if self.embedder.convolution.weight.is_contiguous(memory_format=torch.channels_last):
            pixel_values = pixel_values.contiguous(memory_format=torch.channels_last)
        hidden_state = self.embedder(pixel_values)
        hidden_states = (hidden_state,) if output_hidden_states else None
        for stage in self.stages:
            hidden_state = stage(hidden_state)
            if output_hidden_states:
                hidden_states = hidden_states + (hidden_state,)
        embedding = self.head(hidden_state)
        if self.config.normalize_embeddings if normalize is None else normalize:
            embedding = F.normalize(embedding, dim=-1)
        return hidden_state, embedding, hidden_states


__all__ = [
    "DCRFixedScaleBatchNorm1d",
    "DCRIResNetEmbeddings",
    "DCRIResNetHead",
    "DCRIResNetLayer",
    "DCRIResNetShortCut",
    "DCRIResNetStage",
    "DCRIResNetTrunk",
    "DCRSqueezeExcitation",
    "feature_map_side",
]
