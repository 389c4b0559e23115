"""Building the model of a training stage from its plan (`plan.TrainingPlan`).

- trunk: a new `DCRForImageClassification` of `plan.config`;
- branch: branches around the trained `--trunk` (specialized initialization or random), the
  trunk frozen in eval mode;
- finetune: the model of `--init_from` with `plan.config`, classifiers and centers re-created
  when the class count differs.

A source saved without a classifier (an embedder: a backbone converted by `dcr-convert --source
arcface_torch|adaface|cvlface`) gets a fresh classifier and centers for the training data's classes
around its trunk, in both stages.
"""

from __future__ import annotations

import copy

from transformers.utils import logging

from ..errors_dcr import DCRInputError
from ..configuration_dcr import DCRConfig
from ..convert import branch_model_from_trunk
from ..model_files import load_pretrained, saved_tensor_names
from ..modeling_dcr import DCRForImageClassification, DCRModel
from .plan import TrainingPlan

logger = logging.get_logger(__name__)


def with_labels(config: DCRConfig, id2label: dict[int, str]) -> DCRConfig:
    """A copy of `config` for the classes `id2label` of the training data."""
    config = copy.deepcopy(config)
    config.id2label = dict(id2label)
    config.label2id = {name: index for index, name in id2label.items()}
    return config


def has_classifier(source: str) -> bool:
    """Whether the saved model `source` holds a classifier (a training-head checkpoint), not only an embedder."""
    return any(name.startswith(("classifier.", "branch_classifiers.")) for name in saved_tensor_names(source))


def around_embedder(source: str, option: str, config: DCRConfig, id2label: dict[int, str]) -> DCRForImageClassification:
    """A `DCRForImageClassification` of `config` for the classes `id2label` whose trunk (and branches)
    are those of the embedder saved at `source`; classifier and centers start fresh."""
    embedder = load_pretrained(DCRModel, source, option)
    logger.warning(
        f"{source} is an embedder without a classifier (a converted backbone): the classifier and centers of "
        f"{len(id2label)} classes start fresh around its trunk."
    )
    model = DCRForImageClassification(with_labels(config, id2label))
    own = model.dcr.state_dict()
    weights = {key: value for key, value in embedder.state_dict().items() if key in own}
    model.dcr.load_state_dict(weights, strict=not config.use_branches or embedder.config.use_branches)
    return model


def build_model(plan: TrainingPlan, id2label: dict[int, str]) -> DCRForImageClassification | DCRModel:
    """The model of the stage: a fresh trunk, branches around a trained trunk, or a loaded model,
    for the classes `id2label` of the training data; with `--partial_fc` the trunk alone
    (`DCRModel`): its classifier and centers are sharded beside it (`partial_fc_trainer`)."""
    num_labels = len(id2label)
    if plan.partial_fc_rate is not None:
        return DCRModel(with_labels(plan.config, id2label))
    if plan.stage == "trunk":
        return DCRForImageClassification(with_labels(plan.config, id2label))
    source = plan.source
    if plan.stage == "branch" and not has_classifier(source):
        trunk = around_embedder(source, "--trunk", DCRConfig.from_pretrained(source), id2label)
        return branch_model_from_trunk(
            trunk,
            specialized_initialization=plan.specialized_initialization,
            freeze_trunk=plan.freeze_trunk,
            **plan.config_overrides,
        )
    if plan.stage == "branch":
        trunk = load_pretrained(DCRForImageClassification, source, "--trunk")
        if trunk.config.num_labels != num_labels:
            raise DCRInputError(
                f"the trunk {source} has {trunk.config.num_labels} classes but the training set has {num_labels}; "
                "the branch stage trains on the trunk's identities."
            )
        return branch_model_from_trunk(
            trunk,
            specialized_initialization=plan.specialized_initialization,
            freeze_trunk=plan.freeze_trunk,
            **plan.config_overrides,
        )
    config, mismatched = plan.config, {}
    if not has_classifier(source):
        model = around_embedder(source, "--init_from", config, id2label)
        if model.config.use_branches:
            model.set_trunk_frozen(plan.freeze_trunk)
        return model
    if config.num_labels != num_labels:
        logger.warning(
            f"{source} has {config.num_labels} classes, the fine-tuning set {num_labels}: the classifier(s) and "
            "centers are re-created for the new classes; the trunk (and branch projections) are kept."
        )
        config, mismatched = with_labels(config, id2label), {"ignore_mismatched_sizes": True}
    model = load_pretrained(DCRForImageClassification, source, "--init_from", config=config, **mismatched)
    if model.config.use_branches:
        model.set_trunk_frozen(plan.freeze_trunk)
    return model


__all__ = ["around_embedder", "build_model", "has_classifier", "with_labels"]
