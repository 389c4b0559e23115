"""Deep Coupled ResNet (DCR) networks and models (the losses are in `losses_dcr.py`).

Lu, Jiang & Kot, "Deep Coupled ResNet for Low-Resolution Face Recognition", IEEE SPL 2018.

This file travels to every Hub repository next to `configuration_dcr.py`, `losses_dcr.py`,
`image_processing_dcr.py` (the LR operator a branch model applies to plain HR pixels) and
`errors_dcr.py` and `modeling_iresnet_dcr.py` (the face-recognition IResNet trunks), for
`trust_remote_code`, so it imports only torch, transformers and those. It is longer than the
package's other modules because, as in transformers' own model files, one file holds the whole
network (trunk blocks, branches, classifier heads) and both models with their input checks.
"""

from __future__ import annotations

import contextlib
import math
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.utils import ModelOutput, logging

from .errors_dcr import DCRInputError
from .configuration_dcr import DCRConfig
from .image_processing_dcr import DCRImageProcessor
from .losses_dcr import Miner, branch_stage_loss, initial_norm_statistics, trunk_stage_loss
from .modeling_iresnet_dcr import DCRIResNetTrunk

logger = logging.get_logger(__name__)

@dataclass
class DCRModelOutput(ModelOutput):
    """
    Output of [`DCRModel`].

    Args:
        last_hidden_state (`torch.FloatTensor` of shape `[batch, channels, h, w]`):
            The trunk's last feature map.
        pooler_output (`torch.FloatTensor` of shape `[batch, embedding_size]`):
            The face embedding: the coupled branch embedding when the model has branches, the
            trunk embedding otherwise.
        trunk_embeddings (`torch.FloatTensor` of shape `[batch, embedding_size]`):
            The trunk embedding (equal to `pooler_output` for a model without branches).
        hidden_states (`tuple(torch.FloatTensor)`, *optional*):
            Feature maps after the stem and after each stage, with `output_hidden_states=True`.
        embedding_norms (`torch.FloatTensor` of shape `[batch]`, or `[batch, resolutions]` for 5-D input):
            The L2 norm of `pooler_output` before its normalization (`config.normalize_embeddings`):
            the feature norm AdaFace's margin reads as a measure of image quality.
    """

    last_hidden_state: torch.FloatTensor | None = None
    pooler_output: torch.FloatTensor | None = None
    trunk_embeddings: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    embedding_norms: torch.FloatTensor | None = None


@dataclass
class DCRImageClassifierOutput(ModelOutput):
    """
    Output of [`DCRForImageClassification`].

    Args:
        loss (`torch.FloatTensor` of shape `[]`, *optional*, returned when `labels` is given):
            Total training loss of the stage (trunk: softmax + center loss; branches: the coupled
            mapping loss).
        logits (`torch.FloatTensor` of shape `[batch, num_labels]` or `[batch, resolutions, num_labels]`):
            Classifier scores; one row per resolution copy for multi-resolution input. With a margin
            head (`config.head`), `margin_scale * cos(theta)` without the margin, which only the loss
            applies (see [`margin_logits`]).
        embeddings (`torch.FloatTensor` of shape `[batch, size]` or `[batch, resolutions, size]`):
            Trunk embeddings (trunk stage) or branch embeddings (branch stage).
        cross_entropy_loss, center_loss, coupling_loss (`torch.FloatTensor` of shape `[]`, *optional*):
            The weighted terms of `loss`, for logging (`coupling_loss` only in the branch stage).
        hidden_states (`tuple(torch.FloatTensor)`, *optional*):
            Trunk feature maps, with `output_hidden_states=True`.
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    embeddings: torch.FloatTensor | None = None
    cross_entropy_loss: torch.FloatTensor | None = None
    center_loss: torch.FloatTensor | None = None
    coupling_loss: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None


# --------------------------------------------------------------------------------------------
# Trunk building blocks
# --------------------------------------------------------------------------------------------


class DCRConvLayer(nn.Module):
    """Convolution, optional batch norm, optional activation (`"relu"`, `"prelu"` with one slope
    per output channel, or `None`)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        use_batch_norm: bool = True,
        activation: str | None = "relu",
    ):
        super().__init__()
        self.convolution = nn.Conv2d(
            in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2, bias=False
        )
        self.normalization = nn.BatchNorm2d(out_channels) if use_batch_norm else nn.Identity()
        if activation == "relu":
            self.activation = nn.ReLU(inplace=True)
        elif activation == "prelu":
            self.activation = nn.PReLU(out_channels)
        else:
            self.activation = nn.Identity()

    def forward(self, hidden_state: torch.Tensor) -> torch.Tensor:
        return self.activation(self.normalization(self.convolution(hidden_state)))


