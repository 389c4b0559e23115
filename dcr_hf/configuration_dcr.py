"""DCR model configuration.

This file travels to every Hub repository next to `modeling_dcr.py` (for `trust_remote_code`),
so it imports only `transformers`, the standard library and `.errors_dcr`.
"""

import math
from typing import ClassVar

from transformers import PreTrainedConfig
from transformers.utils import logging

from .errors_dcr import DCRInputError

logger = logging.get_logger(__name__)


def check_low_resolution_sizes(sizes, image_size: int, name: str = "low_resolution_sizes") -> list[int]:
    """The one rule for low-resolution probe sizes; returns them as a list of ints.

    A size is a whole number of pixels in [1, image_size - 1] (the HR image itself is not a
    probe size) and no size is listed twice. Raises `ValueError` naming `name` and the value.
    """
    if isinstance(sizes, (str, bytes)) or not hasattr(sizes, "__iter__"):
        raise DCRInputError(f"{name} must be a list of integers, got {sizes!r}.")
    checked = []
    for size in sizes:
        whole = not isinstance(size, bool) and isinstance(size, (int, float)) and float(size).is_integer()
        if not whole and hasattr(size, "item") and getattr(size, "ndim", 1) == 0:
            size = size.item()  # numpy / torch scalars
            whole = not isinstance(size, bool) and isinstance(size, (int, float)) and float(size).is_integer()
        if not whole or not 0 < int(size) < image_size:
            raise DCRInputError(
                f"{name} holds {size!r}; every size must be a whole number of pixels in [1, {image_size - 1}] "
                f"(below image_size={image_size})."
            )
        checked.append(int(size))
    if len(set(checked)) != len(checked):
        raise DCRInputError(f"{name} has duplicates: {checked}.")
    return checked


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_positive_int(value) -> bool:
    return _is_int(value) and value > 0


def _positive_integers(name: str, values) -> list[int]:
    """A list field of positive whole numbers (`depths`, `hidden_sizes`) as ints; a string
    (`"1111"`), a scalar, a fractional or a non-positive value is refused, naming the field."""
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise DCRInputError(f"{name} must be a list of integers (one per stage), got {values!r}.")
    values = list(values)
    for value in values:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not float(value).is_integer():
            raise DCRInputError(f"{name} must hold whole numbers, got {value!r} in {values}.")
    if any(value <= 0 for value in values):
        raise DCRInputError(f"{name} must hold positive integers, got {values}.")
    return [int(value) for value in values]


#: The degradation model's settings: a section per step, each applied to a sample with its
#: `probability`; a range is `[low, high]` (inclusive) of a value drawn uniformly once per sample
#: and used for every LR copy of it. Blur is in pixels of the LR image itself (the camera's own
#: pixels, so a range means the same at every size); noise is in 8-bit levels (`gaussian_sigma`)
#: or the photon count of a white pixel (`poisson_peak`: the noise of a pixel of value x in
#: [0, 1] has standard deviation sqrt(x / peak)); JPEG quality as PIL / libjpeg count it.
DEGRADATION_STEPS: dict[str, dict[str, tuple]] = {
    # field: (kind, lowest, highest); kind "range" (floats), "int_range", "kinds" or "probability"
    "blur": {
        "probability": ("probability",),
        "kinds": ("kinds", ("gaussian", "motion")),
        "gaussian_sigma": ("range", 0.0, 4.0),
        "motion_length": ("range", 0.0, 8.0),
    },
    "noise": {
        "probability": ("probability",),
        "kinds": ("kinds", ("gaussian", "poisson")),
        "gaussian_sigma": ("range", 0.0, 255.0),
        "poisson_peak": ("range", 1e-3, 1e6),
    },
    "jpeg": {"probability": ("probability",), "quality": ("int_range", 1, 100)},
}

