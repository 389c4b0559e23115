"""Tests of dcr_hf.metrics against independent oracles (scikit-learn, brute force, hand-computed cases)."""

import numpy as np
import pytest
from scipy.interpolate import interp1d
from scipy.optimize import brentq
from sklearn.metrics import roc_auc_score, roc_curve
from sklearn.metrics.pairwise import cosine_similarity

from dcr_hf.metrics import (
    ORIGINAL_THRESHOLD_GRID,
    cosine_similarity_pairs,
    identification_accuracy,
    retrieval_metrics,
    roc_metrics,
    verification_accuracy,
)


faiss = pytest.importorskip("faiss")


def _tied_pairs(seed: int, num_pairs: int, same_rate: float = 0.5):
    """Scores rounded to 2 decimals (many ties), labels correlated with the score."""
    rng = np.random.default_rng(seed)
    is_same = rng.random(num_pairs) < same_rate
    scores = np.round(np.clip(rng.normal(np.where(is_same, 0.3, -0.1), 0.35), -1, 1), 2)
    return scores, is_same


def _unit_circle(degrees) -> np.ndarray:
    radians = np.deg2rad(np.asarray(degrees, dtype=np.float64))
    return np.stack([np.cos(radians), np.sin(radians)], axis=1)


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


# ----------------------------------------------------------------------------- identification


def test_identification_hand_case():
    # Gallery on the unit circle (degrees): A 0; B 30, 38, 45; C 60; D 90; E 120; F 150; G 180.
    norms = np.array([[1.0], [2], [3], [1], [5], [1], [2], [1], [4]])  # cosine ignores them
    gallery = _unit_circle([0, 30, 38, 45, 60, 90, 120, 150, 180]) * norms
    gallery_labels = np.array(["A", "B", "B", "B", "C", "D", "E", "F", "G"])
    # Probe (degrees, subject) -> ranking of subjects by nearest gallery image:
    #   10 A: A first                                   -> rank 1
    #   50 A: B45 (5), C (10), B38, B30, D (40), A (50) -> subjects B, C, D, A: rank 4
    #         (A is the 6th gallery image but the 4th subject)
    #  175 A: G, F, E, D, C, B, A                        -> rank 7
    #   35 B: B38 first                                 -> rank 1
    #  200 Z: not in the gallery                        -> unmatched
    probes = _unit_circle([10, 50, 175, 35, 200]) * 3.0
    probe_labels = np.array(["A", "A", "A", "B", "Z"])

    result = identification_accuracy(probes, probe_labels, gallery, gallery_labels, ranks=(1, 5, 7))
    assert result.num_probes == 5
    assert result.num_unmatched_probes == 1
    assert result.accuracy_at_rank == {1: 2 / 4, 5: 3 / 4, 7: 4 / 4}
    assert result.accuracy_at_rank_all_probes == {1: 2 / 5, 5: 3 / 5, 7: 4 / 5}
    # Rank 2 searches only (2 - 1) * 3 + 1 = 4 gallery images; the probe at 50 degrees is a miss there.
    rank_2 = identification_accuracy(probes, probe_labels, gallery, gallery_labels, ranks=(2,))
    assert rank_2.accuracy_at_rank == {2: 2 / 4}


@pytest.mark.parametrize("seed", [0, 1])
def test_identification_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(45, 8))
    gallery_labels = rng.integers(0, 40, 120)  # several images per subject
    gallery = centers[gallery_labels] + 0.7 * rng.normal(size=(120, 8))
    probe_labels = rng.integers(0, 45, 300)  # subjects 40-44 are absent from the gallery
    probes = centers[probe_labels] + 1.2 * rng.normal(size=(300, 8))
    ranks = (1, 3, 5, 10)

    similarity = cosine_similarity(probes, gallery)
    subjects = np.unique(gallery_labels)
    best_per_subject = np.stack([similarity[:, gallery_labels == s].max(axis=1) for s in subjects], axis=1)
    matched = np.isin(probe_labels, subjects)
    probe_rank = np.full(300, 10**9)
    for i in np.flatnonzero(matched):
        own = best_per_subject[i, subjects == probe_labels[i]][0]
        probe_rank[i] = 1 + np.sum(best_per_subject[i] > own)

    result = identification_accuracy(probes, probe_labels, gallery, gallery_labels, ranks=ranks)
    assert result.num_unmatched_probes == int((~matched).sum()) > 0
    for rank in ranks:
        assert result.accuracy_at_rank[rank] == pytest.approx(np.mean(probe_rank[matched] <= rank))
        assert result.accuracy_at_rank_all_probes[rank] == pytest.approx(np.mean(probe_rank <= rank))


