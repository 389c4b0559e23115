"""`dcr-index` (`python -m dcr_hf.index`): build, grow, shrink and search a gallery index of faces.

    dcr-index build  --gallery DIR --model_name_or_path M --index_dir OUT [--index_kind auto|flat|ivfsq8|ivfpq|hnswsq8|hnsw]
    dcr-index add    --index_dir OUT --gallery DIR [--model_name_or_path M]
    dcr-index remove --index_dir OUT --identity NAME [NAME ...]
    dcr-index search --index_dir OUT [--model_name_or_path M] [-k 5] PROBE [PROBE ...]

Every subcommand prints one JSON object on stdout (search: the top-k faces of every probe, with
identity names and cosine scores). `add` and `search` use the model the index was built with
unless `--model_name_or_path` names another, which is refused unless it has the same weights.
Bad inputs (an empty or unreadable gallery, a missing or unreadable probe, a truncated index,
a model of another dimension, k <= 0) are one line and exit status 2, before any model runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..cli import DEBUG_HELP, check_output_path, reported_errors, split_debug_flag
from ..errors_dcr import DCRFileExistsError, DCRInputError
from .gallery import INDEX_FILE, MANIFEST_FILE, GalleryIndex
from .kinds import KINDS


def _positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dcr-index", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=DEBUG_HELP)
    commands = parser.add_subparsers(dest="command", required=True)

    def common(sub: argparse.ArgumentParser, model_required: bool) -> None:
        sub.add_argument("--index_dir", required=True, help="the index folder (index.faiss + manifest.json)")
        sub.add_argument("--model_name_or_path", required=model_required, default=None,
                         help="DCR model folder or Hub id" + ("" if model_required else " (default: the index's own model)"))
        sub.add_argument("--batch_size", type=_positive, default=64)

    def gallery(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--gallery", required=True, help="ROOT/<identity>/<image> tree or a prepared dataset folder")
        sub.add_argument("--follow_symlinks_outside_root", action="store_true",
                         help="follow symbolic links that lead outside the gallery folder")

    build = commands.add_parser("build", help="embed a gallery (HR) into a new index")
    common(build, model_required=True)
    gallery(build)
    build.add_argument("--index_kind", choices=("auto", *KINDS), default="auto",
                       help="flat: exact (up to ~10^5 faces, auto's choice there); hnswsq8: graph over 8-bit codes, "
                            "exact re-ranking (auto's choice to 4 x 10^6); ivfpq: PQ codes, least memory (auto's beyond); "
                            "ivfsq8: IVF with 8-bit codes; hnsw: graph over the full vectors")
    build.add_argument("--nlist", type=_positive, default=None, help="IVF coarse clusters (default: ~4 sqrt(n))")
    build.add_argument("--nprobe", type=_positive, default=None, help="IVF clusters scanned a query (default: 4 for ivfsq8, nlist / 32 for ivfpq)")
    build.add_argument("--pq_m", type=_positive, default=None, help="IVF-PQ code bytes a face (default: dimension / 4)")
    build.add_argument("--ef_search", type=_positive, default=None,
                       help="HNSW candidates kept while searching (default: 96 for hnswsq8, 128 for hnsw)")
    build.add_argument("--k_factor", type=_positive, default=2,
                       help="hnswsq8: k_factor x k graph candidates re-ranked with the exact vectors")
    build.add_argument("--overwrite", action="store_true", help="replace an index already in --index_dir")

    add = commands.add_parser("add", help="enroll the faces of a gallery into an index")
    common(add, model_required=False)
    gallery(add)

    remove = commands.add_parser("remove", help="delete every face of some identities")
    remove.add_argument("--index_dir", required=True)
    remove.add_argument("--identity", nargs="+", required=True, help="identity names to delete")

    search = commands.add_parser("search", help="top-k enrolled faces of probe images, as JSON")
    common(search, model_required=False)
    search.add_argument("-k", "--k", type=_positive, default=5, help="results a probe")
    search.add_argument("probes", nargs="+", help="probe image files")
    return parser


def _load_model(name_or_path: str, dimension: int | None) -> tuple[Any, Any, dict[str, Any]]:
    from ..host_memory import keep_freed_memory
    from ..hub.loading import load_model_and_processor
    from .embedding import model_identity

    model, processor = load_model_and_processor(name_or_path, option="--model_name_or_path")
    if next(model.parameters()).device.type == "cpu":
        keep_freed_memory()  # each batch's activations reused, not faulted in again (`host_memory`)
    size = model.config.embedding_size
    if dimension is not None and size != dimension:
        raise DCRInputError(f"--model_name_or_path {name_or_path} makes {size}-d embeddings but the index holds {dimension}-d ones.")
    return model, processor, model_identity(model, name_or_path)


def _summary(index: GalleryIndex, index_dir: str) -> dict[str, Any]:
    return {"index_dir": index_dir, "index_kind": index.kind.kind, "factory": index.kind.factory, "num_faces": len(index),
            "num_identities": len(index.identity_names), "model": index.model}


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Do one subcommand; returns what it prints."""
    from .embedding import load_gallery, read_probes

    if args.command == "build":
        target = Path(args.index_dir)
        check_output_path(target, "--index_dir", "the index")
        if not args.overwrite and any((target / name).exists() for name in (INDEX_FILE, MANIFEST_FILE)):
            raise DCRFileExistsError(f"--index_dir {target} already holds an index; pass --overwrite to replace it.")
        load_gallery(args.gallery, follow_symlinks_outside_root=args.follow_symlinks_outside_root)  # refused before the model loads
        model, processor, identity = _load_model(args.model_name_or_path, None)
        index = GalleryIndex.build(args.gallery, model, processor, identity, kind=args.index_kind, batch_size=args.batch_size,
                                   follow_symlinks_outside_root=args.follow_symlinks_outside_root, nlist=args.nlist,
                                   nprobe=args.nprobe, pq_m=args.pq_m, ef_search=args.ef_search,
                                   k_factor=args.k_factor)
        index.save(target)
        return _summary(index, args.index_dir)
    index = GalleryIndex.load(args.index_dir)
    if args.command == "remove":
        removed = index.remove(args.identity)
        index.save(args.index_dir)
        return {**_summary(index, args.index_dir), "removed_faces": removed}
    name = args.model_name_or_path or index.model.get("name_or_path")
    if args.command == "add":
        load_gallery(args.gallery, follow_symlinks_outside_root=args.follow_symlinks_outside_root)
        model, processor, identity = _load_model(name, index.dimension)
        ids = index.add(args.gallery, model, processor, identity, batch_size=args.batch_size,
                        follow_symlinks_outside_root=args.follow_symlinks_outside_root)
        index.save(args.index_dir)
        return {**_summary(index, args.index_dir), "added_faces": len(ids)}
    read_probes(args.probes)
    model, processor, identity = _load_model(name, index.dimension)
    probes = index.search(args.probes, model, processor, identity, k=args.k, batch_size=args.batch_size)
    return {"index_dir": args.index_dir, "model": identity["name_or_path"], "k": args.k, "probes": probes}


def main(argv: Sequence[str] | None = None) -> None:
    argv, debug = split_debug_flag(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    with reported_errors(parser, debug):
        result = run(args)
    json.dump(result, sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