#: Named settings for `--degradation` / `--probe_degradation`: `surveillance` (every step, CCTV-like
#: ranges) and one step alone at probability 1 (`blur`, `noise`, `jpeg`), to measure each one's effect.
DEGRADATION_PRESETS: dict[str, dict[str, dict]] = {
    "surveillance": {
        "blur": {"probability": 0.8, "kinds": ["gaussian", "motion"], "gaussian_sigma": [0.3, 1.2], "motion_length": [1.0, 3.0]},
        "noise": {"probability": 0.8, "kinds": ["gaussian", "poisson"], "gaussian_sigma": [2.0, 12.0], "poisson_peak": [30.0, 300.0]},
        "jpeg": {"probability": 0.8, "quality": [30, 90]},
    },
    "blur": {"blur": {"probability": 1.0, "kinds": ["gaussian", "motion"], "gaussian_sigma": [0.3, 1.2], "motion_length": [1.0, 3.0]}},
    "noise": {"noise": {"probability": 1.0, "kinds": ["gaussian", "poisson"], "gaussian_sigma": [2.0, 12.0], "poisson_peak": [30.0, 300.0]}},
    "jpeg": {"jpeg": {"probability": 1.0, "quality": [30, 90]}},
}


def _degradation_number(field: str, value, integer: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise DCRInputError(f"{field} holds {value!r}; expected a finite number.")
    if integer and not float(value).is_integer():
        raise DCRInputError(f"{field} holds {value!r}; expected a whole number.")
    return int(value) if integer else float(value)


def check_degradation(settings, name: str = "degradation") -> dict | None:
    """The one rule for degradation settings (see `DEGRADATION_STEPS`); returns them as plain
    lists and numbers, or `None` (off) for `None` / `{}`. Raises `ValueError` naming the field.

    Every section lists all its fields: a missing section is a step left out; an unknown section
    or field, an empty or reversed range, a value out of bounds (JPEG quality outside 1..100, a
    negative sigma), a probability outside [0, 1] or an empty list of kinds is refused.
    """
    if settings is None or settings == {}:
        return None
    if not isinstance(settings, dict):
        raise DCRInputError(f"{name} must be a dict of steps {sorted(DEGRADATION_STEPS)}, got {settings!r:.80}.")
    unknown = sorted(set(settings) - set(DEGRADATION_STEPS))
    if unknown:
        raise DCRInputError(f"{name} has unknown steps {unknown}; the steps are {sorted(DEGRADATION_STEPS)}.")
    checked: dict[str, dict] = {}
    for step, section in settings.items():
        fields = DEGRADATION_STEPS[step]
        if not isinstance(section, dict) or set(section) != set(fields):
            given = sorted(section) if isinstance(section, dict) else section
            raise DCRInputError(f"{name}.{step} must have exactly the fields {sorted(fields)}, got {given!r:.120}.")
        checked[step] = {}
        for field_name, (kind, *bounds) in fields.items():
            field, value = f"{name}.{step}.{field_name}", section[field_name]
            if kind == "probability":
                value = _degradation_number(field, value)
                if not 0.0 <= value <= 1.0:
                    raise DCRInputError(f"{field}={value!r} is outside [0, 1].")
            elif kind == "kinds":
                choices = bounds[0]
                if isinstance(value, str) or not isinstance(value, (list, tuple)) or not value or set(value) - set(choices):
                    raise DCRInputError(f"{field}={value!r} must be a non-empty list of {list(choices)}.")
                value = list(dict.fromkeys(value))
            else:
                low_bound, high_bound = bounds
                if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)) or len(value) != 2:
                    raise DCRInputError(f"{field}={value!r} must be a range [low, high].")
                low, high = (_degradation_number(field, v, integer=kind == "int_range") for v in value)
                if low > high:
                    raise DCRInputError(f"{field}={list(value)} is an empty range (low > high).")
                if low < low_bound or high > high_bound:
                    raise DCRInputError(f"{field}={list(value)} leaves the allowed [{low_bound:g}, {high_bound:g}].")
                value = [low, high]
            checked[step][field_name] = value
    return checked


