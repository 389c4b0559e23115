"""Speed of the evaluation metrics on random data (not a test). Prints best-of-N wall times.

    python benchmarks/bench_metrics.py

Workloads (the original implementation took about 0.43 s and 0.28 s on them):
- 10-fold verification accuracy of 6000 LFW-sized pairs at 4 resolutions (4 calls);
- retrieval metrics (precision@1, R-precision, MAP@R) of 5000 queries against 5000 references,
  512-d, 300 identities.
"""

import os
import sys
from pathlib import Path


os.environ.setdefault("OMP_NUM_THREADS", "2")  # before numpy/faiss start their thread pools


import faiss  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import best_time  # noqa: E402

from dcr_hf.metrics import retrieval_metrics, verification_accuracy  # noqa: E402


def main() -> None:
    torch.set_num_threads(2)
    faiss.omp_set_num_threads(2)
    rng = np.random.default_rng(0)

    # LFW-like: 6000 pairs, half same, cosine scores rounded like float32 outputs, 4 resolutions.
    is_same = np.tile(np.repeat([1, 0], 300), 10)
    scores = [
        np.clip(rng.normal(np.where(is_same, 0.5, 0.1), 0.2), -1, 1).astype(np.float32) for _ in range(4)
    ]

    def verification(grid=None):
        return [verification_accuracy(s, is_same, threshold_grid=grid) for s in scores]

    exact = best_time(verification, warmup=0, repeats=50)
    grid = best_time(lambda: verification("original"), warmup=0, repeats=50)
    print(f"verification, 4 x 6000 pairs, exact thresholds:   {exact * 1e3:7.2f} ms  (goal 20, original ~430)")
    print(f"verification, 4 x 6000 pairs, original grid:      {grid * 1e3:7.2f} ms")

    num_identities, dim = 300, 512
    centers = rng.normal(size=(num_identities, dim)).astype(np.float32)
    query_labels = rng.integers(0, num_identities, 5000)
    reference_labels = rng.integers(0, num_identities, 5000)
    queries = centers[query_labels] + 1.5 * rng.normal(size=(5000, dim)).astype(np.float32)
    references = centers[reference_labels] + 1.5 * rng.normal(size=(5000, dim)).astype(np.float32)

    retrieval = best_time(lambda: retrieval_metrics(queries, query_labels, references, reference_labels), warmup=0, repeats=7)
    retrieval_l2 = best_time(
        lambda: retrieval_metrics(queries, query_labels, references, reference_labels, metric="l2"), warmup=0, repeats=7
    )
    k = int(np.bincount(reference_labels).max())

    def search_only():
        index = faiss.IndexFlatIP(dim)
        index.add(references)
        index.search(queries, k)

    search = best_time(search_only, warmup=0, repeats=7)
    gemm = best_time(lambda: queries @ references.T, warmup=0, repeats=7)
    print(f"retrieval, 5000 x 5000 x {dim}-d, cosine:          {retrieval * 1e3:7.2f} ms  (goal 140, original ~280)")
    print(f"retrieval, 5000 x 5000 x {dim}-d, l2:              {retrieval_l2 * 1e3:7.2f} ms")
    print(f"  of which exact faiss search alone (k={k}):        {search * 1e3:7.2f} ms")
    print(f"  for scale, the float32 similarity product alone: {gemm * 1e3:7.2f} ms")


if __name__ == "__main__":
    main()
