"""Convert a checkpoint of the original DCR implementation into a Hugging Face folder.

    python -m dcr_hf.convert_original_checkpoint --checkpoint model_best.pth.tar \
        --config config.json --output_dir DIR [--stage trunk|branch] [--push_to_hub --hub_model_id org/dcr-trunk]

The trunk kind and every size come from the weights; `config.json` (the original's arguments)
gives the stage, the LR scales of the branches, embedding normalization, image size and
mean/std, and is checked against the weights. The original keeps its branches in both stages: a
trunk-stage checkpoint converts to a trunk model (its untrained branches dropped), a branch-stage
one to a model with branches. Class centers come from the checkpoint's `criterion`.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch
from transformers.utils import logging

from . import hub
from .cli import DEBUG_HELP, add_hub_arguments, check_output_path, reported_errors, split_debug_flag
from .configuration_dcr import DCRConfig
from .image_processing_dcr import DCRImageProcessor
from .modeling_dcr import DCRForImageClassification
from .original import (
    ConversionError,
    OriginalArguments,
    OriginalCheckpoint,
    TrunkKind,
    branch_architecture,
    check_arguments_against_weights,
    detect_trunk_kind,
    load_original_checkpoint,
    read_original_arguments,
    trunk_architecture,
)
from .original.arguments import STAGES

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
    _check_output(Path(output), overwrite)
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
    model.save_pretrained(output)
    processor.save_pretrained(output)
    if push_to_hub:
        hub.push_or_explain(output, push_to_hub, commit_message="Convert an original DCR checkpoint", token=token,
                            private=private, revision=revision)
    return model


def _check_output(output: Path, overwrite: bool) -> None:
    check_output_path(output, "--output_dir", "the converted model")
    held = [name for name in ("config.json", "model.safetensors") if (output / name).exists()]
    if held and not overwrite:
        raise ConversionError(
            f"--output_dir {output} already holds a model ({', '.join(held)}); pass --overwrite_output_dir to replace it."
        )


def main(argv: list[str] | None = None) -> None:
    """Console entry point (`dcr-convert`): writes the folder and returns nothing, so the command exits 0
    (a console script passes `main()`'s value to `sys.exit`); `convert_original_checkpoint` returns the model."""
    argv, debug = split_debug_flag(argv)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=DEBUG_HELP)
    parser.add_argument("--checkpoint", required=True, help="the original's model_best.pth.tar / checkpoint.pth.tar")
    parser.add_argument("--config", default=None, help="the original's config.json (its training arguments)")
    parser.add_argument("--output_dir", "--output", required=True, help="folder to write the Hugging Face model to")
    parser.add_argument("--stage", default=None, choices=STAGES,
                        help="trunk | branch, when no config.json says it (the original keeps branches in both)")
    parser.add_argument("--overwrite_output_dir", action="store_true", help="replace a model already in --output_dir")
    parser.add_argument("--push_to_hub", action="store_true", help="also push the folder to --hub_model_id")
    parser.add_argument("--hub_model_id", default=None, metavar="REPO_ID", help="the Hub model repo (org/name)")
    add_hub_arguments(parser)
    args = parser.parse_args(argv)
    if args.push_to_hub != bool(args.hub_model_id):
        parser.error("--push_to_hub and --hub_model_id org/name go together.")
    with reported_errors(parser, debug):
        repo_id = None
        if args.push_to_hub:  # token, repo and write access checked before anything is converted
            _check_output(Path(args.output_dir), args.overwrite_output_dir)
            repo_id = hub.prepare_hub_repo(args.hub_model_id, token=args.hub_token,
                                           private=args.hub_private_repo or None, revision=args.hub_revision)
        model = convert_original_checkpoint(
            args.checkpoint, args.output_dir, args.config, args.stage, repo_id, private=args.hub_private_repo or None,
            token=args.hub_token, revision=args.hub_revision, overwrite=args.overwrite_output_dir,
        )
    kind = "trunk + branches" if model.config.use_branches else "trunk"
    print(f"Converted a {model.config.trunk_type} {kind} checkpoint ({model.config.num_labels} classes) to {args.output_dir}")


if __name__ == "__main__":
    main()
