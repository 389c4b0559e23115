"""Gallery search at a million faces (not a test): build time, memory, queries/s and recall of
each index kind of `dcr_hf.index.GalleryIndex` against exact search.

    python benchmarks/bench_index.py [--tiny] [--num_faces 1000000] [--dim 512] [--kinds ivfsq8,ivfpq,hnswsq8,hnsw]
        [--threads 2] [--target_recall 0.95]

The gallery is synthetic and clustered, so that neighbours mean something: `num_faces / 50`
identities, each a random unit direction, and 50 faces an identity scattered around it (unit
vectors after noise of norm about 1.2, cosine to their centre ~0.6, as face embeddings of one
person); the queries are new faces of random identities. `flat` (exact, inner product) gives the
ground truth. For the approximate kinds the search parameter is swept (IVF-SQ8 and IVF-PQ
`nprobe`, HNSW `efSearch`; `hnswsq8` keeps its refine factor) and each setting reports queries/s
(a batch of queries through `GalleryIndex.search_embeddings`, the API's whole call), its speed-up
over exact search and:

- recall@1: the fraction of queries whose approximate nearest face is the exact nearest face;
- recall@10: the fraction whose exact nearest face is among the approximate 10 (faiss' "1-R@10");
- 10-recall@10: the mean overlap of the approximate and exact 10 nearest faces.

The goal is recall@10 >= `--target_recall` at >= 10x exact search's queries/s; the table marks the
first setting that reaches both. Memory: the index's own bytes (vectors or codes, inverted lists
or graph, ids) as faiss holds them, and the process' resident memory after each build.
`--tiny`: 10^4 faces of 64-d, 200 queries (a test that the script runs, in seconds).
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _limits import describe_machine  # noqa: E402
from _timing import print_table, set_threads  # noqa: E402

from dcr_hf.index import GalleryIndex  # noqa: E402
from dcr_hf.index.kinds import faiss_module, hnsw_of  # noqa: E402

FACES_PER_IDENTITY = 50


def clustered_gallery(num_faces: int, dim: int, num_queries: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unit gallery vectors `[num_faces, dim]` (float32), their identity ids, unit queries `[num_queries, dim]`."""
    rng = np.random.default_rng(seed)
    num_identities = max(1, num_faces // FACES_PER_IDENTITY)
    centers = rng.normal(size=(num_identities, dim)).astype(np.float32)
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    noise = 1.2 / np.sqrt(dim)
    labels = np.repeat(np.arange(num_identities), FACES_PER_IDENTITY)[:num_faces]
    gallery = np.empty((num_faces, dim), dtype=np.float32)
    for start in range(0, num_faces, 100_000):  # chunks: the float64 noise of 10^6 x 512 would be 4 GB
        stop = min(start + 100_000, num_faces)
        gallery[start:stop] = centers[labels[start:stop]] + noise * rng.standard_normal((stop - start, dim), dtype=np.float32)
    gallery /= np.linalg.norm(gallery, axis=1, keepdims=True)
    query_labels = rng.integers(0, num_identities, num_queries)
    queries = centers[query_labels] + noise * rng.standard_normal((num_queries, dim), dtype=np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    return gallery, labels, queries


def index_bytes(gallery: GalleryIndex) -> int:
    """Bytes of the faiss index: vectors or codes, ids, coarse centroids and codebooks, HNSW links."""
    faiss = faiss_module()
    index = gallery.index
    ids = index.ntotal * 8
    if gallery.kind.kind in ("ivfsq8", "ivfpq"):
        ivf = faiss.extract_index_ivf(index)
        lists = ids + index.ntotal * ivf.code_size + ivf.nlist * ivf.d * 4
        if gallery.kind.kind == "ivfsq8":
            return lists + faiss.downcast_index(ivf).sq.trained.size() * 4  # per-dimension minimum and range
        pq = faiss.downcast_index(ivf).pq
        return lists + pq.M * pq.ksub * pq.dsub * 4
    vectors = index.ntotal * index.d * 4  # flat, hnsw's storage, hnswsq8's refine index
    graph = hnsw_of(index)
    if graph is None:
        return ids + vectors
    links = graph.hnsw.neighbors.size() * 4 + graph.hnsw.offsets.size() * 8 + index.ntotal * 4  # links, offsets, levels
    if gallery.kind.kind == "hnswsq8":
        storage = faiss.downcast_index(graph.storage)
        return ids + vectors + links + index.ntotal * storage.code_size + storage.sq.trained.size() * 4
    return ids + vectors + links


def rss_megabytes() -> tuple[float, float]:
    """Resident memory now and at peak, in MB."""
    with open("/proc/self/statm") as statm:
        now = int(statm.read().split()[1]) * resource.getpagesize()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return now / 1e6, peak / 1e6


def timed_search(gallery: GalleryIndex, queries: np.ndarray, k: int) -> tuple[float, np.ndarray]:
    """(seconds, ids `[num_queries, k]`) of one batched search through the API, best of 2."""
    best, ids = float("inf"), None
    for _ in range(2):
        start = time.perf_counter()
        found = gallery.search_embeddings(queries, k)
        best = min(best, time.perf_counter() - start)
        ids = np.array([[hit["id"] for hit in row] + [-1] * (k - len(row)) for row in found])
    return best, ids


def recalls(approximate: np.ndarray, exact: np.ndarray) -> tuple[float, float, float]:
    """recall@1, recall@10 (exact nearest among the approximate 10), 10-recall@10."""
    at1 = float(np.mean(approximate[:, 0] == exact[:, 0]))
    at10 = float(np.mean([exact[i, 0] in approximate[i, :10] for i in range(len(exact))]))
    overlap = float(np.mean([len(set(approximate[i, :10]) & set(exact[i, :10])) / 10 for i in range(len(exact))]))
    return at1, at10, overlap


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="10^4 x 64-d, 200 queries")
    parser.add_argument("--num_faces", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--num_queries", type=int, default=1000)
    parser.add_argument("--kinds", default="ivfsq8,ivfpq,hnswsq8,hnsw", help="approximate kinds to measure (flat always runs)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--target_recall", type=float, default=0.95)
    args = parser.parse_args()
    if args.tiny:
        args.num_faces, args.dim, args.num_queries = 10_000, 64, 200
    set_threads(args.threads)
    faiss = faiss_module()
    faiss.omp_set_num_threads(args.threads)
    kinds = [kind for kind in args.kinds.split(",") if kind and kind != "flat"]

    vectors, labels, queries = clustered_gallery(args.num_faces, args.dim, args.num_queries)
    names = [str(label) for label in labels.tolist()]
    rows: list[list[str]] = []

    def built(kind: str, **options) -> tuple[GalleryIndex, float]:
        start = time.perf_counter()
        gallery = GalleryIndex.from_embeddings(vectors, names, kind=kind, **options)
        seconds = time.perf_counter() - start
        now, peak = rss_megabytes()
        rows.append([f"{kind}: {gallery.kind.factory}", f"build {seconds:.1f} s", f"index {index_bytes(gallery) / 1e6:.0f} MB",
                     f"RSS {now:.0f} MB (peak {peak:.0f})", "", "", "", ""])
        return gallery, seconds

    exact, _ = built("flat")
    exact_seconds, truth = timed_search(exact, queries, 10)
    exact_qps = len(queries) / exact_seconds
    rows.append(["  exact search", "", "", "", f"{exact_qps:.0f} q/s", "1.0x", "1.000 / 1.000", "1.000"])
    del exact

    for kind in kinds:
        gallery, _ = built(kind)
        if kind in ("ivfsq8", "ivfpq"):
            nlist = faiss.extract_index_ivf(gallery.index).nlist
            name, settings = "nprobe", [p for p in (1, 2, 4, 8, 16, 32, 64, 128, 256, 512) if p <= nlist]
        else:
            name, settings = "efSearch", [16, 32, 64, 96, 128, 256, 512]
        reached = False
        for value in settings:
            gallery.kind.search_parameters = {**gallery.kind.search_parameters, name: value}
            gallery._gpu_index = None  # the next search applies the parameter to its searcher
            faiss.ParameterSpace().set_index_parameter(gallery.index, name, value)
            seconds, found = timed_search(gallery, queries, 10)
            at1, at10, overlap = recalls(found, truth)
            speedup = exact_seconds / seconds
            goal = at10 >= args.target_recall and speedup >= 10
            mark = "  <- goal" if goal and not reached else ""
            reached = reached or goal
            rows.append([f"  {name}={value}", "", "", "", f"{len(queries) / seconds:.0f} q/s", f"{speedup:.1f}x",
                         f"{at1:.3f} / {at10:.3f}", f"{overlap:.3f}{mark}"])
            if at10 >= 0.999 and overlap >= 0.99:
                break
        del gallery

    print_table(
        f"Gallery search, {args.num_faces} x {args.dim} clustered synthetic faces, {args.num_queries} queries, k = 10: "
        f"{describe_machine()}, faiss {faiss.__version__} ({args.threads} threads)",
        ["index / setting", "build", "memory", "process", "queries/s", "vs exact", "recall@1 / @10", "10-recall@10"], rows,
    )


if __name__ == "__main__":
    main()
