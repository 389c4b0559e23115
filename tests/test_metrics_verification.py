"""Tests of dcr_hf.metrics.verification against independent oracles: scikit-learn, brute force, hand cases."""

import numpy as np
import torch
import pytest
from scipy.interpolate import interp1d
from scipy.optimize import brentq
from sklearn.metrics import roc_auc_score, roc_curve
from sklearn.metrics.pairwise import cosine_similarity

from dcr_hf.metrics.verification import (
    ORIGINAL_THRESHOLD_GRID,
    cosine_similarity_pairs,
    roc_metrics,
    verification_accuracy,
)


def _tied_pairs(seed: int, num_pairs: int, same_rate: float = 0.5):
    """Scores rounded to 2 decimals (many ties), labels correlated with the score."""
    rng = np.random.default_rng(seed)
    is_same = rng.random(num_pairs) < same_rate
    scores = np.round(np.clip(rng.normal(np.where(is_same, 0.3, -0.1), 0.35), -1, 1), 2)
    return scores, is_same


# ----------------------------------------------------------------------------- verification oracles


def _brute_force_fold(train_scores, train_same, test_scores, test_same, candidates):
    """Scan candidates upwards, keep the last best (the original's `>=`), predict same when score > t."""
    best_accuracy, best_threshold = -1.0, None
    for threshold in candidates:
        accuracy = np.mean((train_scores > threshold) == train_same)
        if accuracy >= best_accuracy:
            best_accuracy, best_threshold = accuracy, threshold
    return np.mean((test_scores > best_threshold) == test_same), best_threshold


def _exact_candidates(train_scores):
    """Every distinct decision: below the minimum, midpoints between distinct scores, the maximum."""
    distinct = np.unique(train_scores)
    return [np.nextafter(distinct[0], -np.inf), *((distinct[:-1] + distinct[1:]) / 2), distinct[-1]]


