"""Verification metrics of face pairs as pure functions on numpy arrays (no model inside); the
pair similarities also take torch tensors, on their device.

- `cosine_similarity_pairs`: the similarity score of each pair of embeddings.
- `verification_accuracy`: k-fold accuracy with a threshold chosen on the other folds, either
  exactly (every distinct decision) or on a grid (`ORIGINAL_THRESHOLD_GRID`, the original's).
- `roc_metrics`: ROC curve, AUC, EER and TAR at fixed FAR.

Every function validates its inputs and raises `ValueError` naming the argument at fault.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from numpy.typing import ArrayLike

from ..errors_dcr import DCRInputError
from ._checks import _as_1d, _as_binary, _as_float_tensor, _check_both_classes, _check_lengths


# The original's threshold grid: `np.arange(-1.0, 1.0, 0.005)`, i.e. 400 values
# -1.0, -0.995, ..., 0.995 (1.0 itself is excluded), bit-identical to the original's values.
ORIGINAL_THRESHOLD_GRID = np.arange(-1.0, 1.0, 0.005)
ORIGINAL_THRESHOLD_GRID.setflags(write=False)


def cosine_similarity_pairs(embeddings_a: ArrayLike | torch.Tensor, embeddings_b: ArrayLike | torch.Tensor) -> np.ndarray:
    """Cosine similarity of row i of `embeddings_a` with row i of `embeddings_b`.

    Either side may hold several sets of pairs against one set of the other (e.g. the probes of
    every LR size against one HR side): `[num_pairs, dim]` with `[sets, num_pairs, dim]` gives
    `[sets, num_pairs]`, set s the same numbers as the two-array call on set s, with the shared
    side read (and its norms computed) once; two 3-D inputs pair set s with set s.

    Computed by torch in the inputs' precision (float32 embeddings in float32, float64 in float64;
    other dtypes in float64), on the device of torch inputs. The checks cost nothing extra: a row
    with a NaN or an infinite value has a non-finite norm, so only rows whose norm is not finite
    and positive are inspected (and computed again in float64 when they are finite after all,
    e.g. values whose float32 squares overflow).

    Args:
        embeddings_a, embeddings_b: `[num_pairs, dim]` or `[sets, num_pairs, dim]` float arrays or tensors.

    Returns:
        `[num_pairs]` (or `[sets, num_pairs]`) similarities in [-1, 1], float32 for float32 inputs,
        else float64.
    """
    a = _as_float_tensor("embeddings_a", embeddings_a, sets=True)
    b = _as_float_tensor("embeddings_b", embeddings_b, sets=True)
    if a.shape[-2:] != b.shape[-2:] or (a.ndim == b.ndim == 3 and len(a) != len(b)):
        raise DCRInputError(f"`embeddings_a` has shape {tuple(a.shape)} but `embeddings_b` has shape {tuple(b.shape)}: "
                            "expected the same [num_pairs, dim], with [sets, ...] on one side or the same sets on both.")
    if a.dtype != b.dtype:
        a, b = a.double(), b.double()
    if b.device != a.device:
        b = b.to(a.device)
    single = a.ndim == b.ndim == 2
    a, b = a.reshape(-1, *a.shape[-2:]), b.reshape(-1, *b.shape[-2:])  # [sets or 1, num_pairs, dim], views
    scores, norms = _paired_dot_and_norms(a, b)
    scores.div_(norms)
    suspicious = ~(torch.isfinite(norms) & (norms > 0))
    if bool(suspicious.any()):
        sets, rows = (index.cpu().numpy() for index in suspicious.nonzero(as_tuple=True))
        scores = scores.cpu()
        first, second = a.cpu().numpy(), b.cpu().numpy()
        exact = _exact_cosine(first[sets % len(first), rows], second[sets % len(second), rows], a.shape[1])
        scores[sets, rows] = torch.from_numpy(exact).to(scores.dtype)
    return scores.cpu().numpy()[0] if single else scores.cpu().numpy()


def _paired_dot_and_norms(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Row-wise dot products `[sets, num]` of `[sets or 1, num, dim]` tensors (a side with one set
    is paired with every set of the other) and the products of their norms `[sets, num]`.

    The dot products are one `einsum` (a batched matrix product over the rows: one read of each side,
    no broadcast copy of the one-set side), the norms one reduction per side. Measured on 4 x 6000 x
    512 float32 pairs against one side, on this project's 2-core EPYC with the caches flushed: 2.4-3.5
    ms (two runs), against 3.1-3.5 ms for blocks of 512 rows (norms and dot products while a block is
    in the cache) and 3.5-4.0 ms for the four sets one call each; a broadcast `vecdot` takes 15 ms.
    """
    sides = [(side[0], "nd") if len(side) == 1 else (side, "snd") for side in (a, b)]
    spec = f"{sides[0][1]},{sides[1][1]}->{'sn' if len(a) > 1 or len(b) > 1 else 'n'}"
    dots = torch.einsum(spec, sides[0][0], sides[1][0]).reshape(-1, a.shape[1])
    return dots, torch.linalg.vector_norm(a, dim=2) * torch.linalg.vector_norm(b, dim=2)


