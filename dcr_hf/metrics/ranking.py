"""Ranking metrics of embeddings as pure functions on numpy arrays (no model inside).

- `identification_accuracy`: closed-set rank-k accuracy of probes against a gallery (CMC).
- `retrieval_metrics`: precision@1, R-precision and MAP@R of a k-NN search, computed by
  pytorch-metric-learning's `AccuracyCalculator`, under one of `RETRIEVAL_RULES` when every
  query's own image is among the references.
- `clustering_metrics`: NMI and AMI of k-means clusters (faiss k-means through the same calculator).

Nearest-neighbour searches are exact (`ExactKNN`: blocked matrix products and a top-k selection
on the device `AccuracyCalculator` picks, or faiss' flat indexes on a one-thread CPU). Every function validates its inputs and raises
`ValueError` naming the argument at fault.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from numpy.typing import ArrayLike
from transformers.utils import logging

from ..errors_dcr import DCRInputError
from . import screening
from ._checks import _as_1d, _as_embeddings, _check_dims, _check_lengths, _labelled_sets
from .products import InnerProducts


logger = logging.get_logger(__name__)

#: How a query's own image is kept out of its ranking when it is among the references:
#: "exclude_own" leaves out that very image (reference i for query i), wherever it ranks;
#: "original" searches one neighbour more and drops each query's first one, whoever it is, as
#: the original's copy of AccuracyCalculator did (usually, not always, the query's own image).
#: Both count R without the own image.
RETRIEVAL_RULES = ("exclude_own", "original")

Metric = Literal["cosine", "l2"]


class ExactKNN:
    """Exact k-nearest-neighbour search, usable as AccuracyCalculator's `knn_func`.

    On a CPU with bf16 dot-product instructions and a large enough search (`screening.screening_pays`),
    a bf16 screening product picks each query's candidates under a proven error bound and faiss
    scores only those in float32 (`screening.screened_search`: the same neighbours as the float32
    search). Otherwise, and for the queries the screening leaves unsettled: by blocks of
    `block_size` queries, their products with the references (`InnerProducts`: on a CPU through
    oneDNN's float32 kernels, elsewhere `torch.mm`; cosine: of L2-normalised rows; l2: squared
    distances as |q|^2 - 2 q.r + |r|^2) and the k best of each row while the block is in the cache
    (faiss' heaps on a CPU, `_heap_top_k`; `torch.topk` on a GPU or without faiss), on the tensors'
    device (no faiss GPU build is needed on a GPU). On this project's 2-core EPYC, 5000 x 5000 x
    512-d l2 at k = 29, 2 threads, min / median of 12: 109 / 123 ms for the blocked search (125 / 138
    ms with `torch.topk`) against 163 / 177 ms for faiss' `IndexFlatL2` (its OpenBLAS products and
    heaps). With one torch thread oneDNN's product runs at a quarter of its 2-thread rate (83 against
    351 GFLOP/s) and faiss is the faster (292 against 373 ms): it is then the float32 search when
    installed. The screened search of the same workload, metrics included (`retrieval_metrics`,
    min of 9 over several runs): 59-78 ms with 2 threads, 106-109 ms with one (`docs/benchmarks.md`).

    Args:
        metric: "cosine" or "l2".
        queries: `[num_queries, dim]` to search with instead of the `query` AccuracyCalculator
            passes (see `retrieval_metrics`), or None.
        rule: one of `RETRIEVAL_RULES`, applied when called with `ref_includes_query=True`.
        block_size: queries per matrix product of the blocked search (bounds the memory to
            block_size x references).
        use_faiss: True: faiss' flat indexes on a CPU when faiss is installed; False: the blocked
            products everywhere; None (default): faiss on a CPU only when torch runs one thread.
        screen: the bf16 screening on a CPU with faiss: None (default) where it pays, True always
            (also where bf16 is emulated: slow but exact), False never. `use_faiss=True` turns it off.
    """

    def __init__(self, metric: Metric = "cosine", queries: torch.Tensor | None = None, rule: str = "exclude_own",
                 block_size: int = 512, use_faiss: bool | None = None, screen: bool | None = None) -> None:
        if metric not in ("cosine", "l2"):
            raise DCRInputError(f"`metric` must be 'cosine' or 'l2', got {metric!r}.")
        if rule not in RETRIEVAL_RULES:
            raise DCRInputError(f"`rule` must be one of {RETRIEVAL_RULES}, got {rule!r}.")
        self.metric, self.queries, self.rule, self.block_size = metric, queries, rule, block_size
        self.use_faiss, self.screen = use_faiss, screen

    def search(self, queries: torch.Tensor, references: torch.Tensor, k: int,
               k_per_query: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """`(scores, indices)` `[num_queries, k]` of each query's k nearest references, nearest first
        (scores: cosine similarity or negated squared L2 distance). With `k_per_query` (`[num_queries]`
        ints), row i is only promised exact in its first `k_per_query[i]` entries (the screening then
        rescores fewer candidates); past them it may hold other references or -1 (score -inf)."""
        queries, references = queries.float(), references.float()
        if self.metric == "cosine":
            queries = torch.nn.functional.normalize(queries, dim=1)
            references = torch.nn.functional.normalize(references, dim=1)
        k = min(k, len(references))
        on_cpu = queries.device.type == "cpu" and _faiss() is not None
        screen = self.screen if self.screen is not None else screening.screening_pays(
            len(queries), len(references), queries.shape[1], k)
        if not (on_cpu and screen and self.use_faiss is not True and 2 * k <= len(references)):
            return self._plain_search(queries, references, k)
        wanted = None if k_per_query is None else k_per_query.cpu().clamp(1, k)
        scores, indices, unsettled = screening.screened_search(queries, references, k, self.metric, wanted)
        rows = unsettled.nonzero()[:, 0]
        if len(rows):
            scores[rows], indices[rows] = self._plain_search(queries[rows], references, k)
        return scores, indices

    def _plain_search(self, queries: torch.Tensor, references: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The float32 search of every query: faiss' flat index or the blocked products (see the class)."""
        use_faiss = torch.get_num_threads() == 1 if self.use_faiss is None else self.use_faiss
        if use_faiss and queries.device.type == "cpu" and _faiss() is not None:
            return self._faiss_search(queries, references, k)
        scores = torch.empty((len(queries), k), dtype=torch.float32, device=queries.device)
        indices = torch.empty((len(queries), k), dtype=torch.int64, device=queries.device)
        if self.metric == "l2":
            # - |q - r|^2 up to the constant |q|^2 (which does not change the order) as 2 q.r - |r|^2:
            # the product with 2r (exact: a power of two scales every partial sum exactly) and the
            # norms as the bias, which saves a pass over each block.
            products = InnerProducts(references * 2.0, bias=(references * references).sum(dim=1).neg_())
        else:
            products = InnerProducts(references)
        # One buffer for every block's products when they are a `torch.mm`: a fresh [block, references]
        # product per block would cost its page faults on a CPU (about 15% of the search).
        buffer = None if products.by_convolution else torch.empty(
            (min(self.block_size, len(queries)), len(references)), dtype=torch.float32, device=queries.device)
        heaps = queries.device.type == "cpu" and _faiss() is not None
        for start in range(0, len(queries), self.block_size):
            block = queries[start : start + self.block_size]
            stop = start + len(block)
            if heaps:
                _heap_top_k(products(block, buffer), scores[start:stop], indices[start:stop])
            else:
                torch.topk(products(block, buffer), k, dim=1, out=(scores[start:stop], indices[start:stop]))
        if self.metric == "l2":
            scores.sub_((queries * queries).sum(dim=1, keepdim=True))
        return scores, indices

    def _faiss_search(self, queries: torch.Tensor, references: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        faiss = _faiss()
        index = (faiss.IndexFlatIP if self.metric == "cosine" else faiss.IndexFlatL2)(references.shape[1])
        index.add(np.ascontiguousarray(references.numpy()))
        distances, indices = index.search(np.ascontiguousarray(queries.numpy()), k)
        scores = torch.from_numpy(distances)
        return (scores if self.metric == "cosine" else scores.neg_()), torch.from_numpy(indices)

    def __call__(
        self, query: torch.Tensor, k: int, reference: torch.Tensor, ref_includes_query: bool = False,
        k_per_query: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """AccuracyCalculator's knn_func: `(distances, indices)` `[num_queries, k]`; with
        `ref_includes_query`, reference i is query i's own image, kept out by `rule`. `k_per_query`:
        as in `search` (row i exact in its first `k_per_query[i]` entries only)."""
        queries = query if self.queries is None else self.queries.to(reference.device)
        extra = int(ref_includes_query)
        wanted = None if k_per_query is None else k_per_query + extra
        scores, indices = self.search(queries, reference, k + extra, wanted)
        distances = -scores if self.metric == "l2" else 1.0 - scores
        if not ref_includes_query:
            return distances, indices
        if self.rule == "original":
            return distances[:, 1:], indices[:, 1:]
        return _drop_own(distances, indices, None if wanted is None else wanted.to(indices.device) - 1)


def _drop_own(distances: torch.Tensor, indices: torch.Tensor, k_per_query: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """`[rows, k]` from `[rows, k + 1]` neighbours: row i without reference i when it is among the
    first `k_per_query[i] + 1` (all k + 1 when None), else without entry `k_per_query[i]` (the last one
    that row needs): pytorch-metric-learning's `return_results(..., ref_includes_query=True)` for
    rows exact in their first entries only (equal to it when `k_per_query` is None)."""
    rows, width = indices.shape
    positions = torch.arange(width, device=indices.device)
    last = torch.full((rows,), width - 1, device=indices.device) if k_per_query is None else k_per_query
    own = (indices == torch.arange(rows, device=indices.device)[:, None]) & (positions[None, :] <= last[:, None])
    drop = torch.where(own.any(dim=1), own.int().argmax(dim=1), last)
    keep = positions[None, :] != drop[:, None]
    return distances[keep].view(rows, width - 1), indices[keep].view(rows, width - 1)


def _heap_top_k(products: torch.Tensor, scores: torch.Tensor, indices: torch.Tensor) -> None:
    """The k largest of each row of `products` `[rows, n]` (CPU float32) into `scores` / `indices`
    `[rows, k]` (contiguous), largest first, by faiss' heaps: on this project's 2-core EPYC 20 ms
    for 5000 rows of 5000 at k = 29 against 31 ms for `torch.topk` (fused with the products, 10-15
    ms less a 5000 x 5000 search), tied scores in the order of faiss' flat inner-product index. A
    row whose heap kept a slot unfilled (NaN products) is redone by `torch.topk`."""
    faiss = _faiss()
    products = products.contiguous()
    rows, width = products.shape
    heap = faiss.float_minheap_array_t()  # min at the root: keeps the k largest
    heap.nh, heap.k = rows, scores.shape[1]
    heap.val, heap.ids = faiss.swig_ptr(scores.numpy()), faiss.swig_ptr(indices.numpy())
    heap.heapify()
    heap.addn(width, faiss.swig_ptr(products.numpy()), 0, 0, rows)
    heap.reorder()
    unfilled = (indices < 0).any(dim=1).nonzero()[:, 0]
    if len(unfilled):
        scores[unfilled], indices[unfilled] = torch.topk(products[unfilled], scores.shape[1], dim=1)


def _faiss():
    """The faiss module, or None when it is not installed (the torch path then searches)."""
    try:
        import faiss
    except ImportError:
        return None
    return faiss


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
    probes, probe_labels, gallery, gallery_labels = _labelled_sets(
        "probe_embeddings", probe_embeddings, probe_labels, "gallery_embeddings", gallery_embeddings, gallery_labels
    )
    ranks = sorted({int(rank) for rank in ranks})
    if not ranks or ranks[0] < 1:
        raise DCRInputError(f"`ranks` must be non-empty positive integers, got {ranks}.")

    probe_codes, gallery_codes = _label_codes(probe_labels, gallery_labels)
    matched = np.isin(probe_codes, gallery_codes)
    num_unmatched = int(len(matched) - matched.sum())
    if num_unmatched == len(matched):
        raise DCRInputError("No probe subject is present in the gallery; identification accuracy is undefined.")
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
    _, neighbours = ExactKNN("cosine").search(torch.from_numpy(probes), torch.from_numpy(gallery), k)
    neighbour_codes = gallery_codes[neighbours.numpy()]
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
        rule: how each query's own image was kept out (`RETRIEVAL_RULES`), None when it is not a reference.
    """

    precision_at_1: float
    r_precision: float
    mean_average_precision_at_r: float
    num_queries: int
    num_unmatched_queries: int
    rule: str | None = None


def _calculator(include: tuple[str, ...], knn_func: ExactKNN | None = None):
    """pytorch-metric-learning's `AccuracyCalculator` (R-sized searches; faiss k-means on a GPU when faiss has one).

    Measured on 5000 x 5000 x 512-d: its metric code (per-label Python loops) adds about 40% to the
    exact search (0.18 s against 0.12 s for the vectorised metrics it replaced); kept, as one
    well-known definition of precision@1 / R-precision / MAP@R, the one the original used.
    """
    try:
        from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
        from pytorch_metric_learning.utils.inference import FaissKMeans
    except ImportError as error:
        raise ImportError("Retrieval metrics need pytorch-metric-learning: `pip install pytorch-metric-learning`.") from error
    kmeans = None
    if {"NMI", "AMI"} & set(include):
        try:
            import faiss
        except ImportError as error:
            raise ImportError("NMI/AMI need faiss for k-means: `pip install faiss-cpu` (or faiss-gpu).") from error
        kmeans = FaissKMeans(niter=20, gpu=faiss.get_num_gpus() > 0)
    return AccuracyCalculator(include=include, k="max_bin_count", knn_func=knn_func, kmeans_func=kmeans)


def _metric_device() -> torch.device:
    """Where the searches run: the GPU when there is one, as `AccuracyCalculator` chooses."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _retrieval_scores(
    knn: ExactKNN, query: torch.Tensor, query_codes: torch.Tensor, reference: torch.Tensor,
    reference_codes: torch.Tensor, ref_includes_query: bool,
) -> dict[str, float]:
    """precision@1, R-precision and MAP@R as `AccuracyCalculator(k="max_bin_count", knn_func=knn)
    .get_accuracy(query, query_codes, reference, reference_codes, ref_includes_query)` computes them:
    pytorch-metric-learning's formulas (`precision_at_k`, `r_precision`, `mean_average_precision`
    with `at_r=True`), the same float64 operations in the same order (tested equal to the library's).

    Written out because the library builds each query's R and relevance mask with a Python loop over
    the labels and its calculator iterates boolean tensors of every query (`any(mask)`): about 35 ms
    of a 5000-query retrieval, a quarter of the search itself. Here the labels are dense codes
    (`_label_codes`), so R is one `bincount` and the mask one comparison.
    """
    # R of each query: its label's references, less its own image when the references include it.
    counts = torch.bincount(reference_codes, minlength=int(query_codes.max()) + 1)[query_codes] - int(ref_includes_query)
    not_lone = counts > 0
    # k = the largest R; each query needs only its first R (the screened search then rescores fewer).
    _, indices = knn(query, int(counts.max()), reference, ref_includes_query, k_per_query=counts.clamp(min=1))
    # Entries past a query's R may be -1 (padding): masked out by `relevant` below, read as reference 0.
    same_label = reference_codes[indices.clamp(min=0)][not_lone] == query_codes[not_lone][:, None]
    counts = counts[not_lone]
    num_queries, k = same_label.shape
    relevant = torch.arange(k, device=counts.device) < counts[:, None]  # the first R of each row
    relevant_same = same_label * relevant
    cumulative = torch.cumsum(relevant_same, dim=1)
    precision_at_ks = (cumulative * relevant_same).type(torch.float64) / torch.arange(1, k + 1, device=counts.device).repeat(num_queries, 1)
    return {
        "precision_at_1": torch.mean(torch.sum(same_label[:, :1], dim=1).type(torch.float64) / 1).item(),
        "r_precision": torch.mean(torch.sum(relevant_same, dim=1).type(torch.float64) / torch.sum(relevant, dim=1)).item(),
        "mean_average_precision_at_r": torch.mean(torch.sum(precision_at_ks * relevant, dim=1) / counts).item(),
    }


def retrieval_metrics(
    query_embeddings: ArrayLike,
    query_labels: ArrayLike,
    reference_embeddings: ArrayLike | None = None,
    reference_labels: ArrayLike | None = None,
    *,
    metric: Metric = "cosine",
    rule: str | None = None,
) -> RetrievalResult:
    """Precision@1, R-precision and MAP@R of an exact k-NN search, by pytorch-metric-learning's
    `AccuracyCalculator` (k = the largest R).

    Three settings:
    - `reference_*` None: the queries are their own references (same source); each query's own
      entry is kept out by `rule` (default "exclude_own") and R counts the other images of its label.
    - `reference_*` given with a `rule`: reference i is query i's own image in another form (e.g.
      its HR copy for an LR query); kept out by `rule`, R counts the other images of its label.
    - `reference_*` given, `rule=None`: the references are other images; R counts them all.
    Queries whose label has no reference left are counted in `num_unmatched_queries` and left out.

    `metric="cosine"` (default) ranks L2-normalised embeddings by inner product, i.e. by L2
    distance on the unit sphere; `metric="l2"` ranks raw embeddings by L2 distance, as the original.

    Args:
        query_embeddings: `[num_queries, dim]` (e.g. low-resolution embeddings).
        query_labels: `[num_queries]` identity labels (ints or strings).
        reference_embeddings: `[num_references, dim]` (e.g. high-resolution embeddings) or None.
        reference_labels: `[num_references]` or None (together with `reference_embeddings`).
        metric: "cosine" or "l2".
        rule: one of `RETRIEVAL_RULES`, or None (see above).
    """
    queries = _as_embeddings("query_embeddings", query_embeddings)
    query_labels = _as_1d("query_labels", query_labels)
    _check_lengths(query_embeddings=queries, query_labels=query_labels)
    if reference_embeddings is None and rule is None:
        rule = "exclude_own"
    if rule is not None and rule not in RETRIEVAL_RULES:
        raise DCRInputError(f"`rule` must be one of {RETRIEVAL_RULES} or None, got {rule!r}.")
    references, query_codes, reference_codes = _references_and_codes(
        queries, query_labels, reference_embeddings, reference_labels, paired=rule is not None
    )
    num_relevant = np.bincount(reference_codes, minlength=query_codes.max() + 1)[query_codes] - int(rule is not None)
    num_unmatched = int(np.count_nonzero(num_relevant <= 0))
    if num_unmatched == len(num_relevant):
        raise DCRInputError("No query has a reference with its label; retrieval metrics are undefined.")
    if num_unmatched:
        logger.warning(f"{num_unmatched} of {len(num_relevant)} query(ies) have no reference with their label; left out.")

    device = _metric_device()
    query_tensor, reference_tensor = torch.from_numpy(queries).to(device), torch.from_numpy(references).to(device)
    codes, reference_code_tensor = torch.from_numpy(query_codes).to(device), torch.from_numpy(reference_codes).to(device)
    if rule is None:
        scores = _retrieval_scores(ExactKNN(metric), query_tensor, codes, reference_tensor, reference_code_tensor, False)
    else:
        # AccuracyCalculator knows "the references include each query" only as "reference i is
        # query i itself" (its same-source call). Here reference i is query i's own image in another
        # form, so it is given the references as its query (their labels are the queries' labels)
        # and the kNN searches with the real queries, keeping reference i out by `rule`.
        knn = ExactKNN(metric, queries=query_tensor, rule=rule)
        scores = _retrieval_scores(knn, reference_tensor, reference_code_tensor, reference_tensor, reference_code_tensor, True)
    return RetrievalResult(
        precision_at_1=float(scores["precision_at_1"]),
        r_precision=float(scores["r_precision"]),
        mean_average_precision_at_r=float(scores["mean_average_precision_at_r"]),
        num_queries=len(queries),
        num_unmatched_queries=num_unmatched,
        rule=rule,
    )


@dataclass(frozen=True)
class ClusteringResult:
    """How well k-means clusters (as many as there are labels) recover the labels.

    Attributes:
        nmi: normalized mutual information of clusters and labels.
        ami: adjusted mutual information (0 for chance-level clusters).
        num_clusters: number of k-means clusters (= distinct labels).
    """

    nmi: float
    ami: float
    num_clusters: int


def clustering_metrics(embeddings: ArrayLike, labels: ArrayLike, *, metric: Metric = "cosine") -> ClusteringResult:
    """NMI and AMI of faiss k-means clusters of `embeddings` `[num, dim]`, one cluster per label
    (pytorch-metric-learning's `AccuracyCalculator`, 20 iterations, faiss' fixed seed).
    `metric="cosine"` clusters the L2-normalised embeddings, `"l2"` the raw ones (as the original)."""
    array = _as_embeddings("embeddings", embeddings)
    labels = _as_1d("labels", labels)
    _check_lengths(embeddings=array, labels=labels)
    if metric not in ("cosine", "l2"):
        raise DCRInputError(f"`metric` must be 'cosine' or 'l2', got {metric!r}.")
    codes = _label_codes(labels)[0]
    num_clusters = int(codes.max()) + 1
    if num_clusters < 2 or num_clusters >= len(codes):
        raise DCRInputError(f"Clustering needs 2 to {len(codes) - 1} distinct labels for {len(codes)} embeddings, got {num_clusters}.")
    tensor = torch.from_numpy(array)
    if metric == "cosine":
        tensor = torch.nn.functional.normalize(tensor, dim=1)
    scores = _calculator(("NMI", "AMI")).get_accuracy(tensor, torch.from_numpy(codes))
    return ClusteringResult(nmi=float(scores["NMI"]), ami=float(scores["AMI"]), num_clusters=num_clusters)


def _references_and_codes(
    queries: np.ndarray,
    query_labels: np.ndarray,
    reference_embeddings: ArrayLike | None,
    reference_labels: ArrayLike | None,
    paired: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """References (the queries when `reference_*` are None), query codes and reference codes.
    `paired`: reference i must be query i's own image (same count, same labels)."""
    if (reference_embeddings is None) != (reference_labels is None):
        raise DCRInputError("Pass both `reference_embeddings` and `reference_labels`, or neither (queries = references).")
    if reference_embeddings is None:
        query_codes = _label_codes(query_labels)[0]
        return queries, query_codes, query_codes
    references = _as_embeddings("reference_embeddings", reference_embeddings)
    reference_labels = _as_1d("reference_labels", reference_labels)
    _check_lengths(reference_embeddings=references, reference_labels=reference_labels)
    _check_dims("query_embeddings", queries, "reference_embeddings", references)
    if paired:
        _check_lengths(query_embeddings=queries, reference_embeddings=references)
        differ = np.flatnonzero(query_labels != reference_labels)
        if len(differ):
            raise DCRInputError(
                f"With a `rule`, reference i is query i's own image, but their labels differ at index {differ[0]} "
                f"({query_labels[differ[0]]!r} vs {reference_labels[differ[0]]!r})."
            )
    query_codes, reference_codes = _label_codes(query_labels, reference_labels)
    return references, query_codes, reference_codes
