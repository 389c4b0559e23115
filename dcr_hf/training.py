"""Training DCR on the Hugging Face Trainer: arguments, data, model building and the Trainer subclass.

`train_hf.py` is the thin command line over `run_training`. The three stages:

- `trunk`: `DCRForImageClassification` (softmax + center loss) on multi-resolution batches;
- `branch`: the same head with `use_branches=True`, built from a trained trunk with the
  specialized initialization (or random branches), the trunk frozen in eval mode;
- `finetune`: continue from any DCR checkpoint on new data (e.g. SCface); classifiers and
  centers are re-created when the class count differs.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from transformers import EarlyStoppingCallback, Trainer, TrainingArguments, set_seed
from transformers.trainer_utils import IntervalStrategy, SaveStrategy
from transformers.utils import logging

from .configuration_dcr import DCRConfig
from .data.transforms import FinetuneTransform, TrainTransform, apply_transform, make_low_resolution_copies
from .image_processing_dcr import DCRImageProcessor
from .modeling_dcr import DCRForImageClassification

logger = logging.get_logger(__name__)

STAGES = ("trunk", "branch", "finetune")
TRAIN_DATASETS = ("synthetic", "casia", "scface", "folder")
VALIDATION_DATASETS = ("auto", "synthetic", "lfw", "scface", "none")
#: Dataset names the model card uses for validation results.
VALIDATION_CARD_NAMES = {"synthetic": "dcr-hf synthetic faces", "lfw": "LFW", "scface": "SCface"}

#: Trunk presets; every field can still be overridden (`--depths`, `--hidden_sizes`, ...).
ARCHITECTURES: dict[str, dict[str, Any]] = {
    # small enough for the CPU quickstart on synthetic faces
    "small": {"depths": [1, 1, 1, 1], "hidden_sizes": [16, 32, 64, 128], "embedding_size": 128, "stem_hidden_size": 16},
    # the original implementation's default trunk
    "dcr": {"depths": [1, 2, 5, 3], "hidden_sizes": [64, 128, 256, 512], "embedding_size": 512},
    "resnet18": {"depths": [2, 2, 2, 2], "hidden_sizes": [64, 128, 256, 512], "embedding_size": 512},
    "resnet34": {"depths": [3, 4, 6, 3], "hidden_sizes": [64, 128, 256, 512], "embedding_size": 512},
}


@dataclass
class ModelArguments:
    """What to train: the stage, the architecture and the DCR loss settings."""

    stage: str = field(default="trunk", metadata={"help": f"Training stage, one of {STAGES}.", "choices": STAGES})
    architecture: str = field(
        default="small",
        metadata={"help": "Trunk preset: 'small' (CPU quickstart), 'dcr' (the original trunk), 'resnet18', 'resnet34'.",
                  "choices": tuple(ARCHITECTURES)},
    )
    trunk_type: str = field(default="resnet", metadata={"help": "'resnet' (original default) or 'paper' (PReLU trunk)."})
    depths: list[int] | None = field(default=None, metadata={"help": "Blocks per stage (overrides the preset)."})
    hidden_sizes: list[int] | None = field(default=None, metadata={"help": "Channels per stage (overrides the preset)."})
    embedding_size: int | None = field(default=None, metadata={"help": "Embedding size (overrides the preset)."})
    use_batch_norm: bool = field(default=True, metadata={"help": "Batch norm in the 'paper' trunk."})
    normalize_embeddings: bool = field(default=True, metadata={"help": "L2-normalize embeddings."})
    low_resolution_sizes: list[int] = field(
        default_factory=lambda: [8, 12, 16, 20], metadata={"help": "LR probe sizes trained for."}
    )
    image_size: int = field(default=120, metadata={"help": "Side of the (square) input image."})
    image_mean: list[float] = field(default_factory=lambda: [0.5, 0.5, 0.5], metadata={"help": "Normalization mean."})
    image_std: list[float] = field(default_factory=lambda: [0.5, 0.5, 0.5], metadata={"help": "Normalization std."})
    center_loss_weight: float = field(default=0.008, metadata={"help": "Center loss weight."})
    center_momentum: float = field(default=0.6, metadata={"help": "Center update momentum."})
    coupling_loss_weight: float = field(default=0.008, metadata={"help": "Coupled-mapping MSE weight (branch stage)."})
    trunk: str | None = field(default=None, metadata={"help": "Branch stage: trained trunk folder or Hub id."})
    random_branch_init: bool = field(default=False, metadata={"help": "Branch stage: random instead of specialized init."})
    unfreeze_trunk: bool = field(default=False, metadata={"help": "Branch stage: train the trunk too."})
    init_from: str | None = field(default=None, metadata={"help": "Fine-tune stage: DCR checkpoint folder or Hub id."})
    freeze_batch_norm: bool = field(default=False, metadata={"help": "Keep the trunk's batch norm statistics fixed."})
    sync_batch_norm: bool = field(default=False, metadata={"help": "SyncBatchNorm across processes (multi-GPU)."})
    channels_last: bool = field(default=True, metadata={"help": "Channels-last memory layout (faster convolutions)."})


@dataclass
class DataArguments:
    """Where the faces come from and how the model is validated."""

    dataset: str = field(
        default="synthetic",
        metadata={"help": "synthetic | casia | scface | folder, or a prepared dataset folder / Hub dataset id."},
    )
    data_root: str | None = field(default=None, metadata={"help": "Root holding Casia/, LFW/, SCface/ (or a folder tree)."})
    casia_fold: int = field(default=11, metadata={"help": "CASIA subject fold for validation (>= 10: train on all)."})
    image_column: str = field(default="image", metadata={"help": "Image column of a generic dataset."})
    label_column: str = field(default="label", metadata={"help": "Label column of a generic dataset."})
    augmentation: str = field(default="flip", metadata={"help": "flip | aug_plus | none."})
    samples_per_class: int | None = field(default=None, metadata={"help": "M-per-class sampler: images per identity."})
    defer_low_resolution: bool = field(
        default=False, metadata={"help": "Make the LR copies in the training step on the accelerator, not in the loader."}
    )
    strict_data: bool = field(default=False, metadata={"help": "Raise on unreadable images instead of skipping them."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Use only the first N training samples."})
    validation_dataset: str = field(
        default="auto", metadata={"help": "auto | synthetic | lfw | scface | none (auto: from --dataset)."}
    )
    validation_data_root: str | None = field(default=None, metadata={"help": "Data root of the validation set."})
    validation_sizes: list[int] | None = field(default=None, metadata={"help": "LR sizes to validate at."})
    synthetic_num_identities: int = field(default=200, metadata={"help": "Synthetic training identities."})
    synthetic_images_per_identity: int = field(default=10, metadata={"help": "Synthetic images per identity."})
    synthetic_num_pairs: int = field(default=600, metadata={"help": "Synthetic verification pairs."})
    synthetic_seed: int = field(default=0, metadata={"help": "Seed of the synthetic faces."})


@dataclass
class DCRTrainingArguments(TrainingArguments):
    """`TrainingArguments` with DCR's defaults and the original's scheduling options."""

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
    remove_unused_columns: bool = field(default=False, metadata={"help": "Must stay False: transforms need raw columns."})
    lr_milestones: list[float] | None = field(
        default=None, metadata={"help": "Epochs at which the learning rate is divided by 10 (the original's step schedule)."}
    )
    early_stopping_patience: int | None = field(
        default=None, metadata={"help": "Stop after N validations without improvement (the original's patience)."}
    )
    evaluate_before_training: bool = field(
        default=True, metadata={"help": "Validate the starting model too, for the before/after table."}
    )


class NonFiniteLossError(FloatingPointError):
    """Raised when a training loss is NaN or infinite, before the optimizer step of that batch.

    The checkpoints on disk are untouched; the in-memory centers may already hold that batch's
    update (they move in the forward pass), so training stops instead of skipping the batch."""


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------


@dataclass
class TrainingData:
    train: Dataset
    num_labels: int
    id2label: dict[int, str]
    validation: dict[str, Dataset]  # {"pairs": ...} or {"gallery": ..., "probe": ...}
    validation_protocol: str | None  # "verification" | "identification" | None
    validation_name: str | None
    real_low_resolution: bool  # rows carry real LR images (SCface fine-tune form)


def _need_root(data_args: DataArguments, root: str | None, what: str) -> Path:
    if root is None:
        raise ValueError(f"--dataset {what} needs --data_root (the folder holding the data set).")
    path = Path(root)
    if not path.exists():
        raise FileNotFoundError(f"data root {path} does not exist (given for --dataset {what}).")
    return path


def check_arguments(model_args: ModelArguments, data_args: DataArguments, training_args: DCRTrainingArguments) -> None:
    """Fail on inconsistent arguments before any data is read or any model is built."""
    if model_args.stage == "branch" and not model_args.trunk:
        raise ValueError("--stage branch needs --trunk PATH_OR_HUB_ID (a trained trunk-stage model).")
    if model_args.stage == "finetune" and not model_args.init_from:
        raise ValueError("--stage finetune needs --init_from PATH_OR_HUB_ID (the model to fine-tune).")
    if model_args.stage == "trunk" and (model_args.trunk or model_args.init_from):
        raise ValueError("--trunk and --init_from belong to --stage branch / finetune, not to --stage trunk.")
    for size in model_args.low_resolution_sizes + (data_args.validation_sizes or []):
        if size <= 0 or size >= model_args.image_size:
            raise ValueError(f"LR size {size} must be in (0, image_size={model_args.image_size}).")
    if data_args.dataset in ("casia", "scface", "folder"):
        _need_root(data_args, data_args.data_root, data_args.dataset)
    elif data_args.dataset != "synthetic":
        path = Path(data_args.dataset)
        looks_like_hub_id = data_args.dataset.count("/") == 1 and not path.exists() and not data_args.dataset.startswith((".", "/"))
        if not path.exists() and not looks_like_hub_id:
            raise ValueError(
                f"unknown dataset {data_args.dataset!r}: expected one of {TRAIN_DATASETS}, a prepared dataset "
                "folder or a Hub dataset id (org/name)."
            )
    if data_args.validation_dataset not in VALIDATION_DATASETS:
        raise ValueError(f"--validation_dataset {data_args.validation_dataset!r}: expected one of {VALIDATION_DATASETS}.")
    if data_args.augmentation not in ("flip", "aug_plus", "none"):
        raise ValueError(f"--augmentation {data_args.augmentation!r}: expected flip, aug_plus or none.")
    if data_args.samples_per_class is not None and training_args.per_device_train_batch_size % data_args.samples_per_class:
        raise ValueError(
            f"--per_device_train_batch_size {training_args.per_device_train_batch_size} must be a multiple of "
            f"--samples_per_class {data_args.samples_per_class}."
        )


def _resolve_validation(data_args: DataArguments) -> str:
    if data_args.validation_dataset != "auto":
        return data_args.validation_dataset
    if data_args.dataset == "synthetic":
        return "synthetic"
    if data_args.dataset == "scface":
        return "scface"
    if data_args.dataset == "casia":
        return "lfw"
    return "none"


def load_training_data(data_args: DataArguments, image_size: int) -> TrainingData:
    """Load the training set and the validation set named by the arguments (untransformed)."""
    real_lr = False
    if data_args.dataset == "synthetic":
        from .data.synthetic import load_synthetic

        # Only the split needed: building every split renders the surveillance set too.
        train = load_synthetic(
            "train",
            num_identities=data_args.synthetic_num_identities,
            images_per_identity=data_args.synthetic_images_per_identity,
            image_size=image_size,
            seed=data_args.synthetic_seed,
        )
    elif data_args.dataset == "casia":
        from .data.casia import load_casia

        train = load_casia(data_args.data_root, fold=data_args.casia_fold, strict=data_args.strict_data)["train"]
    elif data_args.dataset == "scface":
        from .data.scface import load_scface_finetune

        train = load_scface_finetune(data_args.data_root, strict=data_args.strict_data)
        real_lr = True
    else:
        from .data.generic import load_face_dataset

        source = data_args.data_root if data_args.dataset == "folder" else data_args.dataset
        train = load_face_dataset(source, image_column=data_args.image_column, label_column=data_args.label_column)
        if not isinstance(train, Dataset):
            if "train" not in train:
                raise ValueError(f"dataset {source} has no 'train' split; it has {list(train)}.")
            train = train["train"]
    if data_args.max_train_samples is not None:
        train = train.select(range(min(data_args.max_train_samples, len(train))))
    label_feature = train.features["label"]
    num_labels = getattr(label_feature, "num_classes", None) or int(max(train["label"])) + 1
    names = getattr(label_feature, "names", None) or [str(i) for i in range(num_labels)]

    validation_name = _resolve_validation(data_args)
    validation: dict[str, Dataset] = {}
    protocol = None
    root = data_args.validation_data_root or data_args.data_root
    if validation_name == "synthetic":
        from .data.synthetic import load_synthetic

        validation = {"pairs": load_synthetic("pairs", image_size=image_size, seed=data_args.synthetic_seed,
                                               images_per_identity=data_args.synthetic_images_per_identity,
                                               num_pairs=data_args.synthetic_num_pairs)}
        protocol = "verification"
    elif validation_name == "lfw":
        from .data.lfw import load_lfw_pairs

        validation = {"pairs": load_lfw_pairs(_need_root(data_args, root, "lfw (validation)"), strict=data_args.strict_data)}
        protocol = "verification"
    elif validation_name == "scface":
        from .data.scface import load_scface

        scface = load_scface(_need_root(data_args, root, "scface (validation)"), strict=data_args.strict_data)
        validation = {"gallery": scface["gallery"], "probe": scface["probe"]}
        protocol = "identification"
    return TrainingData(
        train=train,
        num_labels=num_labels,
        id2label={i: str(n) for i, n in enumerate(names)},
        validation=validation,
        validation_protocol=protocol,
        validation_name=None if validation_name == "none" else validation_name,
        real_low_resolution=real_lr,
    )


# --------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------


def _config_from_arguments(model_args: ModelArguments, num_labels: int, id2label: dict[int, str]) -> DCRConfig:
    preset = dict(ARCHITECTURES[model_args.architecture])
    for name in ("depths", "hidden_sizes", "embedding_size"):
        if getattr(model_args, name) is not None:
            preset[name] = getattr(model_args, name)
    return DCRConfig(
        trunk_type=model_args.trunk_type,
        use_batch_norm=model_args.use_batch_norm,
        normalize_embeddings=model_args.normalize_embeddings,
        branch_hidden_size=preset["embedding_size"],
        image_size=model_args.image_size,
        low_resolution_sizes=model_args.low_resolution_sizes,
        center_loss_weight=model_args.center_loss_weight,
        center_momentum=model_args.center_momentum,
        coupling_loss_weight=model_args.coupling_loss_weight,
        freeze_batch_norm=model_args.freeze_batch_norm,
        id2label=id2label,
        label2id={v: k for k, v in id2label.items()},
        **preset,
    )


def build_model(model_args: ModelArguments, num_labels: int, id2label: dict[int, str]) -> DCRForImageClassification:
    """The model of the stage: a fresh trunk, branches around a trained trunk, or a loaded model."""
    if model_args.stage == "trunk":
        return DCRForImageClassification(_config_from_arguments(model_args, num_labels, id2label))

    source = model_args.trunk if model_args.stage == "branch" else model_args.init_from
    config = DCRConfig.from_pretrained(source)
    if config.model_type != "dcr":
        raise ValueError(f"{source} is not a DCR model (model_type={config.model_type!r}).")
    if config.image_size != model_args.image_size:
        raise ValueError(f"{source} was trained at image_size={config.image_size}, but --image_size is {model_args.image_size}.")

    if model_args.stage == "branch":
        if list(config.low_resolution_sizes) != list(model_args.low_resolution_sizes):
            raise ValueError(
                f"the trunk {source} was trained for LR sizes {config.low_resolution_sizes}, but "
                f"--low_resolution_sizes is {model_args.low_resolution_sizes}; pass the trunk's sizes."
            )
        trunk = DCRForImageClassification.from_pretrained(source)
        if trunk.config.num_labels != num_labels:
            raise ValueError(
                f"the trunk {source} has {trunk.config.num_labels} classes but the training set has {num_labels}; "
                "the branch stage trains on the trunk's identities."
            )
        return DCRForImageClassification.from_trunk(
            trunk,
            specialized_initialization=not model_args.random_branch_init,
            freeze_trunk=not model_args.unfreeze_trunk,
            coupling_loss_weight=model_args.coupling_loss_weight,
            center_loss_weight=model_args.center_loss_weight,
            center_momentum=model_args.center_momentum,
            freeze_batch_norm=model_args.freeze_batch_norm,
        )

    # fine-tune
    overrides = dict(
        center_loss_weight=model_args.center_loss_weight,
        center_momentum=model_args.center_momentum,
        coupling_loss_weight=model_args.coupling_loss_weight,
        freeze_batch_norm=model_args.freeze_batch_norm,
    )
    if config.num_labels != num_labels:
        logger.warning(
            f"{source} has {config.num_labels} classes, the fine-tuning set {num_labels}: the classifier(s) and "
            "centers are re-created for the new classes; the trunk (and branch projections) are kept."
        )
        model = DCRForImageClassification.from_pretrained(
            source, num_labels=num_labels, id2label=id2label, label2id={v: k for k, v in id2label.items()},
            ignore_mismatched_sizes=True, **overrides
        )
    else:
        model = DCRForImageClassification.from_pretrained(source, **overrides)
    if model.config.use_branches:
        model.set_trunk_frozen(not model_args.unfreeze_trunk)
    return model


# --------------------------------------------------------------------------------------------
# Trainer
# --------------------------------------------------------------------------------------------


class DCRTrainer(Trainer):
    """`Trainer` for DCR: LR copies made on the device when deferred, NaN/inf guard, loss terms in
    the logs, the M-per-class sampler, the original's step schedule, and validation by the face
    protocols (overriding `evaluate`, so early stopping and best-model selection work)."""

    def __init__(
        self,
        *args,
        validation: dict[str, Dataset] | None = None,
        validation_protocol: str | None = None,
        validation_sizes: list[int] | None = None,
        deferred_low_resolution_sizes: list[int] | None = None,
        samples_per_class: int | None = None,
        random_flip: bool = False,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        self.validation = validation or {}
        self.validation_protocol = validation_protocol
        self.validation_sizes = validation_sizes
        self.deferred_low_resolution_sizes = deferred_low_resolution_sizes
        self.samples_per_class = samples_per_class
        self.random_flip = random_flip
        self._loss_terms: dict[str, float] = {}
        self._loss_term_count = 0
        self.last_validation: dict[str, Any] | None = None

    # -- data --------------------------------------------------------------------------------

    def _get_train_sampler(self, train_dataset=None):
        if self.samples_per_class is None:
            return super()._get_train_sampler(train_dataset)
        from .data.sampler import MPerClassSampler

        dataset = train_dataset if train_dataset is not None else self.train_dataset
        return MPerClassSampler(
            dataset.with_format(None)["label"] if hasattr(dataset, "with_format") else dataset["label"],
            m=self.samples_per_class,
            batch_size=self.args.per_device_train_batch_size,
            seed=self.args.seed,
        )

    # -- optimisation ------------------------------------------------------------------------

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        milestones = getattr(self.args, "lr_milestones", None)
        if not milestones or self.lr_scheduler is not None:
            return super().create_scheduler(num_training_steps, optimizer)
        optimizer = optimizer if optimizer is not None else self.optimizer
        steps_per_epoch = max(1, math.ceil(num_training_steps / max(self.args.num_train_epochs, 1e-9)))
        if self.args.max_steps and self.args.max_steps > 0 and self.train_dataset is not None:
            steps_per_epoch = max(1, len(self.get_train_dataloader()) // self.args.gradient_accumulation_steps)
        step_milestones = sorted(int(round(m * steps_per_epoch)) for m in milestones)
        self.lr_scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=step_milestones, gamma=0.1)
        self._created_lr_scheduler = True
        return self.lr_scheduler

    def _flip(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Flip each sample horizontally with probability 1/2, its HR and LR copies alike.

        Drawn here rather than in the data loader: on a resume the Trainer restores the checkpoint's
        RNG state only after fetching the first batch, so a loader-side draw would make a resumed run
        differ from an uninterrupted one. (Flipping commutes with the LR simulation.)
        """
        # The CPU generator, whatever the device: its state is the one checkpoints save everywhere.
        flip = torch.rand(inputs["pixel_values"].shape[0]) < 0.5
        inputs = dict(inputs)
        for name in ("pixel_values", "low_resolution_pixel_values"):
            value = inputs.get(name)
            if value is not None:
                mask = flip.to(value.device).view(-1, *([1] * (value.ndim - 1)))
                inputs[name] = torch.where(mask, value.flip(-1), value)
        return inputs

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self.random_flip and model.training:
            inputs = self._flip(inputs)
        if self.deferred_low_resolution_sizes and "low_resolution_pixel_values" not in inputs:
            processor = self.processing_class
            inputs = dict(inputs)
            inputs["low_resolution_pixel_values"] = make_low_resolution_copies(
                inputs["pixel_values"],
                self.deferred_low_resolution_sizes,
                image_mean=processor.image_mean,
                image_std=processor.image_std,
                downsample_interpolation=processor.downsample_interpolation,
                upsample_interpolation=processor.upsample_interpolation,
            )
        outputs = model(**inputs)
        loss = outputs["loss"]
        finite = torch.isfinite(loss.detach()).float()
        if self.accelerator.num_processes > 1:
            finite = self.accelerator.reduce(finite.reshape(1), reduction="mean").reshape(())
        if finite.item() < 1.0:
            raise NonFiniteLossError(
                f"the training loss is {loss.item()} at step {self.state.global_step + 1} "
                f"(epoch {self.state.epoch or 0:.2f}); training stopped before that update. "
                f"The last good checkpoint is {self._last_checkpoint_description()}."
            )
        if model.training:
            for name in ("cross_entropy_loss", "center_loss", "coupling_loss"):
                value = outputs.get(name)
                if value is not None:
                    self._loss_terms[name] = self._loss_terms.get(name, 0.0) + float(value.detach())
            self._loss_term_count += 1
        return (loss, outputs) if return_outputs else loss

    def _last_checkpoint_description(self) -> str:
        from transformers.trainer_utils import get_last_checkpoint

        output_dir = self.args.output_dir
        last = get_last_checkpoint(output_dir) if output_dir and os.path.isdir(output_dir) else None
        return last if last else f"none yet in {output_dir}"

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs and self._loss_term_count:
            for name, total in self._loss_terms.items():
                logs[name] = round(total / self._loss_term_count, 6)
            self._loss_terms, self._loss_term_count = {}, 0
        super().log(logs, start_time)

    # -- validation --------------------------------------------------------------------------

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        if not self.validation_protocol:
            return {}
        from . import evaluation

        model = self.accelerator.unwrap_model(self.model)
        was_training = model.training
        model.eval()
        try:
            if self.validation_protocol == "verification":
                results = evaluation.evaluate_verification(
                    model,
                    self.validation["pairs"],
                    sizes=self.validation_sizes,
                    batch_size=self.args.per_device_eval_batch_size,
                    accelerator=self.accelerator,
                )
            else:
                results = evaluation.evaluate_identification(
                    model,
                    self.validation["gallery"],
                    self.validation["probe"],
                    batch_size=self.args.per_device_eval_batch_size,
                    accelerator=self.accelerator,
                )
        finally:
            model.train(was_training)
        self.last_validation = results
        metrics = {f"{metric_key_prefix}_{k}": v for k, v in validation_metrics(results).items()}
        self.log(metrics)
        if self.accelerator.is_main_process:
            from .reports import one_line_summary

            logger.warning(f"{metric_key_prefix} at step {self.state.global_step}: {one_line_summary(results)}")
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics


def criterion_metric(protocol: str | None) -> str | None:
    """The validation criterion of the original: mean LR verification accuracy, or rank-1 for SCface."""
    from .evaluation import CRITERIA

    return CRITERIA.get(protocol) if protocol else None


def validation_metrics(results: dict[str, Any]) -> dict[str, float]:
    """Flat scalar metrics of a validation result plus the number of pairs or probes counted."""
    from .evaluation import summary_metrics

    metrics = summary_metrics(results)
    for count in ("num_pairs", "num_gallery"):
        if count in results:
            metrics[count] = float(results[count])
    return metrics


# --------------------------------------------------------------------------------------------
# The whole run
# --------------------------------------------------------------------------------------------


def prepare_training_arguments(
    model_args: ModelArguments, data_args: DataArguments, training_args: DCRTrainingArguments, protocol: str | None
) -> DCRTrainingArguments:
    """Fill the stage-dependent defaults (output folder, best-model criterion)."""
    if training_args.output_dir in (None, "trainer_output"):
        training_args.output_dir = os.path.join("outputs", f"dcr-{model_args.stage}")
    metric = criterion_metric(protocol)
    if metric is None:
        training_args.eval_strategy = "no"
        training_args.load_best_model_at_end = False
        training_args.evaluate_before_training = False
    elif training_args.metric_for_best_model in (None, "loss"):
        training_args.metric_for_best_model = metric
        training_args.greater_is_better = True
    return training_args


