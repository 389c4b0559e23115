"""Open-set identification (QMUL-SurvFace): TPIR at fixed FPIR, at rank r, with one template per
gallery identity, and the TPIR-FPIR curve."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import ArrayLike

from ..errors_dcr import DCRInputError
from ._checks import _as_embeddings, _check_dims, _labelled_sets


@dataclass(frozen=True)
class OpenSetResult:
    """TPIR at FPIR.

    Attributes:
        tpir: `{rank: {fpir target: TPIR}}`, the share of mated probes whose mate is within `rank`
            and scores above the threshold of that FPIR.
        fpir: `{fpir target: FPIR reached}` (<= the target; below it when unmated scores tie).
        thresholds: `{fpir target: threshold}` (accept when `score > threshold`).
        curves: `{rank: (fpir [m], tpir [m])}` over every distinct decision, FPIR ascending.
        num_mated, num_unmated, num_templates: counts.
    """

    tpir: dict[int, dict[float, float]]
    fpir: dict[float, float]
    thresholds: dict[float, float]
    curves: dict[int, tuple[np.ndarray, np.ndarray]]
    num_mated: int
    num_unmated: int
    num_templates: int


def _normalized(array: np.ndarray) -> torch.Tensor:
    return torch.nn.functional.normalize(torch.from_numpy(array), dim=1)


def identity_templates(embeddings: np.ndarray, labels: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
    """One template per identity: the mean of its L2-normalized embeddings, normalized again; and the identities."""
    identities, codes = np.unique(labels, return_inverse=True)
    sums = torch.zeros(len(identities), embeddings.shape[1], dtype=torch.float32)
    sums.index_add_(0, torch.from_numpy(codes.astype(np.int64)), _normalized(embeddings))
    return torch.nn.functional.normalize(sums, dim=1), identities


def open_set_identification(
    mated_embeddings: ArrayLike,
    mated_labels: ArrayLike,
    gallery_embeddings: ArrayLike,
    gallery_labels: ArrayLike,
    unmated_embeddings: ArrayLike,
    fpir_targets: Sequence[float] = (0.3, 0.2, 0.1),
    ranks: Sequence[int] = (1, 20),
    block_size: int = 4096,
) -> OpenSetResult:
    """TPIR at FPIR of mated and unmated probes against identity templates, by cosine similarity.

    An unmated probe is a false positive at threshold t when its best template score exceeds t; for
    a target FPIR f the threshold is the lowest one whose FPIR is at most f (the `floor(f * n)`+1-th
    highest unmated score, accept when `score > t`). A mated probe is a true positive at rank r when
    its identity's template is among its r best-scored templates and its score exceeds t.
    """
    mated, mated_labels, gallery, gallery_labels = _labelled_sets(
        "mated_embeddings", mated_embeddings, mated_labels, "gallery_embeddings", gallery_embeddings, gallery_labels
    )
    unmated = _as_embeddings("unmated_embeddings", unmated_embeddings)
    _check_dims("unmated_embeddings", unmated, "gallery_embeddings", gallery)
    ranks = sorted({int(rank) for rank in ranks})
    if not ranks or ranks[0] < 1:
        raise DCRInputError(f"`ranks` must be positive integers, got {ranks}.")
    for target in fpir_targets:
        if not 0 <= target <= 1:
            raise DCRInputError(f"`fpir_targets` must lie in [0, 1], got {target}.")
    templates, identities = identity_templates(gallery, gallery_labels)
    position = {identity: index for index, identity in enumerate(identities.tolist())}
    missing = [label for label in mated_labels.tolist() if label not in position]
    if missing:
        raise DCRInputError(f"{len(missing)} mated probe(s) have no gallery identity, e.g. {missing[0]!r}.")
    mate = torch.as_tensor([position[label] for label in mated_labels.tolist()])
    mate_scores, mate_rank = [], []
    queries = _normalized(mated)
    # Blocks of probes keep the score matrix small (SurvFace: ~60k mated probes x 3k identities).
    for start in range(0, len(queries), block_size):
        scores = queries[start:start + block_size] @ templates.T
        own = scores.gather(1, mate[start:start + block_size, None])
        mate_scores.append(own[:, 0])
        mate_rank.append((scores > own).sum(dim=1) + 1)
    mate_scores = torch.cat(mate_scores).numpy().astype(np.float64)
    mate_rank = torch.cat(mate_rank).numpy()
    others = _normalized(unmated)
    unmated_best = torch.cat([
        (others[start:start + block_size] @ templates.T).max(dim=1).values for start in range(0, len(others), block_size)
    ]).numpy().astype(np.float64)

    descending = np.sort(unmated_best)[::-1]
    num_unmated = len(descending)
    thresholds, fpir = {}, {}
    for target in fpir_targets:
        # Keep at most floor(f * n) unmated probes above the threshold (the epsilon absorbs 0.3 * 10 = 2.999...).
        allowed = int(np.floor(target * num_unmated + 1e-9))
        threshold = -np.inf if allowed >= num_unmated else float(descending[allowed])
        thresholds[float(target)] = threshold
        fpir[float(target)] = float(np.mean(unmated_best > threshold))
    tpir = {
        rank: {target: float(np.mean((mate_rank <= rank) & (mate_scores > threshold))) for target, threshold in thresholds.items()}
        for rank in ranks
    }
    # The curve: one point per distinct unmated score (threshold just at it), plus "accept all".
    cuts = np.concatenate([np.unique(unmated_best)[::-1], [-np.inf]])
    ascending = descending[::-1]
    curve_fpir = (num_unmated - np.searchsorted(ascending, cuts, side="right")) / num_unmated
    curves = {}
    for rank in ranks:
        accepted = np.sort(mate_scores[mate_rank <= rank])
        curves[rank] = (curve_fpir, (len(accepted) - np.searchsorted(accepted, cuts, side="right")) / len(mate_scores))
    return OpenSetResult(tpir=tpir, fpir=fpir, thresholds=thresholds, curves=curves, num_mated=len(mated),
                         num_unmated=num_unmated, num_templates=len(identities))


__all__ = ["OpenSetResult", "identity_templates", "open_set_identification"]