# ----------------------------------------------------------------------------- retrieval


def test_retrieval_hand_case_separate_sets():
    # References (degrees, label): 0/0, 10/0, 20/0, 40/1, 50/1, 90/2. R: label 0 -> 3, 1 -> 2, 2 -> 1.
    # Query 12, label 0: 10, 20, 0 all label 0        -> rel 1 1 1: P@1 1, R-prec 1,   AP@R 1
    # Query 27, label 1: 20 (l0), 40 (l1)              -> rel 0 1:   P@1 0, R-prec 1/2, AP@R (1/2)/2
    # Query 60, label 2: 50 (l1)                       -> rel 0:     P@1 0, R-prec 0,   AP@R 0
    # Query 47, label 1: 50, 40                        -> rel 1 1:   P@1 1, R-prec 1,   AP@R 1
    # Query 100, label 3: no reference                 -> unmatched, left out
    references = _unit_circle([0, 10, 20, 40, 50, 90]) * np.array([[1.0], [3], [2], [1], [7], [1]])
    queries = _unit_circle([12, 27, 60, 47, 100])
    result = retrieval_metrics(queries, [0, 1, 2, 1, 3], references, [0, 0, 0, 1, 1, 2])
    assert result.precision_at_1 == pytest.approx(2 / 4)
    assert result.r_precision == pytest.approx((1 + 0.5 + 0 + 1) / 4)
    assert result.mean_average_precision_at_r == pytest.approx((1 + 0.25 + 0 + 1) / 4)
    assert (result.num_queries, result.num_unmatched_queries) == (5, 1)


def test_retrieval_hand_case_same_set_excludes_self():
    # Items (degrees, label): a 0/0, b 10/0, c 25/1, d 30/0, e 60/1, f 200/2 (f's label is lone).
    # R excludes the item itself: label 0 -> 2, label 1 -> 1.
    # a: b (l0), c (l1)        -> rel 1 0: P@1 1, R-prec 1/2, AP@R (1/1)/2
    # b: a (l0), c (l1)        -> rel 1 0: P@1 1, R-prec 1/2, AP@R 1/2
    # c: d (l0)                -> rel 0:   0, 0, 0
    # d: c (l1), b (l0)        -> rel 0 1: P@1 0, R-prec 1/2, AP@R (1/2)/2
    # e: d (l0)                -> rel 0:   0, 0, 0
    embeddings = _unit_circle([0, 10, 25, 30, 60, 200])
    result = retrieval_metrics(embeddings, [0, 0, 1, 0, 1, 2])
    assert result.precision_at_1 == pytest.approx(2 / 5)
    assert result.r_precision == pytest.approx(1.5 / 5)
    assert result.mean_average_precision_at_r == pytest.approx(1.25 / 5)
    assert (result.num_queries, result.num_unmatched_queries) == (6, 1)


def test_retrieval_l2_differs_from_cosine_on_raw_embeddings():
    # The query (1, 0) points along r1 = (10, 0) but is closer in L2 to r2 = (0.9, 0.3).
    queries, references = np.array([[1.0, 0.0]]), np.array([[10.0, 0.0], [0.9, 0.3]])
    assert retrieval_metrics(queries, [0], references, [0, 1], metric="cosine").precision_at_1 == 1.0
    assert retrieval_metrics(queries, [0], references, [0, 1], metric="l2").precision_at_1 == 0.0


