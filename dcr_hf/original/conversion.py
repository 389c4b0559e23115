"""An original DCR checkpoint converted into a Hugging Face folder: the work of `dcr-convert`
(`dcr_hf.convert_original_checkpoint`, whose docstring says what comes from the weights and what
from the original's `config.json`), put together from the readers of this package."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers.utils import logging

from .. import hub
from ..cli import check_output_path
from ..configuration_dcr import DCRConfig
from ..image_processing_dcr import DCRImageProcessor
from ..modeling_dcr import DCRForImageClassification
from ..saving import staged_folder
from .architecture import branch_architecture, check_arguments_against_weights, detect_trunk_kind, trunk_architecture
from .arguments import STAGES, OriginalArguments, read_original_arguments
from .checkpoint import OriginalCheckpoint, load_original_checkpoint
from .errors import ConversionError
from .keys import TrunkKind

logger = logging.get_logger(__name__)

#: Processor settings every converted checkpoint gets besides its `config.json`'s image size and
#: mean/std: the original's LR operator (PIL Lanczos down, bilinear up, in 8 bits), written into the
#: folder explicitly so that it stays the original's whatever the processor's defaults become.
CONVERTED_PROCESSOR_SETTINGS: dict[str, Any] = {"downsample_interpolation": "lanczos", "upsample_interpolation": "bilinear"}

#: What a conversion assumes for a `config.json` key that is absent (or without `config.json`).
ASSUMED = {"normalized_embeddings": True, "scale_list": list(DCRConfig.low_resolution_sizes),
           "img_size": DCRConfig.image_size, "rgb_mean": DCRImageProcessor.image_mean, "rgb_std": DCRImageProcessor.image_std}


def resolve_stage(arguments: OriginalArguments, requested: str | None, branches: int, checkpoint: Path) -> str:
    """The stage of the checkpoint: `--stage` or config.json's `stage`; without either, a
    checkpoint holding branches is refused (they exist in both stages), one without is a trunk."""
    if requested is not None and requested not in STAGES:
        raise ConversionError(f"--stage {requested!r} is not one of {STAGES}.")
    if requested and arguments.stage and requested != arguments.stage:
        raise ConversionError(f"--stage {requested} contradicts {arguments.path}: stage={arguments.stage!r}.")
    stage = requested or arguments.stage
    if stage is None and branches:
        raise ConversionError(
            f"checkpoint {checkpoint} holds {branches} branches, which the original keeps in both stages: pass "
            "--stage trunk|branch (or --config with the original's config.json, whose 'stage' says it)."
        )
    stage = stage or "trunk"
    if stage == "branch" and not branches:
        raise ConversionError(f"stage 'branch' needs branch weights, but checkpoint {checkpoint} holds none.")
    return stage


def build_config(
    fields: dict[str, Any], branches: tuple[int, int | None], arguments: OriginalArguments, stage: str
) -> DCRConfig:
    """The converted model's config: the architecture of the weights and the settings of config.json."""
    given = {key: getattr(arguments, key) for key in ASSUMED}
    assumed = {key: ASSUMED[key] for key, value in given.items() if value is None}
    if assumed:
        source = f"{arguments.path} does not say" if arguments.path else "no config.json (--config) says"
        settings = ", ".join(f"{key}={value}" for key, value in assumed.items())
        logger.warning(f"{source} what the original trained with; assuming {settings}.")
    values = {**assumed, **{k: v for k, v in given.items() if v is not None}}
    try:
        return DCRConfig(
            **fields,
            normalize_embeddings=values["normalized_embeddings"],
            use_branches=stage == "branch",
            branch_hidden_size=branches[1] or fields["embedding_size"],
            image_size=values["img_size"],
            low_resolution_sizes=values["scale_list"],
        )
    except ValueError as error:
        raise ConversionError(f"{arguments.path or 'the checkpoint'}: {error}") from None


def converted_weights(checkpoint: OriginalCheckpoint, kind: TrunkKind, stage: str) -> dict[str, torch.Tensor]:
    """The weights under our names; a trunk-stage checkpoint's untrained branches are dropped."""
    weights = {kind.to_ours(key): value for key, value in checkpoint.state_dict.items()}
    if stage == "trunk":
        dropped = [key for key in weights if key.startswith(("dcr.branches.", "branch_classifiers."))]
        if dropped:
            count = len({key.split(".")[2 if key.startswith("dcr.") else 1] for key in dropped})
            logger.warning(
                f"stage 'trunk': dropping the {count} untrained branches the original keeps beside the trunk "
                f"({len(dropped)} tensors of {checkpoint.path})."
            )
        weights = {key: value for key, value in weights.items() if key not in dropped}
    return weights


