"""One training stage end to end: data, model and processor, the Trainer, the finished folder."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset, DatasetDict
from transformers import EarlyStoppingCallback, set_seed
from transformers.utils import logging

from ..configuration_dcr import DCRConfig
from ..data import registry
from ..data.transforms import FinetuneTransform, TrainTransform, apply_transform
from ..evaluation import CRITERIA
from ..image_processing_dcr import DCRImageProcessor
from .arguments import DataArguments, DCRTrainingArguments, ModelArguments, check_arguments
from .mining import build_miner
from .model import build_model, build_processor, source_config
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


def prepare_training_arguments(
    model_args: ModelArguments, training_args: DCRTrainingArguments, protocol: str | None
) -> DCRTrainingArguments:
    """Fill the stage-dependent defaults (output folder, best-model criterion, pinned memory)."""
    if training_args.output_dir in (None, "trainer_output"):
        training_args.output_dir = os.path.join("outputs", f"dcr-{model_args.stage}")
    if training_args.device.type == "cpu":
        # Pinned memory only helps copies to an accelerator; on CPU torch warns once per DataLoader.
        training_args.dataloader_pin_memory = False
    metric = CRITERIA.get(protocol) if protocol else None
    if metric is None:
        training_args.eval_strategy = "no"
        training_args.load_best_model_at_end = False
        training_args.evaluate_before_training = False
    elif training_args.metric_for_best_model in (None, "loss"):
        training_args.metric_for_best_model = metric
        training_args.greater_is_better = True
    return training_args


def train_dataset(data: TrainingData, data_args: DataArguments, config: DCRConfig, processor: DCRImageProcessor) -> Dataset:
    """The training set with its transform, built from the stage's processor.

    The plain flip is drawn in the training step (`DCRTrainer`), so a resume is exact.
    """
    loader_augmentation = "none" if data_args.augmentation == "flip" else data_args.augmentation
    if data.real_low_resolution:
        transform = FinetuneTransform(processor, augmentation=loader_augmentation, strict=data_args.strict_data)
    else:
        transform = TrainTransform(
            processor,
            low_resolution_sizes=config.low_resolution_sizes,
            augmentation=loader_augmentation,
            defer_low_resolution=data_args.defer_low_resolution,
            strict=data_args.strict_data,
        )
    return apply_transform(data.train, transform)


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
) -> dict[str, Any]:
    """Train one stage end to end; returns the validation results before and after, and the folder."""
    check_arguments(model_args, data_args, training_args)
    set_seed(training_args.seed)
    image_size = source_config(model_args).image_size if model_args.source else model_args.image_size
    data = load_training_data(data_args, image_size or DCRConfig.image_size)
    training_args = prepare_training_arguments(model_args, training_args, data.validation_protocol)
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
    processor = build_processor(model_args, config)
    if model_args.sync_batch_norm and training_args.world_size > 1:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if model_args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    route_tracker_logs(training_args)
    trainer = DCRTrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset(data, data_args, config, processor),
        # Our `evaluate` reads `validation`; the Trainer only checks that a validation set exists.
        eval_dataset=next(iter(data.validation.values())) if isinstance(data.validation, DatasetDict) else data.validation,
        processing_class=processor,
        callbacks=_callbacks(callbacks, training_args, data),
        validation=data.validation,
        validation_protocol=data.validation_protocol,
        validation_sizes=data_args.validation_sizes or list(config.low_resolution_sizes),
        deferred_low_resolution_sizes=list(config.low_resolution_sizes) if data_args.defer_low_resolution else None,
        samples_per_class=data_args.samples_per_class,
        random_flip=data_args.augmentation == "flip",
        miner=build_miner(config),
    )
    result = _train_and_validate(trainer, training_args, data)
    if trainer.is_world_process_zero():
        _finish_folder(model_args, data_args, training_args, trainer, result, push_to_hub, hub_model_id)
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


def _finish_folder(model_args, data_args, training_args, trainer, result, push_to_hub, hub_model_id) -> None:
    """Model card, `training_recipe.json` and (optionally) the push of the complete folder."""
    from .. import hub, reports

    output_dir = Path(training_args.output_dir)
    recipe = training_recipe(model_args, data_args, training_args, trainer)
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
    if push_to_hub:
        result["pushed"] = hub.push_folder_to_hub(output_dir, hub_model_id, commit_message=f"DCR {model_args.stage} stage")


__all__ = ["TrainingData", "load_training_data", "prepare_training_arguments", "run_training", "train_dataset"]
