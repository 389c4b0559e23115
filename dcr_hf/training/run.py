"""One training stage end to end, from its plan (`plan.TrainingPlan`): data, model, the Trainer,
train, validate, the finished folder (card, recipe, push)."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from datasets import Dataset, DatasetDict, IterableDataset
from transformers import EarlyStoppingCallback, set_seed
from transformers.utils import logging

from ..errors_dcr import DCRInputError
from ..configuration_dcr import DCRConfig
from ..data import registry
from ..data.stream import IdentityBatchStream
from ..data.transforms import FinetuneTransform, TrainTransform, apply_transform
from ..degradation import degradation_for
from ..image_processing_dcr import DCRImageProcessor
from ..saving import write_text_atomic
from .checkpoints import check_output_dir, finished_message, remove_previous_checkpoints
from ..host_memory import keep_freed_memory
from .interrupt import StopOnSignal
from .lock import LOCK_FILE, RunLock
from .mining import build_miner
from .model import build_model
from .plan import DataSpec, TrainingPlan
from .trainer import DCRTrainer

logger = logging.get_logger(__name__)


@dataclass
class TrainingData:
    """The untransformed training set and what validates the run."""

    train: Dataset
    num_labels: int
    id2label: dict[int, str]
    real_low_resolution: bool  # rows carry real LR images (SCface fine-tune form)
    validation: Dataset | DatasetDict | None
    validation_protocol: str | None  # "verification" | "identification" | None
    validation_name: str | None  # registry name of the validation dataset


def load_training_data(spec: DataSpec) -> TrainingData:
    """The training split and the validation data of the spec, from the dataset registry; the
    training labels are checked (`check_training_labels`) as soon as they are read, before the
    validation data."""
    split = registry.load_training_split(spec.dataset, spec.options, spec.image_size)
    if isinstance(split.dataset, IterableDataset):  # a streamed Hub dataset (`registry.streams_from_hub`)
        return _stream_data(spec, split)
    train = split.dataset
    if spec.max_train_samples is not None:
        train = train.select(range(min(spec.max_train_samples, len(train))))
    labels = training_labels(train)
    label_feature = train.features["label"]
    num_labels = getattr(label_feature, "num_classes", None) or (int(labels.max()) + 1 if labels.size else 0)
    check_training_labels(labels, num_labels, spec.samples_per_class, spec.batch_size)
    names = getattr(label_feature, "names", None) or [str(i) for i in range(num_labels)]
    validation = _validation_data(spec)
    return TrainingData(
        train=train, num_labels=num_labels, id2label={i: str(n) for i, n in enumerate(names)},
        real_low_resolution=split.real_low_resolution, validation=validation,
        validation_protocol=spec.validation_protocol, validation_name=spec.validation_name,
    )


def _validation_data(spec: DataSpec) -> Dataset | DatasetDict | None:
    if spec.validation_name is None:
        return None
    return registry.load_protocol_data(spec.validation_name, spec.validation_protocol, spec.validation_options,
                                       spec.image_size)


def _stream_data(spec: DataSpec, split: registry.TrainingSplit) -> TrainingData:
    """A streamed Hub dataset as P x K batches (`data.stream.IdentityBatchStream`); its labels are
    checked as they are read, and its classes named by its `ClassLabel` (`generic.load_face_stream`)."""
    stream = split.dataset
    if spec.max_train_samples is not None:
        stream = stream.take(spec.max_train_samples)
    label_feature = stream.features["label"]
    batches = IdentityBatchStream(stream, label_feature.num_classes, spec.samples_per_class, spec.batch_size,
                                  spec.options.stream_buffer_images)
    validation = _validation_data(spec)
    return TrainingData(
        train=batches, num_labels=label_feature.num_classes, id2label=dict(enumerate(label_feature.names)),
        real_low_resolution=False, validation=validation, validation_protocol=spec.validation_protocol,
        validation_name=spec.validation_name,
    )


def training_labels(train: Dataset) -> np.ndarray:
    """The `label` column of a training set, `[rows]` (no image is decoded)."""
    return np.asarray(train.with_format("numpy")["label"])


def check_training_labels(labels: np.ndarray, num_labels: int, samples_per_class: int | None = None,
                          batch_size: int | None = None) -> None:
    """Refuse training labels a run cannot train on, once, before the model is built or any
    validation runs: a label outside 0..num_labels-1 (the model checks the labels of each batch
    only on a CPU; on an accelerator that would wait for the device every step); fewer than 2
    identities (a 1-class model learns nothing); with `samples_per_class` (the M-per-class
    sampler, batches of `batch_size // samples_per_class` identities with `samples_per_class`
    images each), fewer identities holding that many images than one batch needs. Identities with
    fewer images are warned about: the sampler repeats their images to fill their slots."""
    if labels.size and (labels.min() < 0 or labels.max() >= num_labels):
        bad = int(labels.min()) if labels.min() < 0 else int(labels.max())
        raise DCRInputError(f"the training set has label {bad}, outside 0..{num_labels - 1} (its {num_labels} classes).")
    counts = np.unique(labels, return_counts=True)[1]
    if counts.size < 2:
        raise DCRInputError(
            f"the training set has {counts.size} identit{'y' if counts.size == 1 else 'ies'} ({labels.size} images); "
            "DCR training needs at least 2 identities to tell apart."
        )
    if samples_per_class is None:
        return
    needed = batch_size // samples_per_class
    qualifying = int((counts >= samples_per_class).sum())
    if qualifying < needed:
        raise DCRInputError(
            f"--samples_per_class {samples_per_class} with --per_device_train_batch_size {batch_size} needs {needed} "
            f"identities of at least {samples_per_class} image{'s' * (samples_per_class != 1)} for one batch; the "
            f"training set has {qualifying} (of {counts.size} identities, {labels.size} images)."
        )
    if qualifying < counts.size:
        logger.warning(
            f"{counts.size - qualifying} of the {counts.size} training identities have fewer than {samples_per_class} "
            f"images (--samples_per_class): the M-per-class sampler repeats their images to fill a batch."
        )


def train_transform(data: TrainingData, spec: DataSpec, config: DCRConfig,
                    processor: DCRImageProcessor) -> FinetuneTransform | TrainTransform:
    """The training transform, built from the stage's processor.

    Every random draw happens in the training step (`DCRTrainer`), so a resume is exact: with
    `defer_low_resolution` the whole augmentation runs there; otherwise the loader augments, and only
    the plain flip is drawn in the step. The LR copies go through `config.degradation` when set.
    """
    strict = spec.options.strict_data
    if data.real_low_resolution:
        return FinetuneTransform(processor, augmentation="none" if spec.augmentation == "flip" else spec.augmentation,
                                 strict=strict)
    deferred = spec.defer_low_resolution
    if not deferred and spec.augmentation == "aug_plus":
        logger.warning("--defer_low_resolution false draws aug-plus in the loader workers: a resumed run will not "
                       "repeat the draws of an uninterrupted one (the default, true, draws them in the training step).")
    return TrainTransform(
        processor,
        low_resolution_sizes=config.low_resolution_sizes,
        augmentation=spec.augmentation if deferred or spec.augmentation != "flip" else "none",
        defer_low_resolution=deferred,
        strict=strict,
        degradation=degradation_for(config.degradation),
    )


def route_tracker_logs(training_args: DCRTrainingArguments) -> None:
    """Make trackio write under `<output_dir>/trackio` (TensorBoard's `<output_dir>/runs` is set by
    `DCRTrainer`). trackio reads `TRACKIO_DIR` once, when it is first imported; a `TRACKIO_DIR`
    already set is kept."""
    report_to = training_args.report_to or []
    if "trackio" not in report_to and "all" not in report_to:
        return
    if "trackio" in sys.modules and "TRACKIO_DIR" not in os.environ:
        logger.warning("trackio was imported before the run started: its logs go to its own folder, not under --output_dir.")
        return
    os.environ.setdefault("TRACKIO_DIR", os.path.join(os.path.abspath(training_args.output_dir), "trackio"))


def _callbacks(callbacks: list | None, training_args: DCRTrainingArguments, data: TrainingData) -> list:
    callbacks = list(callbacks or [])
    if training_args.early_stopping_patience is not None:
        if data.validation_protocol:
            callbacks.append(EarlyStoppingCallback(early_stopping_patience=training_args.early_stopping_patience))
        else:
            logger.warning("--early_stopping_patience is ignored: there is no validation set to watch.")
    return callbacks


def run_training(plan: TrainingPlan, callbacks: list | None = None, data: TrainingData | None = None) -> dict[str, Any]:
    """Train one stage end to end from its plan (`plan.plan_training`); returns the validation
    results before and after, and the folder.

    `data`: the training (and validation) data when already loaded, e.g. a dataset built in
    memory; by default it is loaded from `plan.data` (`load_training_data`).
    """
    training_args = plan.training_args
    # One run per output folder (`lock`), held by the main process to the end of the run; the
    # previous-run check the plan made is repeated under the lock, so two runs started together
    # cannot both pass it.
    with RunLock(training_args.output_dir, enabled=training_args.process_index == 0):
        if training_args.process_index == 0:
            check_output_dir(training_args.output_dir, plan.source, plan.source_option,
                             training_args.overwrite_output_dir, resuming=plan.resume is not None)
        return _run_locked(plan, callbacks, data)


def _run_locked(plan: TrainingPlan, callbacks: list | None, data: TrainingData | None) -> dict[str, Any]:
    training_args, config = plan.training_args, plan.config
    if training_args.cpu_memory_reuse and training_args.device.type == "cpu":
        keep_freed_memory()
    set_seed(training_args.seed)
    if data is None:
        data = load_training_data(plan.data)  # its labels checked before the validation data is read
    elif not isinstance(data.train, IdentityBatchStream):  # a stream's labels are checked as they are read
        check_training_labels(training_labels(data.train), data.num_labels, plan.data.samples_per_class,
                              plan.data.batch_size)
    model = build_model(plan, data.id2label)
    # A branch model given HR pixels alone makes its LR copies as the processor does.
    plan.processor.write_to_model_config(model.config)
    if plan.sync_batch_norm and training_args.world_size > 1:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if plan.channels_last:
        model = model.to(memory_format=torch.channels_last)
    route_tracker_logs(training_args)
    transform = train_transform(data, plan.data, config, plan.processor)
    device_side = getattr(transform, "defer_low_resolution", False)
    trainer_class, sharding = DCRTrainer, {}
    if plan.partial_fc_rate is not None:
        from .partial_fc_trainer import PartialFCTrainer

        trainer_class, sharding = PartialFCTrainer, {"partial_fc_rate": plan.partial_fc_rate}
    trainer = trainer_class(
        model=model,
        args=training_args,
        train_dataset=apply_transform(data.train, transform),
        # Our `evaluate` reads `validation`; the Trainer only checks that a validation set exists.
        eval_dataset=next(iter(data.validation.values())) if isinstance(data.validation, DatasetDict) else data.validation,
        processing_class=plan.processor,
        callbacks=_callbacks(callbacks, training_args, data),
        validation=data.validation,
        validation_protocol=data.validation_protocol,
        validation_sizes=plan.data.validation_sizes,
        device_transform=transform if device_side else None,
        samples_per_class=plan.data.samples_per_class,
        random_flip=plan.data.augmentation == "flip" and not device_side,
        miner=build_miner(model.config),
        divergence_factor=training_args.divergence_factor,
        **sharding,
    )
    if plan.resume is not None:
        finished = finished_message(plan.resume, training_args.output_dir, trainer.planned_steps())
        if finished:
            return {"output_dir": training_args.output_dir, "finished": finished}
    elif training_args.overwrite_output_dir and trainer.is_world_process_zero():
        remove_previous_checkpoints(training_args.output_dir)
    result = _train_and_validate(trainer, training_args, data)
    if trainer.is_world_process_zero():
        _finish_folder(plan, trainer, result)
    trainer.accelerator.wait_for_everyone()
    return result


def _train_and_validate(trainer: DCRTrainer, training_args: DCRTrainingArguments, data: TrainingData) -> dict[str, Any]:
    """Validate the starting model, train, validate the final (best) model, save model and metrics
    as the transformers examples do (`train_results.json`, `eval_results.json`, `all_results.json`).
    A run stopped by SIGINT / SIGTERM raises `interrupt.TrainingInterrupted` after training, its
    checkpoint saved and nothing final written."""
    before = None
    if training_args.evaluate_before_training and not training_args.resume_from_checkpoint:
        trainer.evaluate(metric_key_prefix="before")
        before = trainer.last_validation
    # SIGINT / SIGTERM stop at the next step boundary (`interrupt`), with a checkpoint to resume from.
    stop = StopOnSignal(training_args.output_dir, save=training_args.save_on_interrupt)
    trainer.add_callback(stop)
    with stop:
        train_result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    stop.raise_if_stopped()  # nothing final is written from an interrupted run
    trainer.check_finite()  # the final folder is never written from a diverged model
    if trainer.state.best_model_checkpoint and training_args.load_best_model_at_end:
        logger.info(
            f"Loaded the best checkpoint, {trainer.state.best_model_checkpoint} "
            f"({training_args.metric_for_best_model} = {trainer.state.best_metric:.4f})"
        )
    trainer.log_metrics("train", train_result.metrics)
    trainer.save_metrics("train", train_result.metrics)
    after = None
    if data.validation_protocol:
        final = trainer.evaluate(metric_key_prefix="final")
        after = trainer.last_validation
        # The final validation, under the `eval_` names the examples' eval_results.json uses.
        trainer.save_metrics("eval", {"eval_" + key.removeprefix("final_"): value for key, value in final.items()})
    trainer.save_model(training_args.output_dir)
    trainer.save_state()
    return {"output_dir": training_args.output_dir, "before": before, "after": after,
            "validation_name": data.validation_name, "protocol": data.validation_protocol, "table": None}


def _plain(value: Any) -> Any:
    """An argument as a plain JSON value: enum members (`OptimizerNames.ADAMW_TORCH_FUSED`) by their value."""
    return getattr(value, "value", value)


def _head_description(config: DCRConfig) -> str:
    """The classifier head as the card shows it: `softmax`, or e.g. `arcface (s=64, m=0.5)`."""
    if config.head == "softmax":
        return config.head
    extra = ", easy margin" if config.arcface_easy_margin else ""
    if config.head == "adaface":
        extra = f", h={config.adaface_h:g}, t_alpha={config.adaface_t_alpha:g}"
    return f"{config.head} (s={config.margin_scale:g}, m={config.margin:g}{extra})"


def training_recipe(plan: TrainingPlan, trainer: DCRTrainer) -> dict[str, Any]:
    """The settings worth putting on a model card, as plain JSON values; `None` for what does not apply."""
    training_args, data = plan.training_args, plan.data
    config = trainer.accelerator.unwrap_model(trainer.model).config
    milestones = training_args.lr_milestones
    return {
        "stage": plan.stage,
        "dataset": registry.card_name(data.dataset, data.options),
        # Recorded (and shown on the card) only when on: the data then included files outside the data root.
        "follow_symlinks_outside_root": True if data.options.follow_symlinks_outside_root else None,
        "architecture": plan.architecture,
        "head": _head_description(config),
        "low_resolution_sizes": list(config.low_resolution_sizes),
        "augmentation": data.augmentation,
        "optimizer": _plain(training_args.optim),
        "learning_rate": training_args.learning_rate,
        "lr_schedule": f"x0.1 at epochs {', '.join(f'{m:g}' for m in milestones)}" if milestones
        else _plain(training_args.lr_scheduler_type),
        "weight_decay": training_args.weight_decay,
        "epochs": round(trainer.state.epoch or 0.0, 2),  # as trained (max_steps, early stopping)
        "global_batch_size": training_args.per_device_train_batch_size * trainer.accelerator.num_processes
        * training_args.gradient_accumulation_steps,
        "steps": trainer.state.global_step,
        "mixed_precision": "bf16" if training_args.bf16 else "fp16" if training_args.fp16 else None,
        "seed": training_args.seed,
        "trunk": plan.source if plan.stage == "branch" else None,
        "init_from": plan.source if plan.stage == "finetune" else None,
        "specialized_initialization": plan.specialized_initialization if plan.stage == "branch" else None,
        "hub_model_id": training_args.hub_model_id,
    }


def _finish_folder(plan: TrainingPlan, trainer: DCRTrainer, result: dict[str, Any]) -> None:
    """Model card, `training_recipe.json` and (optionally) the push of the complete folder: a failed
    push raises `hub.HubPushError`, which says the folder is saved and how to push it later."""
    from .. import hub, reports

    push, data = plan.push, plan.data
    output_dir = Path(plan.training_args.output_dir)
    hub_model_id = push["repo_id"] if push else plan.training_args.hub_model_id
    recipe = dict(training_recipe(plan, trainer), hub_model_id=hub_model_id)
    rows = {}
    if result["before"] is not None:
        rows[f"{plan.stage} (start)"] = result["before"]
    if result["after"] is not None:
        rows[f"{plan.stage} (trained)"] = result["after"]
    write_text_atomic(output_dir / "training_recipe.json", json.dumps(recipe, indent=2) + "\n")
    if rows:
        result["table"] = reports.format_results_table(rows)
    validation = result["validation_name"]
    hub_dataset = registry.hub_dataset_id(data.dataset, data.options)
    hub.write_model_card(
        output_dir,
        repo_id=hub_model_id,
        training_recipe={key: value for key, value in recipe.items() if key != "hub_model_id"},
        results=result["after"],
        dataset_name=registry.card_name(validation, data.options),
        dataset_type=registry.card_dataset_type(validation, data.options) if validation else None,
        real_low_resolution_probes=registry.has_real_low_resolution_probes(validation) if validation else None,
        training_data=registry.describe_training_data(data.dataset, data.options),
        datasets=[hub_dataset] if hub_dataset else None,
        base_model=hub.model_hub_id(plan.source),
        specialized_initialization=plan.specialized_initialization,
    )
    logger.info(f"Saved the model to {output_dir} (weights, config, processor, pipeline and model card)")
    if push:
        result["pushed"] = hub.push_or_explain(output_dir, commit_message=f"DCR {plan.stage} stage",
                                               ignore_patterns=(*hub.PUSH_IGNORE_PATTERNS, LOCK_FILE), **push)
        result["hub_model_id"] = hub_model_id


__all__ = ["TrainingData", "check_training_labels", "load_training_data", "run_training", "train_transform", "training_labels"]
