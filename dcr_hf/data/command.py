"""Command line of `dcr_hf.data`: `python -m dcr_hf.data <command> ...`; `dcr-prepare` is its `prepare`.

Commands:
    prepare   write a dataset once with image bytes embedded (Arrow shards), optionally push it to the Hub
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence

# Light imports only: `--help` answers before datasets (or torch) load; the work is imported when it runs.
from ..errors_dcr import DCRInputError
from ..cli import DEBUG_HELP, add_hub_arguments, reported_errors, split_debug_flag
from .registry import PREPARABLE_DATASETS

_PREPARE_DESCRIPTION = (
    "Load a dataset from its on-disk layout and save it with the image bytes embedded in a few Arrow shards; "
    "every dcr_hf loader accepts the output directory as its data root."
)


def add_prepare_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options of `prepare`, named as in `train_hf.py` / `eval_hf.py` and transformers."""
    parser.add_argument("--dataset", required=True, choices=PREPARABLE_DATASETS)
    parser.add_argument(
        "--data_root", required=True, help="folder holding Casia/, LFW/ and SCface/ (for 'folder': the identity tree)"
    )
    parser.add_argument("--output_dir", required=True, help="directory to write (must be empty or absent)")
    parser.add_argument(
        "--casia_fold",
        type=int,
        default=None,
        help="casia: 0..9 hold out a tenth of the subjects as validation; >= 10 or absent: train on all",
    )
    parser.add_argument("--num_subjects", type=int, default=None,
                        help="casia: N of the fold formula (default: the subject count of CASIA-WebFace)")
    parser.add_argument(
        "--pairs_file", default=None, help="lfw: pairs file (default LFW/lfw_test_pair.txt, else LFW/pairs.txt)"
    )
    parser.add_argument(
        "--strict_data", action="store_true", help="fail on listed images that are missing instead of dropping them"
    )
    parser.add_argument(
        "--follow_symlinks_outside_root", action="store_true",
        help="read files whose symbolic links point outside --data_root (refused by default)",
    )
    shards = parser.add_mutually_exclusive_group()
    shards.add_argument("--num_shards", type=int, default=None, help="shards per split (capped at the split's rows)")
    shards.add_argument("--max_shard_size", default=None, help="largest shard, e.g. 500MB (datasets' default)")
    parser.add_argument("--num_proc", type=int, default=None, help="processes writing shards")
    parser.add_argument("--overwrite", action="store_true", help="replace an output directory written by this command")
    parser.add_argument(
        "--landmarks_file", default=None,
        help="store every face aligned to the ArcFace template by its 5 landmarks: one line per image, "
        "'<path relative to --data_root> x1 y1 ... x5 y5' (eyes, nose tip, mouth corners, from a detector)",
    )
    parser.add_argument("--align_size", type=int, default=112, help="side of the aligned crops (with --landmarks_file)")
    parser.add_argument("--push_to_hub", action="store_true", help="also upload to the Hub dataset repo --hub_model_id")
    parser.add_argument("--hub_model_id", default=None, metavar="REPO_ID", help="the Hub dataset repo (org/name)")
    add_hub_arguments(parser)
    parser.epilog = DEBUG_HELP
    parser.set_defaults(run=_run_prepare, command_parser=parser)
    return parser



def _add_prepare(subparsers: argparse._SubParsersAction) -> None:
    add_prepare_arguments(
        subparsers.add_parser("prepare", help="write a dataset with embedded image bytes", description=_PREPARE_DESCRIPTION)
    )


def _run_prepare(args: argparse.Namespace) -> None:
    from ..hub import prepare_hub_repo
    from .prepare import prepare_dataset

    if args.push_to_hub and not args.hub_model_id:
        raise DCRInputError("--push_to_hub needs --hub_model_id org/name (the Hub dataset repo).")
    if args.hub_model_id and not args.push_to_hub:
        raise DCRInputError("--hub_model_id is only used with --push_to_hub.")
    repo_id = None
    if args.push_to_hub:  # token, repo and write access checked before the (long) preparation
        repo_id = prepare_hub_repo(args.hub_model_id, token=args.hub_token, private=args.hub_private_repo or None,
                                   revision=args.hub_revision, repo_type="dataset")
    prepared = prepare_dataset(
        args.dataset,
        args.data_root,
        args.output_dir,
        fold=args.casia_fold,
        **({} if args.num_subjects is None else {"num_subjects": args.num_subjects}),
        pairs_file=args.pairs_file,
        strict=args.strict_data,
        follow_symlinks_outside_root=args.follow_symlinks_outside_root,
        num_shards=args.num_shards,
        max_shard_size=args.max_shard_size,
        num_proc=args.num_proc,
        overwrite=args.overwrite,
        landmarks_file=args.landmarks_file,
        align_size=args.align_size,
        push_to_hub=repo_id,
        private=args.hub_private_repo or None,
        token=args.hub_token,
        revision=args.hub_revision,
    )
    for name, split in prepared.items():
        print(f"{name}: {len(split)} rows, {len(split.cache_files)} shard(s), columns {split.column_names}")
    print(
        f"Prepared {args.dataset} in {args.output_dir}"
        + (f" and pushed to {repo_id}" if repo_id else "")
    )


# One entry per command: new commands register a parser builder here.
COMMANDS: tuple[Callable[[argparse._SubParsersAction], None], ...] = (_add_prepare,)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m dcr_hf.data", description="Dataset tools of dcr_hf.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add_command in COMMANDS:
        add_command(subparsers)
    return parser


def _run(args: argparse.Namespace, debug: bool) -> int:
    # Layout and argument problems carry actionable messages; a traceback would bury them.
    with reported_errors(args.command_parser, debug):
        args.run(args)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m dcr_hf.data COMMAND ...`."""
    argv, debug = split_debug_flag(argv)
    return _run(build_parser().parse_args(argv), debug)


def prepare_main(argv: Sequence[str] | None = None) -> int:
    """Console entry point `dcr-prepare` (= `python -m dcr_hf.data prepare`)."""
    argv, debug = split_debug_flag(argv)
    parser = add_prepare_arguments(argparse.ArgumentParser(description=_PREPARE_DESCRIPTION))
    return _run(parser.parse_args(argv), debug)


__all__ = ["COMMANDS", "add_prepare_arguments", "build_parser", "main", "prepare_main"]
