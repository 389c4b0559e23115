"""Ranking metrics of embeddings as pure functions on numpy arrays (no model inside).

- `identification_accuracy`: closed-set rank-k accuracy of probes against a gallery (CMC).
- `retrieval_metrics`: precision@1, R-precision and MAP@R of a k-NN search, defined as in
  pytorch-metric-learning's `AccuracyCalculator`.

Nearest-neighbour searches use faiss (exact `IndexFlat*`), on the GPU when faiss has GPUs.
Every function validates its inputs and raises `ValueError` naming the argument at fault.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike
from transformers.utils import logging

from ._checks import _as_1d, _as_embeddings, _check_dims, _check_lengths


logger = logging.get_logger(__name__)

# faiss GPU flat indexes can return at most this many neighbours per query.
_FAISS_GPU_MAX_K = 2048


def _nearest_neighbours(
    queries: np.ndarray, references: np.ndarray, k: int, metric: Literal["cosine", "l2"]
) -> np.ndarray:
    """Indices `[num_queries, k]` of each query's k nearest references, nearest first (exact search)."""
    try:
        import faiss
    except ImportError as error:
        raise ImportError(
            "Identification and retrieval metrics need faiss: `pip install faiss-cpu` (or faiss-gpu)."
        ) from error
    if metric == "cosine":
        # Inner product of unit vectors ranks like L2 distance on the unit sphere.
        faiss.normalize_L2(queries)
        faiss.normalize_L2(references)
        index = faiss.IndexFlatIP(references.shape[1])
    elif metric == "l2":
        index = faiss.IndexFlatL2(references.shape[1])
    else:
        raise ValueError(f"`metric` must be 'cosine' or 'l2', got {metric!r}.")
    if faiss.get_num_gpus() > 0 and k <= _FAISS_GPU_MAX_K:
        index = faiss.index_cpu_to_all_gpus(index)
    index.add(references)
    _, neighbours = index.search(queries, k)
    return neighbours


def _label_codes(*labels: np.ndarray) -> list[np.ndarray]:
    """Map several label arrays to shared dense int64 codes (labels may be ints or strings)."""
    _, codes = np.unique(np.concatenate(labels), return_inverse=True)
    return np.split(codes.astype(np.int64), np.cumsum([len(array) for array in labels])[:-1])


@dataclass(frozen=True)
class IdentificationResult:
    """Closed-set identification (CMC) accuracy.

    Attributes:
        accuracy_at_rank: `{rank: accuracy}` over the probes whose subject is in the gallery.
        accuracy_at_rank_all_probes: `{rank: accuracy}` over all probes, unmatched ones counted as misses.
        num_probes: number of probes.
        num_unmatched_probes: probes whose subject has no gallery embedding.
    """

    accuracy_at_rank: dict[int, float]
    accuracy_at_rank_all_probes: dict[int, float]
    num_probes: int
    num_unmatched_probes: int


def identification_accuracy(
    probe_embeddings: ArrayLike,
    probe_labels: ArrayLike,
    gallery_embeddings: ArrayLike,
    gallery_labels: ArrayLike,
    ranks: Sequence[int] = (1, 5),
) -> IdentificationResult:
    """Rank-k identification accuracy of probes against a gallery, by cosine similarity.

    Gallery subjects are ranked by their most similar gallery embedding; a probe is correct at
    rank k when its subject is among the k first subjects. Probes whose subject is absent from
    the gallery are counted in `num_unmatched_probes` (and logged), left out of
    `accuracy_at_rank` and counted as misses in `accuracy_at_rank_all_probes`.

    Args:
        probe_embeddings: `[num_probes, dim]` (e.g. SCface surveillance images at one distance).
        probe_labels: `[num_probes]` subject ids (ints or strings).
        gallery_embeddings: `[num_gallery, dim]` (e.g. SCface mugshots).
        gallery_labels: `[num_gallery]` subject ids.
        ranks: ranks k >= 1 to report.
    """
    probes = _as_embeddings("probe_embeddings", probe_embeddings)
    gallery = _as_embeddings("gallery_embeddings", gallery_embeddings)
    _check_dims("probe_embeddings", probes, "gallery_embeddings", gallery)
    probe_labels = _as_1d("probe_labels", probe_labels)
    gallery_labels = _as_1d("gallery_labels", gallery_labels)
    _check_lengths(probe_embeddings=probes, probe_labels=probe_labels)
    _check_lengths(gallery_embeddings=gallery, gallery_labels=gallery_labels)
    ranks = sorted({int(rank) for rank in ranks})
    if not ranks or ranks[0] < 1:
        raise ValueError(f"`ranks` must be non-empty positive integers, got {ranks}.")

    probe_codes, gallery_codes = _label_codes(probe_labels, gallery_labels)
    matched = np.isin(probe_codes, gallery_codes)
    num_unmatched = int(len(matched) - matched.sum())
    if num_unmatched == len(matched):
        raise ValueError("No probe subject is present in the gallery; identification accuracy is undefined.")
    if num_unmatched:
        logger.warning(f"{num_unmatched} of {len(matched)} probe(s) have no gallery subject; they count as misses.")

    probe_rank = _probe_ranks(probes, gallery, probe_codes, gallery_codes, ranks[-1])

    accuracy_at_rank = {rank: float(np.mean(probe_rank[matched] <= rank)) for rank in ranks}
    accuracy_all = {rank: float(np.mean(probe_rank <= rank)) for rank in ranks}
    return IdentificationResult(
        accuracy_at_rank=accuracy_at_rank,
        accuracy_at_rank_all_probes=accuracy_all,
        num_probes=len(probes),
        num_unmatched_probes=num_unmatched,
    )


