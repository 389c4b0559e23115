"""Tests of dcr_hf.metrics.ranking against independent oracles: scikit-learn, brute force, hand cases."""

import numpy as np
import pytest
import torch
from sklearn.metrics.pairwise import cosine_similarity

from dcr_hf.metrics.ranking import ExactKNN, clustering_metrics, identification_accuracy, retrieval_metrics
from dcr_hf.metrics.verification import cosine_similarity_pairs


faiss = pytest.importorskip("faiss")


def _unit_circle(degrees) -> np.ndarray:
    radians = np.deg2rad(np.asarray(degrees, dtype=np.float64))
    return np.stack([np.cos(radians), np.sin(radians)], axis=1)


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


def _brute_force_retrieval(queries, query_labels, references, reference_labels, metric, rule):
    """Full distance matrix, argsort, and the AccuracyCalculator definitions, one query at a time.

    `rule`: None (references are other images), "exclude_own" (reference i, query i's own image,
    is left out) or "original" (the first neighbour is dropped, whoever it is); with a rule R
    counts the other images of the query's label.
    """
    if metric == "cosine":
        distances = -cosine_similarity(queries, references)
    else:
        distances = ((queries[:, None, :] - references[None, :, :]) ** 2).sum(-1)
    if rule == "exclude_own":
        np.fill_diagonal(distances, np.inf)
    precision_at_1, r_precision, average_precision = [], [], []
    for i in range(len(queries)):
        num_relevant = np.sum(reference_labels == query_labels[i]) - int(rule is not None)
        if num_relevant == 0:
            continue
        ranking = np.argsort(distances[i], kind="stable")
        if rule == "original":
            ranking = ranking[1:]
        retrieved = reference_labels[ranking[:num_relevant]] == query_labels[i]
        precision_at_1.append(retrieved[0])
        r_precision.append(retrieved.sum() / num_relevant)
        average_precision.append(
            sum(retrieved[: j + 1].sum() / (j + 1) for j in range(num_relevant) if retrieved[j]) / num_relevant
        )
    return np.mean(precision_at_1), np.mean(r_precision), np.mean(average_precision)


def _metrics(result):
    return [result.precision_at_1, result.r_precision, result.mean_average_precision_at_r]


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

    rule = "exclude_own" if same_set else None
    expected = _brute_force_retrieval(queries, query_labels, references, reference_labels, metric, rule)
    if same_set:
        result = retrieval_metrics(queries, query_labels, metric=metric)
    else:
        result = retrieval_metrics(queries, query_labels, references, reference_labels, metric=metric)

    np.testing.assert_allclose(_metrics(result), expected, rtol=1e-12)
    assert 0 < result.num_unmatched_queries < result.num_queries
    assert result.rule == rule


@pytest.mark.parametrize("metric", ["cosine", "l2"])
@pytest.mark.parametrize("rule", ["exclude_own", "original"])
def test_cross_resolution_rules_match_brute_force(metric, rule):
    """LR queries against the HR copies of the same images, the own HR copy often not the nearest."""
    rng = np.random.default_rng(8)
    centers = rng.normal(size=(25, 16))
    labels = rng.integers(0, 26, 300)  # label 25 has no center: a few more identities
    labels[:2] = [200, 201]  # single-image identities: no reference left once their own is out
    hr = centers[labels % 25] + 0.8 * rng.normal(size=(300, 16))
    lr = hr + 1.2 * rng.normal(size=(300, 16))  # heavy LR noise: the own HR image often ranks below others

    expected = _brute_force_retrieval(lr, labels, hr, labels, metric, rule)
    result = retrieval_metrics(lr, labels, hr, labels, metric=metric, rule=rule)
    np.testing.assert_allclose(_metrics(result), expected, rtol=1e-12)
    assert result.num_unmatched_queries == 2 and result.rule == rule
    # The original's flaw is present in this data: many queries' first neighbour is another image.
    first = np.argsort(-cosine_similarity(lr, hr) if metric == "cosine" else ((lr[:, None] - hr[None]) ** 2).sum(-1), axis=1)[:, 0]
    assert np.mean(first != np.arange(300)) > 0.3
    other = retrieval_metrics(lr, labels, hr, labels, metric=metric, rule="original" if rule == "exclude_own" else "exclude_own")
    assert _metrics(other) != pytest.approx(_metrics(result))


