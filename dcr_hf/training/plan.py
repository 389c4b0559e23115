"""The plan of a training run: the parsed arguments turned, in one place, into what the run builds.

`plan_training(model_args, data_args, training_args)` checks every option once, before any data is
read or any model is built, each bad value failing with one line, and returns a `TrainingPlan`:

- `config`: the complete `DCRConfig` of the model to train (its labels excepted: they come with
  the data). A new trunk's: `DCRConfig`'s defaults, the `--architecture` preset, then every field
  given; a branch / finetune stage's: the config of `--trunk` / `--init_from` with the settings
  given for this stage. `DCRConfig` validates its own fields (sizes, head, mining, degradation);
  the plan adds only the rules between options;
- `processor`: the stage's `DCRImageProcessor` (the source model's for a branch / finetune stage);
- `data`: a `DataSpec`, the dataset, its options, the validation set, protocol and sizes;
- `training_args`: the `TrainingArguments`, completed (output folder, the checkpoint to resume,
  the best-model criterion, pinned memory) and, with `--push_to_hub`, the checked repo (`push`).

The run (`run.run_training`) builds data, model and Trainer from the plan alone. One option's path,
`--degradation surveillance`: `command.parse_arguments` (`ModelArguments.degradation`, a string)
-> `plan_training` -> `degradation.resolve_degradation` (the preset or JSON file read and checked:
the one place) -> `DCRConfig(degradation=...)` (`plan.config`, saved in config.json) ->
`run.run_training` -> `run.train_transform` (`degradation_for(plan.config.degradation)`, the LR
copies of every training batch).

Where each option is checked (once):

- here: `--stage` with `--trunk` / `--init_from`; `--degradation` against the dataset (real LR
  images take none); `--validation_sizes` (against the model's `image_size`); `--samples_per_class`
  with the batch size (a multiple of it, at least 2 identities per batch); `--divergence_factor`;
  for a branch / finetune stage, the source model's files and `--image_size`,
  `--low_resolution_sizes`, `--head`, `--image_mean` / `--image_std` against the source's;
  `--push_to_hub` with `--hub_model_id` and the repo (`prepare_push`);
  `--partial_fc` / `--partial_fc_rate` (trunk stage, no trunk miner, a resume on the checkpoint's
  number of processes: `partial_fc_trainer.check_shard_files`);
- `degradation.resolve_degradation`, called here: the `--degradation` preset or JSON file;
- `check_schedule`, here: `--max_steps`, `--num_train_epochs`, `--learning_rate`, `--weight_decay`
  (a run that would train nothing, a NaN / infinite / negative rate or decay; a rate above 10 warned);
  `check_optimizer_settings`, here: `--adam_beta1`, `--adam_beta2`, `--adam_epsilon`, `--warmup_steps`,
  `--max_grad_norm` (NaN, infinite, negative, betas outside [0, 1));
- `run.check_training_labels`, when the training labels are first read (before the validation data,
  the model and training): fewer than 2 identities, labels outside the classes, and with
  `--samples_per_class` too few identities with enough images for one batch;
- `precision.check_precision`, called here: `--fp16` / `--bf16` on a CPU;
- the data registry, called here: `--dataset`, `--data_root`, `--validation_dataset`;
  `data.augment.check_augmentation`: `--augmentation`;
- `DCRConfig`: every model field (`--depths`, `--hidden_sizes`, `--low_resolution_sizes`,
  `--head`, `--margin`, `--margin_scale`, the miners and loss weights, the resolved degradation);
- `checkpoints.check_output_dir` / `resolve_resume_checkpoint`, called here: `--output_dir`,
  `--overwrite_output_dir`, `--resume_from_checkpoint`; `lock.check_unlocked`, called here: an
  `--output_dir` another live run holds (`run.run_training` takes the lock and repeats the check);
- at parsing (`command.parse_arguments`): types and choices (argparse), the Trainer options DCR
  refuses, `TrainingArguments`' own checks.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

import torch
from transformers.utils import logging

from ..errors_dcr import DCRInputError
from ..configuration_dcr import DCRConfig, check_low_resolution_sizes
from ..data import registry
from ..data.augment import check_augmentation
from ..degradation import resolve_degradation
from ..evaluation import CRITERIA
from ..hub import load_image_processor
from ..image_processing_dcr import DCRImageProcessor
from ..model_files import check_model_source, load_config
from .arguments import ARCHITECTURES, DataArguments, DCRTrainingArguments, ModelArguments
from .checkpoints import check_output_dir, resolve_resume_checkpoint
from .lock import check_unlocked
from .precision import check_precision

logger = logging.get_logger(__name__)


@dataclass
class DataSpec:
    """The data of a run: what `run.load_training_data` reads and how batches are made."""

    dataset: str  # a registered dataset, a prepared folder or a Hub dataset id
    options: DataArguments  # the dataset options (`registry.DatasetOptions`) of the training set
    image_size: int  # the model's input side (sizes the synthetic faces)
    max_train_samples: int | None
    validation_name: str | None  # registry name of the validation dataset, `None`: no validation
    validation_protocol: str | None  # "verification" | "identification" | None
    validation_options: DataArguments  # `options` with `--validation_data_root` when given
    validation_sizes: list[int]  # the LR sizes validated at
    augmentation: str
    samples_per_class: int | None
    batch_size: int  # per device: the M-per-class sampler's batches hold `batch_size // samples_per_class` identities
    defer_low_resolution: bool  # augmentation and LR copies in the training step, on its device


@dataclass
class TrainingPlan:
    """Everything a run builds, resolved and checked (see the module)."""

    stage: str
    config: DCRConfig  # the model's config, labels excepted
    config_overrides: dict[str, Any]  # what this stage sets on the source model's config (branch, finetune)
    processor: DCRImageProcessor
    source: str | None  # `--trunk` / `--init_from`, `None` for a new trunk
    source_option: str | None  # "--trunk" / "--init_from"
    architecture: str | None  # the trunk preset of a new trunk
    specialized_initialization: bool  # branch stage: branches start as the trunk
    freeze_trunk: bool  # branch / finetune of a branch model
    sync_batch_norm: bool
    channels_last: bool
    data: DataSpec
    training_args: DCRTrainingArguments
    resume: str | None  # the checkpoint to resume from
    push: dict[str, Any] | None  # `--push_to_hub`: the checked repo id, token, privacy, revision
    partial_fc_rate: float | None = None  # `--partial_fc`: the sampling rate of the sharded classifier; None: off


def plan_training(
    model_args: ModelArguments, data_args: DataArguments, training_args: DCRTrainingArguments
) -> TrainingPlan:
    """The checked plan of a run (see the module); raises `ValueError` / `OSError` in one line."""
    stage = model_args.stage
    source = _check_stage(model_args)
    source_option = {"branch": "--trunk", "finetune": "--init_from"}.get(stage)
    degradation = _resolve_degradation(model_args.degradation, data_args.dataset)
    _check_data_options(data_args, training_args)
    check_precision(training_args)
    check_schedule(training_args)
    check_optimizer_settings(training_args)
    if not training_args.divergence_factor >= 0:
        raise DCRInputError(f"--divergence_factor must be >= 0 (0: no bound), got {training_args.divergence_factor}.")
    resume = _check_output_folder(training_args, stage, source, source_option)
    partial_fc_rate = _check_partial_fc(model_args, stage, training_args, resume)
    if resume is not None and registry.streams_from_hub(data_args.dataset, data_args):
        from ..data.stream import check_stream_checkpoint

        check_stream_checkpoint(resume, int(os.environ.get("WORLD_SIZE", "1")))  # the launcher's, as for --partial_fc

    overrides = {**model_args.config_settings(), **degradation}
    if source is None:
        config = new_trunk_config(model_args, overrides)
        processor = DCRImageProcessor(image_size=config.image_size, **_normalization(model_args))
    else:
        overrides["freeze_batch_norm"] = model_args.freeze_batch_norm
        config = stage_config(model_args, source, source_option, overrides)
        processor = source_processor(model_args, source, config.image_size)
    if registry.has_real_low_resolution_probes(data_args.dataset) and config.use_branches:
        raise DCRInputError(
            "fine-tuning a branch model on real LR images is not supported: their distances do not name the "
            f"branch sizes {config.low_resolution_sizes}; fine-tune the trunk, then train the branches."
        )
    data = data_spec(data_args, config, training_args.per_device_train_batch_size)
    push = prepare_push(training_args)
    complete_training_arguments(training_args, data.validation_protocol)
    return TrainingPlan(
        stage=stage, config=config, config_overrides=overrides, processor=processor, source=source,
        source_option=source_option, architecture=model_args.architecture if source is None else None,
        specialized_initialization=not model_args.random_branch_init, freeze_trunk=not model_args.unfreeze_trunk,
        sync_batch_norm=model_args.sync_batch_norm, channels_last=model_args.channels_last, data=data,
        training_args=training_args, resume=resume, push=push, partial_fc_rate=partial_fc_rate,
    )


def _check_partial_fc(model_args: ModelArguments, stage: str, training_args: DCRTrainingArguments,
                      resume: str | None) -> float | None:
    """`--partial_fc` / `--partial_fc_rate`: the sampling rate, `None` without sharding."""
    rate = model_args.partial_fc_rate
    if not model_args.partial_fc:
        if rate != 1.0:
            raise DCRInputError(f"--partial_fc_rate {rate:g} needs --partial_fc true (the sharded classifier samples classes).")
        return None
    if not (0.0 < rate <= 1.0):
        raise DCRInputError(f"--partial_fc_rate must be in (0, 1] (the fraction of each shard's classes a step uses), got {rate:g}.")
    if stage != "trunk":
        raise DCRInputError(f"--partial_fc shards the trunk stage's classifier; --stage {stage} trains its own classifiers unsharded.")
    if model_args.trunk_miner not in (None, "none"):
        raise DCRInputError(f"--partial_fc uses the center loss; --trunk_miner {model_args.trunk_miner} mines against "
                            "every class center, which no process holds.")
    if model_args.head == "adaface":
        # AdaFace's margin needs each sample's feature norm and the batch norm statistics, which the
        # sharded loss does not carry (yet): refused rather than trained without its margin.
        raise DCRInputError("--partial_fc does not support --head adaface (its norm-adaptive margin is not sharded); "
                            "use --head arcface or cosface with --partial_fc, or adaface unsharded.")
    if resume is not None:
        from .partial_fc_trainer import check_shard_files

        # The launcher's WORLD_SIZE: the Trainer's own count would set up the processes before the data is read.
        check_shard_files(resume, int(os.environ.get("WORLD_SIZE", "1")))
    return rate


# -- the options between them ---------------------------------------------------------------------


def _check_stage(model_args: ModelArguments) -> str | None:
    """The model the stage starts from (`--trunk` / `--init_from`), given where the stage needs it."""
    if model_args.stage == "branch" and not model_args.trunk:
        raise DCRInputError("--stage branch needs --trunk PATH_OR_HUB_ID (a trained trunk-stage model).")
    if model_args.stage == "finetune" and not model_args.init_from:
        raise DCRInputError("--stage finetune needs --init_from PATH_OR_HUB_ID (the model to fine-tune).")
    if model_args.stage == "trunk" and (model_args.trunk or model_args.init_from):
        raise DCRInputError("--trunk and --init_from belong to --stage branch / finetune, not to --stage trunk.")
    return model_args.source


def _resolve_degradation(value: str | None, dataset: str) -> dict[str, Any]:
    """`{"degradation": settings}` of `--degradation` (`None` for 'none'), `{}` when not given (a
    branch / finetune stage keeps its source model's)."""
    if value is None:
        return {}
    if value != "none" and registry.has_real_low_resolution_probes(dataset):
        raise DCRInputError(f"--degradation {value}: --dataset {dataset} trains on real LR images, which are used "
                            "as they are; the degradation model applies to simulated LR copies.")
    return {"degradation": resolve_degradation(value)}


def _check_data_options(data_args: DataArguments, training_args: DCRTrainingArguments) -> None:
    registry.check_training_dataset(data_args.dataset, data_args)
    registry.validation_for(data_args.dataset, data_args.validation_dataset)
    check_augmentation(data_args.augmentation)
    per_class = data_args.samples_per_class
    if per_class is not None and per_class < 1:
        raise DCRInputError(f"--samples_per_class must be a positive number of images per identity, got {per_class}.")
    batch = training_args.per_device_train_batch_size
    if registry.streams_from_hub(data_args.dataset, data_args):
        check_stream_options(data_args, training_args)
    elif data_args.num_classes is not None:
        raise DCRInputError(f"--num_classes {data_args.num_classes} applies to a streamed Hub dataset (--streaming true "
                            "with a Hub id or a folder of parquet shards); other datasets name their classes.")
    if per_class is not None and batch % per_class:
        raise DCRInputError(f"--per_device_train_batch_size {batch} must be a multiple of --samples_per_class {per_class}.")
    if per_class is not None and batch // per_class < 2:
        # A batch of one identity has no negatives: the softmax and the center terms see one class.
        raise DCRInputError(
            f"--per_device_train_batch_size {batch} with --samples_per_class {per_class} holds {batch // per_class} "
            f"identity per batch; the M-per-class sampler needs at least 2 (a batch of at least {2 * per_class})."
        )


def check_stream_options(data_args: DataArguments, training_args: DCRTrainingArguments) -> None:
    """The options a streamed Hub dataset (`data.stream.IdentityBatchStream`) needs, and the ones it
    cannot serve, refused in one line before anything is read; the data skip of a resume is turned off
    (the stream's state saved in the checkpoint continues it instead)."""
    source = data_args.dataset
    if data_args.samples_per_class is None:
        raise DCRInputError(f"--streaming {source}: give --samples_per_class K (a stream is batched as P identities x "
                            "K images, gathered in a buffer; there is no label list to sample from).")
    if training_args.max_steps is None or training_args.max_steps <= 0:
        raise DCRInputError(f"--streaming {source}: give --max_steps N (a stream has no length, so epochs cannot be counted).")
    if training_args.lr_milestones:
        raise DCRInputError(f"--lr_milestones are epochs; --streaming {source} has no length to count them by: use "
                            "--lr_scheduler_type with --max_steps.")
    if training_args.dataloader_num_workers:
        # The buffer and the stream's position live in the process that iterates: in workers they
        # would not reach the checkpoint, and a resume would not be exact.
        raise DCRInputError(f"--streaming {source} batches in the training process (its state goes into the checkpoint): "
                            f"--dataloader_num_workers must be 0, got {training_args.dataloader_num_workers}.")
    if data_args.stream_buffer_images < training_args.per_device_train_batch_size:
        raise DCRInputError(f"--stream_buffer_images {data_args.stream_buffer_images} cannot hold one batch of "
                            f"{training_args.per_device_train_batch_size} images (--per_device_train_batch_size).")
    if data_args.num_classes is not None and data_args.num_classes < 2:
        raise DCRInputError(f"--num_classes must be at least 2 identities, got {data_args.num_classes}.")
    training_args.ignore_data_skip = True


#: A learning rate above this is most likely a typo (DCR trains at 1e-3 .. 1e-1): the run is warned.
MAX_LEARNING_RATE = 10.0


def check_schedule(training_args: DCRTrainingArguments) -> None:
    """Refuse a run that would train nothing or train on nonsense: `--max_steps 0` (the Trainer
    would still take one step and save a model), `--num_train_epochs <= 0` without `--max_steps`,
    a NaN, infinite or negative `--learning_rate` or `--weight_decay` (the optimizer refused some
    of these only after the data were built and a validation pass ran). A rate above
    `MAX_LEARNING_RATE` is warned, not refused: the divergence guard stops such a run at its first
    logged loss, and tests use one on purpose; 0 is allowed (a run that only re-estimates statistics)."""
    steps, epochs = training_args.max_steps, training_args.num_train_epochs
    if steps == 0 or steps < -1:
        raise DCRInputError(f"--max_steps must be a positive number of optimizer steps (or -1: use --num_train_epochs), got {steps}.")
    if steps < 0 and not (math.isfinite(epochs) and epochs > 0):
        raise DCRInputError(f"--num_train_epochs must be a positive number of epochs (or give --max_steps), got {epochs:g}.")
    for option, value in (("--learning_rate", training_args.learning_rate), ("--weight_decay", training_args.weight_decay)):
        if not (math.isfinite(value) and value >= 0):
            raise DCRInputError(f"{option} must be a finite number >= 0, got {value:g}.")
    if training_args.learning_rate > MAX_LEARNING_RATE:
        logger.warning(f"--learning_rate {training_args.learning_rate:g} is above {MAX_LEARNING_RATE:g}: expect the "
                       "run to diverge (DCR trains at 1e-3 .. 1e-1).")


def check_optimizer_settings(training_args: DCRTrainingArguments) -> None:
    """Refuse the optimizer's and the scheduler's numbers that make no sense, before any data is
    read (NaN passes `TrainingArguments`' own `< 0` checks and the optimizer's, then fails or
    silently does nothing mid-run): `--adam_beta1` / `--adam_beta2` outside [0, 1), a NaN,
    infinite or negative `--adam_epsilon` or `--warmup_steps`, a NaN or negative `--max_grad_norm`
    (the Trainer clips only when it is > 0: NaN or -1 would silently turn clipping off; 0 turns
    it off on purpose, inf clips nothing)."""
    for option in ("adam_beta1", "adam_beta2"):
        value = getattr(training_args, option)
        if not 0 <= value < 1:  # NaN fails too
            raise DCRInputError(f"--{option} must be a number in [0, 1), got {value:g}.")
    for option in ("adam_epsilon", "warmup_steps"):
        value = getattr(training_args, option)
        if not (math.isfinite(value) and value >= 0):
            raise DCRInputError(f"--{option} must be a finite number >= 0, got {value:g}.")
    if not training_args.max_grad_norm >= 0:
        raise DCRInputError(
            f"--max_grad_norm must be a number >= 0 (0: no clipping), got {training_args.max_grad_norm:g}."
        )


def _check_output_folder(training_args: DCRTrainingArguments, stage: str, source: str | None,
                         source_option: str | None) -> str | None:
    """Fill the default output folder, resolve `--resume_from_checkpoint` (`True` / `last` -> the newest
    valid checkpoint) and refuse an output folder that would destroy finished work or that another
    live run holds (`lock`). Returns the checkpoint to resume from, or `None`."""
    if training_args.output_dir in (None, "trainer_output"):
        training_args.output_dir = os.path.join("outputs", f"dcr-{stage}")
    if training_args.process_index == 0:  # the main process takes the lock (`run_training`); the others never do
        check_unlocked(training_args.output_dir)  # first: a live run's folder is in use, whatever it holds
    resume = resolve_resume_checkpoint(training_args.resume_from_checkpoint, training_args.output_dir)
    check_output_dir(training_args.output_dir, source, source_option, training_args.overwrite_output_dir,
                     resuming=resume is not None)
    training_args.resume_from_checkpoint = resume
    return resume


# -- the model ------------------------------------------------------------------------------------


def new_trunk_config(model_args: ModelArguments, settings: dict[str, Any]) -> DCRConfig:
    """The config of a new trunk: `DCRConfig`'s defaults, the preset, then every field given."""
    values: dict[str, Any] = dict(ARCHITECTURES[model_args.architecture])
    shape = ("layer_type", "depths", "hidden_sizes", "embedding_size", "image_size", "low_resolution_sizes")
    values.update({name: getattr(model_args, name) for name in shape if getattr(model_args, name) is not None})
    values.update(settings)
    return DCRConfig(
        trunk_type=model_args.trunk_type,
        use_batch_norm=model_args.use_batch_norm,
        normalize_embeddings=model_args.normalize_embeddings,
        branch_hidden_size=values.get("embedding_size", DCRConfig.embedding_size),
        freeze_batch_norm=model_args.freeze_batch_norm,
        **values,
    )


def stage_config(model_args: ModelArguments, source: str, option: str, overrides: dict[str, Any]) -> DCRConfig:
    """The config of a branch / finetune stage: the source model's (read and checked, its weight
    files too), with `overrides`; a different `--image_size`, `--low_resolution_sizes` or `--head`
    than the source's is refused (its weights were trained for them)."""
    config = load_config(DCRConfig, source, option)
    if config.model_type != DCRConfig.model_type:
        raise DCRInputError(f"{source} is not a DCR model (model_type={config.model_type!r}).")
    check_model_source(source, option)  # its weight files too, before any data is read
    for name in ("image_size", "low_resolution_sizes", "head"):
        given = getattr(model_args, name)
        if given is not None and given != getattr(config, name):
            raise DCRInputError(
                f"{source} was trained with {name}={getattr(config, name)!r}, but --{name} is {given!r}; "
                f"leave --{name} out to use the model's."
            )
    values = {**config.to_dict(), **overrides}
    if model_args.stage == "branch":
        # As the branch model is built around the trunk (`dcr_hf.branch_model_from_trunk`).
        values.update(use_branches=True, freeze_trunk=not model_args.unfreeze_trunk)
        values.pop("auto_map", None)
    return DCRConfig.from_dict(values)


def _normalization(model_args: ModelArguments) -> dict[str, list[float]]:
    return {name: getattr(model_args, name) for name in ("image_mean", "image_std") if getattr(model_args, name) is not None}


def source_processor(model_args: ModelArguments, source: str, image_size: int) -> DCRImageProcessor:
    """The processor saved with the source model; a different `--image_mean` / `--image_std` is
    refused, not silently ignored."""
    processor = load_image_processor(source, image_size)
    for name, value in _normalization(model_args).items():
        if [float(v) for v in value] != list(getattr(processor, name)):
            raise DCRInputError(
                f"{source} was trained with {name}={getattr(processor, name)}, but --{name} is {value}; "
                f"leave --{name} out to use the model's."
            )
    return processor


# -- the data and the Trainer ---------------------------------------------------------------------


def data_spec(data_args: DataArguments, config: DCRConfig, batch_size: int) -> DataSpec:
    """The `DataSpec` of the arguments, for a model of `config` trained in per-device batches of
    `batch_size`; `--validation_sizes` checked here."""
    name, protocol = registry.validation_for(data_args.dataset, data_args.validation_dataset)
    validation_options = data_args
    if data_args.validation_data_root is not None:
        validation_options = DataArguments(**{**registry.options_dict(data_args), "data_root": data_args.validation_data_root})
    sizes = list(config.low_resolution_sizes)
    if data_args.validation_sizes:
        sizes = check_low_resolution_sizes(data_args.validation_sizes, config.image_size, name="--validation_sizes")
    return DataSpec(
        dataset=data_args.dataset, options=data_args, image_size=config.image_size,
        max_train_samples=data_args.max_train_samples, validation_name=name, validation_protocol=protocol,
        validation_options=validation_options, validation_sizes=sizes, augmentation=data_args.augmentation,
        samples_per_class=data_args.samples_per_class, batch_size=batch_size,
        # Default true: on an accelerator, and on a CPU too, where it was measured as fast or faster
        # (`benchmarks/bench_data.py`).
        defer_low_resolution=True if data_args.defer_low_resolution is None else data_args.defer_low_resolution,
    )


def prepare_push(training_args: DCRTrainingArguments) -> dict[str, Any] | None:
    """With `--push_to_hub`: check the token, the repo and write access now, before training
    (`hub.prepare_hub_repo`), and take the token out of the arguments, so that no file the run
    writes (`training_args.bin` pickles the arguments) holds it. Returns the push settings."""
    token, training_args.hub_token = training_args.hub_token, None
    push, training_args.push_to_hub = training_args.push_to_hub, False  # we push the finished folder ourselves, once
    if not push:
        return None
    if not training_args.hub_model_id:
        raise DCRInputError("--push_to_hub needs --hub_model_id org/name.")
    settings = {"token": token, "private": training_args.hub_private_repo, "revision": training_args.hub_revision}
    repo_id = training_args.hub_model_id
    if training_args.should_save:  # the main process pushes
        from .. import hub

        repo_id = hub.prepare_hub_repo(repo_id, **settings)
    return {"repo_id": repo_id, **settings}


def complete_training_arguments(training_args: DCRTrainingArguments, protocol: str | None) -> DCRTrainingArguments:
    """Fill the defaults that depend on the validation protocol (best-model criterion) and the
    device (pinned memory)."""
    if training_args.device.type == "cpu":
        # Pinned memory only helps copies to an accelerator; on CPU torch warns once per DataLoader.
        training_args.dataloader_pin_memory = False
    else:
        if training_args.dataloader_pin_memory:
            # Batches from pinned memory copied without waiting: the step's work queues behind the copy.
            training_args.accelerator_config.non_blocking = True
        if training_args.device.type == "cuda":
            # Every training batch has the same shapes: cuDNN may pick its convolution algorithms once, by timing.
            torch.backends.cudnn.benchmark = True
    metric = CRITERIA.get(protocol) if protocol else None
    if metric is None:
        training_args.eval_strategy = "no"
        training_args.load_best_model_at_end = False
        training_args.evaluate_before_training = False
    elif training_args.metric_for_best_model in (None, "loss"):
        training_args.metric_for_best_model = metric
        training_args.greater_is_better = True
    return training_args


__all__ = [
    "MAX_LEARNING_RATE", "DataSpec", "TrainingPlan", "check_optimizer_settings", "check_schedule", "check_stream_options", "complete_training_arguments", "data_spec", "new_trunk_config", "plan_training",
    "prepare_push", "source_processor", "stage_config",
]