def _probe_ranks(
    probes: np.ndarray, gallery: np.ndarray, probe_codes: np.ndarray, gallery_codes: np.ndarray, max_rank: int
) -> np.ndarray:
    """Rank `[num_probes]` of each probe's subject among the gallery subjects, int64 max beyond `max_rank`."""
    # The first max_rank distinct subjects of a ranking lie within its first (max_rank - 1) * m + 1
    # entries when each subject has at most m gallery embeddings.
    max_per_subject = int(np.bincount(gallery_codes).max())
    k = min(len(gallery), (max_rank - 1) * max_per_subject + 1)
    neighbour_codes = gallery_codes[_nearest_neighbours(probes, gallery, k, "cosine")]
    # Mark the first occurrence of each subject in every row (hand-written: no numpy/faiss helper).
    order = np.argsort(neighbour_codes, axis=1, kind="stable")
    sorted_codes = np.take_along_axis(neighbour_codes, order, axis=1)
    first_in_sorted = np.ones_like(sorted_codes, dtype=bool)
    first_in_sorted[:, 1:] = sorted_codes[:, 1:] != sorted_codes[:, :-1]
    is_new_subject = np.zeros_like(first_in_sorted)
    np.put_along_axis(is_new_subject, order, first_in_sorted, axis=1)
    subject_rank = np.cumsum(is_new_subject, axis=1)  # rank of the subject at each entry
    hit = neighbour_codes == probe_codes[:, None]
    found = hit.any(axis=1)
    probe_rank = np.where(found, subject_rank[np.arange(len(probes)), np.argmax(hit, axis=1)], np.iinfo(np.int64).max)
    return probe_rank


@dataclass(frozen=True)
class RetrievalResult:
    """Retrieval metrics, averaged over the queries that have at least one relevant reference.

    Attributes:
        precision_at_1: fraction of queries whose nearest reference has their label.
        r_precision: mean of (relevant among the first R retrieved) / R, R = references of the query's label.
        mean_average_precision_at_r: MAP@R, mean of sum_{i<=R} P@i * rel_i / R.
        num_queries: number of queries.
        num_unmatched_queries: queries without any reference of their label; left out of the means.
    """

    precision_at_1: float
    r_precision: float
    mean_average_precision_at_r: float
    num_queries: int
    num_unmatched_queries: int


