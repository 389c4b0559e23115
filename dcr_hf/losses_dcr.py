"""DCR's losses and batch-hard mining: margin heads, center loss and the momentum center update,
the coupling term, the mined center terms, and each training stage's total.

Hand-written: the momentum center update of DCR is in no library, and this file travels to every
Hub repository beside `modeling_dcr.py` (which imports it; transformers copies it into saved
folders), so it imports only torch, `.configuration_dcr` and `.errors_dcr`, not pytorch-metric-learning's
CosFaceLoss / ArcFaceLoss / BatchHardMiner.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from .errors_dcr import DCRInputError
from .configuration_dcr import DCRConfig

#: A batch-hard miner: `miner(anchors [n, size], labels [n], references [m, size], reference_labels [m])`
#: -> int64 index tensors `(anchor, positive, negative)` (positives and negatives index `references`),
#: one triplet per anchor that has both. pytorch-metric-learning's `BatchHardMiner` is called this
#: way; this file cannot import it (it travels to the Hub), so the caller passes one in.
Miner = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, ...]]


def margin_logits(
    cosine: torch.Tensor, labels: torch.Tensor, head: str, scale: float, margin: float, easy_margin: bool = False
) -> torch.Tensor:
    """The training logits of a margin head: `scale * cosine` `[n, num_labels]` with each sample's
    target class `labels[i]` given a margin.

    CosFace: target `cos(theta) - margin`. ArcFace: target `cos(theta + margin)`, computed as
    `cos(theta) cos(m) - sin(theta) sin(m)`; where `theta + m` would pass pi (`cos(theta) <=
    cos(pi - m)`) it becomes `cos(theta) - m sin(m)` instead, which keeps the target decreasing with
    the angle (insightface's threshold; pytorch-metric-learning uses the same); with `easy_margin`
    the margin applies only where `cos(theta) > 0` and the plain cosine stays elsewhere.
    """
    cosine = cosine.float()
    index = labels.long()[:, None]
    target = cosine.gather(1, index)
    if head == "cosface":
        shifted = target - margin
    elif head == "arcface":
        # The floor keeps sqrt's gradient finite where a cosine reaches +-1 (it is clamped there).
        sine = (1.0 - target * target).clamp(min=1e-12).sqrt()
        with_margin = target * math.cos(margin) - sine * math.sin(margin)
        if easy_margin:
            shifted = torch.where(target > 0, with_margin, target)
        else:
            shifted = torch.where(target > math.cos(math.pi - margin), with_margin, target - margin * math.sin(margin))
    else:
        raise DCRInputError(f"head={head!r} has no margin; expected one of {tuple(DCRConfig.margin_defaults)}.")
    return scale * cosine.scatter(1, index, shifted)


def classification_loss(logits: torch.Tensor, labels: torch.Tensor, config: DCRConfig) -> torch.Tensor:
    """Cross-entropy of one classifier's logits `[n, num_labels]` as the model returns them; a margin
    head's logits (`margin_scale * cos`) get the target margin first ([`margin_logits`])."""
    logits = logits.float()
    if config.head != "softmax":
        logits = margin_logits(
            logits / config.margin_scale, labels, config.head, config.margin_scale, config.margin,
            config.arcface_easy_margin,
        )
    return F.cross_entropy(logits, labels)


@torch.no_grad()
def update_centers(centers: torch.Tensor, embeddings: torch.Tensor, labels: torch.Tensor, momentum: float) -> None:
    """Momentum update of class centers, in place, averaged across processes.

    `c_j <- c_j + momentum / n_j * sum_{i: y_i = j} (e_i - c_j)` for every class `j` present in
    the batch (`n_j` = its number of embeddings), then, when `torch.distributed` is initialized,
    the centers are averaged over processes so every rank keeps identical centers.

    Args:
        centers: `[num_labels, size]` buffer, updated in place.
        embeddings: `[n, size]` (detached here; the update carries no gradient).
        labels: `[n]` int64.
    """
    embeddings = embeddings.detach().to(centers.dtype)
    # Counts by index_add_ rather than bincount, whose output size depends on the labels' values
    # (a graph break under torch.compile); whole numbers, so the same floats.
    counts = centers.new_zeros(centers.shape[0]).index_add_(0, labels, embeddings.new_ones(labels.shape[0]))
    sums = torch.zeros_like(centers).index_add_(0, labels, embeddings)
    step = (sums - counts[:, None] * centers) / counts.clamp(min=1)[:, None]
    centers.add_(momentum * step)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        world_size = torch.distributed.get_world_size()
        if world_size > 1:
            torch.distributed.all_reduce(centers, op=torch.distributed.ReduceOp.SUM)
            centers.div_(world_size)


def center_loss(embeddings: torch.Tensor, centers: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean squared error (over all elements) between embeddings `[n, size]` and their class
    centers; the centers are constants here (they move by `update_centers`, not by gradient)."""
    return F.mse_loss(embeddings.float(), centers[labels].detach())


def coupling_loss(branch_embeddings: torch.Tensor) -> torch.Tensor:
    """DCR's coupling term: sum over LR branches r >= 1 of MSE(HR branch embedding, branch r).

    Args:
        branch_embeddings: `[resolutions, batch, size]`, index 0 = HR.
    """
    high = branch_embeddings[:1].float()
    low = branch_embeddings[1:].float()
    # mean over batch and features, sum over resolutions
    return (low - high).pow(2).mean(dim=(1, 2)).sum()


def mined_center_difference(
    anchors: torch.Tensor, references: torch.Tensor, triplets: tuple[torch.Tensor, ...]
) -> torch.Tensor:
    """The branch stage's mined center term: MSE(anchors, hardest positives) - MSE(anchors, hardest
    negatives), means over all elements; 0 when the miner found no triplet.

    Args:
        anchors: `[n, size]`; references: `[m, size]`; triplets: `(anchor, positive, negative)`
            index tensors from a [`Miner`].
    """
    anchor, positive, negative = triplets
    if anchor.numel() == 0:
        return anchors.float().sum() * 0.0
    mined = anchors[anchor].float()
    return F.mse_loss(mined, references[positive].float()) - F.mse_loss(mined, references[negative].float())


def mined_margin_loss(
    anchors: torch.Tensor, references: torch.Tensor, triplets: tuple[torch.Tensor, ...], margin: float
) -> torch.Tensor:
    """The trunk stage's mined center term: with the elementwise squared differences
    `d_pos = (a - p)^2` and `d_neg = (a - n)^2`, `mean(relu(d_pos - d_neg + margin))` over all
    elements; 0 when the miner found no triplet. Shapes as [`mined_center_difference`]."""
    anchor, positive, negative = triplets
    if anchor.numel() == 0:
        return anchors.float().sum() * 0.0
    mined = anchors[anchor].float()
    d_positive = (mined - references[positive].float()).pow(2)
    d_negative = (mined - references[negative].float()).pow(2)
    return F.relu(d_positive - d_negative + margin).mean()


def mine_batch_hard(
    miner: Miner | None, name: str, anchors: torch.Tensor, labels: torch.Tensor, references: torch.Tensor | None = None
) -> tuple[torch.Tensor, ...]:
    """Triplets of `anchors` `[n, size]` against `references` `[n, size]` (one per anchor: its class
    center) or, when `references` is `None`, against the anchors themselves (an anchor is not its
    own positive). `name` is the config field that asked for mining, for the error without a miner."""
    if miner is None:
        raise DCRInputError(
            f"config.{name}='batch_hard' needs a miner: pass `miner=` to the forward pass "
            "(`dcr_hf.training.build_miner(config)` wraps pytorch-metric-learning's BatchHardMiner)."
        )
    anchors = anchors.detach().float()
    if references is None:
        return miner(anchors, labels, anchors, labels)
    # pytorch-metric-learning drops the diagonal (a sample as its own positive) only when the two label
    # tensors are the same object: with centers as references, an anchor's own class center counts.
    return miner(anchors, labels, references.detach().float(), labels.clone())


def trunk_stage_loss(
    config: DCRConfig, centers: torch.Tensor, embeddings: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor,
    miner: Miner | None = None, move_centers: bool = True,
) -> dict[str, torch.Tensor]:
    """The trunk stage's weighted terms: softmax (or margin) cross-entropy and the center term over
    every resolution copy, all copies of a sample sharing its label.

    `embeddings` `[batch, resolutions, size]`, `logits` `[batch, resolutions, num_labels]`, `labels`
    `[batch]`, `centers` `[num_labels, size]` (moved first, in place, with `move_centers`: training
    only, as in the original). The center term is the center loss, or with `config.trunk_miner` the
    mined margin term (none with `trunk_mining_reference="none"`).
    """
    resolutions = embeddings.shape[1]
    # Resolution-major, as the original concatenated the copies along the batch axis.
    flat_embeddings = embeddings.transpose(0, 1).reshape(-1, embeddings.shape[-1])
    flat_logits = logits.transpose(0, 1).reshape(-1, logits.shape[-1])
    flat_labels = labels.repeat(resolutions)
    if move_centers:
        update_centers(centers, flat_embeddings, flat_labels, config.center_momentum)
    terms = {"cross_entropy_loss": classification_loss(flat_logits, flat_labels, config)}
    reference = config.trunk_mining_reference
    if config.trunk_miner is None:
        center_term = center_loss(flat_embeddings, centers, flat_labels)
    elif reference == "none":
        return terms
    elif reference == "center":
        references = centers[flat_labels].detach()
        triplets = mine_batch_hard(miner, "trunk_miner", flat_embeddings, flat_labels, references)
        center_term = mined_margin_loss(flat_embeddings, references, triplets, config.trunk_mining_margin)
    else:
        triplets = mine_batch_hard(miner, "trunk_miner", flat_embeddings, flat_labels)
        center_term = mined_margin_loss(flat_embeddings, flat_embeddings, triplets, config.trunk_mining_margin)
    terms["center_loss"] = config.center_loss_weight * center_term
    return terms


def branch_stage_loss(
    config: DCRConfig, branch_centers: torch.Tensor, embeddings: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor,
    miner: Miner | None = None, move_centers: bool = True,
) -> dict[str, torch.Tensor]:
    """DCR's coupled mapping loss, as weighted terms: per branch cross-entropy and center term
    (means over the branches) + `coupling_loss_weight` x sum over LR branches of MSE(HR branch, LR branch).

    `embeddings` `[batch, resolutions, size]` (copy r from branch r), `logits` likewise with
    `num_labels`, `branch_centers` `[resolutions, num_labels, size]` (moved first, in place, with
    `move_centers`). The center term is the center loss, or with `config.branch_miner` the mined
    center difference.
    """
    per_branch = embeddings.transpose(0, 1)
    if move_centers:
        for centers, branch_embeddings in zip(branch_centers, per_branch):
            update_centers(centers, branch_embeddings, labels, config.center_momentum)
    cross_entropy = torch.stack([classification_loss(lg, labels, config) for lg in logits.transpose(0, 1)]).mean()
    center_terms = []
    for branch_embeddings, centers in zip(per_branch, branch_centers):
        if config.branch_miner is None:
            center_terms.append(center_loss(branch_embeddings, centers, labels))
            continue
        references = centers[labels].detach()
        triplets = mine_batch_hard(miner, "branch_miner", branch_embeddings, labels, references)
        center_terms.append(mined_center_difference(branch_embeddings, references, triplets))
    return {
        "cross_entropy_loss": cross_entropy,
        "center_loss": config.center_loss_weight * torch.stack(center_terms).mean(),
        "coupling_loss": config.coupling_loss_weight * coupling_loss(per_branch),
    }


__all__ = [
    "Miner",
    "branch_stage_loss",
    "center_loss",
    "classification_loss",
    "coupling_loss",
    "margin_logits",
    "mine_batch_hard",
    "mined_center_difference",
    "mined_margin_loss",
    "trunk_stage_loss",
    "update_centers",
]
