"""The sharded classifier of the trunk stage (Partial FC): the softmax / margin classifier and the
center-loss centers split by identity across the training processes.

Each process holds the rows of its identities only ([`shard_rows`]: `num_classes / world_size`, the
remainder one row each to the first processes). A step gathers the features and labels of every
process, computes the logits of the whole global batch against the local rows, and normalizes the
softmax across the shards (an all-reduce of the row maxima and of the sums of exponentials), so the
loss is the one a single process would compute on the global batch. The centers of the local rows
move by every gathered feature of their identities. With a sampling rate below 1 each shard keeps,
per step, the identities of the batch and a random draw of the others (insightface's Partial FC).

Hand-written after insightface's `partial_fc_v2.py` (arcface_torch): no library shards a
classifier by rows with a cross-shard softmax. Training-only: this module is not part of the
released model, which is the trunk alone (`DCRModel`).
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from ..configuration_dcr import DCRConfig
from ..losses_dcr import margin_logits

#: Rows drawn at a time when a shard's initial weights and centers are made: the draw is the one of
#: the whole matrix (equal to an unsharded model's), without holding the whole matrix.
_INIT_CHUNK_ROWS = 65536


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def process_layout() -> tuple[int, int]:
    """`(rank, world_size)` of this process; `(0, 1)` outside `torch.distributed`."""
    if _distributed():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def shard_rows(num_classes: int, world_size: int, rank: int) -> tuple[int, int]:
    """`(first class, number of classes)` of process `rank`'s shard: `num_classes // world_size`
    rows each, the remainder one more row each to the first processes."""
    base, remainder = divmod(num_classes, world_size)
    count = base + (1 if rank < remainder else 0)
    return rank * base + min(rank, remainder), count


def _all_gather_rows(local: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    """Every process's rows `[sum of sizes, ...]`, each process's padded to the largest for the collective."""
    padded = local.new_zeros(max(sizes), *local.shape[1:])
    padded[: local.shape[0]] = local
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded)
    return torch.cat([part[:size] for part, size in zip(parts, sizes)])


class _GatherRows(torch.autograd.Function):
    """`_all_gather_rows` with a backward: the gradients of every process summed (each process's
    loss reaches the gathered rows through its own shard only), the local rows' part times `grad_scale`."""

    @staticmethod
    def forward(ctx, local: torch.Tensor, sizes: list[int], rank: int, grad_scale: float) -> torch.Tensor:
        ctx.sizes, ctx.rank, ctx.grad_scale = sizes, rank, grad_scale
        return _all_gather_rows(local, sizes)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad = grad.contiguous().clone()
        # gloo has no reduce-scatter; an all-reduce of the gathered gradient gives every process its rows.
        dist.all_reduce(grad)
        start = sum(ctx.sizes[: ctx.rank])
        return grad[start : start + ctx.sizes[ctx.rank]] * ctx.grad_scale, None, None, None


def gather_rows(local: torch.Tensor, grad_scale: float = 1.0) -> torch.Tensor:
    """Every process's `local` rows `[n_rank, ...]` concatenated in rank order `[sum n_rank, ...]`
    (the processes may hold different numbers of rows), with the gradient back to the local rows
    (times `grad_scale`) when `local` requires it; `local` itself outside `torch.distributed`."""
    if not _distributed():
        return local
    size = torch.tensor([local.shape[0]], device=local.device)
    sizes = [torch.empty_like(size) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, size)
    sizes = [int(s) for s in sizes]
    if local.requires_grad:
        return _GatherRows.apply(local, sizes, dist.get_rank(), grad_scale)
    return _all_gather_rows(local, sizes)


@torch.no_grad()
def move_present_centers(centers: torch.Tensor, embeddings: torch.Tensor, labels: torch.Tensor, momentum: float) -> None:
    """`losses_dcr.update_centers`'s momentum update, in place, of the rows of the classes in
    `labels` only (`c_j <- c_j + momentum / n_j * sum_{i: y_i = j} (e_i - c_j)`), and not averaged
    across processes: a shard's rows are its own. Hand-written because the update of the whole
    matrix costs several matrix-sized temporaries per step, which at millions of rows dominate the step.

    Args:
        centers: `[rows, size]`; embeddings: `[n, size]`; labels: `[n]` int64, row indices.
    """
    present, slot = torch.unique(labels, return_inverse=True)
    embeddings = embeddings.detach().to(centers.dtype)
    counts = centers.new_zeros(present.shape[0]).index_add_(0, slot, embeddings.new_ones(slot.shape[0]))
    sums = centers.new_zeros(present.shape[0], centers.shape[1]).index_add_(0, slot, embeddings)
    rows = centers[present]
    centers[present] = rows + momentum * ((sums - counts[:, None] * rows) / counts[:, None])


