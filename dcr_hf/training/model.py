"""Building the model of a training stage from its plan (`plan.TrainingPlan`).

- trunk: a new `DCRForImageClassification` of `plan.config`;
- branch: branches around the trained `--trunk` (specialized initialization or random), the
  trunk frozen in eval mode;
- finetune: the model of `--init_from` with `plan.config`, classifiers and centers re-created
  when the class count differs.
"""

from __future__ import annotations

import copy

from transformers.utils import logging

from ..errors_dcr import DCRInputError
from ..configuration_dcr import DCRConfig
from ..convert import branch_model_from_trunk
from ..model_files import load_pretrained
from ..modeling_dcr import DCRForImageClassification, DCRModel
from .plan import TrainingPlan

logger = logging.get_logger(__name__)


def with_labels(config: DCRConfig, id2label: dict[int, str]) -> DCRConfig:
    """A copy of `config` for the classes `id2label` of the training data."""
    config = copy.deepcopy(config)
    config.id2label = dict(id2label)
    config.label2id = {name: index for index, name in id2label.items()}
    return config


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


__all__ = ["build_model", "with_labels"]
