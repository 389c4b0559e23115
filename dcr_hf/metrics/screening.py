"""Exact k-nearest neighbours on a CPU, screened in bf16: the float32 answer at about the cost of a
bf16 matrix product.

Every query-reference score is first computed as a bf16 product (the CPU's bf16 dot-product
instructions, twice its float32 rate); a proven bound on that product's error says which references
can still be among a query's k nearest, and only those (a handful past k on the benchmark's
clustered embeddings) are scored in float32 by faiss' per-pair kernels and heaps, which also order
exact ties as faiss' flat index does (the candidates are given in ascending order). A query left
with too many candidates is reported unsettled, for the caller's plain search. Hand-written: faiss
has no bf16 product and torch no bounded screening.

The screening value is a distance, >= 0 up to rounding: |q - r|^2 / 2 for "l2" and 1 - q.r for
"cosine" (rows L2-normalised by the caller), one bf16 product of operands with the norms as extra
columns (`_operands`). A bf16 number's 16 bits read as an int16 keep the order of non-negative values,
so the per-row selections run on int16 views of the product (numpy's and torch's integer kernels,
several times faster than their bf16 ones here); the few negative values (rounding near a distance
of 0) read as int16 below every non-negative one, so a comparison against a non-negative threshold
still keeps them, which is all the screening needs (`screened_search`).
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

from ..cpu_flags import cpu_has_native_bf16

#: bf16's unit roundoff (8 significand bits, round to nearest).
BF16_UNIT_ROUNDOFF = 2.0**-8

#: float32's unit roundoff.
FLOAT32_UNIT_ROUNDOFF = 2.0**-24

#: Below this many multiply-adds (queries x references x dim) the screening's fixed costs (operands,
#: bounds, candidate lists) outweigh its cheaper product.
SCREEN_MIN_WORK = 2**30

#: Most bf16 scores held at once (`[block, references]`): 64 MiB.
BLOCK_SCORES = 2**25

#: Most queries per bf16 product.
MAX_BLOCK = 1024


@functools.cache
def native_bf16() -> bool:
    """Whether this CPU has bf16 dot-product instructions (`cpu_flags.cpu_has_native_bf16`), read once
    a process: every search asks."""
    return bool(cpu_has_native_bf16())


def screening_pays(num_queries: int, num_references: int, dim: int, k: int) -> bool:
    """Whether `screened_search` is expected to beat a float32 product here: native bf16, at least
    `SCREEN_MIN_WORK` multiply-adds, and k small against the references (each query rescores k of them)."""
    return num_queries * num_references * dim >= SCREEN_MIN_WORK and 4 * k <= num_references and native_bf16()


def default_cap(k: torch.Tensor | np.ndarray | int):
    """Most candidates a query keeps before it is left to the plain search."""
    return 4 * k + 64


def _gamma(terms: int) -> float:
    """gamma_n = n u / (1 - n u), u float32's unit roundoff: the bound on the relative error of a float32
    sum of n terms in any order (Higham, Accuracy and Stability of Numerical Algorithms, 2nd ed., 3.1)."""
    return terms * FLOAT32_UNIT_ROUNDOFF / (1.0 - terms * FLOAT32_UNIT_ROUNDOFF)


def _operands(queries: torch.Tensor, references: torch.Tensor, metric: str) -> tuple[torch.Tensor, torch.Tensor]:
    """`[num_queries, K]`, `[num_references, K]` bf16 whose product is the screening distance.

    cosine: [-q~, 1] . [r~, 1] = 1 - q~.r~. l2: [-q~, a_h, a_l, 1, 1] . [r~, 1, 1, b_h, b_l] with
    a_h + a_l = |q|^2 / 2 to about 2^-16 relative (a_h = bf16(a), a_l = bf16(a - a_h), a the float32
    half squared norm; b likewise for r): |q|^2 / 2 + |r|^2 / 2 - q~.r~. q~, r~ are the rows rounded
    to bf16; zero columns pad K to a multiple of 16 (exact zeros in the sums).
    """
    dim = queries.shape[1]
    extra = 1 if metric == "cosine" else 4
    width = -(-(dim + extra) // 16) * 16
    query_operand = torch.zeros((len(queries), width), dtype=torch.bfloat16)
    reference_operand = torch.zeros((len(references), width), dtype=torch.bfloat16)
    query_operand[:, :dim] = queries
    query_operand[:, :dim].neg_()
    reference_operand[:, :dim] = references
    if metric == "cosine":
        query_operand[:, dim] = 1.0
        reference_operand[:, dim] = 1.0
        return query_operand, reference_operand
    for operand, rows, norm_columns, one_columns in ((query_operand, queries, (dim, dim + 1), (dim + 2, dim + 3)),
                                                     (reference_operand, references, (dim + 2, dim + 3), (dim, dim + 1))):
        half = (rows * rows).sum(dim=1).mul_(0.5)
        high = half.bfloat16()
        operand[:, norm_columns[0]] = high
        operand[:, norm_columns[1]] = (half - high.float()).bfloat16()
        operand[:, one_columns[0]:one_columns[1] + 1] = 1.0
    return query_operand, reference_operand


def _error_bounds(queries: torch.Tensor, references: torch.Tensor, query_operand: torch.Tensor,
                  reference_operand: torch.Tensor, metric: str) -> tuple[torch.Tensor, float, torch.Tensor] | None:
    """`(absolute [num_queries], relative, additive [num_queries])` float64, or None when the rows are
    too large for the bound (or not finite): with y~ the bf16 screening value of query i and reference
    j, y its exact value (|q - r|^2 / 2 or 1 - q.r) and z the float32 quantity faiss ranks by (l2: its
    squared distance / 2; cosine: 1 - its inner product),
        |y~ - y| <= u |y~| + absolute[i]   and   |z - y| <= relative y + additive[i]   for every j.

    Derivation (u = 2^-8, g(n) = gamma_n of float32, d the dimension, K the operand width; dq = q - q~,
    dr = r - r~ are exact in float32, and their norms are computed):
    - inputs: q~.r~ - q.r = -dq.r~ - q.dr, so |q~.r~ - q.r| <= |dq| |r~| + |q| |dr| (Cauchy-Schwarz).
    - l2's norm columns: a_h + a_l misses a by u^2 |a| (a_l is a - a_h rounded once) and a misses
      |q|^2 / 2 by g(d + 1) |q|^2 / 2 (squares and sum in float32); so (u^2 + 2 g(d + 2)) (|q|^2 + |r|^2) / 2.
    - the product: a product of two bf16 numbers is exact in float32 (8 + 8 significand bits), the sum
      of the K terms is float32 in some order (bf16 dot-product instructions accumulate in float32):
      <= g(K) sum |terms| <= g(K) (|q~| |r~| + (1 + 2u)^2 (|q|^2 + |r|^2) / 2) (l2; cosine: + 1 for
      the unit column). Denormals flushed to zero move a term or a partial sum by at most 2^-126 times
      the larger operand: K 2^-125 (1 + |q~| + |r~|) in all.
    - the output is rounded to bf16: |y~ - s| <= u |y~| (round to nearest).
    - faiss' float32 rescoring: the squared distance sum_k (q_k - r_k)^2 (differences, squares and
      sums rounded) is off by <= g(d + 2) |q - r|^2: relative g(d + 2), additive 0; the inner product
      by <= g(d) |q| |r|: relative 0, additive g(d) |q| max|r|.
    Norms are computed in float32 (relative error <= g(d + 2)) and taken with a factor 1 + 2 g(d + 2);
    maxima over the references make the bounds hold for every j.
    """
    dim, width = queries.shape[1], query_operand.shape[1]
    safe = 1.0 + 2.0 * _gamma(dim + 2)

    def norms(rows: torch.Tensor) -> torch.Tensor:
        return torch.linalg.vector_norm(rows, dim=1).double() * safe

    q_norm = norms(queries)
    q_residual = norms(queries + query_operand[:, :dim])  # the operand holds -q~
    r_norms = norms(references)
    r_norm, r_residual = float(r_norms.max()), float(norms(references - reference_operand[:, :dim]).max())
    largest = float(q_norm.max()) * r_norm
    if not math.isfinite(largest) or largest > 2.0**100:
        return None  # non-finite rows, or products near bf16's overflow: no bound
    q16_norm, r16_norm = q_norm + q_residual, r_norm + r_residual  # |q~| <= |q| + |dq|
    absolute = q_residual * r16_norm + q_norm * r_residual + width * 2.0**-125 * (1.0 + q16_norm + r16_norm)
    if metric == "cosine":
        absolute = absolute + _gamma(width) * (q16_norm * r16_norm + 1.0)
        return absolute, 0.0, _gamma(dim) * q_norm * r_norm
    half_squares = (q_norm * q_norm + r_norm * r_norm) / 2.0
    u = BF16_UNIT_ROUNDOFF
    absolute = (absolute + _gamma(width) * (q16_norm * r16_norm + (1.0 + 2.0 * u) ** 2 * half_squares)
                + (u * u + 2.0 * _gamma(dim + 2)) * half_squares)
    return absolute, _gamma(dim + 2), torch.zeros_like(q_norm)


def _threshold_keys(kth: np.ndarray, absolute: torch.Tensor, relative: float, additive: torch.Tensor) -> np.ndarray:
    """`[rows]` int16 keys: a reference whose exact score can be among its query's k best has a
    screening key <= its row's, given `kth` (int16 keys, >= 0) such that k references of the row have
    keys <= it, and the bounds of `_error_bounds`.

    With t the bf16 value of `kth`: those k references have y <= t (1 + u) + absolute (u |y~| at y~ <= t;
    for y~ < 0 the bound is below it), so z <= Z = (t (1 + u) + absolute) (1 + relative) + additive for
    them, and the k-th best z is <= Z. A reference has z <= Z only if (1 - relative)(y~ (1 - u) -
    absolute) - additive <= Z, i.e. y~ <= T = ((Z + additive) / (1 - relative) + absolute) / (1 - u).
    T is computed in float64, widened by 2^-40 against that arithmetic, and its key is the largest bf16
    number <= T.
    """
    u = BF16_UNIT_ROUNDOFF
    value = torch.from_numpy(np.ascontiguousarray(kth, dtype=np.int16)).view(torch.bfloat16).double()
    top = (value * (1.0 + u) + absolute) * (1.0 + relative) + additive
    limit = ((top + additive) / (1.0 - relative) + absolute) / (1.0 - u) * (1.0 + 2.0**-40)
    keys = limit.float().bfloat16()
    down = torch.tensor(-math.inf, dtype=torch.bfloat16)
    for _ in range(2):  # float64 -> float32 -> bf16 rounds to nearest: at most two steps above T
        keys = torch.where(keys.double() > limit, torch.nextafter(keys, down), keys)
    return keys.view(torch.int16).numpy()


def screened_search(queries: torch.Tensor, references: torch.Tensor, k: int, metric: str,
                    k_per_query: torch.Tensor | None = None, cap: int | None = None,
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The k nearest references of each query as faiss' float32 flat search finds them (the same
    neighbours, exact ties in its order; scores from faiss' per-pair kernels), through a bf16 screening.

    Args:
        queries: `[num_queries, dim]` float32 on the CPU (L2-normalised for cosine).
        references: `[num_references, dim]` float32 (L2-normalised for cosine), at least 2k of them.
        k: neighbours per query (the width of the result).
        metric: "cosine" (scores: inner products) or "l2" (scores: negated squared distances).
        k_per_query: `[num_queries]` ints in 1..k, or None (all k): row i is exact in its first
            `k_per_query[i]` entries only; past them it may hold other references or -1 (score -inf).
        cap: most candidates a query may keep (`default_cap` of its k when None).

    Returns:
        `(scores, indices, unsettled)`: `[num_queries, k]` nearest first, and the `[num_queries]` bool
        mask of the queries left to the caller (too many candidates, or bounds that do not hold:
        non-finite or enormous rows), whose rows here are unspecified.
    """
    import faiss

    num_queries, num_references = len(queries), len(references)
    wanted = np.full(num_queries, k, dtype=np.int64) if k_per_query is None else k_per_query.numpy().astype(np.int64)
    limits = default_cap(wanted) if cap is None else np.maximum(cap, wanted)
    scores = torch.full((num_queries, k), -math.inf, dtype=torch.float32)
    indices = torch.full((num_queries, k), -1, dtype=torch.int64)
    unsettled = torch.ones(num_queries, dtype=torch.bool)
    query_operand, reference_operand = _operands(queries, references, metric)
    bounds = _error_bounds(queries, references, query_operand, reference_operand, metric)
    if bounds is None:
        return scores, indices, unsettled
    absolute, relative, additive = bounds
    # Group minima: the k-th smallest of the minima of g interleaved groups (entries j, j + g, ...)
    # bounds the k-th smallest entry from above (k groups each hold an entry <= it); with g = 8k
    # the k nearest mostly fall in distinct groups, so the bound is close (interleaved: galleries
    # stored by identity spread over the groups).
    groups = max(k, min(num_references // 2, 8 * k))
    used = (num_references // groups) * groups
    block = max(1, min(MAX_BLOCK, BLOCK_SCORES // num_references))
    buffer = torch.empty((min(block, num_queries), num_references), dtype=torch.bfloat16)
    query_array, reference_array = np.ascontiguousarray(queries.numpy()), np.ascontiguousarray(references.numpy())
    dim = queries.shape[1]
    search = faiss.knn_inner_products_by_idx if metric == "cosine" else faiss.knn_L2sqr_by_idx
    uniform = bool((wanted == k).all())
    for start in range(0, num_queries, block):
        stop = min(start + block, num_queries)
        rows = stop - start
        keys_tensor = torch.mm(query_operand[start:stop], reference_operand.T, out=buffer[:rows]).view(torch.int16)
        minima = keys_tensor[:, :used].view(rows, used // groups, groups).amin(dim=1).numpy()
        if uniform:
            kth = np.partition(minima, k - 1, axis=1)[:, k - 1]
        else:
            kth = np.take_along_axis(np.sort(minima, axis=1), wanted[start:stop, None] - 1, axis=1)[:, 0]
        # A negative key is a value below 0 (rounding near a distance of 0): k entries are <= 0 then.
        thresholds = _threshold_keys(np.maximum(kth, 0), absolute[start:stop], relative, additive[start:stop])
        # Row-major positions of every key at or below its row's threshold: rows, then ascending columns.
        row, column = np.divmod(np.flatnonzero(keys_tensor.numpy() <= thresholds[:, None]), num_references)
        counts = np.bincount(row, minlength=rows)
        settled = (counts >= wanted[start:stop]) & (counts <= limits[start:stop])
        keep = settled[row]
        row, column = row[keep], column[keep]
        if not len(row):
            continue
        counts = np.where(settled, counts, 0)
        width = int(counts.max())
        candidates = np.full((rows, width), -1, dtype=np.int64)
        candidates[row, np.arange(len(row)) - (np.cumsum(counts) - counts)[row]] = column
        values = np.empty((rows, k), dtype=np.float32)
        found = np.empty((rows, k), dtype=np.int64)
        search(faiss.swig_ptr(query_array[start:stop]), faiss.swig_ptr(reference_array), faiss.swig_ptr(candidates),
               dim, rows, num_references, width, k, faiss.swig_ptr(values), faiss.swig_ptr(found), width)
        block_scores = torch.from_numpy(values)
        if metric == "l2":
            block_scores.neg_()
        found_tensor = torch.from_numpy(found)
        block_scores[found_tensor < 0] = -math.inf
        settled_rows = torch.from_numpy(np.flatnonzero(settled))
        scores[start + settled_rows] = block_scores[settled_rows]
        indices[start + settled_rows] = found_tensor[settled_rows]
        unsettled[start + settled_rows] = False
    return scores, indices, unsettled


__all__ = ["SCREEN_MIN_WORK", "default_cap", "native_bf16", "screened_search", "screening_pays"]