def summed_over_shards(local: torch.Tensor) -> torch.Tensor:
    """The sum over processes of `local`, whose gradient reaches `local` alone: each process's
    share of a cross-shard sum depends on its own rows, the others' are constants here."""
    if not _distributed():
        return local
    total = local.detach().clone()
    dist.all_reduce(total)
    return local + (total - local.detach())


def sharded_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of the global batch from each process's logits `[n, shard classes]`
    (float32) and targets `[n]`: the target's column in this shard, `-1` where the target lives in
    another shard. Equals `F.cross_entropy` of the whole logit matrix; every process gets the same value."""
    row_max = logits.detach().max(dim=1).values if logits.shape[1] else logits.new_full((logits.shape[0],), -math.inf)
    if _distributed():
        dist.all_reduce(row_max, op=dist.ReduceOp.MAX)
    shifted = logits - row_max[:, None]
    log_sum_exp = summed_over_shards(shifted.exp().sum(dim=1)).log()
    here = targets >= 0
    target_logit = torch.where(here, shifted.gather(1, targets.clamp(min=0)[:, None])[:, 0], shifted.new_zeros(()))
    return (log_sum_exp - summed_over_shards(target_logit)).mean()


class ShardedClassifier(nn.Module):
    """This process's rows of the trunk stage's classifier and centers, and the stage's loss terms.

    `weight` `[shard classes, in_features]` (the `"softmax"` head's linear layer also has `bias`,
    the margin heads are cosine classifiers), buffer `centers` `[shard classes, in_features]`;
    rows `class_start .. class_start + num_local - 1` of the whole classifier.

    Args:
        config: the model's config (`num_labels`, `head` and its margin, center-loss weight and momentum).
        in_features: the embedding size.
        sample_rate: the fraction of each shard's classes a step uses (1.0: all); the batch's own
            classes are always among them.
        rank, world_size: this process's place (default: `torch.distributed`'s, `(0, 1)` outside it).
        seed: the seed of the initial class weights; the draw is that of the whole matrix, so every
            world size (1 included) starts from the same classifier.
    """

    def __init__(self, config: DCRConfig, in_features: int, sample_rate: float = 1.0, rank: int | None = None,
                 world_size: int | None = None, seed: int = 0):
        super().__init__()
        if rank is None or world_size is None:
            rank, world_size = process_layout()
        self.config, self.sample_rate, self.rank, self.world_size = config, float(sample_rate), rank, world_size
        self.class_start, self.num_local = shard_rows(config.num_labels, world_size, rank)
        self.weight = nn.Parameter(self._initial_rows(in_features, seed))
        self.bias = None
        if config.head == "softmax":
            bound = 1 / math.sqrt(in_features)  # nn.Linear's own bias initialization
            generator = torch.Generator().manual_seed(seed + 1)
            self.bias = nn.Parameter((torch.rand(config.num_labels, generator=generator) * 2 - 1)[self._rows] * bound)
        self.register_buffer("centers", self._initial_centers(in_features))

    @property
    def _rows(self) -> slice:
        return slice(self.class_start, self.class_start + self.num_local)

    def _draw_rows(self, draw, in_features: int) -> torch.Tensor:
        """The local rows of a `[num_labels, in_features]` matrix drawn chunk by chunk by `draw(rows)`."""
        out, done = [], 0
        end = self.class_start + self.num_local
        while done < end:
            rows = min(_INIT_CHUNK_ROWS, self.config.num_labels - done)
            chunk = draw(rows)
            low, high = max(self.class_start - done, 0), min(end - done, rows)
            if low < high:
                out.append(chunk[low:high])
            done += rows
        return torch.cat(out) if out else torch.empty(0, in_features)

    def _initial_rows(self, in_features: int, seed: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(seed)
        if self.config.head == "softmax":
            # nn.Linear's kaiming_uniform(a=sqrt(5)): uniform in +-1/sqrt(fan_in).
            bound = 1 / math.sqrt(in_features)
            return self._draw_rows(lambda rows: (torch.rand(rows, in_features, generator=generator) * 2 - 1) * bound,
                                   in_features)
        # As DCRCosineClassifier: only the directions matter, N(0, 0.01) as insightface.
        return self._draw_rows(lambda rows: torch.randn(rows, in_features, generator=generator) * 0.01, in_features)

    def _initial_centers(self, in_features: int) -> torch.Tensor:
        # `initial_centers`'s draw (seed 0, N(0, sqrt(2 / num_labels))), made chunk by chunk.
        generator = torch.Generator().manual_seed(0)
        scale = math.sqrt(2.0 / self.config.num_labels)
        return self._draw_rows(lambda rows: torch.randn(rows, in_features, generator=generator) * scale, in_features)

    @torch.no_grad()
    def load_full(self, weight: torch.Tensor, centers: torch.Tensor, bias: torch.Tensor | None = None) -> None:
        """Copy this shard's rows of a whole classifier `weight` `[num_labels, in_features]`, its
        `bias` and `centers` (e.g. an unsharded model's, to compare the two)."""
        self.weight.copy_(weight[self._rows])
        self.centers.copy_(centers[self._rows])
        if self.bias is not None and bias is not None:
            self.bias.copy_(bias[self._rows])

    def sample_classes(self, labels: torch.Tensor) -> torch.Tensor:
        """The shard rows `[sampled]` (sorted, local indices) a step with gathered `labels` uses:
        every row with `sample_rate` 1; otherwise the rows of the labels' identities and, up to
        `int(sample_rate * num_local)` rows, a uniform draw of the others."""
        if self.sample_rate >= 1.0:
            return torch.arange(self.num_local, device=self.weight.device)
        local = labels - self.class_start
        positives = torch.unique(local[(local >= 0) & (local < self.num_local)])
        wanted = max(int(self.sample_rate * self.num_local), 1)
        if positives.numel() >= wanted:
            return positives
        score = torch.rand(self.num_local, device=self.weight.device)
        score[positives] = 2.0  # above every draw: the positives are always kept
        return torch.topk(score, wanted).indices.sort().values

    def logits(self, features: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """Float32 logits `[n, len(rows)]` of features `[n, in_features]` against the shard `rows`:
        the linear layer's, or the cosine classifier's `cos(theta)` (in the weight's dtype, not
        under autocast, as `DCRCosineClassifier`); the margin heads' scale is applied by the loss."""
        weight = self.weight if rows.numel() == self.num_local else self.weight[rows]
        if self.bias is not None:
            bias = self.bias if rows.numel() == self.num_local else self.bias[rows]
            return F.linear(features, weight.to(features.dtype), bias.to(features.dtype)).float()
        device_type = features.device.type
        full_precision = (torch.autocast(device_type, enabled=False) if torch.amp.is_autocast_available(device_type)
                          else contextlib.nullcontext())
        with full_precision:
            # cos = (x / |x|) . w / |w|: the weight's norms divide the logits rather than a normalized
            # copy of the weight being made (and kept for the backward), one weight-sized tensor less.
            norms = torch.linalg.vector_norm(weight, dim=-1).clamp_min(1e-12)
            return (F.linear(F.normalize(features.to(weight.dtype), dim=-1), weight) / norms).float()

    def loss_terms(self, embeddings: torch.Tensor, labels: torch.Tensor, move_centers: bool = True) -> dict[str, torch.Tensor]:
        """The trunk stage's weighted loss terms over the global batch (as `losses_dcr.trunk_stage_loss`
        with the center loss): `cross_entropy_loss` and `center_loss`, the same values on every process.

        `embeddings` `[batch, resolutions, size]` and `labels` `[batch]` of this process; the centers
        of the local rows move first (training) by the gathered embeddings of their identities. The
        gradient reaching this process's embeddings is the whole loss's, times `world_size`: the
        data-parallel wrapper averages the trunk's gradients over the processes, whose every loss
        already is the global batch's.
        """
        resolutions = embeddings.shape[1]
        flat = embeddings.transpose(0, 1).reshape(-1, embeddings.shape[-1])  # resolution-major, as the original
        features = gather_rows(flat, grad_scale=float(self.world_size))
        labels = gather_rows(labels.long().repeat(resolutions))
        if features.shape[0] == 0:  # no process had a sample (every batch undecodable): nothing to learn
            zero = features.sum() * 0.0
            return {"cross_entropy_loss": zero, "center_loss": zero}
        local = labels - self.class_start
        here = (local >= 0) & (local < self.num_local)
        if move_centers:
            move_present_centers(self.centers, features[here], local[here], self.config.center_momentum)
        rows = self.sample_classes(labels)
        # A label's column among the sampled rows; -1 where its identity lives in another shard.
        targets = torch.where(here, torch.searchsorted(rows, local.clamp(0, max(self.num_local - 1, 0))), -1)
        logits = self.logits(features, rows)
        if self.config.head != "softmax":
            # The same margin function as the unsharded loss, on the rows whose target is in this shard.
            cosine, scale, mine = logits, self.config.margin_scale, here.nonzero(as_tuple=True)[0]
            logits = (scale * cosine).index_put((mine,), margin_logits(
                cosine[mine], targets[mine], self.config.head, scale, self.config.margin,
                self.config.arcface_easy_margin,
            ))
        squared = (features[here].float() - self.centers[local[here]].detach().float()).pow(2).sum()
        center_term = summed_over_shards(squared) / features.numel()
        return {
            "cross_entropy_loss": sharded_cross_entropy(logits, targets),
            "center_loss": self.config.center_loss_weight * center_term,
        }


__all__ = ["ShardedClassifier", "gather_rows", "move_present_centers", "process_layout", "shard_rows", "sharded_cross_entropy",
           "summed_over_shards"]