#: The torchvision ResNet-N bodies (their layer layout, our field names): `hidden_sizes` are the
#: stage output widths, so a bottleneck stage's 3x3 convolutions run at a quarter of them.
RESNET_BODIES: dict[str, dict[str, object]] = {
    "resnet18": {"layer_type": "basic", "depths": [2, 2, 2, 2], "hidden_sizes": [64, 128, 256, 512]},
    "resnet34": {"layer_type": "basic", "depths": [3, 4, 6, 3], "hidden_sizes": [64, 128, 256, 512]},
    "resnet50": {"layer_type": "bottleneck", "depths": [3, 4, 6, 3], "hidden_sizes": [256, 512, 1024, 2048]},
    "resnet101": {"layer_type": "bottleneck", "depths": [3, 4, 23, 3], "hidden_sizes": [256, 512, 1024, 2048]},
    "resnet152": {"layer_type": "bottleneck", "depths": [3, 8, 36, 3], "hidden_sizes": [256, 512, 1024, 2048]},
}


#: The face-recognition IResNets people download (their layer layout, our field names), all at
#: 112x112 input with a 512-d embedding: insightface arcface_torch's `r18`..`r200`
#: (`trunk_type="iresnet"`) and AdaFace's `ir_18`..`ir_101` and `ir_se_50` (`trunk_type="ir"`,
#: squeeze-excitation blocks for `ir_se_50`). `dcr_hf.convert` reads their checkpoints.
IRESNET_BODIES: dict[str, dict[str, object]] = {
    **{
        name: {"trunk_type": "iresnet", "depths": depths, "hidden_sizes": [64, 128, 256, 512], "image_size": 112}
        for name, depths in (
            ("r18", [2, 2, 2, 2]), ("r34", [3, 4, 6, 3]), ("r50", [3, 4, 14, 3]),
            ("r100", [3, 13, 30, 3]), ("r200", [6, 26, 60, 6]),
        )
    },
    **{
        name: {"trunk_type": "ir", "depths": depths, "hidden_sizes": [64, 128, 256, 512], "image_size": 112}
        for name, depths in (
            ("ir_18", [2, 2, 2, 2]), ("ir_34", [3, 4, 6, 3]), ("ir_50", [3, 4, 14, 3]), ("ir_101", [3, 13, 30, 3]),
        )
    },
    "ir_se_50": {"trunk_type": "ir", "depths": [3, 4, 14, 3], "hidden_sizes": [64, 128, 256, 512], "image_size": 112,
                 "squeeze_excitation_reduction": 16},
}


