"""Raw-faiss experiments for the 10^6 gallery (not a test): build one index by factory string and save it.

    python benchmarks/ann_build.py --factory HNSW32,SQ8 [--efConstruction 80] [--train_points 200000]
        [--niter 10] [--out ann_index] [--tiny]

The gallery is `bench_index.clustered_gallery` (seed 0; 1000 queries). The first run saves the
queries and the exact ground truth (faiss `IndexFlatIP`, top 100) as .npy beside the indexes, so
every index is measured against the same truth by `benchmarks/ann_search.py`. The index is written
with `faiss.write_index` as `OUT/<factory with , -> _>[_efC<e>].faissindex`, with positions 0..n-1 as ids
(`--efConstruction` is the graph's of an HNSW index; an `IVF..._HNSW..` quantizer keeps faiss' default).
IVF coarse quantizers are trained on `--train_points` faces drawn at random (seeded), `--niter`
k-means iterations; an `IVF..._HNSW..` quantizer assigns through its own HNSW graph while training.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_index import clustered_gallery, rss_megabytes  # noqa: E402

from dcr_hf.index.kinds import faiss_module, hnsw_of  # noqa: E402


def gallery_files(out: Path, num_faces: int, dim: int, num_queries: int) -> dict[str, Path]:
    stem = f"gallery_{num_faces}x{dim}_q{num_queries}"
    return {"queries": out / f"{stem}_queries.npy", "truth": out / f"{stem}_truth100.npy"}


def load_or_make(out: Path, num_faces: int, dim: int, num_queries: int):
    """(gallery `[n, d]`, queries `[q, d]`, exact top-100 ids `[q, 100]`): truth computed once and saved."""
    faiss = faiss_module()
    vectors, _, queries = clustered_gallery(num_faces, dim, num_queries)
    files = gallery_files(out, num_faces, dim, num_queries)
    if files["truth"].exists():
        saved = np.load(files["queries"])
        if not np.array_equal(saved, queries):
            raise SystemExit(f"{files['queries']} differs from the regenerated queries")
        return vectors, queries, np.load(files["truth"])
    exact = faiss.IndexFlatIP(dim)
    exact.add(vectors)
    _, truth = exact.search(queries, 100)
    np.save(files["queries"], queries)
    np.save(files["truth"], truth)
    return vectors, queries, truth


def index_path(out: Path, factory: str, ef_construction: int | None) -> Path:
    name = factory.replace(",", "_")
    if ef_construction is not None and "HNSW" in factory and not factory.startswith("IVF"):  # not an HNSW coarse quantizer
        name += f"_efC{ef_construction}"
    return out / f"{name}.faissindex"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--factory", required=True)
    parser.add_argument("--efConstruction", type=int, default=80)
    parser.add_argument("--train_points", type=int, default=200_000)
    parser.add_argument("--niter", type=int, default=10)
    parser.add_argument("--num_faces", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--num_queries", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="ann_index", help="folder of the saved indexes, queries and truth")
    parser.add_argument("--tiny", action="store_true", help="10^4 x 64-d, 200 queries, under OUT/tiny")
    args = parser.parse_args()
    out = Path(args.out)
    if args.tiny:
        args.num_faces, args.dim, args.num_queries, out = 10_000, 64, 200, out / "tiny"
        args.train_points = min(args.train_points, 10_000)
    out.mkdir(parents=True, exist_ok=True)
    faiss = faiss_module()
    faiss.omp_set_num_threads(args.threads)
    vectors, _, _ = load_or_make(out, args.num_faces, args.dim, args.num_queries)

    index = faiss.index_factory(args.dim, args.factory, faiss.METRIC_L2)
    graph = hnsw_of(index)  # None for an IVF index, whose HNSW quantizer keeps faiss' default
    if graph is not None:
        graph.hnsw.efConstruction = args.efConstruction
    ivf = faiss.try_extract_index_ivf(index)
    timings: dict[str, float] = {}
    start = time.perf_counter()
    if not index.is_trained:
        sample = vectors
        if ivf is not None:
            ivf.cp.niter = args.niter
            ivf.cp.max_points_per_centroid = max(1, args.train_points // ivf.nlist + 1)
            if args.train_points < len(vectors):
                rows = np.sort(np.random.default_rng(1).choice(len(vectors), args.train_points, replace=False))
                sample = vectors[rows]
        index.train(sample)
        del sample
    timings["train_s"] = time.perf_counter() - start
    start = time.perf_counter()
    index.add(vectors)
    timings["add_s"] = time.perf_counter() - start
    now, peak = rss_megabytes()
    path = index_path(out, args.factory, args.efConstruction)
    faiss.write_index(index, str(path))
    record = {"factory": args.factory, "efConstruction": args.efConstruction, "train_points": args.train_points,
              "niter": args.niter, "threads": args.threads, **{k: round(v, 1) for k, v in timings.items()},
              "file_MB": round(path.stat().st_size / 1e6, 1), "rss_MB": round(now), "peak_rss_MB": round(peak),
              "finished": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}
    print(json.dumps(record))
    with open(out / "builds.jsonl", "a") as log:
        log.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