def _brute_force_verification(scores, is_same, folds, candidates_fn):
    if folds is None:  # the original's contiguous split
        n = len(scores)
        folds = np.zeros(n, dtype=int)
        for i in range(10):
            folds[i * n // 10 : (i + 1) * n // 10] = i
    accuracies, thresholds = [], []
    for fold in np.unique(folds):
        test = folds == fold
        accuracy, threshold = _brute_force_fold(
            scores[~test], is_same[~test], scores[test], is_same[test], candidates_fn(scores[~test])
        )
        accuracies.append(accuracy)
        thresholds.append(threshold)
    return np.array(accuracies), np.array(thresholds)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("given_folds", [False, True])
@pytest.mark.parametrize("same_rate", [0.5, 0.93])  # 0.93: "all same" often wins on the training folds
def test_verification_matches_brute_force(seed, given_folds, same_rate):
    scores, is_same = _tied_pairs(seed, 613, same_rate)
    folds = np.random.default_rng(100 + seed).choice([3, 5, 8, 11, 20, 21, 40], size=613) if given_folds else None
    expected_accuracies, expected_thresholds = _brute_force_verification(scores, is_same, folds, _exact_candidates)

    result = verification_accuracy(scores, is_same, folds)

    np.testing.assert_array_equal(result.fold_accuracies, expected_accuracies)
    np.testing.assert_allclose(result.fold_thresholds, expected_thresholds, rtol=0, atol=1e-12)
    assert result.accuracy == pytest.approx(expected_accuracies.mean())
    assert result.accuracy_std == pytest.approx(expected_accuracies.std())
    assert result.threshold == pytest.approx(expected_thresholds.mean())


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("given_folds", [False, True])
def test_verification_original_grid_matches_brute_force(seed, given_folds):
    scores, is_same = _tied_pairs(seed, 600)
    scores = scores + 0.0025 * np.random.default_rng(seed).integers(-1, 2, 600)  # scores on and off the grid
    folds = np.repeat(np.arange(10), 60)[np.random.default_rng(seed).permutation(600)] if given_folds else None
    grid = np.arange(-1.0, 1.0, 0.005)
    expected_accuracies, expected_thresholds = _brute_force_verification(scores, is_same, folds, lambda _: grid)

    result = verification_accuracy(scores, is_same, folds, threshold_grid="original")

    np.testing.assert_array_equal(result.fold_accuracies, expected_accuracies)
    np.testing.assert_array_equal(result.fold_thresholds, expected_thresholds)
    np.testing.assert_array_equal(ORIGINAL_THRESHOLD_GRID, grid)


def test_verification_custom_grid_matches_brute_force():
    scores, is_same = _tied_pairs(4, 500)
    grid = [0.3, -0.2, 0.1, 0.05, 0.3, 0.6]
    expected_accuracies, expected_thresholds = _brute_force_verification(
        scores, is_same, None, lambda _: sorted(set(grid))
    )
    result = verification_accuracy(scores, is_same, threshold_grid=grid)
    np.testing.assert_array_equal(result.fold_accuracies, expected_accuracies)
    np.testing.assert_array_equal(result.fold_thresholds, expected_thresholds)


def test_verification_grid_ties_go_to_larger_threshold():
    # Same pairs score 0.5, different pairs -0.5: every grid threshold in [-0.5, 0.5) separates the
    # training folds perfectly; the largest of them, 0.495 (index 299 of the grid), must win.
    scores = np.tile([0.5, -0.5], 10)
    is_same = np.tile([1, 0], 10)
    result = verification_accuracy(scores, is_same, threshold_grid="original")
    np.testing.assert_array_equal(result.fold_thresholds, np.full(10, np.arange(-1.0, 1.0, 0.005)[299]))
    assert result.threshold == pytest.approx(0.495)
    assert result.accuracy == 1.0
    # The exact search has one perfect decision; its threshold is the midpoint 0.0.
    np.testing.assert_array_equal(verification_accuracy(scores, is_same).fold_thresholds, np.zeros(10))


def test_verification_exact_ties_go_to_larger_threshold():
    # Each fold holds scores -0.5 (different), 0.0 (same), 0.2 (different), 0.6 (same).
    # Training accuracy: all same 2/4, "> -0.5" 3/4, "> 0.0" 2/4, "> 0.2" 3/4, "> 0.6" 2/4.
    # Tie between the midpoints -0.25 and 0.4: the larger, 0.4, wins; held-out accuracy is 3/4.
    scores = np.tile([-0.5, 0.0, 0.2, 0.6], 10)
    is_same = np.tile([False, True, False, True], 10)
    folds = np.repeat(np.arange(10), 4)
    result = verification_accuracy(scores, is_same, folds)
    np.testing.assert_allclose(result.fold_thresholds, 0.4)
    np.testing.assert_allclose(result.fold_accuracies, 0.75)
    assert result.accuracy_std == 0.0


def test_verification_contiguous_folds_follow_the_original_boundaries():
    # 25 pairs in 10 folds: the original's boundaries k*25//10 = 0, 2, 5, 7, 10, 12, 15, 17, 20, 22, 25.
    scores, is_same = _tied_pairs(5, 25)
    result = verification_accuracy(scores, is_same)
    folds = np.repeat(np.arange(10), np.diff([0, 2, 5, 7, 10, 12, 15, 17, 20, 22, 25]))
    explicit = verification_accuracy(scores, is_same, folds)
    np.testing.assert_array_equal(result.fold_accuracies, explicit.fold_accuracies)
    # Another plausible split (fold = 10 * index // 25: sizes 3, 2, 3, 2, ...) gives other folds.
    other = verification_accuracy(scores, is_same, np.arange(25) * 10 // 25)
    assert not np.array_equal(result.fold_accuracies, other.fold_accuracies)
    assert len(verification_accuracy(scores, is_same, num_folds=3).fold_accuracies) == 3


def test_cosine_similarity_pairs_matches_sklearn():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(50, 16)), rng.normal(size=(50, 16))
    np.testing.assert_allclose(cosine_similarity_pairs(a, b), np.diag(cosine_similarity(a, b)), rtol=1e-12)


def test_cosine_similarity_pairs_of_float32_and_tensors():
    """float32 embeddings are scored in float32 (as the model makes them), numpy or torch alike;
    values whose float32 squares overflow or underflow are scored exactly in float64."""
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(1100, 40)).astype(np.float32), rng.normal(size=(1100, 40)).astype(np.float32)
    a[5] *= 1e25  # |a|^2 overflows float32
    b[7] *= 1e-25  # |b|^2 underflows to 0
    a64, b64 = a.astype(np.float64), b.astype(np.float64)  # (sklearn treats tiny norms as 1)
    expected = (a64 * b64).sum(1) / (np.linalg.norm(a64, axis=1) * np.linalg.norm(b64, axis=1))
    scores = cosine_similarity_pairs(a, b)
    assert scores.dtype == np.float32
    np.testing.assert_allclose(scores, expected, rtol=2e-6, atol=2e-7)
    np.testing.assert_array_equal(cosine_similarity_pairs(torch.from_numpy(a), torch.from_numpy(b)), scores)
    np.testing.assert_array_equal(cosine_similarity_pairs(a.tolist(), b.tolist()), cosine_similarity_pairs(a.astype(np.float64), b))