def run_training(
    model_args: ModelArguments,
    data_args: DataArguments,
    training_args: DCRTrainingArguments,
    callbacks: list | None = None,
) -> dict[str, Any]:
    """Train one stage end to end; returns the final validation results and the output folder."""
    check_arguments(model_args, data_args, training_args)
    set_seed(training_args.seed)
    data = load_training_data(data_args, model_args.image_size)
    training_args = prepare_training_arguments(model_args, data_args, training_args, data.validation_protocol)
    push_to_hub, hub_model_id = training_args.push_to_hub, training_args.hub_model_id
    # We push the finished, complete folder ourselves (weights, code, processor, card), once.
    training_args.push_to_hub = False
    if push_to_hub and not hub_model_id:
        raise ValueError("--push_to_hub needs --hub_model_id org/name.")

    model = build_model(model_args, data.num_labels, data.id2label)
    config = model.config
    if data.real_low_resolution and config.use_branches:
        raise ValueError(
            "fine-tuning a branch model on real LR images is not supported: their distances do not name the "
            f"branch sizes {config.low_resolution_sizes}; fine-tune the trunk, then train the branches."
        )
    if model_args.sync_batch_norm and training_args.world_size > 1:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if model_args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    processor = DCRImageProcessor(
        image_size=config.image_size, image_mean=model_args.image_mean, image_std=model_args.image_std
    )

    from .evaluation import transform_options as processor_transform_options

    # The training transforms preprocess exactly as the saved processor does.
    transform_options = {**processor_transform_options(model, processor), "strict": data_args.strict_data}
    # The flip is drawn in the training step (see `DCRTrainer._flip`), so a resume is exact.
    random_flip = data_args.augmentation == "flip"
    loader_augmentation = "none" if random_flip else data_args.augmentation
    if data.real_low_resolution:
        transform = FinetuneTransform(augmentation=loader_augmentation, **transform_options)
    else:
        transform = TrainTransform(
            low_resolution_sizes=config.low_resolution_sizes,
            augmentation=loader_augmentation,
            defer_low_resolution=data_args.defer_low_resolution,
            **transform_options,
        )
    train_dataset = apply_transform(data.train, transform)

    callbacks = list(callbacks or [])
    if training_args.early_stopping_patience is not None:
        if data.validation_protocol:
            callbacks.append(EarlyStoppingCallback(early_stopping_patience=training_args.early_stopping_patience))
        else:
            logger.warning("--early_stopping_patience is ignored: there is no validation set to watch.")

    trainer = DCRTrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        # Our `evaluate` reads `validation`; the Trainer only checks that a validation set exists.
        eval_dataset=next(iter(data.validation.values()), None),
        processing_class=processor,
        callbacks=callbacks,
        validation=data.validation,
        validation_protocol=data.validation_protocol,
        validation_sizes=data_args.validation_sizes or list(config.low_resolution_sizes),
        deferred_low_resolution_sizes=list(config.low_resolution_sizes) if data_args.defer_low_resolution else None,
        samples_per_class=data_args.samples_per_class,
        random_flip=random_flip,
    )

    before = None
    if training_args.evaluate_before_training and not training_args.resume_from_checkpoint:
        trainer.evaluate(metric_key_prefix="before")
        before = trainer.last_validation
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)

    after = None
    if data.validation_protocol:
        trainer.evaluate(metric_key_prefix="final")
        after = trainer.last_validation
    trainer.save_model(training_args.output_dir)
    trainer.save_state()

    result = {"output_dir": training_args.output_dir, "before": before, "after": after,
              "validation_name": data.validation_name, "protocol": data.validation_protocol, "table": None}
    if trainer.is_world_process_zero():
        _finish_folder(model_args, data_args, training_args, trainer, result, push_to_hub, hub_model_id)
    trainer.accelerator.wait_for_everyone()
    return result


