"""Command line of `dcr_hf.data`: `python -m dcr_hf.data <command> ...`.

Commands:
    prepare   write a dataset once with image bytes embedded (Arrow shards), optionally push it to the Hub
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from .casia import CASIA_NUM_SUBJECTS
from .prepare import PREPARABLE_DATASETS, prepare_dataset


def _add_prepare(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "prepare",
        help="write a dataset with embedded image bytes",
        description="Load a dataset from its on-disk layout and save it with the image bytes embedded in a few "
        "Arrow shards; every dcr_hf loader accepts the output directory as its data root.",
    )
    parser.add_argument("--dataset", required=True, choices=PREPARABLE_DATASETS)
    parser.add_argument(
        "--data_root", required=True, help="folder holding Casia/, LFW/ and SCface/ (for 'folder': the identity tree)"
    )
    parser.add_argument("--output", required=True, help="directory to write (must be empty or absent)")
    parser.add_argument(
        "--fold",
        type=int,
        default=None,
        help="casia: 0..9 hold out a tenth of the subjects as validation; >= 10 or absent: train on all",
    )
    parser.add_argument("--num_subjects", type=int, default=CASIA_NUM_SUBJECTS, help="casia: N of the fold formula")
    parser.add_argument(
        "--pairs_file", default=None, help="lfw: pairs file (default LFW/lfw_test_pair.txt, else LFW/pairs.txt)"
    )
    parser.add_argument(
        "--strict", action="store_true", help="fail on listed images that are missing instead of dropping them"
    )
    shards = parser.add_mutually_exclusive_group()
    shards.add_argument("--num_shards", type=int, default=None, help="shards per split (capped at the split's rows)")
    shards.add_argument("--max_shard_size", default=None, help="largest shard, e.g. 500MB (datasets' default)")
    parser.add_argument("--num_proc", type=int, default=None, help="processes writing shards")
    parser.add_argument("--overwrite", action="store_true", help="replace an output directory written by this command")
    parser.add_argument("--push_to_hub", default=None, metavar="REPO_ID", help="also upload to this Hub dataset repo")
    parser.add_argument("--private", action="store_true", help="create the Hub repo as private")
    parser.set_defaults(run=_run_prepare)


def _run_prepare(args: argparse.Namespace) -> None:
    prepared = prepare_dataset(
        args.dataset,
        args.data_root,
        args.output,
        fold=args.fold,
        num_subjects=args.num_subjects,
        pairs_file=args.pairs_file,
        strict=args.strict,
        num_shards=args.num_shards,
        max_shard_size=args.max_shard_size,
        num_proc=args.num_proc,
        overwrite=args.overwrite,
        push_to_hub=args.push_to_hub,
        private=args.private or None,
    )
    for name, split in prepared.items():
        print(f"{name}: {len(split)} rows, {len(split.cache_files)} shard(s), columns {split.column_names}")
    print(
        f"Prepared {args.dataset} in {args.output}"
        + (f" and pushed to {args.push_to_hub}" if args.push_to_hub else "")
    )


# One entry per command: new commands register a parser builder here.
COMMANDS: tuple[Callable[[argparse._SubParsersAction], None], ...] = (_add_prepare,)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m dcr_hf.data", description="Dataset tools of dcr_hf.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add_command in COMMANDS:
        add_command(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.run(args)
    except (FileNotFoundError, FileExistsError, ValueError) as error:
        # Layout and argument problems carry actionable messages; a traceback would bury them.
        parser.exit(2, f"{parser.prog} {args.command}: error: {error}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
