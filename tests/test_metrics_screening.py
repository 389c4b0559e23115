"""The bf16-screened exact kNN (`dcr_hf.metrics.screening`): the float32 flat search's neighbours, its
error bound pair by pair, the queries it leaves to the plain search, and per-query k."""

import faiss
import numpy as np
import pytest
import torch
from pytorch_metric_learning.utils.inference import return_results

from dcr_hf.metrics import retrieval_metrics, screening
from dcr_hf.metrics.ranking import ExactKNN, _drop_own


def _flat(queries: np.ndarray, references: np.ndarray, k: int, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """faiss' flat index: the float32 answer the screening must give (scores as ExactKNN's)."""
    index = (faiss.IndexFlatIP if metric == "cosine" else faiss.IndexFlatL2)(references.shape[1])
    index.add(references)
    distances, indices = index.search(queries, k)
    return (distances if metric == "cosine" else -distances), indices


def _embeddings(kind: str, seed: int, count: int = 1200, dim: int = 48) -> tuple[np.ndarray, np.ndarray]:
    """`(queries, references)` float32: random; clustered by identity and stored by identity (the
    gallery order the interleaved groups spread); or with many exact duplicates (ties)."""
    rng = np.random.default_rng(seed)
    if kind == "random":
        return rng.normal(size=(300, dim)).astype(np.float32), rng.normal(size=(count, dim)).astype(np.float32)
    if kind == "clustered":
        centers = rng.normal(size=(60, dim))
        labels = np.sort(rng.integers(0, 60, count))
        references = centers[labels] + 0.4 * rng.normal(size=(count, dim))
        queries = centers[rng.integers(0, 60, 300)] + 0.4 * rng.normal(size=(300, dim))
        return queries.astype(np.float32), (references * 3.0 + 1.0).astype(np.float32)
    # duplicates: 100 distinct rows repeated, and queries equal to some of them (distance exactly 0)
    distinct = rng.integers(-3, 4, size=(100, dim)).astype(np.float32)
    references = distinct[rng.integers(0, 100, count)]
    queries = np.concatenate([distinct[:150 // 2], rng.normal(size=(150, dim)).astype(np.float32)])
    return queries, references


def _normalised(rows: np.ndarray) -> np.ndarray:
    return torch.nn.functional.normalize(torch.from_numpy(rows), dim=1).numpy()


@pytest.mark.parametrize("metric", ["l2", "cosine"])
@pytest.mark.parametrize("kind", ["random", "clustered", "duplicates"])
@pytest.mark.parametrize("k", [1, 40])
def test_screened_search_finds_the_flat_index_neighbours(metric, kind, k):
    """Same neighbours in the same order (exact ties too) as faiss' float32 flat index, and its
    scores to float32 rounding, with every query settled on these sets."""
    queries, references = _embeddings(kind, seed=k)
    if metric == "cosine":
        queries, references = _normalised(queries), _normalised(references)
    scores, indices, unsettled = screening.screened_search(torch.from_numpy(queries), torch.from_numpy(references), k, metric)
    expected_scores, expected_indices = _flat(queries, references, k, metric)
    assert not unsettled.any()
    np.testing.assert_array_equal(indices.numpy(), expected_indices)
    np.testing.assert_allclose(scores.numpy(), expected_scores, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("metric", ["l2", "cosine"])
def test_the_error_bound_holds_pair_by_pair(metric):
    """|y~ - y| <= u |y~| + absolute and |z - y| <= relative y + additive for every pair, with y the exact
    screening distance (float64), y~ the bf16 product and z faiss' float32 quantity."""
    queries, references = _embeddings("clustered", seed=3, count=500, dim=300)
    if metric == "cosine":
        queries, references = _normalised(queries), _normalised(references)
    q, r = torch.from_numpy(queries), torch.from_numpy(references)
    query_operand, reference_operand = screening._operands(q, r, metric)
    absolute, relative, additive = screening._error_bounds(q, r, query_operand, reference_operand, metric)
    screened = torch.mm(query_operand, reference_operand.T).double()
    q64, r64 = q.double(), r.double()
    # faiss' per-pair kernels, the ones that rescore the candidates.
    ids = np.tile(np.arange(len(references), dtype=np.int64), (len(queries), 1))
    found = np.empty(ids.shape, dtype=np.float32)
    kernel = faiss.fvec_L2sqr_by_idx if metric == "l2" else faiss.fvec_inner_products_by_idx
    kernel(faiss.swig_ptr(found), faiss.swig_ptr(queries), faiss.swig_ptr(references), faiss.swig_ptr(ids),
           queries.shape[1], len(queries), len(references))
    if metric == "l2":
        exact = torch.cdist(q64, r64) ** 2 / 2
        ranked = torch.from_numpy(found).double() / 2
    else:
        exact = 1.0 - q64 @ r64.T
        ranked = 1.0 - torch.from_numpy(found).double()
    assert ((screened - exact).abs() <= screening.BF16_UNIT_ROUNDOFF * screened.abs() + absolute[:, None]).all()
    assert ((ranked - exact).abs() <= relative * exact + additive[:, None]).all()
    # The bound is not vacuous: within a few bf16 steps of the distances it bounds.
    assert float((absolute / exact.median(dim=1).values).max()) < 0.05


def test_queries_with_too_many_candidates_are_left_to_the_plain_search():
    """A cap below k's candidates leaves queries unsettled; ExactKNN searches those in float32, so the
    answer is still the flat index's."""
    queries, references = _embeddings("duplicates", seed=5)
    _, _, unsettled = screening.screened_search(torch.from_numpy(queries), torch.from_numpy(references), 10, "l2", cap=10)
    assert unsettled.any() and not unsettled.all()  # the duplicated rows tie past the cap
    scores, indices = ExactKNN("l2", screen=True).search(torch.from_numpy(queries), torch.from_numpy(references), 10)
    expected_scores, expected_indices = _flat(queries, references, 10, "l2")
    np.testing.assert_array_equal(indices.numpy(), expected_indices)


def test_rows_without_a_bound_are_all_unsettled():
    """Rows whose products near bf16's overflow, or non-finite rows, give no bound: every query goes to
    the plain search (which still finds the flat index's neighbours of the large rows)."""
    queries, references = (rows * np.float32(1e16) for rows in _embeddings("random", seed=6))
    _, _, unsettled = screening.screened_search(torch.from_numpy(queries), torch.from_numpy(references), 5, "l2")
    assert unsettled.all()
    _, indices = ExactKNN("l2", screen=True).search(torch.from_numpy(queries), torch.from_numpy(references), 5)
    np.testing.assert_array_equal(indices.numpy(), _flat(queries, references, 5, "l2")[1])
    queries[3, 0] = np.nan
    assert screening.screened_search(torch.from_numpy(queries / 1e16), torch.from_numpy(references / 1e16), 5, "l2")[2].all()


@pytest.mark.parametrize("metric", ["l2", "cosine"])
def test_per_query_k_is_exact_in_each_rows_first_entries(metric):
    queries, references = _embeddings("clustered", seed=7)
    if metric == "cosine":
        queries, references = _normalised(queries), _normalised(references)
    wanted = torch.from_numpy(np.random.default_rng(7).integers(1, 31, len(queries)))
    scores, indices, unsettled = screening.screened_search(torch.from_numpy(queries), torch.from_numpy(references), 30,
                                                           metric, k_per_query=wanted)
    _, expected = _flat(queries, references, 30, metric)
    assert not unsettled.any()
    for row, count in enumerate(wanted.tolist()):
        np.testing.assert_array_equal(indices[row, :count].numpy(), expected[row, :count])
    assert (scores[indices < 0] == -np.inf).all()


def test_drop_own_is_pytorch_metric_learnings_exclusion():
    """Without per-query k, `_drop_own` is `return_results(..., ref_includes_query=True)`; with it, a
    row's own reference past its first k + 1 stays and its entry k goes instead."""
    rng = np.random.default_rng(8)
    indices = torch.from_numpy(np.stack([rng.permutation(12)[:6] for _ in range(12)]))
    distances = torch.from_numpy(rng.random((12, 6)).astype(np.float32))
    expected = return_results(distances, indices, ref_includes_query=True)
    found = _drop_own(distances, indices, None)
    assert torch.equal(found[0], expected[0]) and torch.equal(found[1], expected[1])
    indices = torch.tensor([[5, 1, 0, 2], [3, 4, 1, 2]])  # row 0's own image at entry 2, row 1's absent
    _, kept = _drop_own(torch.zeros(2, 4), indices, torch.tensor([1, 1]))
    assert kept.tolist() == [[5, 0, 2], [3, 1, 2]]


@pytest.mark.parametrize("metric", ["l2", "cosine"])
@pytest.mark.parametrize("rule", [None, "original", "exclude_own"])
def test_retrieval_metrics_are_the_same_screened(monkeypatch, metric, rule):
    """The screened search (per-query R) and the float32 search give the same metrics, to the bit."""
    rng = np.random.default_rng(9)
    centers = rng.normal(size=(40, 32))
    labels = rng.integers(0, 40, 900)
    queries = (centers[labels] + rng.normal(size=(900, 32))).astype(np.float32)
    references = (centers[labels] + rng.normal(size=(900, 32))).astype(np.float32)
    plain = retrieval_metrics(queries, labels, references, labels, metric=metric, rule=rule)
    calls = []
    original = screening.screened_search
    monkeypatch.setattr(screening, "SCREEN_MIN_WORK", 0)
    monkeypatch.setattr(screening, "native_bf16", lambda: True)
    monkeypatch.setattr(screening, "screened_search", lambda *args, **kwargs: calls.append(1) or original(*args, **kwargs))
    screened = retrieval_metrics(queries, labels, references, labels, metric=metric, rule=rule)
    assert calls and screened == plain


def test_screening_is_chosen_only_where_it_pays(monkeypatch):
    monkeypatch.setattr(screening, "native_bf16", lambda: True)
    assert screening.screening_pays(5000, 5000, 512, 30)
    assert not screening.screening_pays(100, 5000, 512, 30)  # too little work
    assert not screening.screening_pays(5000, 100, 5000, 30)  # k too large against the references
    monkeypatch.setattr(screening, "native_bf16", lambda: False)
    assert not screening.screening_pays(5000, 5000, 512, 30)