def test_cosine_similarity_pairs_of_several_sets_against_one_side():
    """[sets, pairs, dim] against [pairs, dim] (either way round, or set by set): each set's scores
    are the two-array call's, to the bit; a bad row is named as in that call."""
    rng = np.random.default_rng(2)
    hr, probes = rng.normal(size=(1500, 24)).astype(np.float32), rng.normal(size=(3, 1500, 24)).astype(np.float32)
    scores = cosine_similarity_pairs(hr, probes)
    assert scores.shape == (3, 1500)
    for index in range(3):
        np.testing.assert_array_equal(scores[index], cosine_similarity_pairs(hr, probes[index]))
    np.testing.assert_array_equal(cosine_similarity_pairs(probes, hr), scores)
    np.testing.assert_array_equal(cosine_similarity_pairs(probes, probes[::-1].copy())[1], cosine_similarity_pairs(probes[1], probes[1]))
    probes[2, 9] *= 1e25  # |b|^2 overflows float32: scored again in float64
    np.testing.assert_allclose(cosine_similarity_pairs(hr, probes)[2, 9], cosine_similarity_pairs(hr, probes[2])[9])
    with pytest.raises(ValueError, match="expected the same"):
        cosine_similarity_pairs(hr, probes[:, :100])
    with pytest.raises(ValueError, match="expected the same"):
        cosine_similarity_pairs(probes[:2], probes)
    probes[1, 4, 0] = np.nan
    with pytest.raises(ValueError, match="`embeddings_b` has 1 row"):
        cosine_similarity_pairs(hr, probes)
    with pytest.raises(ValueError, match=r"2-D \[num_pairs, dim\] or 3-D"):
        cosine_similarity_pairs(hr[0], hr)


@pytest.mark.parametrize("threshold_grid", [None, "original", [0.5, -0.25, 0.0, 0.125]])
@pytest.mark.parametrize("given_folds", [False, True])
def test_verification_of_several_sets_is_each_sets_own_call(threshold_grid, given_folds):
    """`[sets, pairs]` scores give one result per set, each equal to the call with that row, to the bit."""
    rng = np.random.default_rng(4)
    is_same = rng.random(900) < 0.5
    scores = np.clip(np.where(is_same, 0.4, 0.0) + 0.3 * rng.normal(size=(3, 900)), -1, 1).round(2)  # ties
    folds = rng.integers(0, 7, 900) if given_folds else None
    results = verification_accuracy(scores, is_same, folds, threshold_grid=threshold_grid)
    assert len(results) == 3
    for row, result in zip(scores, results):
        alone = verification_accuracy(row, is_same, folds, threshold_grid=threshold_grid)
        assert (result.accuracy, result.accuracy_std, result.threshold) == (alone.accuracy, alone.accuracy_std, alone.threshold)
        np.testing.assert_array_equal(result.fold_accuracies, alone.fold_accuracies)
        np.testing.assert_array_equal(result.fold_thresholds, alone.fold_thresholds)
    with pytest.raises(ValueError, match="`scores` has 899, `is_same` has 900"):
        verification_accuracy(scores[:, 1:], is_same)
    scores[1, 5] = np.nan
    with pytest.raises(ValueError, match="`scores` holds 1 NaN or infinite value"):
        verification_accuracy(scores, is_same)
    with pytest.raises(ValueError, match=r"1-D \[num_pairs\] or 2-D \[sets, num_pairs\]"):
        verification_accuracy(scores[None], is_same)


