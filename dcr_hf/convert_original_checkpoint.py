"""Convert a checkpoint of the original DCR implementation into a Hugging Face folder.

    python -m dcr_hf.convert_original_checkpoint --checkpoint model_best.pth.tar \
        --config config.json --output_dir DIR [--stage trunk|branch] [--push_to_hub --hub_model_id org/dcr-trunk]

The trunk kind and every size come from the weights; `config.json` (the original's arguments)
gives the stage, the LR scales of the branches, embedding normalization, image size and
mean/std, and is checked against the weights. The original keeps its branches in both stages: a
trunk-stage checkpoint converts to a trunk model (its untrained branches dropped), a branch-stage
one to a model with branches. Class centers come from the checkpoint's `criterion`.

This module is the command line (light: `--help` loads no torch); the conversion is
`dcr_hf.original.conversion`, whose `convert_original_checkpoint` (returning the model) and
`CONVERTED_PROCESSOR_SETTINGS` are importable from here too.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .cli import DEBUG_HELP, add_hub_arguments, reported_errors, split_debug_flag
from .original.arguments import STAGES

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
        # The work, imported once the arguments parsed (`--help` needs none of it).
        from . import hub
        from .original.conversion import check_output, convert_original_checkpoint

        repo_id = None
        if args.push_to_hub:  # token, repo and write access checked before anything is converted
            check_output(Path(args.output_dir), args.overwrite_output_dir)
            repo_id = hub.prepare_hub_repo(args.hub_model_id, token=args.hub_token,
                                           private=args.hub_private_repo or None, revision=args.hub_revision)
        model = convert_original_checkpoint(
            args.checkpoint, args.output_dir, args.config, args.stage, repo_id, private=args.hub_private_repo or None,
            token=args.hub_token, revision=args.hub_revision, overwrite=args.overwrite_output_dir,
        )
    kind = "trunk + branches" if model.config.use_branches else "trunk"
    print(f"Converted a {model.config.trunk_type} {kind} checkpoint ({model.config.num_labels} classes) to {args.output_dir}")


__all__ = [*_EXPORTED, "main"]


if __name__ == "__main__":
    main()
