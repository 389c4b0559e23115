"""Building the model and the image processor of a training stage.

- trunk: a new `DCRForImageClassification` from `DCRConfig` + the `--architecture` preset and
  the given fields; its processor is built from the arguments, once;
- branch: branches around the trained `--trunk` (specialized initialization or random), the
  trunk frozen in eval mode; processor and LR sizes are the trunk's;
- finetune: the model of `--init_from`, classifiers and centers re-created when the class count
  differs; processor and sizes are that model's.
"""

from __future__ import annotations

from typing import Any

from transformers.utils import logging

from ..configuration_dcr import DCRConfig
from ..convert import branch_model_from_trunk
from ..hub import load_image_processor
from ..image_processing_dcr import DCRImageProcessor
from ..model_files import check_model_source, load_config, load_pretrained
from ..modeling_dcr import DCRForImageClassification
from .arguments import ARCHITECTURES, HEAD_FIELDS, ModelArguments, degradation_settings, head_settings, mining_settings

logger = logging.get_logger(__name__)

#: `DCRConfig` loss settings a stage may override; `None` keeps DCRConfig's or the source model's.
LOSS_FIELDS = ("center_loss_weight", "center_momentum", "coupling_loss_weight")


def _given(model_args: ModelArguments, names: tuple[str, ...]) -> dict[str, Any]:
    return {name: getattr(model_args, name) for name in names if getattr(model_args, name) is not None}


def loss_settings(model_args: ModelArguments) -> dict[str, Any]:
    """The `DCRConfig` loss, mining, classifier-head and degradation settings given on the command line."""
    return {
        **_given(model_args, LOSS_FIELDS), **mining_settings(model_args), **head_settings(model_args),
        **degradation_settings(model_args),
    }


def config_from_arguments(model_args: ModelArguments, id2label: dict[int, str]) -> DCRConfig:
    """The config of a new trunk: `DCRConfig`'s defaults, the preset, then every field given."""
    values: dict[str, Any] = dict(ARCHITECTURES[model_args.architecture])
    values.update(
        _given(model_args, ("layer_type", "depths", "hidden_sizes", "embedding_size", "image_size", "low_resolution_sizes"))
    )
    values.update(loss_settings(model_args))
    embedding_size = values.get("embedding_size", DCRConfig.embedding_size)
    return DCRConfig(
        trunk_type=model_args.trunk_type,
        use_batch_norm=model_args.use_batch_norm,
        normalize_embeddings=model_args.normalize_embeddings,
        branch_hidden_size=embedding_size,
        freeze_batch_norm=model_args.freeze_batch_norm,
        id2label=id2label,
        label2id={v: k for k, v in id2label.items()},
        **values,
    )


def source_option(model_args: ModelArguments) -> str:
    """The command-line option naming the model a stage starts from."""
    return "--trunk" if model_args.stage == "branch" else "--init_from"


def source_config(model_args: ModelArguments) -> DCRConfig:
    """The config of the model a branch / finetune stage starts from, checked against the arguments."""
    source = model_args.source
    config = load_config(DCRConfig, source, source_option(model_args))
    if config.model_type != DCRConfig.model_type:
        raise ValueError(f"{source} is not a DCR model (model_type={config.model_type!r}).")
    check_model_source(source, source_option(model_args))  # its weight files too, before any data is read
    for name in ("image_size", "low_resolution_sizes"):
        given = getattr(model_args, name)
        if given is not None and given != getattr(config, name):
            raise ValueError(
                f"{source} was trained with {name}={getattr(config, name)}, but --{name} is {given}; "
                f"leave --{name} out to use the model's."
            )
    check_head_arguments(source, config, model_args)
    return config


def check_head_arguments(source: str, config: DCRConfig, model_args: ModelArguments) -> None:
    """A branch / finetune stage keeps the head of `source` (its classifier is copied into the branches
    or fine-tuned: a linear one is no cosine one); the margin settings given are checked against that
    head, before any data is read."""
    if model_args.head is not None and model_args.head != config.head:
        raise ValueError(
            f"{source} was trained with head={config.head!r}, but --head is {model_args.head!r}; "
            "leave --head out to use the model's."
        )
    DCRConfig(**{**{name: getattr(config, name) for name in HEAD_FIELDS}, **head_settings(model_args)})


def build_processor(model_args: ModelArguments, config: DCRConfig) -> DCRImageProcessor:
    """The stage's processor: built from the arguments for a new trunk, else the one saved with the
    source model (a different `--image_mean` / `--image_std` is refused, not silently ignored)."""
    normalization = _given(model_args, ("image_mean", "image_std"))
    if model_args.source is None:
        return DCRImageProcessor(image_size=config.image_size, **normalization)
    processor = load_image_processor(model_args.source, config.image_size)
    for name, value in normalization.items():
        if [float(v) for v in value] != list(getattr(processor, name)):
            raise ValueError(
                f"{model_args.source} was trained with {name}={getattr(processor, name)}, but --{name} is {value}; "
                f"leave --{name} out to use the model's."
            )
    return processor


def build_model(model_args: ModelArguments, num_labels: int, id2label: dict[int, str],
                checked_config: DCRConfig | None = None) -> DCRForImageClassification:
    """The model of the stage: a fresh trunk, branches around a trained trunk, or a loaded model.
    `checked_config`: `source_config(model_args)` when the caller has it already (read and checked once)."""
    if model_args.stage == "trunk":
        return DCRForImageClassification(config_from_arguments(model_args, id2label))
    source = model_args.source
    config = checked_config if checked_config is not None else source_config(model_args)
    overrides = dict(loss_settings(model_args), freeze_batch_norm=model_args.freeze_batch_norm)
    if model_args.stage == "branch":
        trunk = load_pretrained(DCRForImageClassification, source, "--trunk")
        if trunk.config.num_labels != num_labels:
            raise ValueError(
                f"the trunk {source} has {trunk.config.num_labels} classes but the training set has {num_labels}; "
                "the branch stage trains on the trunk's identities."
            )
        return branch_model_from_trunk(
            trunk,
            specialized_initialization=not model_args.random_branch_init,
            freeze_trunk=not model_args.unfreeze_trunk,
            **overrides,
        )
    if config.num_labels != num_labels:
        logger.warning(
            f"{source} has {config.num_labels} classes, the fine-tuning set {num_labels}: the classifier(s) and "
            "centers are re-created for the new classes; the trunk (and branch projections) are kept."
        )
        overrides.update(
            num_labels=num_labels, id2label=id2label, label2id={v: k for k, v in id2label.items()},
            ignore_mismatched_sizes=True,
        )
    model = load_pretrained(DCRForImageClassification, source, "--init_from", **overrides)
    if model.config.use_branches:
        model.set_trunk_frozen(not model_args.unfreeze_trunk)
    return model


__all__ = [
    "LOSS_FIELDS", "build_model", "build_processor", "check_head_arguments", "config_from_arguments", "source_config",
    "source_option",
]