class DCRShortCut(nn.Module):
    """1x1 convolution + batch norm that matches the residual to the block's output shape."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.convolution = nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False)
        self.normalization = nn.BatchNorm2d(out_channels)

    def forward(self, hidden_state: torch.Tensor) -> torch.Tensor:
        return self.normalization(self.convolution(hidden_state))


class DCRBasicLayer(GradientCheckpointingLayer):
    """Basic residual block: two 3x3 convolutions plus a (projected when needed) identity.

    `"resnet"` trunk: conv-BN-ReLU-conv-BN, add, ReLU. `"paper"` trunk: conv-[BN]-PReLU-conv-[BN],
    add, PReLU (channel-wise PReLUs); its blocks never change the shape (the stage convolution does).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, trunk_type: str, use_batch_norm: bool):
        super().__init__()
        act = "relu" if trunk_type == "resnet" else "prelu"
        self.shortcut = (
            DCRShortCut(in_channels, out_channels, stride)
            if in_channels != out_channels or stride != 1
            else nn.Identity()
        )
        self.layer = nn.Sequential(
            DCRConvLayer(in_channels, out_channels, stride=stride, use_batch_norm=use_batch_norm, activation=act),
            DCRConvLayer(out_channels, out_channels, use_batch_norm=use_batch_norm, activation=None),
        )
        self.activation = nn.ReLU(inplace=True) if act == "relu" else nn.PReLU(out_channels)

    def forward(self, hidden_state: torch.Tensor) -> torch.Tensor:
        return self.activation(self.layer(hidden_state) + self.shortcut(hidden_state))


class DCRBottleNeckLayer(GradientCheckpointingLayer):
    """Bottleneck residual block of the `"resnet"` trunk, as torchvision's ResNet-50/101/152 (v1.5):
    1x1 conv to `out_channels // reduction` - BN - ReLU - 3x3 conv with the stride - BN - ReLU -
    1x1 conv to `out_channels` - BN, plus the (projected when needed) identity, then ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, reduction: int):
        super().__init__()
        reduced = out_channels // reduction
        self.shortcut = (
            DCRShortCut(in_channels, out_channels, stride)
            if in_channels != out_channels or stride != 1
            else nn.Identity()
        )
        self.layer = nn.Sequential(
            DCRConvLayer(in_channels, reduced, kernel_size=1),
            DCRConvLayer(reduced, reduced, stride=stride),
            DCRConvLayer(reduced, out_channels, kernel_size=1, activation=None),
        )
        self.activation = nn.ReLU(inplace=True)

    def forward(self, hidden_state: torch.Tensor) -> torch.Tensor:
        return self.activation(self.layer(hidden_state) + self.shortcut(hidden_state))


def _residual_block(
    config: DCRConfig, in_channels: int, out_channels: int, stride: int, use_batch_norm: bool
) -> DCRBasicLayer | DCRBottleNeckLayer:
    """The block `config.layer_type` names."""
    if config.layer_type == "bottleneck":
        return DCRBottleNeckLayer(in_channels, out_channels, stride, config.bottleneck_reduction)
    return DCRBasicLayer(in_channels, out_channels, stride, config.trunk_type, use_batch_norm)


class DCRStage(nn.Module):
    """One stage of the trunk: (paper trunk only: 3x3 conv to the stage width + 2x2 max-pool),
    then `depth` residual blocks (basic or bottleneck, `config.layer_type`); the first block of a
    `"resnet"` stage carries the stride."""

    def __init__(self, config: DCRConfig, in_channels: int, out_channels: int, depth: int, stride: int):
        super().__init__()
        if config.trunk_type == "paper":
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
                nn.MaxPool2d(kernel_size=2, stride=2),
            )
            in_channels, stride = out_channels, 1
            use_batch_norm = config.use_batch_norm
        else:
            self.downsample = nn.Identity()
            use_batch_norm = True
        self.layers = nn.ModuleList(
            _residual_block(
                config, in_channels if i == 0 else out_channels, out_channels, stride if i == 0 else 1, use_batch_norm
            )
            for i in range(depth)
        )

    def forward(self, hidden_state: torch.Tensor) -> torch.Tensor:
        hidden_state = self.downsample(hidden_state)
        for layer in self.layers:
            hidden_state = layer(hidden_state)
        return hidden_state


class DCREmbeddings(nn.Module):
    """The stem: 7x7/2 conv-BN-ReLU + 3x3/2 max-pool (`"resnet"`) or 3x3 conv-[BN]-PReLU (`"paper"`)."""

    def __init__(self, config: DCRConfig):
        super().__init__()
        if config.trunk_type == "resnet":
            self.embedder = DCRConvLayer(config.num_channels, config.stem_hidden_size, kernel_size=7, stride=2)
            self.pooler = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        else:
            self.embedder = DCRConvLayer(
                config.num_channels, config.stem_hidden_size, use_batch_norm=config.use_batch_norm, activation="prelu"
            )
            self.pooler = nn.Identity()

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.pooler(self.embedder(pixel_values))


class DCRTrunk(nn.Module):
    """The resolution-robust trunk: stem, residual stages, global average pool, `projection`
    (the original's `fc1`) to the face embedding, optionally L2-normalized."""

    def __init__(self, config: DCRConfig):
        super().__init__()
        self.config = config
        self.embedder = DCREmbeddings(config)
        widths = [config.stem_hidden_size, *config.hidden_sizes]
        strides = [1] + [2] * (len(config.depths) - 1)
        self.stages = nn.ModuleList(
            DCRStage(config, widths[i], widths[i + 1], depth, strides[i]) for i, depth in enumerate(config.depths)
        )
        self.pooler = nn.AdaptiveAvgPool2d(1)
        self.projection = nn.Linear(config.hidden_sizes[-1], config.embedding_size)

    def forward(
        self, pixel_values: torch.Tensor, output_hidden_states: bool = False, normalize: bool | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, ...] | None]:
        """`[batch, C, H, W]` -> (last feature map, embedding `[batch, embedding_size]`, hidden states);
        the embedding L2-normalized with `normalize` (default: `config.normalize_embeddings`)."""
        if self.embedder.embedder.convolution.weight.is_contiguous(memory_format=torch.channels_last):
            # A model moved to channels-last (`model.to(memory_format=torch.channels_last)`, faster
            # convolutions on CPU and GPU) gets its input in the same layout.
            pixel_values = pixel_values.contiguous(memory_format=torch.channels_last)
        hidden_state = self.embedder(pixel_values)
        hidden_states = (hidden_state,) if output_hidden_states else None
        for stage in self.stages:
            hidden_state = stage(hidden_state)
            if output_hidden_states:
                hidden_states = hidden_states + (hidden_state,)
        embedding = self.projection(self.pooler(hidden_state).flatten(1))
        if self.config.normalize_embeddings if normalize is None else normalize:
            embedding = F.normalize(embedding, dim=-1)
        return hidden_state, embedding, hidden_states


