"""The arguments of a training run, as `HfArgumentParser` dataclasses, and their checks.

Only the shape of each option is checked here (argparse's types and choices, `TrainingArguments`'
own checks); what the values mean together is checked once, by `plan.plan_training`.

Model settings left at `None` come from `DCRConfig` (a new trunk) or from the model a stage
starts from (`--trunk`, `--init_from`); normalization left at `None` from `DCRImageProcessor`
or the processor saved with that model. Dataset options are `dcr_hf.data.registry.DatasetOptions`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from transformers import TrainingArguments
from transformers.trainer_utils import IntervalStrategy, SaveStrategy

from ..configuration_dcr import RESNET_BODIES, DCRConfig
from ..data.augment import AUGMENTATIONS
from ..data.registry import VALIDATION_DATASETS, DatasetOptions
from .precision import has_accelerator

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
    "label_smoothing_factor": "the DCR model computes its own losses (softmax or margin head, center terms); the "
    "Trainer's label smoother would never apply.",
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
        metadata={"help": "Classifier of both stages: 'softmax' (the original's), 'cosface', 'arcface' or 'adaface' "
                  "(cosine classifiers with a margin on the target logit, AdaFace's adapted to the feature norm; "
                  "default: DCRConfig's, or the --trunk's).",
                  "choices": DCRConfig.heads},
    )
    margin_scale: float | None = field(default=None, metadata={"help": "Scale s of the margin heads' logits (default 64)."})
    margin: float | None = field(
        default=None,
        metadata={"help": "Margin m: cosface in (0, 1) (default 0.35), arcface in (0, pi/2) (0.5), adaface in (0, 1) (0.4)."},
    )
    adaface_h: float | None = field(
        default=None, metadata={"help": "AdaFace: spread h of the norm-adapted margin, > 0 (default 0.333)."}
    )
    adaface_t_alpha: float | None = field(
        default=None, metadata={"help": "AdaFace: momentum of the running feature-norm mean and std, in (0, 1] (default 0.01)."}
    )
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
    # -- the sharded classifier (training/partial_fc.py) --
    partial_fc: bool = field(
        default=False,
        metadata={"help": "Trunk stage: shard the classifier and centers by identity across the processes (Partial FC); "
                          "the saved model is the trunk (DCRModel)."},
    )
    partial_fc_rate: float = field(
        default=1.0, metadata={"help": "With --partial_fc: fraction of each shard's classes a step uses (1.0: all; "
                                       "the batch's identities always)."},
    )

    @property
    def source(self) -> str | None:
        """The model this stage starts from (`--trunk` or `--init_from`), `None` for a new trunk."""
        return self.trunk if self.stage == "branch" else self.init_from if self.stage == "finetune" else None

    def config_settings(self) -> dict[str, object]:
        """The `DCRConfig` loss, mining and classifier-head fields given on the command line, as
        config values (what a stage sets on its starting config; `--degradation` is resolved by the plan)."""
        losses = {name: getattr(self, name) for name in LOSS_FIELDS if getattr(self, name) is not None}
        return {**losses, **mining_settings(self), **head_settings(self)}


@dataclass
class DataArguments(DatasetOptions):
    """Where the faces come from and how the model is validated."""

    _argument_group_name = "Data"

    dataset: str = field(
        default="synthetic",
        metadata={"help": "synthetic | casia | scface | folder | recordio, or a prepared dataset folder / Hub dataset id."},
    )
    augmentation: str = field(default="flip", metadata={"help": "flip | aug_plus | none.", "choices": AUGMENTATIONS})
    samples_per_class: int | None = field(default=None, metadata={"help": "M-per-class sampler: images per identity."})
    defer_low_resolution: bool | None = field(
        default=None,
        metadata={"help": "true: the loader only decodes (uint8), the training step augments and makes the LR copies on "
                  "the training device; false: the loader does it all. Default: true (measured faster on CPU too)."},
    )
    streaming: bool = field(
        default=False,
        metadata={"help": "Index a folder tree lazily; stream a Hub id or parquet shards."},
    )
    stream_buffer_images: int = field(
        default=4096, metadata={"help": "Stream: images buffered for P x K batches."},
    )
    num_classes: int | None = field(default=None, metadata={"help": "Stream: identities of int labels."})
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
    save_on_interrupt: bool = field(
        default=True, metadata={"help": "Save a checkpoint when SIGINT or SIGTERM stops the run."}
    )
    cpu_memory_reuse: bool = field(
        default=True, metadata={"help": "CPU training: keep freed memory for the next step (glibc), saving its page faults."}
    )
    cpu_gemm_weight_grad: bool = field(
        default=True,
        metadata={"help": "CPU bf16 training on AVX512-BF16 without AMX: compute the weight gradients of the "
                  "convolutions with small output maps by one bf16 GEMM, faster there than oneDNN's kernel."},
    )
    divergence_factor: float = field(
        default=100.0,
        metadata={"help": "Stop when a logged training loss exceeds this many times the first logged one (0: never). "
                  "NaN/inf losses or weights always stop the run, before anything is saved."},
    )

    def __post_init__(self):
        # transformers refuses bf16 without a bf16 GPU unless use_cpu is set; with no accelerator at
        # all the CPU is the only device, where bf16 autocast works: set it for the user (the plan
        # says so in the log). A GPU without bf16 keeps transformers' own error.
        self.use_cpu_for_bf16 = (self.bf16 or self.bf16_full_eval) and not self.use_cpu and not has_accelerator()
        if self.use_cpu_for_bf16:
            self.use_cpu = True
        super().__post_init__()


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
HEAD_FIELDS = ("head", "margin_scale", "margin", "arcface_easy_margin", "adaface_h", "adaface_t_alpha")


def head_settings(model_args: ModelArguments) -> dict[str, object]:
    """The classifier-head fields given on the command line (`--head`, `--margin_scale`, ...)."""
    return {name: getattr(model_args, name) for name in HEAD_FIELDS if getattr(model_args, name) is not None}


#: `DCRConfig` loss settings a stage may override; `None` keeps DCRConfig's or the source model's.
LOSS_FIELDS = ("center_loss_weight", "center_momentum", "coupling_loss_weight")


__all__ = [
    "ARCHITECTURES",
    "HEAD_FIELDS",
    "MINER_CHOICES",
    "STAGES",
    "UNSUPPORTED_TRAINER_OPTIONS",
    "DCRTrainingArguments",
    "DataArguments",
    "ModelArguments",
    "LOSS_FIELDS",
    "head_settings",
    "mining_settings",
]