class DCRConfig(PreTrainedConfig):
    r"""
    Configuration of a Deep Coupled ResNet (DCR, Lu, Jiang & Kot, IEEE SPL 2018) for
    low-resolution face recognition: a residual **trunk** that embeds faces at any resolution,
    optionally followed by one small **branch** per resolution that maps trunk embeddings of an
    HR gallery image and of LR probes into one coupled space.

    Args:
        trunk_type (`str`, defaults to `"resnet"`):
            `"resnet"`: 7x7/2 conv stem, max-pool and basic residual blocks with batch norm (the
            original implementation's default trunk). `"paper"`: the paper's "Face-ResNet"
            layout with a 3x3 stem, a 3x3 conv + 2x2 max-pool opening each stage, PReLU
            activations (one slope per channel) and optional batch norm. `"iresnet"`: insightface's
            improved ResNet (arcface_torch `r18`..`r200`): 3x3 conv-BN-PReLU stem, blocks
            BN-conv-BN-PReLU-conv(stride)-BN plus a 1x1 conv + BN shortcut on each stage's first
            block, then BN, dropout, a linear layer of the flattened last feature map and a
            BatchNorm1d (the embedding). `"ir"`: AdaFace's IR networks, the same but with a
            stride-only subsampling shortcut where a block keeps its width and an affine-free
            BatchNorm1d. Both take `image_size` inputs only (the linear layer sees every position);
            `IRESNET_BODIES` lists the published depths.
        layer_type (`str`, defaults to `"basic"`):
            Residual block of the `"resnet"` trunk, as in transformers' `ResNetConfig`: `"basic"`
            (two 3x3 convolutions; ResNet-18/34) or `"bottleneck"` (1x1 reduce to a quarter of the
            stage width, 3x3 carrying the stride, 1x1 expand; ResNet-50/101/152 as torchvision
            builds them). The `"paper"` trunk has basic blocks only. `RESNET_BODIES` lists the
            torchvision depths and widths.
        depths (`list[int]`, defaults to `[1, 2, 5, 3]`):
            Residual blocks per stage; `[2, 2, 2, 2]` gives a ResNet-18 body, `[3, 4, 6, 3]` a
            ResNet-34 body (with `"bottleneck"` blocks: ResNet-50).
        hidden_sizes (`list[int]`, defaults to `[64, 128, 256, 512]`):
            Output channels of each stage (bottleneck stages: 256/512/1024/2048 in ResNet-50).
        stem_hidden_size (`int`, *optional*):
            Channels of the stem convolution; defaults to 64 for `"resnet"` and 32 for `"paper"`.
        squeeze_excitation_reduction (`int`, *optional*):
            `"iresnet"` / `"ir"` trunks: a squeeze-excitation module closing every residual branch,
            its bottleneck `channels // squeeze_excitation_reduction` wide (16 in AdaFace's
            `ir_se_50`); `None`: none.
        trunk_dropout (`float`, defaults to 0.0):
            `"iresnet"` / `"ir"` trunks: dropout on the flattened feature map before the embedding
            layer in training (insightface trains with 0, AdaFace with 0.4).
        use_batch_norm (`bool`, defaults to `True`):
            Batch norm in the `"paper"` trunk (the paper has none; the original authors found it
            trains better). The `"resnet"` trunk always uses batch norm.
        embedding_size (`int`, defaults to 512):
            Size of the trunk embedding (`fc1`).
        normalize_embeddings (`bool`, defaults to `True`):
            L2-normalize trunk and branch embeddings (the published recipe does).
        use_branches (`bool`, defaults to `False`):
            Whether the model has the coupled branches: one for HR (index 0) and one per
            `low_resolution_sizes` entry (index i for the i-th size).
        branch_hidden_size (`int`, defaults to 512):
            Size of a branch's coupled embedding (its `fc1`).
        image_size (`int`, defaults to 120):
            Side of the square input image; HR images are this size, LR probes are brought back
            to it.
        num_channels (`int`, defaults to 3):
            Input channels.
        low_resolution_sizes (`list[int]`, defaults to `[8, 12, 16, 20]`):
            The probe resolutions the model is trained for (and has branches for).
        center_loss_weight (`float`, defaults to 0.008):
            Weight of the center loss (MSE between an embedding and its class center).
        center_momentum (`float`, defaults to 0.6):
            Step of the center update `c_j <- c_j + momentum / n_j * sum_i (e_i - c_j)`.
        coupling_loss_weight (`float`, defaults to 0.008):
            Weight of the coupled-mapping term: the MSE between the HR branch embedding and each
            LR branch embedding, summed over LR sizes.
        trunk_miner (`str`, *optional*):
            `"batch_hard"`: the trunk stage's center term mines, for every embedding (anchor), its
            hardest positive and hardest negative reference by Euclidean distance (the original's
            `--trunkloss-miner BatchHardMiner`) and becomes
            `mean(relu((a - p)^2 - (a - n)^2 + trunk_mining_margin))` over all elements. The
            mining itself is done by a miner object the caller passes to the forward pass
            (`dcr_hf.training` wraps pytorch-metric-learning's `BatchHardMiner`). `None`: the
            plain center loss.
        trunk_mining_reference (`str`, defaults to `"center"`):
            References of the trunk miner: `"center"` (each sample's class center), `"embedding"`
            (the batch embeddings) or `"none"` (no center term at all); needs `trunk_miner`.
        trunk_mining_margin (`float`, defaults to 0.05):
            Margin of the mined trunk term.
        branch_miner (`str`, *optional*):
            `"batch_hard"`: in the branch stage, the center term of each resolution becomes
            MSE(anchors, hardest positive centers) - MSE(anchors, hardest negative centers), the
            references being the branch's class centers of the batch samples (the original's
            `--branchloss-miner BatchHardMiner`). `None`: the plain center loss.
        freeze_trunk (`bool`, defaults to `True`):
            In the branch stage, keep the trunk frozen and in eval mode (so its batch norm
            statistics stay those of the trained trunk).
        freeze_batch_norm (`bool`, defaults to `False`):
            Keep the trunk's batch norm layers in eval mode while training (the original's "fixed
            BN" option, for fine-tuning on small data); their affine weights still learn.
        head (`str`, defaults to `"softmax"`):
            The classifier of both stages (the trunk's and each branch's). `"softmax"`: the
            original's linear layer with bias (a branch's preceded by a PReLU). `"cosface"` (Wang et
            al. 2018) and `"arcface"` (Deng et al. 2019): a normalized-weight cosine classifier,
            logits `margin_scale * cos(theta_j)` between the embedding and class weight `j`; the loss
            replaces the target logit by `margin_scale * (cos(theta_y) - margin)` (CosFace) or
            `margin_scale * cos(theta_y + margin)` (ArcFace). `"adaface"` (Kim, Jain & Liu 2022): the
            same classifier, with a margin that adapts to image quality, read from the feature norm
            `||e||` of the embedding before L2 normalization: with `z = clip(h * (||e|| - mu) / (sigma +
            0.001), -1, 1)` (`mu`, `sigma` running mean and std of the batch norms), the target logit is
            `margin_scale * (cos(theta_y - margin * z) - margin * (1 + z))` (high norms, good images: a
            larger angular margin; low norms: a larger additive one). Only the training loss changes:
            embeddings, validation and evaluation do not depend on the head.
        margin_scale (`float`, *optional*):
            The scale `s` of the margin heads; defaults to 64 for them. Not used by `"softmax"`.
        margin (`float`, *optional*):
            The margin `m` of the margin heads; defaults to 0.35 (CosFace, a cosine in (0, 1)) and
            0.5 (ArcFace, an angle in radians in (0, pi/2)) and 0.4 (AdaFace, in (0, 1): an angle and a
            cosine offset). Not used by `"softmax"`.
        arcface_easy_margin (`bool`, defaults to `False`):
            What ArcFace does where `theta_y + margin` would leave [0, pi], as in insightface: by default
            the target logit becomes `cos(theta_y) - margin * sin(margin)` once `theta_y > pi - margin`
            (so it keeps decreasing with the angle); with the easy margin, the margin is only applied
            where `cos(theta_y) > 0` and the plain cosine is kept elsewhere.
        adaface_h (`float`, *optional*):
            AdaFace's `h`, the spread of the norm-standardized margin `z` (0.333: about 68% of the
            samples within [-0.333, 0.333]); defaults to 0.333 with `head="adaface"`, unused otherwise.
        adaface_t_alpha (`float`, *optional*):
            AdaFace's momentum of the running norm statistics, `mu <- t_alpha * batch_mean + (1 -
            t_alpha) * mu` (likewise `sigma`), in (0, 1]; defaults to 0.01 with `head="adaface"`. The
            statistics are buffers of the training model (`norm_statistics`), so a resume is exact.
        degradation (`dict`, *optional*):
            The degradation model the LR training copies went through (`None`: resizing only, the
            original's recipe): per sample, blur in the LR image's pixels, noise, JPEG compression,
            each with a probability and ranges (`DEGRADATION_STEPS`, presets in
            `DEGRADATION_PRESETS`, checked by `check_degradation`). Saved so that a folder says what
            its branches were trained on; inference does not apply it.

    Of transformers' own fields, `problem_type` may only be `None` or `"single_label_classification"`
    (one identity per face); `output_hidden_states` and `return_dict` act as in every model.
    """

    model_type = "dcr"
    trunk_types: ClassVar[tuple[str, ...]] = ("resnet", "paper", "iresnet", "ir")
    #: The trunks of face-recognition IResNets (`IRESNET_BODIES`): fixed input size, basic IR blocks.
    iresnet_trunk_types: ClassVar[tuple[str, ...]] = ("iresnet", "ir")
    layer_types: ClassVar[tuple[str, ...]] = ("basic", "bottleneck")
    #: A bottleneck block's 3x3 convolutions run at `hidden_size // bottleneck_reduction` channels.
    bottleneck_reduction: ClassVar[int] = 4
    miners: ClassVar[tuple[str, ...]] = ("batch_hard",)
    mining_references: ClassVar[tuple[str, ...]] = ("center", "embedding", "none")
    heads: ClassVar[tuple[str, ...]] = ("softmax", "cosface", "arcface", "adaface")
    #: What a `resolution` argument accepts for the high-resolution (gallery) branch besides `image_size`.
    high_resolution_aliases: ClassVar[tuple[str | None, ...]] = (None, "hr", "HR")
    #: The one kind of labels DCR trains on (`None`: the same); multi-label and regression are refused.
    problem_types: ClassVar[tuple[str | None, ...]] = (None, "single_label_classification")
    #: Each margin head's default `(margin_scale, margin)` and the open interval its margin must lie in.
    margin_defaults: ClassVar[dict[str, tuple[float, float]]] = {
        "cosface": (64.0, 0.35), "arcface": (64.0, 0.5), "adaface": (64.0, 0.4),
    }
    margin_bounds: ClassVar[dict[str, tuple[float, float]]] = {
        "cosface": (0.0, 1.0), "arcface": (0.0, math.pi / 2), "adaface": (0.0, 1.0),
    }
    #: AdaFace's own fields: default and the interval each must lie in (`(low, high]`; `high` None: no bound).
    adaface_defaults: ClassVar[dict[str, tuple[float, float, float | None]]] = {
        "adaface_h": (0.333, 0.0, None), "adaface_t_alpha": (0.01, 0.0, 1.0),
    }

    trunk_type: str = "resnet"
    layer_type: str = "basic"
    depths: list[int] | tuple[int, ...] = (1, 2, 5, 3)
    hidden_sizes: list[int] | tuple[int, ...] = (64, 128, 256, 512)
    stem_hidden_size: int | None = None
    squeeze_excitation_reduction: int | None = None
    trunk_dropout: float = 0.0
    use_batch_norm: bool = True
    embedding_size: int = 512
    normalize_embeddings: bool = True
    use_branches: bool = False
    branch_hidden_size: int = 512
    image_size: int = 120
    num_channels: int = 3
    low_resolution_sizes: list[int] | tuple[int, ...] = (8, 12, 16, 20)
    center_loss_weight: float = 0.008
    center_momentum: float = 0.6
    coupling_loss_weight: float = 0.008
    trunk_miner: str | None = None
    trunk_mining_reference: str = "center"
    trunk_mining_margin: float = 0.05
    branch_miner: str | None = None
    freeze_trunk: bool = True
    freeze_batch_norm: bool = False
    head: str = "softmax"
    margin_scale: float | None = None
    margin: float | None = None
    arcface_easy_margin: bool = False
    adaface_h: float | None = None
    adaface_t_alpha: float | None = None
    degradation: dict | None = None

    def __post_init__(self, **kwargs):
        if self.stem_hidden_size is None:
            self.stem_hidden_size = 32 if self.trunk_type == "paper" else 64
        # Checked before transformers builds `id2label` from it (`range("5")` would fail obscurely);
        # transformers counts the labels of `id2label` when one is given.
        if self.id2label is not None:
            labels, given = len(self.id2label), f"id2label={self.id2label}"
        else:
            labels = kwargs.get("num_labels")
            given = repr(labels)
        if labels is not None and not _is_positive_int(labels):
            raise DCRInputError(f"num_labels must be a positive integer (the number of identities), got {given}.")
        super().__post_init__(**kwargs)
        # `@strict` runs the `validate_*` methods only when the class itself is decorated; this
        # file must stay importable on its own, so the checks run here at construction.
        self.validate_dcr()

    def validate_dcr(self) -> None:
        """Check every field once (callers trust a built config): raise `ValueError` in one line
        naming the field. Normalizes as it goes (lists of ints, a margin head's defaults filled)."""
        if self.problem_type not in self.problem_types:
            raise DCRInputError(
                f"problem_type={self.problem_type!r} is not supported: a DCR head classifies one identity per face "
                f"(problem_type in {self.problem_types}, labels [batch] of class ids)."
            )
        self.depths = _positive_integers("depths", self.depths)
        self.hidden_sizes = _positive_integers("hidden_sizes", self.hidden_sizes)
        if self.trunk_type not in self.trunk_types:
            raise DCRInputError(f"trunk_type={self.trunk_type!r} is not one of {self.trunk_types}.")
        if self.layer_type not in self.layer_types:
            raise DCRInputError(f"layer_type={self.layer_type!r} is not one of {self.layer_types}.")
        if self.layer_type == "bottleneck" and self.trunk_type != "resnet":
            raise DCRInputError(f"layer_type='bottleneck' needs trunk_type='resnet', got trunk_type={self.trunk_type!r}.")
        self._validate_iresnet()
        if len(self.depths) == 0 or len(self.depths) != len(self.hidden_sizes):
            raise DCRInputError(
                f"depths ({self.depths}) and hidden_sizes ({self.hidden_sizes}) must be non-empty "
                "lists of the same length, one entry per stage."
            )
        if self.layer_type == "bottleneck" and any(h % self.bottleneck_reduction for h in self.hidden_sizes):
            raise DCRInputError(
                f"hidden_sizes ({self.hidden_sizes}) must be multiples of {self.bottleneck_reduction} with "
                "layer_type='bottleneck' (a block's 3x3 convolutions run at a quarter of the stage width)."
            )
        for name in ("stem_hidden_size", "embedding_size", "branch_hidden_size", "image_size", "num_channels"):
            if not _is_positive_int(getattr(self, name)):
                raise DCRInputError(f"{name} must be a positive integer, got {getattr(self, name)!r}.")
        self.low_resolution_sizes = check_low_resolution_sizes(self.low_resolution_sizes, self.image_size)
        if len(self.low_resolution_sizes) == 0:
            raise DCRInputError("low_resolution_sizes must list at least one probe size, got [].")
        for name in ("center_loss_weight", "center_momentum", "coupling_loss_weight", "trunk_mining_margin"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise DCRInputError(f"{name} must be a finite non-negative number, got {value!r}.")
        self._validate_mining()
        self._validate_head()
        self.degradation = check_degradation(self.degradation)

    def _validate_iresnet(self) -> None:
        """The fields only the `"iresnet"` / `"ir"` trunks use, and what those trunks need."""
        iresnet = self.trunk_type in self.iresnet_trunk_types
        dropout = self.trunk_dropout
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
            raise DCRInputError(f"trunk_dropout must be a number in [0, 1), got {dropout!r}.")
        reduction = self.squeeze_excitation_reduction
        if reduction is not None and not _is_positive_int(reduction):
            raise DCRInputError(f"squeeze_excitation_reduction must be a positive integer or None, got {reduction!r}.")
        if not iresnet and (reduction is not None or dropout):
            raise DCRInputError(
                f"squeeze_excitation_reduction and trunk_dropout belong to trunk_type in {self.iresnet_trunk_types}, "
                f"not to trunk_type={self.trunk_type!r}."
            )
        if iresnet and reduction is not None and any(h < reduction for h in self.hidden_sizes):
            raise DCRInputError(
                f"hidden_sizes ({self.hidden_sizes}) must be at least squeeze_excitation_reduction={reduction} wide."
            )

    def _validate_head(self) -> None:
        """Check the head's fields; a margin head's unset scale and margin get its defaults."""
        if self.head not in self.heads:
            raise DCRInputError(f"head={self.head!r} is not one of {self.heads}.")
        # The fields a head does not use must stay unset (ArcFace alone uses the easy margin).
        unused = {"arcface_easy_margin": False} if self.head != "arcface" else {}
        if self.head != "adaface":
            unused.update(dict.fromkeys(self.adaface_defaults))
        if self.head not in self.margin_defaults:
            unused.update(margin_scale=None, margin=None)
        for name, unset in unused.items():
            if getattr(self, name) != unset:
                users = (
                    f"head={name.partition('_')[0]!r}" if name.startswith(("arcface_", "adaface_"))
                    else f"the margin heads {tuple(self.margin_defaults)}"
                )
                raise DCRInputError(f"{name}={getattr(self, name)!r} is only used by {users}, not by head={self.head!r}.")
        if self.head not in self.margin_defaults:
            return
        if self.head == "adaface":
            self._validate_adaface()
        # Saved resolved, so a folder's config.json states the scale and margin it trained with.
        scale, margin = self.margin_defaults[self.head]
        self.margin_scale = scale if self.margin_scale is None else self.margin_scale
        self.margin = margin if self.margin is None else self.margin
        for name in ("margin_scale", "margin"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise DCRInputError(f"{name} must be a finite number, got {value!r}.")
        if self.margin_scale <= 0:
            raise DCRInputError(f"margin_scale must be positive, got {self.margin_scale!r}.")
        low, high = self.margin_bounds[self.head]
        if not low < self.margin < high:
            what = {
                "arcface": "an angle in radians in (0, pi/2)",
                "adaface": "both an angle in radians and a cosine offset, in (0, 1)",
            }.get(self.head, "a cosine offset in (0, 1)")
            raise DCRInputError(
                f"margin={self.margin!r} is outside ({low:g}, {high:g}) for head={self.head!r}: its margin is {what}."
            )

    def _validate_adaface(self) -> None:
        """AdaFace's `adaface_h` and `adaface_t_alpha`: unset ones get their defaults, each must be a
        finite number in its interval (`adaface_defaults`)."""
        for name, (default, low, high) in self.adaface_defaults.items():
            value = default if getattr(self, name) is None else getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise DCRInputError(f"{name} must be a finite number, got {value!r}.")
            if not (value > low and (high is None or value <= high)):
                interval = f"({low:g}, {high:g}]" if high is not None else f"({low:g}, inf)"
                raise DCRInputError(f"{name}={value!r} is outside {interval} for head='adaface'.")
            setattr(self, name, float(value))

    def _validate_mining(self) -> None:
        for name in ("trunk_miner", "branch_miner"):
            if getattr(self, name) not in (None, *self.miners):
                raise DCRInputError(f"{name}={getattr(self, name)!r} is not one of {(None, *self.miners)}.")
        if self.trunk_mining_reference not in self.mining_references:
            raise DCRInputError(
                f"trunk_mining_reference={self.trunk_mining_reference!r} is not one of {self.mining_references}."
            )
        if self.trunk_miner is None and self.trunk_mining_reference != "center":
            raise DCRInputError(
                f"trunk_mining_reference={self.trunk_mining_reference!r} needs trunk_miner='batch_hard' (without a "
                "miner the center term is the plain center loss; center_loss_weight=0 drops it)."
            )

    @property
    def resolutions(self) -> list[int]:
        """Resolution of each branch index: `[image_size, *low_resolution_sizes]` (index 0 = HR)."""
        return [self.image_size, *self.low_resolution_sizes]

    def branch_index(self, resolution) -> int:
        """Branch index of one resolution value: HR (`None`, `"hr"`, `image_size`) -> 0, LR size s
        -> its position in `low_resolution_sizes` + 1. A numpy / 0-d tensor scalar or a whole float
        (`8.0`) is a size too; anything else, or a size without a branch, is refused in one line."""
        if hasattr(resolution, "ndim") and getattr(resolution, "ndim") == 0 and hasattr(resolution, "item"):
            resolution = resolution.item()
        if isinstance(resolution, float) and resolution.is_integer():
            resolution = int(resolution)
        if not (resolution is None or isinstance(resolution, str) or _is_int(resolution)):
            raise DCRInputError(f"resolution {resolution!r} is not a size: expected an int (e.g. 8), 'hr' or None.")
        if resolution in self.high_resolution_aliases or resolution == self.image_size:
            return 0
        try:
            return self.low_resolution_sizes.index(int(resolution)) + 1
        except (ValueError, TypeError):
            raise DCRInputError(
                f"resolution {resolution!r} has no branch; available: HR ({self.image_size}, 'hr' or None) "
                f"and low-resolution sizes {self.low_resolution_sizes}."
            ) from None


__all__ = [
    "DEGRADATION_PRESETS",
    "DEGRADATION_STEPS",
    "IRESNET_BODIES",
    "RESNET_BODIES",
    "DCRConfig",
    "check_degradation",
    "check_low_resolution_sizes",
]