def _brute_force_retrieval(queries, query_labels, references, reference_labels, metric, same_set):
    """Full distance matrix, argsort, and the AccuracyCalculator definitions, one query at a time."""
    if metric == "cosine":
        distances = -cosine_similarity(queries, references)
    else:
        distances = ((queries[:, None, :] - references[None, :, :]) ** 2).sum(-1)
    if same_set:
        np.fill_diagonal(distances, np.inf)
    precision_at_1, r_precision, average_precision = [], [], []
    for i in range(len(queries)):
        num_relevant = np.sum(reference_labels == query_labels[i]) - int(same_set)
        if num_relevant == 0:
            continue
        retrieved = reference_labels[np.argsort(distances[i], kind="stable")[:num_relevant]] == query_labels[i]
        precision_at_1.append(retrieved[0])
        r_precision.append(retrieved.sum() / num_relevant)
        average_precision.append(
            sum(retrieved[: j + 1].sum() / (j + 1) for j in range(num_relevant) if retrieved[j]) / num_relevant
        )
    return np.mean(precision_at_1), np.mean(r_precision), np.mean(average_precision)


@pytest.mark.parametrize("metric", ["cosine", "l2"])
@pytest.mark.parametrize("same_set", [False, True])
def test_retrieval_matches_brute_force(metric, same_set):
    rng = np.random.default_rng(7)
    centers = rng.normal(size=(30, 16))
    query_labels = rng.integers(0, 32, 400)  # labels 30 and 31: unmatched queries
    queries = centers[query_labels % 30] + 0.9 * rng.normal(size=(400, 16))
    query_labels[:3] = [100, 101, 102]  # lone labels: unmatched when queries are their own references
    if same_set:
        references, reference_labels = queries, query_labels
    else:
        reference_labels = rng.integers(0, 30, 350)
        references = centers[reference_labels] + 0.9 * rng.normal(size=(350, 16))

    expected = _brute_force_retrieval(queries, query_labels, references, reference_labels, metric, same_set)
    if same_set:
        result = retrieval_metrics(queries, query_labels, metric=metric)
    else:
        result = retrieval_metrics(queries, query_labels, references, reference_labels, metric=metric)

    np.testing.assert_allclose(
        [result.precision_at_1, result.r_precision, result.mean_average_precision_at_r], expected, rtol=1e-12
    )
    assert 0 < result.num_unmatched_queries < result.num_queries


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


def test_embedding_metrics_reject_bad_inputs():
    rng = np.random.default_rng(0)
    embeddings, labels = rng.normal(size=(10, 4)), np.arange(10) % 3
    bad = embeddings.copy()
    bad[[1, 4], 2] = np.nan
    bad[7, 0] = np.inf
    with pytest.raises(ValueError, match="`query_embeddings` has 3 row"):
        retrieval_metrics(bad, labels)
    with pytest.raises(ValueError, match="`gallery_embeddings` has 3 row"):
        identification_accuracy(embeddings, labels, bad, labels)
    with pytest.raises(ValueError, match="`probe_embeddings` has 10, `probe_labels` has 9"):
        identification_accuracy(embeddings, labels[:9], embeddings, labels)
    with pytest.raises(ValueError, match="dimension 4 but `reference_embeddings` has 3"):
        retrieval_metrics(embeddings, labels, embeddings[:, :3], labels)
    with pytest.raises(ValueError, match="empty"):
        retrieval_metrics(np.zeros((0, 4)), [])
    with pytest.raises(ValueError, match="No probe subject"):
        identification_accuracy(embeddings, labels + 10, embeddings, labels)
    with pytest.raises(ValueError, match="No query"):
        retrieval_metrics(embeddings, np.arange(10))  # every label is lone
    with pytest.raises(ValueError, match="zero embedding"):
        cosine_similarity_pairs(np.zeros((2, 3)), np.ones((2, 3)))
    with pytest.raises(ValueError, match="`embeddings_b` has 1 row"):
        cosine_similarity_pairs(np.ones((2, 3)), [[1.0, 2.0, np.nan], [1.0, 1.0, 1.0]])
