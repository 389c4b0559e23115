"""Face recognition metrics as pure functions on numpy arrays (no model inside).

- Verification: k-fold accuracy with a threshold chosen on the other folds
  (`verification_accuracy`), and ROC figures: AUC, EER, TAR at fixed FAR (`roc_metrics`).
- Identification: rank-k accuracy of probes against a gallery (`identification_accuracy`).
- Retrieval: precision@1, R-precision and MAP@R (`retrieval_metrics`), defined as in
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


logger = logging.get_logger(__name__)

# The original's threshold grid: `np.arange(-1.0, 1.0, 0.005)`, i.e. 400 values
# -1.0, -0.995, ..., 0.995 (1.0 itself is excluded), bit-identical to the original's values.
ORIGINAL_THRESHOLD_GRID = np.arange(-1.0, 1.0, 0.005)
ORIGINAL_THRESHOLD_GRID.setflags(write=False)

# faiss GPU flat indexes can return at most this many neighbours per query.
_FAISS_GPU_MAX_K = 2048


# ----------------------------------------------------------------------------- validation


def _as_1d(name: str, values: ArrayLike, finite: bool = False) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"`{name}` must be 1-D, got an array of shape {array.shape}.")
    if array.size == 0:
        raise ValueError(f"`{name}` is empty; at least one value is needed.")
    if finite:
        if not np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.complexfloating):
            raise ValueError(f"`{name}` must hold real numbers, got dtype {array.dtype}.")
        num_bad = int(array.size - np.count_nonzero(np.isfinite(array)))
        if num_bad:
            raise ValueError(f"`{name}` holds {num_bad} NaN or infinite value(s) out of {array.size}.")
    return array


def _as_binary(name: str, values: ArrayLike) -> np.ndarray:
    array = _as_1d(name, values)
    if array.dtype != bool:
        bad = ~np.isin(array, (0, 1))
        if bad.any():
            raise ValueError(
                f"`{name}` must be boolean or 0/1, got {int(bad.sum())} other value(s), "
                f"e.g. {array[bad][0]!r} at index {int(np.flatnonzero(bad)[0])}."
            )
    return array.astype(bool)


def _as_embeddings(name: str, values: ArrayLike) -> np.ndarray:
    """[num, dim] finite float32 C-contiguous copy (faiss needs that layout)."""
    array = np.array(values, dtype=np.float32, order="C", copy=True)
    if array.ndim != 2:
        raise ValueError(f"`{name}` must be 2-D [num, dim], got an array of shape {array.shape}.")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"`{name}` is empty (shape {array.shape}).")
    num_bad = int(array.shape[0] - np.count_nonzero(np.isfinite(array).all(axis=1)))
    if num_bad:
        raise ValueError(f"`{name}` has {num_bad} row(s) with NaN or infinite values out of {array.shape[0]}.")
    return array


def _check_lengths(**arrays: np.ndarray) -> None:
    lengths = {name: len(array) for name, array in arrays.items()}
    if len(set(lengths.values())) > 1:
        described = ", ".join(f"`{name}` has {length}" for name, length in lengths.items())
        raise ValueError(f"Mismatched lengths: {described}; they must be equal.")


def _check_both_classes(is_same: np.ndarray) -> tuple[int, int]:
    num_same = int(is_same.sum())
    num_different = len(is_same) - num_same
    if num_same == 0 or num_different == 0:
        raise ValueError(
            f"`is_same` must hold both classes, got {num_same} same and {num_different} different pair(s)."
        )
    return num_same, num_different


def _check_dims(query_name: str, queries: np.ndarray, reference_name: str, references: np.ndarray) -> None:
    if queries.shape[1] != references.shape[1]:
        raise ValueError(
            f"`{query_name}` has dimension {queries.shape[1]} but `{reference_name}` has {references.shape[1]}."
        )


# ----------------------------------------------------------------------------- verification


def cosine_similarity_pairs(embeddings_a: ArrayLike, embeddings_b: ArrayLike) -> np.ndarray:
    """Cosine similarity of row i of `embeddings_a` with row i of `embeddings_b`.

    Args:
        embeddings_a, embeddings_b: `[num_pairs, dim]` float arrays.

    Returns:
        `[num_pairs]` float64 similarities in [-1, 1].
    """
    a = np.asarray(embeddings_a, dtype=np.float64)
    b = np.asarray(embeddings_b, dtype=np.float64)
    for name, array in (("embeddings_a", a), ("embeddings_b", b)):
        if array.ndim != 2 or array.shape[0] == 0:
            raise ValueError(f"`{name}` must be a non-empty 2-D [num_pairs, dim] array, got shape {array.shape}.")
        num_bad = int(array.shape[0] - np.count_nonzero(np.isfinite(array).all(axis=1)))
        if num_bad:
            raise ValueError(f"`{name}` has {num_bad} row(s) with NaN or infinite values out of {array.shape[0]}.")
    if a.shape != b.shape:
        raise ValueError(f"`embeddings_a` has shape {a.shape} but `embeddings_b` has shape {b.shape}.")
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    num_zero = int(np.count_nonzero(norms == 0))
    if num_zero:
        raise ValueError(f"{num_zero} pair(s) contain a zero embedding, whose cosine similarity is undefined.")
    return np.einsum("ij,ij->i", a, b) / norms


@dataclass(frozen=True)
class VerificationResult:
    """k-fold verification accuracy.

    Attributes:
        accuracy: mean over folds of the held-out accuracy.
        accuracy_std: population standard deviation (ddof=0) of the fold accuracies, as the original.
        threshold: mean of the fold thresholds.
        fold_accuracies: `[num_folds]` held-out accuracy of each fold (folds in sorted id order).
        fold_thresholds: `[num_folds]` threshold chosen on the other folds.
    """

    accuracy: float
    accuracy_std: float
    threshold: float
    fold_accuracies: np.ndarray
    fold_thresholds: np.ndarray


def _fold_ids(folds: ArrayLike | None, num_pairs: int, num_folds: int | None) -> tuple[np.ndarray, int]:
    """Dense fold ids `[num_pairs]` in 0..num_folds-1."""
    if folds is None:
        num_folds = 10 if num_folds is None else num_folds
        if num_folds < 2:
            raise ValueError(f"`num_folds` must be at least 2, got {num_folds}.")
        if num_pairs < num_folds:
            raise ValueError(f"{num_pairs} pair(s) cannot be split into `num_folds`={num_folds} non-empty folds.")
        # Contiguous blocks in order, with the original's boundaries: fold k = [k*n//K, (k+1)*n//K).
        bounds = np.arange(num_folds + 1) * num_pairs // num_folds
        return np.repeat(np.arange(num_folds), np.diff(bounds)), num_folds
    if num_folds is not None:
        raise ValueError("Pass either `folds` (fold id of every pair) or `num_folds` (contiguous blocks), not both.")
    fold_values = _as_1d("folds", folds)
    if not np.issubdtype(fold_values.dtype, np.integer):
        raise ValueError(f"`folds` must hold integer fold ids, got dtype {fold_values.dtype}.")
    unique_folds, dense = np.unique(fold_values, return_inverse=True)
    if len(unique_folds) < 2:
        raise ValueError(f"`folds` must name at least 2 folds, got only fold {unique_folds.tolist()}.")
    return dense, len(unique_folds)


def verification_accuracy(
    scores: ArrayLike,
    is_same: ArrayLike,
    folds: ArrayLike | None = None,
    *,
    num_folds: int | None = None,
    threshold_grid: Literal["original"] | ArrayLike | None = None,
) -> VerificationResult:
    """k-fold verification accuracy: threshold chosen on the other folds, accuracy on the held-out one.

    A pair is predicted "same" when `score > threshold` (the original's rule). For each fold the
    threshold maximises the accuracy on the other folds; among equally accurate thresholds the
    largest wins (the original scans its grid upwards and keeps the last best).

    Candidate thresholds:
    - `threshold_grid=None` (default): every distinct decision on the training folds, i.e. with
      `u_1 < ... < u_m` the distinct training scores, "all same" and "same iff score > u_j" for each
      j. The returned value is the midpoint between the largest training score predicted different
      and the smallest predicted same; with all training pairs predicted different it is `u_m`,
      with all predicted same it is the float just below `u_1` (`np.nextafter`). This equals a
      brute-force search over all those midpoints, but is computed by sorting once and taking
      cumulative counts, for all folds at once.
    - `threshold_grid="original"`: the original's grid `np.arange(-1.0, 1.0, 0.005)`.
    - an array: that grid of thresholds (sorted and deduplicated).

    Args:
        scores: `[num_pairs]` similarity scores (e.g. `cosine_similarity_pairs`).
        is_same: `[num_pairs]` booleans or 0/1, true when the pair shows one identity.
        folds: `[num_pairs]` integer fold id of every pair (e.g. the sets of LFW `pairs.txt`).
            None: `num_folds` contiguous blocks in order, as the original (LFW's 10 sets of 600).
        num_folds: number of contiguous blocks when `folds` is None (default 10).
        threshold_grid: see above.

    Returns:
        `VerificationResult` with mean/std accuracy, mean threshold and per-fold values.
    """
    scores = _as_1d("scores", scores, finite=True).astype(np.float64)
    is_same = _as_binary("is_same", is_same)
    _check_lengths(scores=scores, is_same=is_same)
    _check_both_classes(is_same)
    if folds is not None:
        _check_lengths(scores=scores, folds=np.asarray(folds).reshape(-1))
    fold_ids, num_folds = _fold_ids(folds, len(scores), num_folds)

    # One sort for everything: distinct scores ascending and the position of each pair in them.
    values, positions = np.unique(scores, return_inverse=True)
    num_values = len(values)
    # Cut c (0..m) predicts "different" for the c lowest distinct scores and "same" above them.
    # Relative to cut 0 ("all same"), each pair at or below the cut adds +1 correct if it is
    # different and -1 if it is same: training accuracy = (training same pairs + gain) / pairs.
    fold_gain = np.bincount(
        fold_ids * num_values + positions, weights=np.where(is_same, -1.0, 1.0), minlength=num_folds * num_values
    ).reshape(num_folds, num_values)
    np.cumsum(fold_gain, axis=1, out=fold_gain)
    gain = np.zeros((num_folds, num_values + 1))  # column 0: cut 0, "all same"
    np.subtract(fold_gain.sum(axis=0), fold_gain, out=gain[:, 1:])  # all folds minus the held-out one

    if threshold_grid is None:
        # A distinct score whose pairs all lie in fold k is no training score of fold k: the cut just
        # above it is no new decision there (it repeats the previous cut's gain), so it is excluded.
        fold_min = np.full(num_values, num_folds)
        fold_max = np.full(num_values, -1)
        np.minimum.at(fold_min, positions, fold_ids)
        np.maximum.at(fold_max, positions, fold_ids)
        only_fold = np.where(fold_min == fold_max, fold_min, -1)  # [m], -1 when spread over folds
        in_one_fold = np.flatnonzero(only_fold >= 0)
        gain[only_fold[in_one_fold], in_one_fold + 1] = -np.inf
        in_train = only_fold != np.arange(num_folds)[:, None]  # [folds, m]
        thresholds = _cut_thresholds(values, in_train, _last_argmax(gain))
    else:
        if isinstance(threshold_grid, str):
            if threshold_grid != "original":
                raise ValueError(f"`threshold_grid` must be None, 'original' or an array, got {threshold_grid!r}.")
            grid = ORIGINAL_THRESHOLD_GRID
        else:
            grid = np.unique(_as_1d("threshold_grid", threshold_grid, finite=True).astype(np.float64))
        # `score > g` holds exactly for the distinct scores above the first `grid_cuts` ones.
        grid_cuts = np.searchsorted(values, grid, side="right")
        thresholds = grid[_last_argmax(gain[:, grid_cuts])]

    held_out_correct = (scores > thresholds[fold_ids]) == is_same
    fold_accuracies = np.bincount(fold_ids, weights=held_out_correct, minlength=num_folds) / np.bincount(
        fold_ids, minlength=num_folds
    )
    return VerificationResult(
        accuracy=float(fold_accuracies.mean()),
        accuracy_std=float(fold_accuracies.std()),
        threshold=float(thresholds.mean()),
        fold_accuracies=fold_accuracies,
        fold_thresholds=thresholds,
    )


def _last_argmax(values: np.ndarray) -> np.ndarray:
    """Index of the last maximum along the last axis (ties go to the larger threshold)."""
    return values.shape[-1] - 1 - np.argmax(values[..., ::-1], axis=-1)


def _cut_thresholds(values: np.ndarray, in_train: np.ndarray, cuts: np.ndarray) -> np.ndarray:
    """Concrete threshold `[folds]` for each fold's chosen cut (see `verification_accuracy`).

    `values` `[m]` are the distinct scores, `in_train` `[folds, m]` says which are training scores of
    each fold and `cuts` `[folds]` is the number of distinct scores predicted different.
    """
    num_values = len(values)
    # Smallest training score predicted same: the first training score at or after the cut (m if none).
    at_or_after = in_train & (np.arange(num_values) >= cuts[:, None])
    above = np.where(at_or_after.any(axis=1), np.argmax(at_or_after, axis=1), num_values)
    lower = values[np.maximum(cuts - 1, 0)]  # largest training score predicted different (when cuts > 0)
    upper = np.append(values, np.inf)[above]
    midpoint = lower + (upper - lower) / 2
    # Between two adjacent floats the midpoint may round up onto `upper`, which `>` would then
    # call different; `lower` is then the threshold that keeps the decision.
    thresholds = np.where(midpoint < upper, midpoint, lower)
    thresholds = np.where(above == num_values, lower, thresholds)  # all predicted different
    return np.where(cuts == 0, np.nextafter(upper, -np.inf), thresholds)  # all predicted same


@dataclass(frozen=True)
class RocResult:
    """ROC figures of a verification protocol.

    Attributes:
        auc: area under the ROC curve (trapezoids; ties count half).
        eer: equal error rate, where the ROC curve (linear between its points) crosses FPR = 1 - TPR.
        tar_at_far: `{far: tar}`, the largest TPR among ROC points with FPR <= far.
        fpr, tpr: `[num_points]` the ROC curve, from (0, 0) to (1, 1).
        thresholds: `[num_points]` accept when `score >= threshold`; the first is +inf.
    """

    auc: float
    eer: float
    tar_at_far: dict[float, float]
    fpr: np.ndarray
    tpr: np.ndarray
    thresholds: np.ndarray


def roc_metrics(
    scores: ArrayLike, is_same: ArrayLike, far_targets: Sequence[float] = (1e-3, 1e-2, 1e-1)
) -> RocResult:
    """ROC curve, AUC, EER and TAR at fixed FAR of similarity scores.

    The curve has one point per distinct score (accept when `score >= threshold`, as
    scikit-learn's `roc_curve` with `drop_intermediate=False`), so the operating points are the
    same as `verification_accuracy`'s `score > threshold` decisions.

    Args:
        scores: `[num_pairs]` similarity scores.
        is_same: `[num_pairs]` booleans or 0/1.
        far_targets: false accept rates in (0, 1] at which to report the true accept rate.
    """
    scores = _as_1d("scores", scores, finite=True).astype(np.float64)
    is_same = _as_binary("is_same", is_same)
    _check_lengths(scores=scores, is_same=is_same)
    num_same, num_different = _check_both_classes(is_same)
    for far in far_targets:
        if not 0 < far <= 1:
            raise ValueError(f"`far_targets` must lie in (0, 1], got {far}.")

    values, positions = np.unique(scores, return_inverse=True)
    counts = np.bincount(is_same * len(values) + positions, minlength=2 * len(values)).reshape(2, len(values))
    # Walk the distinct scores downwards: accepted pairs are those at or above the threshold.
    accepted = np.zeros((2, len(values) + 1), dtype=np.int64)
    np.cumsum(counts[:, ::-1], axis=1, out=accepted[:, 1:])
    fpr = accepted[0] / num_different
    tpr = accepted[1] / num_same
    thresholds = np.concatenate([[np.inf], values[::-1]])

    auc = float(np.trapezoid(tpr, fpr))
    # tpr + fpr - 1 rises from -1 to 1 along the curve; the EER is where it crosses 0.
    gap = tpr + fpr - 1
    after = int(np.argmax(gap >= 0))
    if gap[after] == 0:
        eer = float(fpr[after])
    else:
        weight = -gap[after - 1] / (gap[after] - gap[after - 1])
        eer = float(fpr[after - 1] + weight * (fpr[after] - fpr[after - 1]))
    # fpr is non-decreasing, so the points with FPR <= far are a prefix of the curve.
    tar_at_far = {
        float(far): float(tpr[: np.searchsorted(fpr, far, side="right")].max()) for far in far_targets
    }
    return RocResult(auc=auc, eer=eer, tar_at_far=tar_at_far, fpr=fpr, tpr=tpr, thresholds=thresholds)


# ----------------------------------------------------------------------------- nearest neighbours


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

    # The first max_rank distinct subjects of a ranking lie within its first (max_rank - 1) * m + 1
    # entries when each subject has at most m gallery embeddings.
    max_per_subject = int(np.bincount(gallery_codes).max())
    k = min(len(gallery), (ranks[-1] - 1) * max_per_subject + 1)
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

    accuracy_at_rank = {rank: float(np.mean(probe_rank[matched] <= rank)) for rank in ranks}
    accuracy_all = {rank: float(np.mean(probe_rank <= rank)) for rank in ranks}
    return IdentificationResult(
        accuracy_at_rank=accuracy_at_rank,
        accuracy_at_rank_all_probes=accuracy_all,
        num_probes=len(probes),
        num_unmatched_probes=num_unmatched,
    )


# ----------------------------------------------------------------------------- retrieval


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
    if (reference_embeddings is None) != (reference_labels is None):
        raise ValueError("Pass both `reference_embeddings` and `reference_labels`, or neither (queries = references).")
    same_set = reference_embeddings is None
    if same_set:
        references = queries.copy()
        query_codes = reference_codes = _label_codes(query_labels)[0]
    else:
        references = _as_embeddings("reference_embeddings", reference_embeddings)
        reference_labels = _as_1d("reference_labels", reference_labels)
        _check_lengths(reference_embeddings=references, reference_labels=reference_labels)
        _check_dims("query_embeddings", queries, "reference_embeddings", references)
        query_codes, reference_codes = _label_codes(query_labels, reference_labels)

    num_relevant = np.bincount(reference_codes, minlength=query_codes.max() + 1)[query_codes] - int(same_set)
    matched = num_relevant > 0
    num_unmatched = int(len(matched) - matched.sum())
    if num_unmatched == len(matched):
        raise ValueError("No query has a reference with its label; retrieval metrics are undefined.")
    if num_unmatched:
        logger.warning(f"{num_unmatched} of {len(matched)} query(ies) have no reference with their label; left out.")

    k = int(num_relevant.max())
    neighbours = _nearest_neighbours(queries, references, k + int(same_set), metric)
    if same_set:
        # Drop each query's own entry (or the last one if ties pushed it out of the k + 1 found).
        is_self = neighbours == np.arange(len(queries))[:, None]
        is_self[~is_self.any(axis=1), -1] = True
        neighbours = neighbours[~is_self].reshape(len(queries), k)

    queries_kept = matched.nonzero()[0]
    num_relevant = num_relevant[queries_kept]
    relevant = reference_codes[neighbours[queries_kept]] == query_codes[queries_kept, None]  # [queries, k]
    relevant &= np.arange(k) < num_relevant[:, None]  # only the first R retrieved count
    hits_so_far = np.cumsum(relevant, axis=1)
    precision_at_hits = np.where(relevant, hits_so_far / np.arange(1, k + 1), 0.0)
    return RetrievalResult(
        precision_at_1=float(relevant[:, 0].mean()),
        r_precision=float(np.mean(hits_so_far[:, -1] / num_relevant)),
        mean_average_precision_at_r=float(np.mean(precision_at_hits.sum(axis=1) / num_relevant)),
        num_queries=len(queries),
        num_unmatched_queries=num_unmatched,
    )
