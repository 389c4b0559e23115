"""Gallery search metrics with distractors (TinyFace): each probe's rank of its first mate (CMC) and
its average precision over the whole ranked gallery (mAP), image by image."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import ArrayLike

from ._checks import _labelled_sets
from .products import InnerProducts


@dataclass(frozen=True)
class GallerySearchResult:
    """Per-probe ranking facts of a gallery search.

    Attributes:
        first_mate_rank: `[num_probes]` 1-based rank of the best-scored gallery image of the probe's
            identity among all gallery images; `0` for a probe with no mate in the gallery.
        average_precision: `[num_probes]` average precision of the full ranking (0 without a mate).
    """

    first_mate_rank: np.ndarray
    average_precision: np.ndarray

    def cmc(self, max_rank: int) -> np.ndarray:
        """`[max_rank]` share of the probes with a mate whose first mate is within rank k (k = 1..max_rank)."""
        ranks = self.first_mate_rank[self.first_mate_rank > 0]
        if not len(ranks):
            return np.zeros(max_rank)
        return (ranks[:, None] <= np.arange(1, max_rank + 1)[None, :]).mean(axis=0)


def gallery_search(
    probe_embeddings: ArrayLike,
    probe_labels: ArrayLike,
    gallery_embeddings: ArrayLike,
    gallery_labels: ArrayLike,
    block_size: int = 256,
) -> GallerySearchResult:
    """Rank every gallery image for every probe by cosine similarity; rank of the first mate and AP.

    A mate is a gallery image with the probe's label (distractors carry a label no probe has, e.g.
    -1). The rank of the k-th mate is `k` plus the number of non-mates scored strictly higher (ties
    with non-mates count in the probe's favour); AP is the mean over the mates of `k / rank_k`.
    Scores are computed a block of probes at a time (`[block_size, num_gallery]` in memory): no
    library computes the rank of every mate, which mAP needs, from a top-k search.
    """
    probes, probe_labels, gallery, gallery_labels = _labelled_sets(
        "probe_embeddings", probe_embeddings, probe_labels, "gallery_embeddings", gallery_embeddings, gallery_labels
    )
    queries = torch.nn.functional.normalize(torch.from_numpy(np.ascontiguousarray(probes, dtype=np.float32)), dim=1)
    references = torch.nn.functional.normalize(torch.from_numpy(np.ascontiguousarray(gallery, dtype=np.float32)), dim=1)
    products = InnerProducts(references)
    first = np.zeros(len(probes), dtype=np.int64)
    average_precision = np.zeros(len(probes), dtype=np.float64)
    for start in range(0, len(probes), block_size):
        scores = products(queries[start:start + block_size]).numpy()
        for row, score in enumerate(scores):
            index = start + row
            mates = gallery_labels == probe_labels[index]
            if not mates.any():
                continue
            mate_scores = np.sort(score[mates])[::-1]
            # A probe has few mates (TinyFace: one or two), so counting beats sorting the whole gallery.
            higher = np.count_nonzero(score[~mates][None, :] > mate_scores[:, None], axis=1)
            ranks = np.arange(1, len(mate_scores) + 1) + higher
            first[index] = ranks[0]
            average_precision[index] = float(np.mean(np.arange(1, len(ranks) + 1) / ranks))
    return GallerySearchResult(first_mate_rank=first, average_precision=average_precision)


__all__ = ["GallerySearchResult", "gallery_search"]
