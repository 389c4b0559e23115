"""Search-only timing of saved 10^6 indexes (not a test): queries/s and recall against the saved exact truth.

    python benchmarks/ann_search.py --index ann_index/HNSW32_SQ8_efC80.faissindex \
        --efSearch 32,48,64,96,128 [--k_factor 0,2,4] [--nprobe 8,16,32] [--threads 2] [--tiny]

Loads an index written by `benchmarks/ann_build.py` (same gallery: `bench_index.clustered_gallery`,
seed 0), the saved queries and exact top-100, and times in the same run, 2 threads, 1000 queries,
k = 10, best of `--repeats`: exact search (faiss `IndexFlatIP` over the gallery: the baseline the
goal's 10x divides) and the index at every setting. `--k_factor F` (F > 0) puts faiss'
`IndexRefineFlat` over the index: it takes the index's F x 10 best and re-ranks them with the
exact vectors (0: the index alone). Recall as in `bench_index.py`: recall@1 (same nearest face),
recall@10 (the exact nearest among the 10 found), 10-recall@10 (overlap of the two top-10s).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import print_table  # noqa: E402
from ann_build import load_or_make  # noqa: E402
from bench_index import recalls, rss_megabytes  # noqa: E402

from dcr_hf.index.kinds import faiss_module  # noqa: E402


def timed(index, queries: np.ndarray, k: int, repeats: int) -> tuple[float, np.ndarray]:
    """(best seconds of `repeats` batched searches, ids `[q, k]`)."""
    best, ids = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        _, ids = index.search(queries, k)
        best = min(best, time.perf_counter() - start)
    return best, ids


def ints(text: str) -> list[int]:
    return [int(value) for value in text.split(",") if value]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index", required=True, help="comma-separated .faissindex files")
    parser.add_argument("--efSearch", type=ints, default=[])
    parser.add_argument("--nprobe", type=ints, default=[])
    parser.add_argument("--k_factor", type=ints, default=[0])
    parser.add_argument("--num_faces", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--num_queries", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="ann_index", help="where ann_build.py saved the queries and truth")
    parser.add_argument("--tiny", action="store_true")
    args = parser.parse_args()
    out = Path(args.out)
    if args.tiny:
        args.num_faces, args.dim, args.num_queries, out = 10_000, 64, 200, out / "tiny"
    faiss = faiss_module()
    faiss.omp_set_num_threads(args.threads)
    vectors, queries, truth = load_or_make(out, args.num_faces, args.dim, args.num_queries)

    exact = faiss.IndexFlatIP(args.dim)
    exact.add(vectors)
    exact_seconds, found = timed(exact, queries, 10, args.repeats)
    del exact
    exact_qps = len(queries) / exact_seconds
    rows = [["exact (IndexFlatIP)", f"{exact_qps:.0f}", "1.0x", *(f"{r:.3f}" for r in recalls(found, truth[:, :10]))]]
    for path in args.index.split(","):
        loaded = faiss.read_index(path)
        rows.append([f"{Path(path).stem} ({loaded.ntotal} faces)", "", "", "", "", ""])
        ivf = faiss.try_extract_index_ivf(loaded)
        name, values = ("nprobe", args.nprobe) if ivf is not None else ("efSearch", args.efSearch)
        for k_factor in args.k_factor:
            searcher = loaded
            if k_factor > 0:
                searcher = faiss.IndexRefineFlat(loaded, faiss.swig_ptr(vectors))
                searcher.k_factor = k_factor
            for value in values:
                faiss.ParameterSpace().set_index_parameter(loaded, name, value)
                seconds, found = timed(searcher, queries, 10, args.repeats)
                at1, at10, overlap = recalls(found, truth[:, :10])
                label = f"  {name} {value}" + (f", refine k_factor {k_factor}" if k_factor else "")
                rows.append([label, f"{len(queries) / seconds:.0f}", f"{exact_seconds / seconds:.1f}x",
                             f"{at1:.3f}", f"{at10:.3f}", f"{overlap:.3f}"])
            del searcher
        del loaded
    now, peak = rss_megabytes()
    load = open("/proc/loadavg").read().split()[:3]
    print_table(f"{args.num_faces} x {args.dim}, {args.num_queries} queries, k = 10, faiss {faiss.__version__}, "
                f"{args.threads} threads, best of {args.repeats}; load average {' '.join(load)}; peak RSS {peak:.0f} MB",
                ["index / setting", "queries/s", "vs exact", "recall@1", "recall@10", "10-recall@10"], rows)


if __name__ == "__main__":
    main()