def retrieval_metrics(
    query_embeddings: ArrayLike,
    query_labels: ArrayLike,
    reference_embeddings: ArrayLike | None = None,
    reference_labels: ArrayLike | None = None,
    *,
    metric: Literal["cosine", "l2"] = "cosine",
) -> RetrievalResult:
    """Precision@1, R-precision and MAP@R of a k-NN search, as pytorch-metric-learning defines them.

    For each query, R is the number of references with its label, and the k = max R nearest
    references are retrieved (exact faiss search). When `reference_*` are None the queries are
    their own references and each query's self-match is excluded (R then excludes it too).
    Queries whose label has no reference are counted in `num_unmatched_queries` and left out.

    `metric="cosine"` (default) searches L2-normalised embeddings by inner product, i.e. by L2
    distance on the unit sphere; `metric="l2"` searches raw embeddings by L2 distance, as the
    original (whose published embeddings are L2-normalised, so both agree there).

    Args:
        query_embeddings: `[num_queries, dim]` (e.g. low-resolution embeddings).
        query_labels: `[num_queries]` identity labels (ints or strings).
        reference_embeddings: `[num_references, dim]` (e.g. high-resolution embeddings) or None.
        reference_labels: `[num_references]` or None (together with `reference_embeddings`).
        metric: "cosine" or "l2".
    """
    queries = _as_embeddings("query_embeddings", query_embeddings)
    query_labels = _as_1d("query_labels", query_labels)
    _check_lengths(query_embeddings=queries, query_labels=query_labels)
    same_set = reference_embeddings is None
    references, query_codes, reference_codes = _references_and_codes(
        queries, query_labels, reference_embeddings, reference_labels
    )

    num_relevant = np.bincount(reference_codes, minlength=query_codes.max() + 1)[query_codes] - int(same_set)
    matched = num_relevant > 0
    num_unmatched = int(len(matched) - matched.sum())
    if num_unmatched == len(matched):
        raise ValueError("No query has a reference with its label; retrieval metrics are undefined.")
    if num_unmatched:
        logger.warning(f"{num_unmatched} of {len(matched)} query(ies) have no reference with their label; left out.")

    k = int(num_relevant.max())
    neighbours = _retrieved_neighbours(queries, references, k, same_set, metric)
    queries_kept = matched.nonzero()[0]
    precision_at_1, r_precision, map_at_r = _precisions(
        neighbours[queries_kept], query_codes[queries_kept], reference_codes, num_relevant[queries_kept], k
    )
    return RetrievalResult(
        precision_at_1=precision_at_1,
        r_precision=r_precision,
        mean_average_precision_at_r=map_at_r,
        num_queries=len(queries),
        num_unmatched_queries=num_unmatched,
    )


def _references_and_codes(
    queries: np.ndarray,
    query_labels: np.ndarray,
    reference_embeddings: ArrayLike | None,
    reference_labels: ArrayLike | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """References (a copy of the queries when `reference_*` are None), query codes and reference codes."""
    if (reference_embeddings is None) != (reference_labels is None):
        raise ValueError("Pass both `reference_embeddings` and `reference_labels`, or neither (queries = references).")
    if reference_embeddings is None:
        references = queries.copy()
        query_codes = reference_codes = _label_codes(query_labels)[0]
    else:
        references = _as_embeddings("reference_embeddings", reference_embeddings)
        reference_labels = _as_1d("reference_labels", reference_labels)
        _check_lengths(reference_embeddings=references, reference_labels=reference_labels)
        _check_dims("query_embeddings", queries, "reference_embeddings", references)
        query_codes, reference_codes = _label_codes(query_labels, reference_labels)
    return references, query_codes, reference_codes


def _retrieved_neighbours(
    queries: np.ndarray, references: np.ndarray, k: int, same_set: bool, metric: Literal["cosine", "l2"]
) -> np.ndarray:
    """Indices `[num_queries, k]` of each query's k nearest references, its own entry left out when `same_set`."""
    neighbours = _nearest_neighbours(queries, references, k + int(same_set), metric)
    if same_set:
        # Drop each query's own entry (or the last one if ties pushed it out of the k + 1 found).
        is_self = neighbours == np.arange(len(queries))[:, None]
        is_self[~is_self.any(axis=1), -1] = True
        neighbours = neighbours[~is_self].reshape(len(queries), k)
    return neighbours


def _precisions(
    neighbours: np.ndarray, query_codes: np.ndarray, reference_codes: np.ndarray, num_relevant: np.ndarray, k: int
) -> tuple[float, float, float]:
    """Precision@1, R-precision and MAP@R of queries with `num_relevant` [queries] > 0 relevant references."""
    relevant = reference_codes[neighbours] == query_codes[:, None]  # [queries, k]
    relevant &= np.arange(k) < num_relevant[:, None]  # only the first R retrieved count
    hits_so_far = np.cumsum(relevant, axis=1)
    precision_at_hits = np.where(relevant, hits_so_far / np.arange(1, k + 1), 0.0)
    return (
        float(relevant[:, 0].mean()),
        float(np.mean(hits_so_far[:, -1] / num_relevant)),
        float(np.mean(precision_at_hits.sum(axis=1) / num_relevant)),
    )