def class_centers(checkpoint: OriginalCheckpoint, config: DCRConfig) -> dict[str, torch.Tensor]:
    """The stage's class centers from `criterion` (trunk: `center.centers`; branches:
    `centers.{k}.centers`) as our buffers; a warning when they are absent."""
    if config.use_branches:
        names = [f"centers.{k}.centers" for k in range(len(config.resolutions))]
        expected, buffer = (config.num_labels, config.branch_hidden_size), "branch_centers"
    else:
        names, expected, buffer = ["center.centers"], (config.num_labels, config.embedding_size), "centers"
    found = [checkpoint.criterion.get(name) for name in names]
    if any(value is None for value in found):
        logger.warning(
            f"checkpoint {checkpoint.path} has no class centers {[n for n, v in zip(names, found) if v is None]} in its "
            f"'criterion'; {buffer} keep their fresh initialization (only further training uses them)."
        )
        return {}
    for name, value in zip(names, found):
        if tuple(value.shape) != expected:
            raise ConversionError(
                f"checkpoint {checkpoint.path}: criterion {name} has shape {tuple(value.shape)}, expected {expected} "
                "(classes x embedding size of the weights)."
            )
    return {buffer: torch.stack(found) if config.use_branches else found[0]}


def load_exactly(model: DCRForImageClassification, weights: dict[str, torch.Tensor], kind: TrunkKind, path: Path) -> None:
    """Load every weight the model has, refusing extra, missing and mis-shaped ones (named as in
    the original). Batch-norm step counters may be absent (older torch did not save them)."""
    own = model.state_dict()
    extra = [kind.to_original(k) for k in weights if k not in own]
    missing = [kind.to_original(k) for k in own if k not in weights
               and k not in ("centers", "branch_centers") and not k.endswith("num_batches_tracked")]
    for problem, keys in (("has weights the inferred architecture does not", extra), ("lacks weights", missing)):
        if keys:
            raise ConversionError(
                f"checkpoint {path} {problem} (a {kind.name} trunk with depths {model.config.depths}): "
                f"{keys[:5]}{' ...' if len(keys) > 5 else ''}"
            )
    for key, value in weights.items():
        if own[key].shape != value.shape:
            raise ConversionError(
                f"checkpoint {path}: {kind.to_original(key)} has shape {tuple(value.shape)}, the architecture read "
                f"off the other weights needs {tuple(own[key].shape)}."
            )
    model.load_state_dict(weights, strict=False)


def convert_original_checkpoint(
    checkpoint: str | Path,
    output: str | Path,
    config: str | Path | None = None,
    stage: str | None = None,
    push_to_hub: str | None = None,
    *,
    private: bool | None = None,
    token: str | None = None,
    revision: str | None = None,
    overwrite: bool = False,
) -> DCRForImageClassification:
    """Convert an original checkpoint into a complete folder at `output` (config with `auto_map`,
    `model.safetensors`, both model files, `preprocessor_config.json`); raise `ConversionError`
    on anything that would not convert exactly, before writing. An `output` that already holds a
    model is refused unless `overwrite`. With `push_to_hub` (a repo id) the folder and a model card
    go to the Hub in one commit (`hub.push_folder_to_hub` with `private`, `token`, `revision`); a
    failed upload raises `hub.HubPushError` saying how to push the saved folder later."""
    check_output(Path(output), overwrite)
    arguments = read_original_arguments(config) if config is not None else OriginalArguments()
    original = load_original_checkpoint(checkpoint)
    kind = detect_trunk_kind(original, arguments)
    fields = trunk_architecture(original, kind)
    branches = branch_architecture(original)
    check_arguments_against_weights(arguments, original, fields, branches)
    stage = resolve_stage(arguments, stage, branches[0], original.path)
    dcr_config = build_config(fields, branches, arguments, stage)
    if dcr_config.use_branches and branches[0] != len(dcr_config.resolutions):
        raise ConversionError(
            f"checkpoint {original.path} holds {branches[0]} branches, but the LR scales {dcr_config.low_resolution_sizes} "
            "need one per scale plus HR: pass the original's config.json (its scale_list)."
        )
    weights = converted_weights(original, kind, stage)
    weights.update(class_centers(original, dcr_config))
    model = DCRForImageClassification(dcr_config)
    load_exactly(model, weights, kind, original.path)
    model.eval()
    processor = DCRImageProcessor(
        image_size=dcr_config.image_size,
        image_mean=arguments.rgb_mean or ASSUMED["rgb_mean"],
        image_std=arguments.rgb_std or ASSUMED["rgb_std"],
        **CONVERTED_PROCESSOR_SETTINGS,
    )
    with staged_folder(output, what=f"the converted model to {output}") as staging:  # moved in only when complete
        model.save_pretrained(staging)
        processor.save_pretrained(staging)
    if push_to_hub:
        hub.push_or_explain(output, push_to_hub, commit_message="Convert an original DCR checkpoint", token=token,
                            private=private, revision=revision)
    return model


def check_output(output: Path, overwrite: bool) -> None:
    """Refuse, before any work, an output folder that cannot be written or already holds a model (unless `overwrite`)."""
    check_output_path(output, "--output_dir", "the converted model")
    held = [name for name in ("config.json", "model.safetensors") if (output / name).exists()]
    if held and not overwrite:
        raise ConversionError(
            f"--output_dir {output} already holds a model ({', '.join(held)}); pass --overwrite_output_dir to replace it."
        )


__all__ = [
    "ASSUMED",
    "CONVERTED_PROCESSOR_SETTINGS",
    "build_config",
    "check_output",
    "class_centers",
    "convert_original_checkpoint",
    "converted_weights",
    "load_exactly",
    "resolve_stage",
]