def training_recipe(model_args: ModelArguments, data_args: DataArguments, training_args: DCRTrainingArguments,
                    trainer: DCRTrainer) -> dict[str, Any]:
    """The settings worth putting on a model card."""
    return {
        "stage": model_args.stage,
        "dataset": data_args.dataset,
        "architecture": model_args.architecture,
        "low_resolution_sizes": model_args.low_resolution_sizes,
        "augmentation": data_args.augmentation,
        "optimizer": training_args.optim if isinstance(training_args.optim, str) else training_args.optim.value,
        "learning_rate": training_args.learning_rate,
        "lr_schedule": f"x0.1 at epochs {training_args.lr_milestones}" if training_args.lr_milestones
        else str(getattr(training_args.lr_scheduler_type, "value", training_args.lr_scheduler_type)),
        "weight_decay": training_args.weight_decay,
        "epochs": training_args.num_train_epochs,
        "global_batch_size": training_args.per_device_train_batch_size * trainer.accelerator.num_processes
        * training_args.gradient_accumulation_steps,
        "steps": trainer.state.global_step,
        "seed": training_args.seed,
        "trunk": model_args.trunk,
        "init_from": model_args.init_from,
        "specialized_initialization": model_args.stage == "branch" and not model_args.random_branch_init,
    }


def _finish_folder(model_args, data_args, training_args, trainer, result, push_to_hub, hub_model_id) -> None:
    """Model card, results.json and (optionally) the push of the complete folder."""
    from . import hub, reports

    output_dir = Path(training_args.output_dir)
    recipe = training_recipe(model_args, data_args, training_args, trainer)
    rows = {}
    if result["before"] is not None:
        rows[f"{model_args.stage} (start)"] = result["before"]
    if result["after"] is not None:
        rows[f"{model_args.stage} (trained)"] = result["after"]
    (output_dir / "training_recipe.json").write_text(json.dumps(recipe, indent=2, default=str))
    if rows:
        result["table"] = reports.format_results_table(rows)
    hub.write_model_card(
        output_dir,
        repo_id=hub_model_id,
        training_recipe=recipe,
        results=result["after"],
        dataset_name=VALIDATION_CARD_NAMES.get(result["validation_name"], result["validation_name"]),
        base_model=model_args.trunk if model_args.stage == "branch" else model_args.init_from,
    )
    if push_to_hub:
        result["pushed"] = hub.push_folder_to_hub(output_dir, hub_model_id, commit_message=f"DCR {model_args.stage} stage")