# ----------------------------------------------------------------------------- ROC


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_roc_matches_sklearn(seed):
    scores, is_same = _tied_pairs(seed, 3000)
    result = roc_metrics(scores, is_same)

    fpr, tpr, thresholds = roc_curve(is_same, scores, drop_intermediate=False)
    np.testing.assert_allclose(result.fpr, fpr)
    np.testing.assert_allclose(result.tpr, tpr)
    np.testing.assert_array_equal(result.thresholds[1:], thresholds[1:])
    assert result.auc == pytest.approx(roc_auc_score(is_same, scores), abs=1e-12)
    eer = brentq(lambda x: 1.0 - x - interp1d(fpr, tpr)(x), 0.0, 1.0)
    assert result.eer == pytest.approx(eer, abs=1e-9)
    for far in (1e-3, 1e-2, 1e-1):
        assert result.tar_at_far[far] == pytest.approx(tpr[fpr <= far].max())


def test_roc_hand_case():
    # Different pairs score 0.1, 0.2, 0.3; same pairs 0.25, 0.4. Curve (fpr, tpr) through
    # (0, 0), (0, .5), (1/3, .5), (1/3, 1), (2/3, 1), (1, 1): AUC = 1/3 * 0.5 + 2/3 * 1 = 5/6.
    # At fpr = 1/3 the curve jumps from 0.5 to 1, and 1 - 1/3 = 2/3 lies in that jump: EER = 1/3.
    # TAR at FAR 0.1: best tpr with fpr <= 0.1 is 0.5; at FAR 0.5 it is 1.
    result = roc_metrics([0.1, 0.2, 0.3, 0.25, 0.4], [0, 0, 0, 1, 1], far_targets=(0.1, 0.5))
    assert result.auc == pytest.approx(5 / 6)
    assert result.eer == pytest.approx(1 / 3)
    assert result.tar_at_far == {0.1: 0.5, 0.5: 1.0}


# ----------------------------------------------------------------------------- bad inputs


@pytest.mark.parametrize(
    ("scores", "is_same", "message"),
    [
        ([], [], "empty"),
        ([0.1, 0.2, 0.3], [1, 1, 1], "both classes"),
        ([0.1, 0.2, 0.3], [0, 0, 0], "both classes"),
        ([0.1, np.nan, np.inf, 0.3], [0, 1, 0, 1], "holds 2 NaN or infinite"),
        ([0.1, 0.2, 0.3], [0, 1], "`scores` has 3, `is_same` has 2"),
        ([0.1, 0.2, 0.3], [0, 1, 2], "boolean or 0/1"),
        ([[0.1, 0.2]], [[0, 1]], "must be 1-D"),
    ],
)
@pytest.mark.parametrize("function", [verification_accuracy, roc_metrics])
def test_pair_metrics_reject_bad_inputs(function, scores, is_same, message):
    with pytest.raises(ValueError, match=message):
        function(scores, is_same)


def test_verification_rejects_bad_folds_and_grid():
    scores, is_same = _tied_pairs(0, 40)
    with pytest.raises(ValueError, match="`scores` has 40, `folds` has 39"):
        verification_accuracy(scores, is_same, np.zeros(39, dtype=int))
    with pytest.raises(ValueError, match="at least 2 folds"):
        verification_accuracy(scores, is_same, np.zeros(40, dtype=int))
    with pytest.raises(ValueError, match="not both"):
        verification_accuracy(scores, is_same, np.arange(40) % 4, num_folds=4)
    with pytest.raises(ValueError, match="non-empty folds"):
        verification_accuracy(scores[:6], [0, 1] * 3)
    with pytest.raises(ValueError, match="'original'"):
        verification_accuracy(scores, is_same, threshold_grid="sphereface")
