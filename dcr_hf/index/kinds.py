"""The faiss index kinds of a gallery: exact, IVF-SQ8, IVF-PQ and HNSW (SQ8 codes or full vectors), as faiss `index_factory` strings.

A kind is data saved with the index (its factory string and search parameters go into the
manifest), so a loaded index is searched as it was built. Every kind holds L2-normalised
embeddings and keeps the caller's int64 ids:

- `flat`: `IDMap2,Flat` with inner products, exact cosine search; for up to ~10^5 faces (a
  search reads every vector: 2 KiB a 512-d face).
- `ivfsq8`: `IVF{nlist},SQ8` with L2 distances (on unit vectors the same order as cosine):
  `nlist` coarse clusters (about 4 sqrt(n)), each face's vector as one byte a dimension (faiss'
  per-dimension 8-bit scalar quantiser, 512 B a 512-d face); a search scans `nprobe` clusters
  (default `IVF_NPROBE`). 4x the memory of 128-byte PQ codes, for codes that keep the order of
  faces whose cosines to the probe are close (PQ's ranking error); `remove` is native, O(n).
- `ivfpq`: `IVF{nlist},PQ{m}np` with L2 distances (on unit vectors the same order as cosine):
  `nlist` coarse clusters (about 4 sqrt(n)), product-quantised residuals of `m` bytes a face;
  a search scans `nprobe` clusters. `remove` is native but scans every inverted list (O(n)).
- `hnswsq8`: `IDMap2,HNSW32,SQ8,RFlat` with L2 distances, `auto`'s choice from 10^5 to
  `HNSW_UP_TO` faces: a graph (32 links a face) over 8-bit scalar codes (512 B a 512-d face, a
  quarter of the memory read a step of the walk), whose `efSearch` best faces are re-ranked by
  faiss' `IndexRefineFlat` over the exact vectors it keeps (`k_factor_rf` x k of them): exact
  cosine scores. At 10^6 x 512 (`benchmarks/ann_search.py`, clustered faces) efSearch 96 finds
  the exact nearest face among its 10 for 0.961 of the queries at 14.3x exact search's queries/s
  (2 cores, quiet: the goal of 0.95 at 10x reached); memory ~2.8 KB a 512-d face (the exact
  vectors, codes, links, id), so `auto` hands over to `ivfpq` beyond `HNSW_UP_TO`. The codes' per-dimension
  ranges are those of the faces it was built with: a face added later outside them is clipped in
  the walk (its re-ranked score stays exact); rebuild after enrolling far more than the first build.
- `hnsw`: `IDMap2,HNSW32,Flat` with L2 distances, the same graph over the full vectors: each step
  of the walk reads 2 KiB a face, so at 10^6 it ran at about a quarter of `hnswsq8`'s queries/s at
  the same efSearch and recall (runs under load, `docs/benchmarks.md`); kept for indexes built with it.
- HNSW kinds cannot delete in faiss: `remove` empties the index (its trained codes and parameters
  kept) and adds back the exact stored vectors of the faces kept, a new graph.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from ..errors_dcr import DCRInputError

KINDS = ("flat", "ivfsq8", "ivfpq", "hnswsq8", "hnsw")
#: Above this many faces `auto` picks `hnswsq8`: an exact search then reads over 200 MB of 512-d vectors a query.
EXACT_UP_TO = 100_000
#: Above this many faces `auto` picks `ivfpq` (136 B a face): `hnswsq8` keeps ~2.8 KB a 512-d face, 11 GB at 4 x 10^6.
HNSW_UP_TO = 4_000_000
#: HNSW graph candidates kept while adding a face (faiss' default 40: at 10^6 x 512 recall@10 0.705 at efSearch 96, 80: 0.961).
HNSW_EF_CONSTRUCTION = 80
#: `hnswsq8`'s defaults: candidates kept while searching, and the refine factor (k_factor_rf x k re-ranked exactly).
#: At 10^6 x 512 efSearch 96 reaches recall@10 0.961; the graph's misses, not the codes, bound it (the same 0.961
#: with and without the re-ranking), so k_factor 2 buys exact scores and ranks, not recall@10.
HNSWSQ8_EF_SEARCH = 96
HNSWSQ8_K_FACTOR = 2
#: Training points faiss wants per k-means centroid (fewer: a warning and poorer clusters).
POINTS_PER_CENTROID = 39
#: IVF-SQ8's default clusters scanned a query (`benchmarks/bench_index.py`, 512-d clustered faces: at 10^5
#: recall@10 1.000 at nprobe 4, 0.989 at 1; at 10^6 the coarse clusters, not the codes, limit the recall).
IVF_NPROBE = 4


def faiss_module():
    """faiss, or an ImportError saying how to install it."""
    try:
        import faiss
    except ImportError as error:
        raise ImportError("Gallery search needs faiss: `pip install faiss-cpu` (or faiss-gpu).") from error
    return faiss


@dataclass
class IndexKind:
    """A gallery index kind and its parameters (saved in the manifest).

    Attributes:
        kind: one of `KINDS`.
        factory: the faiss `index_factory` string.
        metric: "inner_product" (flat) or "l2" (ivfpq, hnsw), on L2-normalised embeddings.
        search_parameters: `{"nprobe": ...}` (IVF), `{"efSearch": ...}` (hnsw) or `{"efSearch": ...,
            "k_factor_rf": ...}` (hnswsq8): faiss `ParameterSpace` names, set on load.
    """

    kind: str
    factory: str
    metric: str
    search_parameters: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "factory": self.factory, "metric": self.metric, "search_parameters": self.search_parameters}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> IndexKind:
        return cls(values["kind"], values["factory"], values["metric"], dict(values.get("search_parameters", {})))


def choose_kind(kind: str, num_vectors: int) -> str:
    """`kind`, or for "auto" `flat` up to `EXACT_UP_TO` faces, `hnswsq8` up to `HNSW_UP_TO`, `ivfpq` beyond."""
    if kind == "auto":
        if num_vectors <= EXACT_UP_TO:
            return "flat"
        return "hnswsq8" if num_vectors <= HNSW_UP_TO else "ivfpq"
    if kind not in KINDS:
        raise DCRInputError(f"--index_kind must be one of {('auto', *KINDS)}, got {kind!r}.")
    return kind


def pq_bytes(dimension: int) -> int:
    """PQ code bytes a face: 128 for 512-d (4 dimensions a sub-quantiser), a divisor of `dimension`.

    Measured on clustered synthetic faces (`benchmarks/bench_index.py --tiny`, 128-d): 8 dimensions
    a byte find the exact nearest face among the first 10 for 0.92 of the queries, 4 for 0.99.
    """
    target = max(1, dimension // 4)
    return max(m for m in range(1, target + 1) if dimension % m == 0)


def index_kind(kind: str, num_vectors: int, dimension: int, *, nlist: int | None = None, nprobe: int | None = None,
               pq_m: int | None = None, hnsw_m: int = 32, ef_search: int | None = None,
               k_factor: int = HNSWSQ8_K_FACTOR) -> IndexKind:
    """The `IndexKind` for `num_vectors` training faces of `dimension` (`kind` "auto" or one of `KINDS`).

    IVF-SQ8 and IVF-PQ: `nlist` defaults to the power of two nearest 4 sqrt(n) (at most n / 39, faiss'
    points per centroid). IVF-SQ8: `nprobe` defaults to `IVF_NPROBE` (at most nlist). IVF-PQ: `nprobe`
    to nlist / 32 (at least 1), `pq_m` to `pq_bytes(dimension)`; it needs at least 256 training faces
    (the 8-bit codebooks have 256 centroids). HNSW: `hnsw_m` links a face; `ef_search` defaults to
    `HNSWSQ8_EF_SEARCH` (hnswsq8) or 128 (hnsw); hnswsq8 re-ranks `k_factor` x k candidates exactly.
    """
    kind = choose_kind(kind, num_vectors)
    if kind == "flat":
        return IndexKind("flat", "IDMap2,Flat", "inner_product")
    if kind == "hnsw":
        return IndexKind("hnsw", f"IDMap2,HNSW{hnsw_m},Flat", "l2", {"efSearch": 128 if ef_search is None else ef_search})
    if kind == "hnswsq8":
        ef_search = HNSWSQ8_EF_SEARCH if ef_search is None else ef_search
        return IndexKind("hnswsq8", f"IDMap2,HNSW{hnsw_m},SQ8,RFlat", "l2", {"efSearch": ef_search, "k_factor_rf": k_factor})
    if nlist is None:
        nlist = 2 ** round(math.log2(4 * math.sqrt(num_vectors)))
        nlist = max(1, min(nlist, num_vectors // POINTS_PER_CENTROID))
    if kind == "ivfsq8":
        nprobe = min(IVF_NPROBE, nlist) if nprobe is None else nprobe
        return IndexKind("ivfsq8", f"IVF{nlist},SQ8", "l2", {"nprobe": nprobe})
    if num_vectors < 256:
        raise DCRInputError(f"--index_kind ivfpq needs at least 256 faces to train its codebooks, got {num_vectors}; use flat.")
    pq_m = pq_bytes(dimension) if pq_m is None else pq_m
    if dimension % pq_m:
        raise DCRInputError(f"--pq_m {pq_m} must divide the embedding dimension {dimension}.")
    nprobe = max(1, nlist // 32) if nprobe is None else nprobe
    # "np": no polysemous training (a slow annealing of the codes, for a search mode not used here).
    return IndexKind("ivfpq", f"IVF{nlist},PQ{pq_m}np", "l2", {"nprobe": nprobe})


def new_index(kind: IndexKind, dimension: int):
    """An empty faiss index of `kind` (to be trained when it holds SQ8 or PQ codes)."""
    faiss = faiss_module()
    metric = faiss.METRIC_INNER_PRODUCT if kind.metric == "inner_product" else faiss.METRIC_L2
    index = faiss.index_factory(dimension, kind.factory, metric)
    graph = hnsw_of(index)
    if graph is not None:
        graph.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
    set_search_parameters(index, kind)
    return index


def hnsw_of(index):
    """The faiss `IndexHNSW` inside `index` (under its id map and refine step), or None."""
    faiss = faiss_module()
    index = faiss.downcast_index(index)
    while not isinstance(index, faiss.IndexHNSW):
        inner = getattr(index, "index", None) or getattr(index, "base_index", None)
        if inner is None:
            return None
        index = faiss.downcast_index(inner)
    return index


def set_search_parameters(index, kind: IndexKind) -> None:
    """Apply `kind.search_parameters` (nprobe, efSearch) to `index` (CPU, or GPU for nprobe)."""
    faiss = faiss_module()
    for name, value in kind.search_parameters.items():
        faiss.ParameterSpace().set_index_parameter(index, name, int(value))


def to_gpu(index):
    """A copy of `index` on every GPU when faiss has GPU support and there is a GPU, else None.

    HNSW has no GPU version in faiss; the HNSW kinds stay on the CPU.
    """
    faiss = faiss_module()
    if not hasattr(faiss, "index_cpu_to_all_gpus") or faiss.get_num_gpus() == 0:
        return None
    try:
        return faiss.index_cpu_to_all_gpus(index)
    except RuntimeError:  # a kind faiss cannot clone to a GPU (HNSW)
        return None


def scores_from_distances(kind: IndexKind, distances):
    """Cosine similarities from the index's distances (inner products, or squared L2 of unit vectors)."""
    return distances if kind.metric == "inner_product" else 1.0 - distances / 2.0


__all__ = ["EXACT_UP_TO", "HNSWSQ8_EF_SEARCH", "HNSWSQ8_K_FACTOR", "HNSW_EF_CONSTRUCTION", "HNSW_UP_TO", "IVF_NPROBE", "KINDS",
           "IndexKind", "choose_kind", "faiss_module", "hnsw_of", "index_kind", "new_index", "pq_bytes", "scores_from_distances",
           "set_search_parameters", "to_gpu"]