def build_trunk(config: DCRConfig) -> DCRTrunk | DCRIResNetTrunk:
    """The trunk `config.trunk_type` names: DCR's own (`"resnet"`, `"paper"`) or a face-recognition
    IResNet (`"iresnet"`, `"ir"`, in `modeling_iresnet_dcr.py`); both return (feature map, embedding,
    hidden states)."""
    if config.trunk_type in config.iresnet_trunk_types:
        return DCRIResNetTrunk(config)
    return DCRTrunk(config)


class DCRBranch(nn.Module):
    """One resolution's coupling branch: `projection` (the original's branch `fc1`) of a trunk
    embedding into the coupled space, optionally L2-normalized."""

    def __init__(self, config: DCRConfig):
        super().__init__()
        self.normalize = config.normalize_embeddings
        self.projection = nn.Linear(config.embedding_size, config.branch_hidden_size)

    def forward(self, trunk_embeddings: torch.Tensor, normalize: bool | None = None) -> torch.Tensor:
        """`[batch, embedding_size]` -> `[batch, branch_hidden_size]`, L2-normalized with `normalize`
        (default: `config.normalize_embeddings`)."""
        embedding = self.projection(trunk_embeddings)
        return F.normalize(embedding, dim=-1) if (self.normalize if normalize is None else normalize) else embedding


