"""A trained trunk -> the branch-stage `DCRForImageClassification` (DCR's second stage).

The specialized initialization starts every branch as the trunk itself (identity projection, a
copy of the trunk classifier and centers), so branch embeddings equal trunk embeddings at step 0.
"""

from __future__ import annotations

import torch
from transformers.utils import logging

from ..errors_dcr import DCRInputError
from ..configuration_dcr import DCRConfig
from ..modeling_dcr import DCRForImageClassification, DCRModel, DCRPreTrainedModel

logger = logging.get_logger(__name__)

#: What a branch-stage model takes from a trunk-stage state dict besides `dcr.trunk.*` (those it has:
#: `norm_statistics` is AdaFace's; the branches keep their own, of the branch embeddings' norms).
TRUNK_HEAD_KEYS = ("classifier.weight", "classifier.bias", "centers", "norm_statistics")


def branch_model_from_trunk(
    trunk: str | DCRPreTrainedModel,
    specialized_initialization: bool = True,
    freeze_trunk: bool = True,
    **config_overrides,
) -> DCRForImageClassification:
    """Build the branch-stage model around a trained trunk.

    Args:
        trunk: a folder, a Hub id or a model object of a trunk-stage `DCRForImageClassification`
            (its classifier is needed for the specialized initialization).
        specialized_initialization: branch projections start as the identity (zero bias), each
            branch classifier as a copy of the trunk classifier and each branch's centers as
            the trunk centers, so branch embeddings equal trunk embeddings at step 0. With
            `False` the branches keep their random initialization.
        freeze_trunk: keep the trunk frozen and in eval mode.
        config_overrides: other `DCRConfig` fields (e.g. `low_resolution_sizes`, `margin`); `head`
            stays the trunk's.
    """
    if isinstance(trunk, (str, bytes)) or hasattr(trunk, "__fspath__"):
        trunk = DCRForImageClassification.from_pretrained(trunk)
    if not isinstance(trunk, (DCRForImageClassification, DCRModel)):
        raise TypeError(f"trunk must be a path, a Hub id or a DCR model, got {type(trunk).__name__}.")
    if trunk.config.use_branches:
        logger.warning("The given model already has branches; its branches are replaced.")
    if config_overrides.get("head", trunk.config.head) != trunk.config.head:
        raise DCRInputError(
            f"the trunk was trained with head={trunk.config.head!r}, not {config_overrides['head']!r}: the branch "
            "stage keeps the trunk's head (its classifier is copied into every branch)."
        )
    config_dict = trunk.config.to_dict()
    config_dict.update(config_overrides, use_branches=True, freeze_trunk=freeze_trunk)
    config_dict.pop("auto_map", None)
    config = DCRConfig.from_dict(config_dict)
    if specialized_initialization and config.branch_hidden_size != config.embedding_size:
        raise DCRInputError(
            "specialized initialization copies the trunk into square branches: branch_hidden_size "
            f"({config.branch_hidden_size}) must equal embedding_size ({config.embedding_size})."
        )
    source = trunk.state_dict()
    if isinstance(trunk, DCRModel):
        source = {f"dcr.{k}": v for k, v in source.items()}
    copied = {k: v for k, v in source.items() if k.startswith("dcr.trunk.") or k in TRUNK_HEAD_KEYS}
    if specialized_initialization and "classifier.weight" not in copied:
        raise DCRInputError(
            "specialized initialization needs the trunk's classifier: load the trunk with "
            "DCRForImageClassification (a trunk-stage checkpoint), not the bare DCRModel."
        )
    model = DCRForImageClassification(config)
    own = model.state_dict()
    for key, value in copied.items():
        if own[key].shape != value.shape:
            raise DCRInputError(f"trunk weight {key} has shape {tuple(value.shape)}, expected {tuple(own[key].shape)}.")
    model.load_state_dict(copied, strict=False)
    if specialized_initialization:
        with torch.no_grad():
            for branch, branch_classifier, centers in zip(model.dcr.branches, model.branch_classifiers, model.branch_centers):
                branch.projection.weight.copy_(torch.eye(config.embedding_size))
                branch.projection.bias.zero_()
                branch_classifier.classifier.load_state_dict(model.classifier.state_dict())
                centers.copy_(model.centers)
    model.set_trunk_frozen(freeze_trunk)
    return model