def test_cross_resolution_rules_hand_case():
    # HR references (degrees): a1 0, a2 40, b1 62, b2 110. LR queries: a1 50, a2 38, b1 65, b2 100.
    # Rankings: a1 -> a2 b1 a1 b2; a2 -> a2 b1 a1 b2; b1 -> b1 a2 b2 a1; b2 -> b2 b1 a2 a1. R = 1.
    # exclude_own (own image out): a1 -> a2 (hit), a2 -> b1, b1 -> a2, b2 -> b1 (hit): P@1 2/4.
    # original (first dropped):    a1 -> b1 (a2 dropped, though it is a hit), a2 -> b1, b1 -> a2,
    #                              b2 -> b1 (hit): P@1 1/4.
    references = _unit_circle([0, 40, 62, 110])
    queries = _unit_circle([50, 38, 65, 100])
    labels = ["a", "a", "b", "b"]
    own = retrieval_metrics(queries, labels, references, labels, rule="exclude_own")
    original = retrieval_metrics(queries, labels, references, labels, rule="original")
    assert _metrics(own) == pytest.approx([2 / 4] * 3)
    assert _metrics(original) == pytest.approx([1 / 4] * 3)
    with pytest.raises(ValueError, match="labels differ at index 1"):
        retrieval_metrics(queries, labels, references, ["a", "b", "b", "b"], rule="original")
    with pytest.raises(ValueError, match="`rule` must be one of"):
        retrieval_metrics(queries, labels, references, labels, rule="first")


@pytest.mark.parametrize("metric", ["cosine", "l2"])
@pytest.mark.parametrize("setting", ["other_images", "same_set", "exclude_own", "original"])
def test_retrieval_equals_accuracy_calculator_to_the_bit(metric, setting):
    """`retrieval_metrics` computes pytorch-metric-learning's formulas without the calculator's glue:
    the numbers are `AccuracyCalculator.get_accuracy`'s, exactly, lone labels included."""
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

    rng = np.random.default_rng(10)
    centers = rng.normal(size=(20, 12)).astype(np.float32)
    labels = rng.integers(0, 22, 240)
    labels[:3] = [300, 301, 302]  # lone labels
    queries = (centers[labels % 20] + rng.normal(size=(240, 12))).astype(np.float32)
    references = (queries + 0.7 * rng.normal(size=(240, 12))).astype(np.float32)
    reference_labels = labels if setting != "other_images" else rng.integers(0, 22, 240)
    calculator = AccuracyCalculator(
        include=("precision_at_1", "r_precision", "mean_average_precision_at_r"), k="max_bin_count",
        knn_func=ExactKNN(metric, queries=torch.from_numpy(queries) if setting in ("exclude_own", "original") else None,
                          rule="original" if setting == "original" else "exclude_own"),
    )
    codes = torch.from_numpy(np.unique(np.concatenate([labels, reference_labels]), return_inverse=True)[1])
    query_codes, reference_codes = codes[:240], codes[240:]
    if setting == "other_images":
        expected = calculator.get_accuracy(torch.from_numpy(queries), query_codes, torch.from_numpy(references), reference_codes)
        result = retrieval_metrics(queries, labels, references, reference_labels, metric=metric)
    elif setting == "same_set":
        expected = calculator.get_accuracy(torch.from_numpy(queries), query_codes)
        result = retrieval_metrics(queries, labels, metric=metric)
    else:
        expected = calculator.get_accuracy(torch.from_numpy(references), reference_codes)
        result = retrieval_metrics(queries, labels, references, labels, metric=metric, rule=setting)
    assert _metrics(result) == [expected[key] for key in ("precision_at_1", "r_precision", "mean_average_precision_at_r")]


@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_exact_knn_matches_a_sort(metric):
    rng = np.random.default_rng(9)
    queries, references = rng.normal(size=(70, 8)), rng.normal(size=(50, 8)) * 3
    scores, indices = ExactKNN(metric, block_size=16).search(torch.from_numpy(queries), torch.from_numpy(references), 7)
    if metric == "cosine":
        expected = cosine_similarity(queries, references)
    else:
        expected = -((queries[:, None] - references[None]) ** 2).sum(-1)
    order = np.argsort(-expected, axis=1, kind="stable")[:, :7]
    np.testing.assert_array_equal(indices.numpy(), order)
    np.testing.assert_allclose(scores.numpy(), np.take_along_axis(expected, order, axis=1), rtol=1e-4, atol=1e-4)


def test_clustering_metrics_match_sklearn_scores_of_faiss_kmeans():
    from sklearn.metrics import adjusted_mutual_info_score, normalized_mutual_info_score

    rng = np.random.default_rng(10)
    labels = np.repeat(np.arange(6), 20)
    separated = (rng.normal(size=(6, 16))[labels] * 3 + rng.normal(size=(120, 16))).astype(np.float32)
    noise = rng.normal(size=(120, 16)).astype(np.float32)
    scores = {}
    for name, embeddings in (("separated", separated), ("noise", noise)):
        # Oracle: faiss k-means itself (the original's settings: 20 iterations, faiss' seed), scored by scikit-learn.
        kmeans = faiss.Kmeans(16, 6, niter=20)
        kmeans.train(embeddings)
        clusters = kmeans.index.search(embeddings, 1)[1][:, 0]
        result = clustering_metrics(embeddings, labels, metric="l2")
        assert result.num_clusters == 6
        assert result.nmi == pytest.approx(normalized_mutual_info_score(labels, clusters))
        assert result.ami == pytest.approx(adjusted_mutual_info_score(labels, clusters))
        scores[name] = result
    assert scores["separated"].ami > 0.6 and scores["noise"].ami < 0.1
    with pytest.raises(ValueError, match="distinct labels"):
        clustering_metrics(noise, np.zeros(120))


