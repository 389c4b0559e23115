"""One training stage end to end: data, model and processor, the Trainer, the finished folder."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from datasets import Dataset, DatasetDict
from transformers import EarlyStoppingCallback, set_seed
from transformers.utils import logging

from ..configuration_dcr import DCRConfig
from ..data import registry
from ..data.transforms import FinetuneTransform, TrainTransform, apply_transform
from ..degradation import degradation_for
from ..evaluation import CRITERIA
from ..image_processing_dcr import DCRImageProcessor
from .arguments import DataArguments, DCRTrainingArguments, ModelArguments, check_arguments
from .checkpoints import check_output_dir, finished_message, remove_previous_checkpoints, resolve_resume_checkpoint
from .mining import build_miner
from .model import build_model, build_processor, source_config, source_option
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


def load_training_data(data_args: DataArguments, image_size: int) -> TrainingData:
    """The training split and the validation data named by the arguments, from the dataset registry."""
    split = registry.load_training_split(data_args.dataset, data_args, image_size)
    train = split.dataset
    if data_args.max_train_samples is not None:
        train = train.select(range(min(data_args.max_train_samples, len(train))))
    label_feature = train.features["label"]
    num_labels = getattr(label_feature, "num_classes", None) or int(max(train["label"])) + 1
    names = getattr(label_feature, "names", None) or [str(i) for i in range(num_labels)]
    name, protocol = registry.validation_for(data_args.dataset, data_args.validation_dataset)
    validation = None
    if name is not None:
        options = data_args
        if data_args.validation_data_root is not None:
            options = DataArguments(**{**registry.options_dict(data_args), "data_root": data_args.validation_data_root})
        validation = registry.load_protocol_data(name, protocol, options, image_size)
    return TrainingData(
        train=train, num_labels=num_labels, id2label={i: str(n) for i, n in enumerate(names)},
        real_low_resolution=split.real_low_resolution, validation=validation, validation_protocol=protocol,
        validation_name=name,
    )


def check_output_folder(model_args: ModelArguments, training_args: DCRTrainingArguments) -> str | None:
    """Fill the default output folder, resolve `--resume_from_checkpoint` (`True` / `last` -> the newest
    valid checkpoint) and refuse an output folder that would destroy finished work; before any data
    is read. Returns the checkpoint to resume from, or `None`."""
    if training_args.output_dir in (None, "trainer_output"):
        training_args.output_dir = os.path.join("outputs", f"dcr-{model_args.stage}")
    resume = resolve_resume_checkpoint(training_args.resume_from_checkpoint, training_args.output_dir)
    check_output_dir(training_args.output_dir, model_args.source, source_option(model_args),
                     training_args.overwrite_output_dir, resuming=resume is not None)
    training_args.resume_from_checkpoint = resume
    return resume


def prepare_push(training_args: DCRTrainingArguments) -> dict[str, Any] | None:
    """With `--push_to_hub`: check the token, the repo and write access now, before training
    (`hub.prepare_hub_repo`), and take the token out of the arguments, so that no file the run
    writes (`training_args.bin` pickles the arguments) holds it. Returns the push settings."""
    from .. import hub

    token, training_args.hub_token = training_args.hub_token, None
    push, training_args.push_to_hub = training_args.push_to_hub, False  # we push the finished folder ourselves, once
    if not push:
        return None
    if not training_args.hub_model_id:
        raise ValueError("--push_to_hub needs --hub_model_id org/name.")
    settings = {"token": token, "private": training_args.hub_private_repo, "revision": training_args.hub_revision}
    repo_id = training_args.hub_model_id
    if training_args.should_save:  # the main process pushes
        repo_id = hub.prepare_hub_repo(repo_id, **settings)
    return {"repo_id": repo_id, **settings}


def check_training_labels(data: TrainingData) -> None:
    """Every training label in 0..num_labels-1, checked once before training: the model checks the
    labels of each batch only on a CPU (on an accelerator that would wait for the device every step)."""
    labels = np.asarray(data.train.with_format("numpy")["label"])
    if labels.size and (labels.min() < 0 or labels.max() >= data.num_labels):
        bad = int(labels.min()) if labels.min() < 0 else int(labels.max())
        raise ValueError(f"the training set has label {bad}, outside 0..{data.num_labels - 1} (its {data.num_labels} classes).")


def prepare_training_arguments(
    model_args: ModelArguments, training_args: DCRTrainingArguments, protocol: str | None
) -> DCRTrainingArguments:
    """Fill the stage-dependent defaults (best-model criterion, pinned memory)."""
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


def defers_low_resolution(data_args: DataArguments) -> bool:
    """Whether the loader only decodes and the training step augments and makes the LR copies on the
    training device (`--defer_low_resolution`, default true: on an accelerator, and on a CPU too,
    where it was measured as fast or faster; see `benchmarks/bench_data.py`)."""
    return True if data_args.defer_low_resolution is None else data_args.defer_low_resolution


def train_transform(data: TrainingData, data_args: DataArguments, config: DCRConfig,
                    processor: DCRImageProcessor) -> FinetuneTransform | TrainTransform:
    """The training transform, built from the stage's processor.

    Every random draw happens in the training step (`DCRTrainer`), so a resume is exact: with
    `defer_low_resolution` the whole augmentation runs there; otherwise the loader augments, and only
    the plain flip is drawn in the step. The LR copies go through `config.degradation` when set.
    """
    if data.real_low_resolution:
        augmentation = "none" if data_args.augmentation == "flip" else data_args.augmentation
        return FinetuneTransform(processor, augmentation=augmentation, strict=data_args.strict_data)
    deferred = defers_low_resolution(data_args)
    if not deferred and data_args.augmentation == "aug_plus":
        logger.warning("--defer_low_resolution false draws aug-plus in the loader workers: a resumed run will not "
                       "repeat the draws of an uninterrupted one (the default, true, draws them in the training step).")
    return TrainTransform(
        processor,
        low_resolution_sizes=config.low_resolution_sizes,
        augmentation=data_args.augmentation if deferred or data_args.augmentation != "flip" else "none",
        defer_low_resolution=deferred,
        strict=data_args.strict_data,
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


def run_training(
    model_args: ModelArguments,
    data_args: DataArguments,
    training_args: DCRTrainingArguments,
    callbacks: list | None = None,
    data: TrainingData | None = None,
) -> dict[str, Any]:
    """Train one stage end to end; returns the validation results before and after, and the folder.

    `data`: the training (and validation) data when already loaded, e.g. a dataset built in
    memory; by default it is loaded from `data_args` (`load_training_data`).
    """
    check_arguments(model_args, data_args, training_args)
    resume = check_output_folder(model_args, training_args)
    source = source_config(model_args) if model_args.source else None  # a missing or broken folder fails here
    push = prepare_push(training_args)
    set_seed(training_args.seed)
    if data is None:
        image_size = source.image_size if source else model_args.image_size
        data = load_training_data(data_args, image_size or DCRConfig.image_size)
    check_training_labels(data)
    training_args = prepare_training_arguments(model_args, training_args, data.validation_protocol)

    model = build_model(model_args, data.num_labels, data.id2label, source)
    config = model.config
    if data.real_low_resolution and config.use_branches:
        raise ValueError(
            "fine-tuning a branch model on real LR images is not supported: their distances do not name the "
            f"branch sizes {config.low_resolution_sizes}; fine-tune the trunk, then train the branches."
        )
    processor = build_processor(model_args, config)
    processor.write_to_model_config(config)  # a branch model given HR pixels alone makes its LR copies as the processor does
    if model_args.sync_batch_norm and training_args.world_size > 1:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if model_args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    route_tracker_logs(training_args)
    transform = train_transform(data, data_args, config, processor)
    device_side = getattr(transform, "defer_low_resolution", False)
    trainer = DCRTrainer(
        model=model,
        args=training_args,
        train_dataset=apply_transform(data.train, transform),
        # Our `evaluate` reads `validation`; the Trainer only checks that a validation set exists.
        eval_dataset=next(iter(data.validation.values())) if isinstance(data.validation, DatasetDict) else data.validation,
        processing_class=processor,
        callbacks=_callbacks(callbacks, training_args, data),
        validation=data.validation,
        validation_protocol=data.validation_protocol,
        validation_sizes=data_args.validation_sizes or list(config.low_resolution_sizes),
        device_transform=transform if device_side else None,
        samples_per_class=data_args.samples_per_class,
        random_flip=data_args.augmentation == "flip" and not device_side,
        miner=build_miner(config),
        divergence_factor=training_args.divergence_factor,
    )
    if resume is not None:
        finished = finished_message(resume, training_args.output_dir, trainer.planned_steps())
        if finished:
            return {"output_dir": training_args.output_dir, "finished": finished}
    elif training_args.overwrite_output_dir and trainer.is_world_process_zero():
        remove_previous_checkpoints(training_args.output_dir)
    result = _train_and_validate(trainer, training_args, data)
    if trainer.is_world_process_zero():
        _finish_folder(model_args, data_args, training_args, trainer, result, push)
    trainer.accelerator.wait_for_everyone()
    return result


def _train_and_validate(trainer: DCRTrainer, training_args: DCRTrainingArguments, data: TrainingData) -> dict[str, Any]:
    """Validate the starting model, train, validate the final (best) model, save model and metrics
    as the transformers examples do (`train_results.json`, `eval_results.json`, `all_results.json`)."""
    before = None
    if training_args.evaluate_before_training and not training_args.resume_from_checkpoint:
        trainer.evaluate(metric_key_prefix="before")
        before = trainer.last_validation
    train_result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
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
    easy = ", easy margin" if config.arcface_easy_margin else ""
    return f"{config.head} (s={config.margin_scale:g}, m={config.margin:g}{easy})"


def training_recipe(model_args: ModelArguments, data_args: DataArguments, training_args: DCRTrainingArguments,
                    trainer: DCRTrainer) -> dict[str, Any]:
    """The settings worth putting on a model card, as plain JSON values; `None` for what does not apply."""
    config = trainer.accelerator.unwrap_model(trainer.model).config
    milestones = training_args.lr_milestones
    return {
        "stage": model_args.stage,
        "dataset": registry.card_name(data_args.dataset, data_args),
        "architecture": model_args.architecture if model_args.stage == "trunk" else None,
        "head": _head_description(config),
        "low_resolution_sizes": list(config.low_resolution_sizes),
        "augmentation": data_args.augmentation,
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
        "trunk": model_args.trunk if model_args.stage == "branch" else None,
        "init_from": model_args.init_from if model_args.stage == "finetune" else None,
        "specialized_initialization": not model_args.random_branch_init if model_args.stage == "branch" else None,
        "hub_model_id": training_args.hub_model_id,
    }


def _finish_folder(model_args, data_args, training_args, trainer, result, push: dict[str, Any] | None) -> None:
    """Model card, `training_recipe.json` and (optionally) the push of the complete folder: a failed
    push raises `hub.HubPushError`, which says the folder is saved and how to push it later."""
    from .. import hub, reports

    output_dir = Path(training_args.output_dir)
    hub_model_id = push["repo_id"] if push else training_args.hub_model_id
    recipe = dict(training_recipe(model_args, data_args, training_args, trainer), hub_model_id=hub_model_id)
    rows = {}
    if result["before"] is not None:
        rows[f"{model_args.stage} (start)"] = result["before"]
    if result["after"] is not None:
        rows[f"{model_args.stage} (trained)"] = result["after"]
    (output_dir / "training_recipe.json").write_text(json.dumps(recipe, indent=2) + "\n")
    if rows:
        result["table"] = reports.format_results_table(rows)
    validation = result["validation_name"]
    hub_dataset = registry.hub_dataset_id(data_args.dataset, data_args)
    hub.write_model_card(
        output_dir,
        repo_id=hub_model_id,
        training_recipe={key: value for key, value in recipe.items() if key != "hub_model_id"},
        results=result["after"],
        dataset_name=registry.card_name(validation, data_args),
        dataset_type=registry.card_dataset_type(validation, data_args) if validation else None,
        training_data=registry.describe_training_data(data_args.dataset, data_args),
        datasets=[hub_dataset] if hub_dataset else None,
        base_model=hub.model_hub_id(model_args.source),
        specialized_initialization=not model_args.random_branch_init,
    )
    logger.info(f"Saved the model to {output_dir} (weights, config, processor, pipeline and model card)")
    if push:
        result["pushed"] = hub.push_or_explain(output_dir, commit_message=f"DCR {model_args.stage} stage", **push)
        result["hub_model_id"] = hub_model_id


__all__ = [
    "TrainingData", "check_output_folder", "check_training_labels", "defers_low_resolution", "load_training_data",
    "prepare_push", "prepare_training_arguments", "run_training", "train_transform",
]