def normalized_with_norms(embeddings: torch.Tensor, normalize: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Embeddings `[..., size]` (L2-normalized with `normalize`) and their norms `[...]` before it."""
    norms = torch.linalg.vector_norm(embeddings, dim=-1)
    return (F.normalize(embeddings, dim=-1) if normalize else embeddings), norms


class DCRCosineClassifier(nn.Module):
    """The classifier of the margin heads (`config.head` = `"cosface"` / `"arcface"` / `"adaface"`): one weight
    vector per class, no bias; logits `[n, num_labels]` = `scale * cos(theta)`, theta the angle
    between an embedding and a class weight. The margin is the loss's business ([`margin_logits`])."""

    def __init__(self, config: DCRConfig, in_features: int):
        super().__init__()
        # The config itself, not a copy of its scale: the loss divides the logits by `config.margin_scale`.
        self.config = config
        self.weight = nn.Parameter(torch.empty(config.num_labels, in_features))

    def cosine(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Cosines `[n, num_labels]` of embeddings `[n, in_features]`, in float32 (also under autocast:
        a bf16 cosine scaled by 64 would move the logits by up to ~0.25)."""
        device_type = embeddings.device.type
        full_precision = (
            torch.autocast(device_type, enabled=False)
            if torch.amp.is_autocast_available(device_type)
            else contextlib.nullcontext()
        )
        with full_precision:
            return F.linear(F.normalize(embeddings.float(), dim=-1), F.normalize(self.weight.float(), dim=-1))

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        return self.config.margin_scale * self.cosine(embeddings)


def build_classifier(config: DCRConfig, in_features: int) -> nn.Module:
    """The classifier `config.head` names: the original's linear layer (`"softmax"`) or the cosine
    classifier of the margin heads."""
    if config.head == "softmax":
        return nn.Linear(in_features, config.num_labels)
    return DCRCosineClassifier(config, in_features)


class DCRBranchClassifier(nn.Module):
    """A branch's classifier: PReLU (one parameter) then `classifier` (the branch `fc2`).

    With a margin head there is no PReLU: the margin then shapes the angles of the branch embedding
    itself, the one compared by cosine at test time (and a specialized initialization gives branch
    logits equal to the trunk's)."""

    def __init__(self, config: DCRConfig):
        super().__init__()
        self.activation = nn.PReLU() if config.head == "softmax" else nn.Identity()
        self.classifier = build_classifier(config, config.branch_hidden_size)

    def forward(self, branch_embeddings: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.activation(branch_embeddings))


# --------------------------------------------------------------------------------------------
# Pretrained models
# --------------------------------------------------------------------------------------------


class DCRPreTrainedModel(PreTrainedModel):
    config_class = DCRConfig
    config: DCRConfig
    base_model_prefix = "dcr"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = True
    _no_split_modules = ["DCRBasicLayer", "DCRBottleNeckLayer", "DCRIResNetLayer"]
    # The losses are per-batch means: the Trainer must scale them for gradient accumulation itself.
    accepts_loss_kwargs = False

    def save_pretrained(self, save_directory, *args, **kwargs):
        # Every saved folder maps all Auto classes, whichever class saved it, so one folder loads
        # as AutoConfig, AutoModel and AutoModelForImageClassification with trust_remote_code,
        # and carries the DCR pipeline (`pipeline_dcr.py`, named in `custom_pipelines`).
        self.config.auto_map = dict(AUTO_MAP)
        pipeline_file = Path(__file__).with_name(PIPELINE_FILE)
        if pipeline_file.is_file():
            self.config.custom_pipelines = {task: dict(info) for task, info in CUSTOM_PIPELINES.items()}
        else:
            # Code loaded from a folder without the pipeline: do not name a file the new folder lacks.
            logger.warning(f"{pipeline_file} not found; the saved folder has no DCR pipeline.")
            self.config.custom_pipelines = {}
        saved = super().save_pretrained(save_directory, *args, **kwargs)
        if pipeline_file.is_file() and kwargs.get("is_main_process", True):
            shutil.copyfile(pipeline_file, Path(save_directory) / PIPELINE_FILE)
        return saved

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Conv2d):
            # As the original: Kaiming normal, fan-out (He et al. 2015).
            init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            # torch's own Linear.reset_parameters, which the original kept.
            init.kaiming_uniform_(module.weight, a=math.sqrt(5))
            if module.bias is not None:
                bound = 1 / math.sqrt(module.in_features) if module.in_features > 0 else 0
                init.uniform_(module.bias, -bound, bound)
        elif isinstance(module, (nn.BatchNorm2d, nn.BatchNorm1d)):
            if module.affine:  # the IResNet embedding's BatchNorm1d of the "ir" trunk has none
                init.ones_(module.weight)
                init.zeros_(module.bias)
            init.zeros_(module.running_mean)
            init.ones_(module.running_var)
            init.zeros_(module.num_batches_tracked)
        elif isinstance(module, nn.PReLU):
            init.constant_(module.weight, 0.25)
        elif isinstance(module, DCRCosineClassifier):
            # Only the directions matter; insightface starts its class weights as N(0, 0.01).
            init.normal_(module.weight, mean=0.0, std=0.01)
        elif isinstance(module, DCRForImageClassification):
            # The centers `__init__` made, again: a checkpoint without them loads with those very
            # centers (from_pretrained builds the model on the meta device and fills what is missing here).
            init.copy_(module.centers, initial_centers(module.config, *module.centers.shape))
            if module.branch_centers is not None:
                init.copy_(module.branch_centers, initial_centers(module.config, *module.branch_centers.shape))
            for statistics in (module.norm_statistics, module.branch_norm_statistics):
                if statistics is not None:
                    init.copy_(statistics, initial_norm_statistics(*statistics.shape[:-1]))


def initial_centers(config: DCRConfig, *shape: int) -> torch.Tensor:
    """Class centers before training, of `shape` `[..., num_labels, size]`: N(0, sqrt(2 / num_labels))
    as in the original, drawn from a fixed seed, so every way of building a model (a fresh one,
    `from_config`, a checkpoint without centers) starts from the same centers."""
    generator = torch.Generator().manual_seed(0)
    return torch.randn(*shape, generator=generator, device="cpu") * math.sqrt(2.0 / config.num_labels)


def _check_pixel_values(
    pixel_values: torch.Tensor, config: DCRConfig, allow_resolutions: bool, dtype: torch.dtype
) -> torch.Tensor:
    """`pixel_values` checked (a tensor of the expected shape, floating point) and cast to the model's `dtype`."""
    expected = "[batch, resolutions, C, H, W] or [batch, C, H, W]" if allow_resolutions else "[batch, C, H, W]"
    if not torch.is_tensor(pixel_values):
        raise DCRInputError(f"pixel_values must be a tensor of shape {expected}, got {type(pixel_values).__name__}.")
    if pixel_values.ndim not in ((4, 5) if allow_resolutions else (4,)):
        raise DCRInputError(f"pixel_values must have shape {expected}, got {tuple(pixel_values.shape)}.")
    channels = pixel_values.shape[-3]
    if channels != config.num_channels:
        raise DCRInputError(
            f"pixel_values has {channels} channels (shape {tuple(pixel_values.shape)}); the model expects "
            f"num_channels={config.num_channels} in {expected}."
        )
    if not pixel_values.is_floating_point():
        raise DCRInputError(
            f"pixel_values has dtype {pixel_values.dtype}; the model expects normalized floating-point pixels "
            "(DCRImageProcessor's output), not raw image values."
        )
    # Like transformers' vision embeddings: float64 / half inputs run in the weights' dtype.
    return pixel_values.to(dtype)


class DCRModel(DCRPreTrainedModel):
    """The DCR face embedder returned by `AutoModel`.

    Without branches, `pooler_output` is the trunk embedding of any input resolution. With branches
    (`config.use_branches`), `pooler_output` is the coupled embedding of the branch chosen by
    `resolution`: the gallery (HR) branch by default, or the branch of an LR probe size, given per
    batch (one value) or per sample (a sequence or tensor of values).
    """

    # A training-head checkpoint also holds classifiers and centers; the embedder does not need them.
    _keys_to_ignore_on_load_unexpected = [
        r"^classifier\.", r"^centers$", r"^branch_classifiers\.", r"^branch_centers$",
        r"^norm_statistics$", r"^branch_norm_statistics$",
    ]

    def __init__(self, config: DCRConfig):
        super().__init__(config)
        self.trunk = build_trunk(config)
        self.branches = (
            nn.ModuleList(DCRBranch(config) for _ in config.resolutions) if config.use_branches else None
        )
        self.post_init()

    def branch_indices(self, resolution, batch_size: int) -> torch.Tensor | int:
        """Branch index (int) for one resolution (an int, `"hr"`, `None`, a whole float, a numpy or
        0-d tensor scalar), or an int64 tensor `[batch]` for per-sample values."""
        if isinstance(resolution, str) or not hasattr(resolution, "__len__") or getattr(resolution, "ndim", None) == 0:
            return self.config.branch_index(resolution)
        values = resolution.tolist() if torch.is_tensor(resolution) else list(resolution)
        if len(values) != batch_size:
            raise DCRInputError(f"resolution has {len(values)} values for a batch of {batch_size} images.")
        return torch.tensor([self.config.branch_index(v) for v in values], dtype=torch.long)

    def embed_branches(
        self, trunk_embeddings: torch.Tensor, indices: torch.Tensor | int, normalize: bool | None = None
    ) -> torch.Tensor:
        """Coupled embeddings `[batch, branch_hidden_size]` of trunk embeddings through the branch(es),
        L2-normalized with `normalize` (default: `config.normalize_embeddings`)."""
        if self.branches is None:
            raise DCRInputError("this DCR model has no branches (config.use_branches=False).")
        if isinstance(indices, int):
            return self.branches[indices](trunk_embeddings, normalize)
        indices = indices.to(trunk_embeddings.device)
        out = trunk_embeddings.new_empty(trunk_embeddings.shape[0], self.config.branch_hidden_size)
        for index in indices.unique().tolist():
            rows = (indices == index).nonzero(as_tuple=True)[0]
            out[rows] = self.branches[index](trunk_embeddings[rows], normalize).to(out.dtype)
        return out

    def forward(
        self,
        pixel_values: torch.Tensor,
        resolution: int | str | Sequence[int] | torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> DCRModelOutput | tuple:
        r"""
        pixel_values (`torch.FloatTensor` of shape `[batch, C, H, W]` or `[batch, resolutions, C, H, W]`):
            Normalized images (see `DCRImageProcessor`); LR probes already brought back to
            `image_size`. The 5-D form holds every resolution copy of each sample (index 0 = HR,
            then `config.low_resolution_sizes`): copy r goes through branch r, and the outputs keep
            the resolutions axis (`pooler_output` `[batch, resolutions, size]`).
        resolution (`int`, `str`, sequence or tensor, *optional*):
            4-D input of a model with branches: which branch to use, `None`/`"hr"`/`image_size` for HR
            gallery images or the LR size (e.g. `8`) of the probes; one value for the batch or one
            per sample. Ignored by a trunk-only model (its embedding serves every resolution).
        """
        pixel_values = _check_pixel_values(pixel_values, self.config, allow_resolutions=True, dtype=self.dtype)
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        if pixel_values.ndim == 5:
            outputs = self._forward_copies(pixel_values, output_hidden_states)
        else:
            # The branch is resolved first: a resolution without a branch fails before the trunk runs.
            indices = self.branch_indices(resolution, pixel_values.shape[0]) if self.branches is not None else None
            last_hidden_state, trunk_embeddings, hidden_states = self.trunk(pixel_values, output_hidden_states, normalize=False)
            trunk_embeddings, norms = normalized_with_norms(trunk_embeddings, self.config.normalize_embeddings)
            pooled = trunk_embeddings
            if self.branches is not None:
                pooled, norms = normalized_with_norms(
                    self.embed_branches(trunk_embeddings, indices, normalize=False), self.config.normalize_embeddings
                )
            outputs = DCRModelOutput(
                last_hidden_state=last_hidden_state,
                pooler_output=pooled,
                trunk_embeddings=trunk_embeddings,
                hidden_states=hidden_states,
                embedding_norms=norms,
            )
        return outputs if return_dict else outputs.to_tuple()

    def _forward_copies(self, pixel_values: torch.Tensor, output_hidden_states: bool) -> DCRModelOutput:
        """`[batch, resolutions, C, H, W]` -> outputs with a resolutions axis; copy r through branch r."""
        batch, copies = pixel_values.shape[:2]
        if self.branches is not None and copies != len(self.branches):
            raise DCRInputError(
                f"a model with branches needs every resolution copy of each sample ([batch, {len(self.branches)}, "
                f"C, H, W]: HR then {self.config.low_resolution_sizes}), got {tuple(pixel_values.shape)}."
            )
        # Resolution-major, as the original concatenated the copies along the batch axis.
        flat = pixel_values.transpose(0, 1).reshape(copies * batch, *pixel_values.shape[2:])
        last_hidden_state, trunk_embeddings, hidden_states = self.trunk(flat, output_hidden_states, normalize=False)
        trunk_embeddings, norms = normalized_with_norms(trunk_embeddings, self.config.normalize_embeddings)
        per_copy = trunk_embeddings.view(copies, batch, trunk_embeddings.shape[-1])
        pooled, norms = per_copy, norms.view(copies, batch)
        if self.branches is not None:
            raw = torch.stack([branch(e, normalize=False) for branch, e in zip(self.branches, per_copy)])
            pooled, norms = normalized_with_norms(raw, self.config.normalize_embeddings)

        def by_sample(value: torch.Tensor) -> torch.Tensor:
            return value.view(copies, batch, *value.shape[1:]).transpose(0, 1)

        return DCRModelOutput(
            last_hidden_state=by_sample(last_hidden_state),
            pooler_output=pooled.transpose(0, 1),
            trunk_embeddings=per_copy.transpose(0, 1),
            hidden_states=tuple(by_sample(h) for h in hidden_states) if hidden_states is not None else None,
            embedding_norms=norms.transpose(0, 1),
        )


class DCRForImageClassification(DCRPreTrainedModel):
    """DCR training head, for both stages of the method.

    * Trunk stage (`config.use_branches=False`): trunk + `classifier` (the original's `fc2`),
      softmax cross-entropy + `center_loss_weight` x center loss, all resolution copies of a
      sample sharing its label. `config.head` makes the classifiers (trunk and branches) cosine
      classifiers with a CosFace, ArcFace or AdaFace margin on the target logit.
    * Branch stage (`config.use_branches=True`): the (frozen, eval-mode by default) trunk feeds
      resolution r's copy to branch r; per-branch classifiers and centers; the coupled mapping
      loss = mean over resolutions of (cross-entropy + center loss) + `coupling_loss_weight` x
      sum over LR branches of MSE(HR branch embedding, LR branch embedding).

    Centers are buffers (`centers` `[num_labels, embedding_size]`, `branch_centers`
    `[resolutions, num_labels, branch_hidden_size]`) saved with the weights, so a resume is exact; so
    are AdaFace's running feature-norm statistics (`norm_statistics` `[2]`, `branch_norm_statistics`
    `[resolutions, 2]`: mean and std, with `config.head="adaface"` only).
    The dcr-hf package builds the branch stage from a trained trunk (`dcr_hf.branch_model_from_trunk`).
    """

    def __init__(self, config: DCRConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.dcr = DCRModel(config)
        self.classifier = build_classifier(config, config.embedding_size)
        self.register_buffer("centers", initial_centers(config, config.num_labels, config.embedding_size))
        if config.use_branches:
            self.branch_classifiers = nn.ModuleList(DCRBranchClassifier(config) for _ in config.resolutions)
            self.register_buffer(
                "branch_centers",
                initial_centers(config, len(config.resolutions), config.num_labels, config.branch_hidden_size),
            )
        else:
            self.branch_classifiers = None
            self.branch_centers = None
        adaface = config.head == "adaface"
        self.register_buffer("norm_statistics", initial_norm_statistics() if adaface else None)
        self.register_buffer(
            "branch_norm_statistics", initial_norm_statistics(len(config.resolutions)) if adaface and config.use_branches else None
        )
        self.post_init()
        if config.use_branches:
            self.set_trunk_frozen(config.freeze_trunk)

    # -- branch-stage trunk handling ---------------------------------------------------------

    def set_trunk_frozen(self, frozen: bool) -> None:
        """Freeze (no gradient, eval mode) or unfreeze the trunk and its classifier."""
        self.config.freeze_trunk = frozen
        for module in (self.dcr.trunk, self.classifier):
            for parameter in module.parameters():
                parameter.requires_grad_(not frozen)
        self.train(self.training)

    @property
    def trunk_is_frozen(self) -> bool:
        return bool(self.config.use_branches and self.config.freeze_trunk)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.trunk_is_frozen:
            # The original left a frozen trunk's batch norm in train mode, so its statistics drifted.
            self.dcr.trunk.eval()
        elif mode and self.config.freeze_batch_norm:
            for module in self.dcr.trunk.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
        return self

    def _set_gradient_checkpointing(self, enable: bool = True, **kwargs) -> None:
        # Checkpointing covers the trunk's residual blocks, the layers that hold the activations; a
        # frozen trunk keeps none (eval mode, no gradient), so there is nothing to checkpoint.
        super()._set_gradient_checkpointing(enable, **kwargs)
        if enable and self.trunk_is_frozen:
            logger.warning_once(
                "Gradient checkpointing has nothing to checkpoint in this branch-stage model: the frozen trunk runs "
                "without gradients, and each branch is one linear layer (freeze_trunk=False trains the trunk, "
                "checkpointed)."
            )

    # -- forward -----------------------------------------------------------------------------

    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        low_resolution_pixel_values: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        miner: Miner | None = None,
        **kwargs,
    ) -> DCRImageClassifierOutput | tuple:
        r"""
        pixel_values (`torch.FloatTensor` of shape `[batch, C, H, W]` or `[batch, resolutions, C, H, W]`):
            HR images, or all resolution copies of each sample (index 0 = HR, then the LR sizes). Given
            HR images alone, a branch model makes their LR copies itself (the one LR operator, with the
            processor settings its config records: `DCRImageProcessor.from_model_config`) and returns
            the HR outputs.
        labels (`torch.LongTensor` of shape `[batch]`, *optional*):
            One identity per sample, shared by its resolution copies.
        low_resolution_pixel_values (`torch.FloatTensor` of shape `[batch, sizes, C, H, W]`, *optional*):
            LR copies (in `config.low_resolution_sizes` order) to append to HR `pixel_values`.
        miner ([`Miner`], *optional*):
            The batch-hard miner of the center term, needed with `labels` when the stage's
            `config.trunk_miner` / `config.branch_miner` is set (`dcr_hf.training.build_miner`).
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        stacked, multi = self._stack_copies(pixel_values, low_resolution_pixel_values)
        if labels is not None and stacked.shape[0] == 0:
            raise DCRInputError("labels were given for an empty batch (0 samples): there is no loss to compute.")
        if labels is not None:
            labels = self._check_labels(labels, stacked.shape[0])
        outputs = self.dcr(stacked, output_hidden_states=output_hidden_states, return_dict=True)
        if self.config.use_branches:
            embeddings = outputs.pooler_output
            logits = torch.stack([head(embeddings[:, r]) for r, head in enumerate(self.branch_classifiers)], dim=1)
            terms = self._branch_stage_loss(embeddings, logits, labels, miner, outputs.embedding_norms) if labels is not None else {}
        else:
            embeddings = outputs.trunk_embeddings
            logits = self.classifier(embeddings)
            # Without branches pooler_output is the trunk embedding: its norms are the trunk's.
            terms = self._trunk_stage_loss(embeddings, logits, labels, miner, outputs.embedding_norms) if labels is not None else {}
        if not multi:
            embeddings, logits = embeddings[:, 0], logits[:, 0]
        output = DCRImageClassifierOutput(
            loss=sum(terms.values()) if terms else None,
            logits=logits,
            embeddings=embeddings,
            cross_entropy_loss=terms.get("cross_entropy_loss"),
            center_loss=terms.get("center_loss"),
            coupling_loss=terms.get("coupling_loss"),
            hidden_states=outputs.hidden_states,
        )
        return output if return_dict else output.to_tuple()

    def _stack_copies(
        self, pixel_values: torch.Tensor, low_resolution_pixel_values: torch.Tensor | None
    ) -> tuple[torch.Tensor, bool]:
        """The input as `[batch, resolutions, C, H, W]`, and whether it had a resolutions axis."""
        pixel_values = _check_pixel_values(pixel_values, self.config, allow_resolutions=True, dtype=self.dtype)
        # Plain HR pixels to a branch model: it makes the copies, and answers for the HR images (4-D in, HR out).
        derived = low_resolution_pixel_values is None and self.config.use_branches and pixel_values.ndim == 4
        if derived:
            low_resolution_pixel_values = self._low_resolution_copies(pixel_values)
        if low_resolution_pixel_values is not None:
            low_resolution_pixel_values = _check_pixel_values(
                low_resolution_pixel_values, self.config, allow_resolutions=True, dtype=self.dtype
            )
            if pixel_values.ndim == 4:
                pixel_values = pixel_values.unsqueeze(1)
            if low_resolution_pixel_values.ndim == 4:
                low_resolution_pixel_values = low_resolution_pixel_values.unsqueeze(1)
            pixel_values = torch.cat([pixel_values, low_resolution_pixel_values], dim=1)
        stacked = pixel_values if pixel_values.ndim == 5 else pixel_values.unsqueeze(1)
        return stacked, pixel_values.ndim == 5 and not derived

    def _low_resolution_copies(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The LR copies `[batch, sizes, C, H, W]` a branch model needs, of normalized HR `pixel_values`
        `[batch, C, H, W]`: the one LR operator with the processor settings the config records."""
        size = self.config.image_size
        if tuple(pixel_values.shape[-2:]) != (size, size):
            raise DCRInputError(
                f"pixel_values are {pixel_values.shape[-2]}x{pixel_values.shape[-1]}; a branch model makes its LR copies "
                f"of {size}x{size} images (image_size), or takes them as low_resolution_pixel_values."
            )
        processor = DCRImageProcessor.from_model_config(self.config)
        with torch.no_grad():
            return processor.low_resolution_copies(pixel_values, self.config.low_resolution_sizes, normalized=True)

    def _trunk_stage_loss(
        self, embeddings: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor, miner: Miner | None,
        norms: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """The trunk stage's weighted loss terms (see [`trunk_stage_loss`]); the centers (and AdaFace's
        norm statistics) move in training."""
        return trunk_stage_loss(
            self.config, self.centers, embeddings, logits, labels, miner, move_centers=self.training,
            norms=norms, norm_statistics=self.norm_statistics,
        )

    def _branch_stage_loss(
        self, embeddings: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor, miner: Miner | None,
        norms: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """The branch stage's weighted loss terms (see [`branch_stage_loss`]); the centers (and AdaFace's
        norm statistics) move in training."""
        return branch_stage_loss(
            self.config, self.branch_centers, embeddings, logits, labels, miner, move_centers=self.training,
            norms=norms, norm_statistics=self.branch_norm_statistics,
        )

    def _check_labels(self, labels: torch.Tensor, batch: int) -> torch.Tensor:
        if labels.ndim != 1 or labels.shape[0] != batch:
            raise DCRInputError(f"labels must have shape [batch]=[{batch}] (one per sample), got {tuple(labels.shape)}.")
        # The range check reads the labels on the host: free on a CPU, but on an accelerator it would
        # wait for the device every step, and under torch.compile it would break the graph. There
        # the training data's labels are checked once, before training, and an out-of-range label
        # still fails in the cross-entropy (a device-side assert), not silently.
        if labels.numel() and labels.device.type == "cpu" and not torch.compiler.is_compiling():
            low, high = int(labels.min()), int(labels.max())
            if low < 0 or high >= self.num_labels:
                bad = low if low < 0 else high
                raise DCRInputError(f"label {bad} is out of range for num_labels={self.num_labels} (expected 0..{self.num_labels - 1}).")
        return labels.long()


#: The Auto classes a saved DCR folder declares for `trust_remote_code` loading.
AUTO_MAP = {
    "AutoConfig": "configuration_dcr.DCRConfig",
    "AutoModel": "modeling_dcr.DCRModel",
    "AutoModelForImageClassification": "modeling_dcr.DCRForImageClassification",
}
#: The pipeline every saved DCR folder carries, as `Pipeline.save_pretrained` records a registered one.
PIPELINE_FILE = "pipeline_dcr.py"
CUSTOM_PIPELINES = {
    "image-feature-extraction": {"impl": "pipeline_dcr.DCRFeatureExtractionPipeline", "pt": ["AutoModel"], "type": "image"},
}
# `register_for_auto_class` makes `save_pretrained` copy both model files into the folder.
DCRConfig.register_for_auto_class()
DCRModel.register_for_auto_class("AutoModel")
DCRForImageClassification.register_for_auto_class("AutoModelForImageClassification")

__all__ = [
    "DCRPreTrainedModel",
    "DCRModel",
    "DCRForImageClassification",
    "DCRModelOutput",
    "DCRImageClassifierOutput",
    "DCRCosineClassifier",
    "build_classifier",
]
