"""The arguments of a training run, as `HfArgumentParser` dataclasses, and their checks.

Model settings left at `None` come from `DCRConfig` (a new trunk) or from the model a stage
starts from (`--trunk`, `--init_from`); normalization left at `None` from `DCRImageProcessor`
or the processor saved with that model. Dataset options are `dcr_hf.data.registry.DatasetOptions`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from transformers import TrainingArguments
from transformers.trainer_utils import IntervalStrategy, SaveStrategy

from ..configuration_dcr import RESNET_BODIES, DCRConfig, check_low_resolution_sizes
from ..data.augment import AUGMENTATIONS, check_augmentation
from ..data.registry import (
    VALIDATION_DATASETS, DatasetOptions, check_training_dataset, has_real_low_resolution_probes, validation_for,
)

STAGES = ("trunk", "branch", "finetune")

#: Trunk presets (`--architecture`); every field can still be overridden (`--depths`, ...). "dcr" is
#: `DCRConfig`'s own default, the original implementation's trunk.
ARCHITECTURES: dict[str, dict[str, object]] = {
    # small enough for the CPU quickstart on synthetic faces
    "small": {"depths": [1, 1, 1, 1], "hidden_sizes": [16, 32, 64, 128], "embedding_size": 128, "stem_hidden_size": 16},
    "dcr": {},
    # the torchvision ResNet-N bodies: resnet18, resnet34 (basic blocks), resnet50/101/152 (bottleneck)
    **RESNET_BODIES,
}

#: `--trunk_miner` / `--branch_miner` values; "none" = the plain center loss.
MINER_CHOICES = (*DCRConfig.miners, "none")

#: Trainer options a DCR run does not use, refused (with the reason) when given another value than
#: their default instead of being ignored: a run always trains, and validates by a face protocol.
UNSUPPORTED_TRAINER_OPTIONS = {
    "do_train": "a run always trains; choose the stage with --stage.",
    "do_eval": "validation follows --validation_dataset and --eval_strategy.",
    "do_predict": "there is no prediction step; evaluate a saved folder with eval_hf.py / dcr-eval.",
    "eval_on_start": "the starting model is validated by --evaluate_before_training (default true).",
    "prediction_loss_only": "validation computes face-protocol metrics, not a loss.",
    "eval_do_concat_batches": "validation gathers embeddings itself.",
    "include_for_metrics": "validation has no compute_metrics.",
    "batch_eval_metrics": "validation has no compute_metrics.",
    "label_names": "DCR's labels are the identity column.",
    "remove_unused_columns": "the transforms need the raw columns.",
}


@dataclass
class ModelArguments:
    """What to train: the stage, the architecture and the DCR loss settings."""

    _argument_group_name = "DCR model"

    stage: str = field(default="trunk", metadata={"help": f"Training stage, one of {STAGES}.", "choices": STAGES})
    architecture: str = field(
        default="small",
        metadata={"help": "Trunk preset: 'small' (CPU quickstart), 'dcr' (the original trunk), or a torchvision "
                  "ResNet-N body: 'resnet18', 'resnet34', 'resnet50', 'resnet101', 'resnet152'.",
                  "choices": tuple(ARCHITECTURES)},
    )
    trunk_type: str = field(default=DCRConfig.trunk_type, metadata={"help": "'resnet' (original default) or 'paper' (PReLU trunk)."})
    layer_type: str | None = field(
        default=None,
        metadata={"help": "Residual block of the 'resnet' trunk: 'basic' or 'bottleneck' (overrides the preset).",
                  "choices": DCRConfig.layer_types},
    )
    depths: list[int] | None = field(default=None, metadata={"help": "Blocks per stage (overrides the preset)."})
    hidden_sizes: list[int] | None = field(default=None, metadata={"help": "Channels per stage (overrides the preset)."})
    embedding_size: int | None = field(default=None, metadata={"help": "Embedding size (overrides the preset)."})
    use_batch_norm: bool = field(default=DCRConfig.use_batch_norm, metadata={"help": "Batch norm in the 'paper' trunk."})
    normalize_embeddings: bool = field(default=DCRConfig.normalize_embeddings, metadata={"help": "L2-normalize embeddings."})
    low_resolution_sizes: list[int] | None = field(
        default=None, metadata={"help": "LR probe sizes trained for (default: DCRConfig's, or the --trunk's)."}
    )
    image_size: int | None = field(default=None, metadata={"help": "Side of the (square) input image (default: DCRConfig's)."})
    image_mean: list[float] | None = field(
        default=None, metadata={"help": "Normalization mean (default: the processor's, or the one saved with --trunk/--init_from)."}
    )
    image_std: list[float] | None = field(default=None, metadata={"help": "Normalization std (as --image_mean)."})
    center_loss_weight: float | None = field(default=None, metadata={"help": "Center loss weight (default: DCRConfig's)."})
    center_momentum: float | None = field(default=None, metadata={"help": "Center update momentum (default: DCRConfig's)."})
    coupling_loss_weight: float | None = field(
        default=None, metadata={"help": "Coupled-mapping MSE weight, branch stage (default: DCRConfig's)."}
    )
    trunk_miner: str | None = field(
        default=None,
        metadata={"help": "Trunk stage center term: 'batch_hard' (mined margin term, the original's --trunkloss-miner "
                  "BatchHardMiner) or 'none' (plain center loss; default: DCRConfig's or the source model's).",
                  "choices": MINER_CHOICES},
    )
    trunk_mining_reference: str | None = field(
        default=None,
        metadata={"help": "References of --trunk_miner: class 'center', batch 'embedding', or 'none' (no center term).",
                  "choices": DCRConfig.mining_references},
    )
    branch_miner: str | None = field(
        default=None,
        metadata={"help": "Branch stage center term: 'batch_hard' (mined center difference, the original's "
                  "--branchloss-miner BatchHardMiner) or 'none' (plain center loss).", "choices": MINER_CHOICES},
    )
    head: str | None = field(
        default=None,
        metadata={"help": "Classifier of both stages: 'softmax' (the original's), 'cosface' or 'arcface' (cosine "
                  "classifiers with a margin on the target logit; default: DCRConfig's, or the --trunk's).",
                  "choices": DCRConfig.heads},
    )
    margin_scale: float | None = field(default=None, metadata={"help": "Scale s of the cosface / arcface logits (default 64)."})
    margin: float | None = field(default=None, metadata={"help": "Margin m: cosface in (0, 1) (default 0.35), arcface in (0, pi/2) (0.5)."})
    arcface_easy_margin: bool | None = field(
        default=None,
        # None (not False) by default, so a branch stage keeps its trunk's setting; given alone it means true.
        metadata={"help": "ArcFace: apply the margin only where cos(theta) > 0 (insightface's easy margin).",
                  "nargs": "?", "const": True},
    )
    degradation: str | None = field(
        default=None,
        metadata={"help": "Degradation model of the LR training copies (blur, noise, JPEG after the resizing): 'none' "
                  "(the original's resizing only; default for a new trunk), a preset ('surveillance', 'blur', "
                  "'noise', 'jpeg') or a JSON file of settings; saved in config.json. Default for --trunk / "
                  "--init_from: the model's."},
    )
    trunk: str | None = field(default=None, metadata={"help": "Branch stage: trained trunk folder or Hub id."})
    random_branch_init: bool = field(default=False, metadata={"help": "Branch stage: random instead of specialized init."})
    unfreeze_trunk: bool = field(default=False, metadata={"help": "Branch stage: train the trunk too."})
    init_from: str | None = field(default=None, metadata={"help": "Fine-tune stage: DCR checkpoint folder or Hub id."})
    freeze_batch_norm: bool = field(default=False, metadata={"help": "Keep the trunk's batch norm statistics fixed."})
    sync_batch_norm: bool = field(default=False, metadata={"help": "SyncBatchNorm across processes (multi-GPU)."})
    channels_last: bool = field(default=True, metadata={"help": "Channels-last memory layout (faster convolutions)."})

    @property
    def source(self) -> str | None:
        """The model this stage starts from (`--trunk` or `--init_from`), `None` for a new trunk."""
        return self.trunk if self.stage == "branch" else self.init_from if self.stage == "finetune" else None


@dataclass
class DataArguments(DatasetOptions):
    """Where the faces come from and how the model is validated."""

    _argument_group_name = "Data"

    dataset: str = field(
        default="synthetic",
        metadata={"help": "synthetic | casia | scface | folder, or a prepared dataset folder / Hub dataset id."},
    )
    augmentation: str = field(default="flip", metadata={"help": "flip | aug_plus | none.", "choices": AUGMENTATIONS})
    samples_per_class: int | None = field(default=None, metadata={"help": "M-per-class sampler: images per identity."})
    defer_low_resolution: bool | None = field(
        default=None,
        metadata={"help": "true: the loader only decodes (uint8), the training step augments and makes the LR copies on "
                  "the training device; false: the loader does it all. Default: true (measured faster on CPU too)."},
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Use only the first N training samples."})
    validation_dataset: str = field(
        default="auto", metadata={"help": f"auto | none | {' | '.join(VALIDATION_DATASETS)} (auto: from --dataset)."}
    )
    validation_data_root: str | None = field(default=None, metadata={"help": "Data root of the validation set."})
    validation_sizes: list[int] | None = field(default=None, metadata={"help": "LR sizes to validate at (default: the model's)."})


@dataclass
class DCRTrainingArguments(TrainingArguments):
    """`TrainingArguments` with DCR's defaults and the original's scheduling options."""

    _argument_group_name = "DCR training options"

    output_dir: str | None = field(default=None, metadata={"help": "Default: outputs/dcr-<stage>."})
    learning_rate: float = field(default=2e-3, metadata={"help": "Initial learning rate (the published recipe: 1e-2)."})
    num_train_epochs: float = field(default=3.0, metadata={"help": "Epochs."})
    per_device_train_batch_size: int = field(default=32, metadata={"help": "Samples per device and step."})
    per_device_eval_batch_size: int = field(default=64, metadata={"help": "Images per device in validation."})
    eval_strategy: IntervalStrategy | str = field(default="epoch", metadata={"help": "When to validate."})
    save_strategy: SaveStrategy | str = field(default="epoch", metadata={"help": "When to checkpoint."})
    save_total_limit: int | None = field(default=2, metadata={"help": "Checkpoints kept (the best one is always kept)."})
    load_best_model_at_end: bool = field(default=True, metadata={"help": "Keep the best model by the validation criterion."})
    logging_steps: float = field(default=20, metadata={"help": "Log every N steps."})
    report_to: None | str | list[str] = field(default="none", metadata={"help": "tensorboard | trackio | none ..."})
    remove_unused_columns: bool = field(default=False, metadata={"help": "Must stay False: the transforms need raw columns."})
    lr_milestones: list[float] | None = field(
        default=None, metadata={"help": "Epochs at which the learning rate is divided by 10 (the original's step schedule)."}
    )
    early_stopping_patience: int | None = field(
        default=None, metadata={"help": "Stop after N validations without improvement (the original's patience)."}
    )
    logging_nan_inf_filter: bool = field(
        default=False,
        metadata={"help": "Off for DCR: a NaN/inf loss stops the run (so there is nothing to filter), and the "
                  "filter would wait for the device every step."},
    )
    evaluate_before_training: bool = field(
        default=True, metadata={"help": "Validate the starting model too, for the before/after table."}
    )
    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "Replace a previous run in --output_dir (its checkpoints are deleted when training starts); "
                  "without it such a folder is refused unless the run resumes."},
    )
    divergence_factor: float = field(
        default=100.0,
        metadata={"help": "Stop when a logged training loss exceeds this many times the first logged one (0: never). "
                  "NaN/inf losses or weights always stop the run, before anything is saved."},
    )


def mining_settings(model_args: ModelArguments) -> dict[str, object]:
    """The mining fields given on the command line, as `DCRConfig` values ("none" miners -> `None`)."""
    settings: dict[str, object] = {}
    for name in ("trunk_miner", "branch_miner"):
        value = getattr(model_args, name)
        if value is not None:
            settings[name] = None if value == "none" else value
    if model_args.trunk_mining_reference is not None:
        settings["trunk_mining_reference"] = model_args.trunk_mining_reference
    return settings


#: The `DCRConfig` fields of the classifier head (`--head` and its margin settings).
HEAD_FIELDS = ("head", "margin_scale", "margin", "arcface_easy_margin")


def head_settings(model_args: ModelArguments) -> dict[str, object]:
    """The classifier-head fields given on the command line (`--head`, `--margin_scale`, ...)."""
    return {name: getattr(model_args, name) for name in HEAD_FIELDS if getattr(model_args, name) is not None}


def degradation_settings(model_args: ModelArguments) -> dict[str, object]:
    """`{"degradation": settings}` when `--degradation` is given (`None` for 'none'), else `{}`."""
    if model_args.degradation is None:
        return {}
    from ..degradation import resolve_degradation

    return {"degradation": resolve_degradation(model_args.degradation)}


def check_arguments(model_args: ModelArguments, data_args: DataArguments, training_args: DCRTrainingArguments) -> None:
    """Fail on inconsistent arguments before any data is read or any model is built."""
    if model_args.stage == "branch" and not model_args.trunk:
        raise ValueError("--stage branch needs --trunk PATH_OR_HUB_ID (a trained trunk-stage model).")
    if model_args.stage == "finetune" and not model_args.init_from:
        raise ValueError("--stage finetune needs --init_from PATH_OR_HUB_ID (the model to fine-tune).")
    if model_args.stage == "trunk" and (model_args.trunk or model_args.init_from):
        raise ValueError("--trunk and --init_from belong to --stage branch / finetune, not to --stage trunk.")
    image_size = model_args.image_size if model_args.image_size is not None else DCRConfig.image_size
    for name, sizes in (("--low_resolution_sizes", model_args.low_resolution_sizes),
                        ("--validation_sizes", data_args.validation_sizes)):
        if sizes is not None:
            check_low_resolution_sizes(sizes, image_size, name=name)
    if model_args.stage == "trunk":
        DCRConfig(**mining_settings(model_args), **head_settings(model_args))  # the config's own rules, before any data is read
    degradation_settings(model_args)  # a bad preset, file or range fails here
    if model_args.degradation not in (None, "none") and has_real_low_resolution_probes(data_args.dataset):
        raise ValueError(f"--degradation {model_args.degradation}: --dataset {data_args.dataset} trains on real LR images, "
                         "which are used as they are; the degradation model applies to simulated LR copies.")
    if training_args.fp16 and training_args.device.type == "cpu":
        # Accelerate runs fp16 on a CPU in float32 without a word; bf16 autocast works there.
        raise ValueError("--fp16 needs a GPU (Accelerate trains fp16 on a CPU in float32); on a CPU use --bf16.")
    check_training_dataset(data_args.dataset, data_args)
    validation_for(data_args.dataset, data_args.validation_dataset)
    check_augmentation(data_args.augmentation)
    if data_args.samples_per_class is not None and data_args.samples_per_class < 1:
        raise ValueError(f"--samples_per_class must be a positive number of images per identity, got {data_args.samples_per_class}.")
    if not training_args.divergence_factor >= 0:
        raise ValueError(f"--divergence_factor must be >= 0 (0: no bound), got {training_args.divergence_factor}.")
    if data_args.samples_per_class is not None and training_args.per_device_train_batch_size % data_args.samples_per_class:
        raise ValueError(
            f"--per_device_train_batch_size {training_args.per_device_train_batch_size} must be a multiple of "
            f"--samples_per_class {data_args.samples_per_class}."
        )


__all__ = [
    "ARCHITECTURES",
    "HEAD_FIELDS",
    "MINER_CHOICES",
    "STAGES",
    "UNSUPPORTED_TRAINER_OPTIONS",
    "DCRTrainingArguments",
    "DataArguments",
    "ModelArguments",
    "check_arguments",
    "degradation_settings",
    "head_settings",
    "mining_settings",
]