def _exact_cosine(a: np.ndarray, b: np.ndarray, total: int) -> np.ndarray:
    """Cosine of the pairs `[rows, dim]` in float64, after the full checks (finite values, no zero
    embedding); `total` is the number of pairs, for the message."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    for name, array in (("embeddings_a", a), ("embeddings_b", b)):
        num_bad = int(array.shape[0] - np.count_nonzero(np.isfinite(array).all(axis=1)))
        if num_bad:
            raise DCRInputError(f"`{name}` has {num_bad} row(s) with NaN or infinite values out of {total}.")
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    num_zero = int(np.count_nonzero(norms == 0))
    if num_zero:
        raise DCRInputError(f"{num_zero} pair(s) contain a zero embedding, whose cosine similarity is undefined.")
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
            raise DCRInputError(f"`num_folds` must be at least 2, got {num_folds}.")
        if num_pairs < num_folds:
            raise DCRInputError(f"{num_pairs} pair(s) cannot be split into `num_folds`={num_folds} non-empty folds.")
        # Contiguous blocks in order, with the original's boundaries: fold k = [k*n//K, (k+1)*n//K).
        bounds = np.arange(num_folds + 1) * num_pairs // num_folds
        return np.repeat(np.arange(num_folds), np.diff(bounds)), num_folds
    if num_folds is not None:
        raise DCRInputError("Pass either `folds` (fold id of every pair) or `num_folds` (contiguous blocks), not both.")
    fold_values = _as_1d("folds", folds)
    if not np.issubdtype(fold_values.dtype, np.integer):
        raise DCRInputError(f"`folds` must hold integer fold ids, got dtype {fold_values.dtype}.")
    unique_folds, dense = np.unique(fold_values, return_inverse=True)
    if len(unique_folds) < 2:
        raise DCRInputError(f"`folds` must name at least 2 folds, got only fold {unique_folds.tolist()}.")
    return dense, len(unique_folds)


def verification_accuracy(
    scores: ArrayLike,
    is_same: ArrayLike,
    folds: ArrayLike | None = None,
    *,
    num_folds: int | None = None,
    threshold_grid: Literal["original"] | ArrayLike | None = None,
) -> VerificationResult | list[VerificationResult]:
    """k-fold verification accuracy: threshold chosen on the other folds, accuracy on the held-out one.

    `scores` may hold several sets of scores of the same pairs, one row each (e.g. one per probe
    size, as `cosine_similarity_pairs` gives them): `[sets, num_pairs]` gives a list of results, set
    s the same as the call with row s, computed together (the grid search of all sets at once).

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
        scores: `[num_pairs]` similarity scores (e.g. `cosine_similarity_pairs`), or `[sets, num_pairs]`.
        is_same: `[num_pairs]` booleans or 0/1, true when the pair shows one identity.
        folds: `[num_pairs]` integer fold id of every pair (e.g. the sets of LFW `pairs.txt`).
            None: `num_folds` contiguous blocks in order, as the original (LFW's 10 sets of 600).
        num_folds: number of contiguous blocks when `folds` is None (default 10).
        threshold_grid: see above.

    Returns:
        `VerificationResult` with mean/std accuracy, mean threshold and per-fold values (a list of
        them, one per set, for `[sets, num_pairs]` scores).
    """
    array = np.asarray(scores)
    single = array.ndim != 2
    if array.ndim > 2:
        raise DCRInputError(f"`scores` must be 1-D [num_pairs] or 2-D [sets, num_pairs], got shape {array.shape}.")
    # The 1-D checks (real, finite, non-empty) on every value, with their one-line messages.
    array = _as_1d("scores", array.reshape(-1) if array.ndim == 2 else array, finite=True).reshape(-1, array.shape[-1])
    array = array.astype(np.float64)
    is_same = _as_binary("is_same", is_same)
    _check_lengths(scores=array[0], is_same=is_same)
    _check_both_classes(is_same)
    if folds is not None:
        _check_lengths(scores=array[0], folds=np.asarray(folds).reshape(-1))
    fold_ids, num_folds = _fold_ids(folds, array.shape[1], num_folds)

    if threshold_grid is None:
        thresholds = np.stack([_exact_set_thresholds(row, fold_ids, num_folds, is_same) for row in array])
    else:
        thresholds = _grid_thresholds(array, fold_ids, num_folds, is_same, threshold_grid)
    held_out_correct = (array > thresholds[:, fold_ids]) == is_same  # [sets, num_pairs]
    keys = (np.arange(len(array))[:, None] * num_folds + fold_ids).ravel()
    fold_accuracies = (np.bincount(keys, weights=held_out_correct.ravel(), minlength=len(array) * num_folds)
                       .reshape(len(array), num_folds) / np.bincount(fold_ids, minlength=num_folds))
    results = [
        VerificationResult(
            accuracy=float(accuracies.mean()),
            accuracy_std=float(accuracies.std()),
            threshold=float(set_thresholds.mean()),
            fold_accuracies=accuracies,
            fold_thresholds=set_thresholds,
        )
        for accuracies, set_thresholds in zip(fold_accuracies, thresholds)
    ]
    return results[0] if single else results


def _exact_set_thresholds(scores: np.ndarray, fold_ids: np.ndarray, num_folds: int, is_same: np.ndarray) -> np.ndarray:
    """Threshold `[folds]` of each fold's best distinct decision for one set of scores (`threshold_grid=None`)."""
    # One sort for everything: distinct scores ascending and the position of each pair in them.
    values, positions = np.unique(scores, return_inverse=True)
    gain = _training_gain(fold_ids, num_folds, positions[None], len(values), is_same)[0]
    return _exact_thresholds(values, positions, fold_ids, num_folds, gain)


def _training_gain(
    fold_ids: np.ndarray, num_folds: int, positions: np.ndarray, num_values: int, is_same: np.ndarray
) -> np.ndarray:
    """Gain `[sets, folds, m + 1]` in correct training pairs of each cut over cut 0, for every held-out
    fold of every set, where pair i of set s lies in bin `positions[s, i]` of `num_values` ordered
    bins (its distinct score's rank, or its grid bin)."""
    # Cut c (0..m) predicts "different" for the c lowest bins and "same" above them.
    # Relative to cut 0 ("all same"), each pair at or below the cut adds +1 correct if it is
    # different and -1 if it is same: training accuracy = (training same pairs + gain) / pairs.
    sets = len(positions)
    keys = (np.arange(sets)[:, None] * num_folds + fold_ids) * num_values + positions
    weights = np.broadcast_to(np.where(is_same, -1.0, 1.0), positions.shape)
    fold_gain = np.bincount(keys.ravel(), weights=weights.ravel(), minlength=sets * num_folds * num_values).reshape(
        sets, num_folds, num_values)
    np.cumsum(fold_gain, axis=2, out=fold_gain)
    gain = np.zeros((sets, num_folds, num_values + 1))  # column 0: cut 0, "all same"
    np.subtract(fold_gain.sum(axis=1, keepdims=True), fold_gain, out=gain[..., 1:])  # all folds minus the held-out one
    return gain


def _exact_thresholds(
    values: np.ndarray, positions: np.ndarray, fold_ids: np.ndarray, num_folds: int, gain: np.ndarray
) -> np.ndarray:
    """Threshold `[folds]` of the best distinct decision of each fold (`threshold_grid=None`).

    Overwrites the entries of `gain` that are no decision of their fold with -inf.
    """
    num_values = len(values)
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
    return _cut_thresholds(values, in_train, _last_argmax(gain))


def _grid_thresholds(
    scores: np.ndarray, fold_ids: np.ndarray, num_folds: int, is_same: np.ndarray,
    threshold_grid: Literal["original"] | ArrayLike,
) -> np.ndarray:
    """Threshold `[sets, folds]` of the best grid value of each fold of each set of `scores` `[sets,
    num_pairs]` (`threshold_grid` "original" or an array)."""
    if isinstance(threshold_grid, str):
        if threshold_grid != "original":
            raise DCRInputError(f"`threshold_grid` must be None, 'original' or an array, got {threshold_grid!r}.")
        grid = ORIGINAL_THRESHOLD_GRID
    else:
        grid = np.unique(_as_1d("threshold_grid", threshold_grid, finite=True).astype(np.float64))
    # `score > grid[j]` fails exactly when fewer than j + 1 grid values lie below the score: binning
    # the pairs by that count makes cut j + 1 of the bins the decision of grid[j], with no sort of
    # the scores (the grid has 400 values, LFW 6000 pairs).
    bins = _grid_bins(grid, scores)
    gain = _training_gain(fold_ids, num_folds, bins, len(grid) + 1, is_same)
    return grid[_last_argmax(gain[..., 1 : len(grid) + 1])]


def _even_step(grid: np.ndarray) -> float | None:
    """The step of an evenly spaced grid (to 1e-9 relative), else None."""
    if len(grid) < 3:
        return None
    step = (grid[-1] - grid[0]) / (len(grid) - 1)
    return step if step > 0 and np.allclose(np.diff(grid), step, rtol=1e-9, atol=0) else None


_ORIGINAL_GRID_STEP = _even_step(ORIGINAL_THRESHOLD_GRID)


def _grid_bins(grid: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """`np.searchsorted(grid, scores, side="left")`: the number of grid values below each score.

    For an evenly spaced grid (as the original's) by arithmetic, each count checked against the
    grid itself and the search kept for any it misses (a fifth of searchsorted's 0.2 ms on LFW's
    6000 scores, which binary-searches each score apart)."""
    step = _ORIGINAL_GRID_STEP if grid is ORIGINAL_THRESHOLD_GRID else _even_step(grid)
    if step is not None:
        guess = np.clip(np.ceil((scores - grid[0]) / step), 0, len(grid)).astype(np.int64)
        padded = np.concatenate([[-np.inf], grid, [np.inf]])  # padded[j] = grid[j - 1]
        if ((padded[guess] < scores) & (padded[guess + 1] >= scores)).all():
            return guess
    return np.searchsorted(grid, scores, side="left")


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
            raise DCRInputError(f"`far_targets` must lie in (0, 1], got {far}.")

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