# ----------------------------------------------------------------------------- bad inputs


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


@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_exact_knn_torch_path_equals_the_faiss_path(metric):
    """The torch path (a GPU, or no faiss) finds the same neighbours as faiss' flat index on a CPU."""
    rng = np.random.default_rng(11)
    queries = torch.from_numpy(rng.normal(size=(90, 8)).astype(np.float32))
    references = torch.from_numpy((rng.normal(size=(60, 8)) * 3).astype(np.float32))
    faiss_scores, faiss_indices = ExactKNN(metric).search(queries, references, 9)
    torch_scores, torch_indices = ExactKNN(metric, block_size=16, use_faiss=False).search(queries, references, 9)
    np.testing.assert_array_equal(torch_indices.numpy(), faiss_indices.numpy())
    np.testing.assert_allclose(torch_scores.numpy(), faiss_scores.numpy(), rtol=1e-5, atol=1e-4)


def test_heap_selection_equals_the_flat_index_with_ties():
    """The blocked path's selection (faiss' heaps): the k largest of each row, largest first, tied
    scores in the order faiss' flat inner-product index gives them (its products of the rows with
    the unit vectors are the rows themselves); a row with NaN products is redone by torch.topk, so
    no slot is left unfilled."""
    from dcr_hf.metrics.ranking import _heap_top_k

    rng = np.random.default_rng(12)
    products = rng.integers(0, 6, size=(40, 30)).astype(np.float32)  # many ties
    flat = faiss.IndexFlatIP(30)
    flat.add(np.eye(30, dtype=np.float32))
    expected_scores, expected_indices = flat.search(products, 8)
    products[3, 4] = np.nan
    scores, indices = torch.empty(40, 8), torch.empty(40, 8, dtype=torch.int64)
    _heap_top_k(torch.from_numpy(products), scores, indices)
    rows = [row for row in range(40) if row != 3]
    np.testing.assert_array_equal(indices.numpy()[rows], expected_indices[rows])
    np.testing.assert_array_equal(scores.numpy()[rows], expected_scores[rows])
    assert (indices[3] >= 0).all() and len(set(indices[3].tolist())) == 8
    np.testing.assert_array_equal(scores[3].numpy(), np.sort(products[3][~np.isnan(products[3])])[::-1][:8])


@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_exact_knn_selects_the_same_without_faiss(monkeypatch, metric):
    """Without faiss (or on a GPU) the blocks go through torch.topk: the same neighbours."""
    from dcr_hf.metrics import ranking

    rng = np.random.default_rng(13)
    queries = torch.from_numpy(rng.normal(size=(50, 8)).astype(np.float32))
    references = torch.from_numpy(rng.normal(size=(70, 8)).astype(np.float32))
    with_heaps = ExactKNN(metric, block_size=16, use_faiss=False).search(queries, references, 9)
    monkeypatch.setattr(ranking, "_faiss", lambda: None)
    with_topk = ExactKNN(metric, block_size=16).search(queries, references, 9)
    np.testing.assert_array_equal(with_topk[1].numpy(), with_heaps[1].numpy())
    np.testing.assert_array_equal(with_topk[0].numpy(), with_heaps[0].numpy())


@pytest.mark.parametrize("threads, expect_faiss", [(1, True), (2, False)])
def test_faiss_searches_by_default_only_with_one_torch_thread(monkeypatch, threads, expect_faiss):
    """oneDNN's products win with 2+ threads and lose with one (see `ExactKNN`): the default follows."""
    pytest.importorskip("faiss")
    calls = []
    original = ExactKNN._faiss_search

    def recorded(self, *args):
        calls.append(True)
        return original(self, *args)

    monkeypatch.setattr(ExactKNN, "_faiss_search", recorded)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        queries, references = torch.randn(20, 8), torch.randn(30, 8)
        scores, indices = ExactKNN("l2").search(queries, references, 3)
    finally:
        torch.set_num_threads(previous)
    assert bool(calls) == expect_faiss
    exact = torch.cdist(queries.double(), references.double()).topk(3, largest=False).indices
    assert torch.equal(indices, exact)
