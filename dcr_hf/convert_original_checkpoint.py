"""Convert a checkpoint of the original DCR implementation, or a face-recognition backbone of
insightface arcface_torch, AdaFace or CVLface, into a Hugging Face folder.

    python -m dcr_hf.convert_original_checkpoint --checkpoint model_best.pth.tar \
        --config config.json --output_dir DIR [--stage trunk|branch] [--push_to_hub --hub_model_id org/dcr-trunk]
    python -m dcr_hf.convert_original_checkpoint --source arcface_torch|adaface|cvlface \
        --checkpoint model.pt|checkpoint_gpu_0.pt|adaface_ir101_webface12m.ckpt|model.safetensors \
        --architecture r18|r34|r50|r100|r200|ir_18|ir_34|ir_50|ir_101|ir_se_50 --output_dir DIR \
        [--source_dataset NAME] [--source_license NAME] [--base_model org/name]

`--source original` (the default):

The trunk kind and every size come from the weights; `config.json` (the original's arguments)
gives the stage, the LR scales of the branches, embedding normalization, image size and
mean/std, and is checked against the weights. The original keeps its branches in both stages: a
trunk-stage checkpoint converts to a trunk model (its untrained branches dropped), a branch-stage
one to a model with branches. Class centers come from the checkpoint's `criterion`.

The other sources (`dcr_hf.convert.face_backbone`) write a trunk of the named architecture, its
keys and shapes checked against the file (the first mismatch named in one line), and a processor
that prepares 112x112 faces as the source does (mean/std 0.5; BGR for AdaFace).

This module is the command line (light: `--help` loads no torch); the conversions are
`dcr_hf.original.conversion` and `dcr_hf.convert.face_backbone`; the former's `convert_original_checkpoint` (returning the model) and
`CONVERTED_PROCESSOR_SETTINGS` are importable from here too.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .cli import DEBUG_HELP, add_hub_arguments, reported_errors, split_debug_flag
from .original.arguments import STAGES

#: `--source` values: the original DCR implementation, then the backbone projects of `dcr_hf.convert.face_backbone`.
SOURCE_CHOICES = ("original", "arcface_torch", "adaface", "cvlface")
#: `--architecture` values (`dcr_hf.configuration_dcr.IRESNET_BODIES`, spelled here so `--help` imports no torch).
ARCHITECTURE_CHOICES = ("r18", "r34", "r50", "r100", "r200", "ir_18", "ir_34", "ir_50", "ir_101", "ir_se_50")

#: The conversion's names importable from here, loaded on first use (`--help` needs none of them).
_EXPORTED = ("CONVERTED_PROCESSOR_SETTINGS", "convert_original_checkpoint")


def __getattr__(name: str) -> object:
    if name not in _EXPORTED:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from .original import conversion

    return getattr(conversion, name)


def main(argv: list[str] | None = None) -> None:
    """Console entry point (`dcr-convert`): writes the folder and returns nothing, so the command exits 0
    (a console script passes `main()`'s value to `sys.exit`); `convert_original_checkpoint` returns the model."""
    argv, debug = split_debug_flag(argv)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=DEBUG_HELP)
    parser.add_argument("--source", default="original", choices=SOURCE_CHOICES,
                        help="the project that wrote --checkpoint (default: the original DCR implementation)")
    parser.add_argument("--checkpoint", required=True,
                        help="the original's model_best.pth.tar; arcface_torch's model.pt / backbone.pth / "
                             "checkpoint_gpu_N.pt; AdaFace's .ckpt; CVLface's model.safetensors / .pt")
    parser.add_argument("--architecture", default=None, choices=ARCHITECTURE_CHOICES,
                        help="the backbone's architecture (--source arcface_torch: r*, adaface: ir_*, cvlface: either)")
    parser.add_argument("--source_dataset", default=None, help="the training set of the source weights (for the card)")
    parser.add_argument("--source_license", default=None,
                        help="the licence of the source weights (for the card); 'insightface-non-commercial' for "
                             "insightface's released models (non-commercial research only)")
    parser.add_argument("--base_model", default=None, metavar="REPO_ID",
                        help="the Hub id the source weights were downloaded from (card metadata; a Hub id only)")
    parser.add_argument("--channel_order", default=None, choices=("rgb", "bgr"),
                        help="the network's input channel order, when it is not the source's usual one")
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
    backbone_only = {"--architecture": args.architecture, "--source_dataset": args.source_dataset,
                     "--source_license": args.source_license, "--base_model": args.base_model,
                     "--channel_order": args.channel_order}
    original_only = {"--config": args.config, "--stage": args.stage}
    wrong = [name for name, value in (backbone_only if args.source == "original" else original_only).items() if value]
    if wrong:
        parser.error(f"{wrong[0]} does not apply to --source {args.source}.")
    if args.source != "original" and not args.architecture:
        parser.error(f"--source {args.source} needs --architecture.")
    with reported_errors(parser, debug):
        # The work, imported once the arguments parsed (`--help` needs none of it).
        from . import hub
        from .original.conversion import check_output, convert_original_checkpoint

        if args.source != "original":
            from .convert.face_backbone import check_source_options

            check_source_options(args.source, args.architecture, args.base_model, args.channel_order)
        repo_id = None
        if args.push_to_hub:  # token, repo and write access checked before anything is converted
            check_output(Path(args.output_dir), args.overwrite_output_dir)
            repo_id = hub.prepare_hub_repo(args.hub_model_id, token=args.hub_token,
                                           private=args.hub_private_repo or None, revision=args.hub_revision)
        if args.source != "original":
            from .convert.face_backbone import convert_face_backbone

            convert_face_backbone(
                args.source, args.checkpoint, args.architecture, args.output_dir, overwrite=args.overwrite_output_dir,
                source_dataset=args.source_dataset, source_license=args.source_license, base_model=args.base_model,
                channel_order=args.channel_order, push_to_hub=repo_id, private=args.hub_private_repo or None,
                token=args.hub_token, revision=args.hub_revision,
            )
            print(f"Converted the {args.source} {args.architecture} backbone to {args.output_dir}")
            return
        model = convert_original_checkpoint(
            args.checkpoint, args.output_dir, args.config, args.stage, repo_id, private=args.hub_private_repo or None,
            token=args.hub_token, revision=args.hub_revision, overwrite=args.overwrite_output_dir,
        )
    kind = "trunk + branches" if model.config.use_branches else "trunk"
    print(f"Converted a {model.config.trunk_type} {kind} checkpoint ({model.config.num_labels} classes) to {args.output_dir}")


__all__ = [*_EXPORTED, "main"]


if __name__ == "__main__":
    main()
