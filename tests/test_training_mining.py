"""The batch-hard center terms (pytorch-metric-learning's `BatchHardMiner`, built by
`dcr_hf.training.build_miner`) against a brute-force search for each anchor's hardest positive and
hardest negative reference, in both stages."""

import pytest
import torch
from tests.models import tiny_config

from dcr_hf import DCRForImageClassification
from dcr_hf.training import build_miner

# Eight samples, four classes; class 3 has a single sample (its only positive center is its own).
LABELS = torch.tensor([0, 0, 1, 1, 1, 2, 2, 3])


def brute_force_triplets(anchors, labels, references, exclude_self):
    """For each anchor: (its row, the farthest same-class reference, the nearest other-class reference)
    by Euclidean distance, skipping anchors without either; loops, no library."""
    rows, positives, negatives = [], [], []
    for i in range(len(anchors)):
        distances = [float(torch.linalg.vector_norm(anchors[i] - r)) for r in references]
        same = [j for j in range(len(references)) if labels[j] == labels[i] and not (exclude_self and j == i)]
        other = [j for j in range(len(references)) if labels[j] != labels[i]]
        if same and other:
            rows.append(i)
            positives.append(max(same, key=lambda j: distances[j]))
            negatives.append(min(other, key=lambda j: distances[j]))
    return anchors[rows], references[positives], references[negatives]


def hand_margin_term(anchors, positives, negatives, margin=0.05):
    total, count = 0.0, 0
    for a, p, n in zip(anchors.tolist(), positives.tolist(), negatives.tolist()):
        for ai, pi, ni in zip(a, p, n):
            total += max(0.0, (ai - pi) ** 2 - (ai - ni) ** 2 + margin)
            count += 1
    return total / count


@pytest.mark.parametrize("reference", ["center", "embedding"])
def test_trunk_mined_center_term_equals_brute_force(reference):
    torch.manual_seed(0)
    config = tiny_config(num_labels=4, trunk_miner="batch_hard", trunk_mining_reference=reference)
    model = DCRForImageClassification(config).eval()  # eval: the centers stay as they are
    x = torch.randn(len(LABELS), 2, 3, 32, 32)  # HR + one LR copy per sample
    with torch.no_grad():
        out = model(x, labels=LABELS, miner=build_miner(config))
    flat = out.embeddings.transpose(0, 1).reshape(-1, config.embedding_size)  # copies concatenated
    flat_labels = LABELS.repeat(2)
    references = model.centers[flat_labels] if reference == "center" else flat
    a, p, n = brute_force_triplets(flat, flat_labels, references, exclude_self=reference == "embedding")
    assert len(a) == len(flat)  # every anchor has a positive (even class 3's: its copies / its center)
    expected = 0.008 * hand_margin_term(a, p, n)
    assert out.center_loss.item() == pytest.approx(expected, rel=1e-5)
    ce = torch.nn.functional.cross_entropy(out.logits.transpose(0, 1).reshape(-1, 4), flat_labels)
    torch.testing.assert_close(out.loss, ce + out.center_loss)


def test_trunk_mining_reference_none_drops_the_center_term():
    config = tiny_config(num_labels=4, trunk_miner="batch_hard", trunk_mining_reference="none")
    assert build_miner(config) is None
    model = DCRForImageClassification(config).eval()
    out = model(torch.randn(len(LABELS), 3, 32, 32), labels=LABELS)
    assert out.center_loss is None
    torch.testing.assert_close(out.loss, torch.nn.functional.cross_entropy(out.logits, LABELS))


def test_branch_mined_center_term_equals_brute_force():
    torch.manual_seed(1)
    config = tiny_config(num_labels=4, branch_miner="batch_hard")
    trunk = DCRForImageClassification(config)
    model = DCRForImageClassification.from_trunk(trunk, specialized_initialization=False).eval()
    with torch.no_grad():
        model.branch_centers.normal_()  # distinct centers per branch
        out = model(torch.randn(len(LABELS), 3, 3, 32, 32), labels=LABELS, miner=build_miner(model.config))
    per_branch = out.embeddings.transpose(0, 1)
    terms = []
    for embeddings, centers in zip(per_branch, model.branch_centers):
        a, p, n = brute_force_triplets(embeddings, LABELS, centers[LABELS], exclude_self=False)
        terms.append(((a - p) ** 2).mean() - ((a - n) ** 2).mean())
    assert out.center_loss.item() == pytest.approx(0.008 * torch.stack(terms).mean().item(), rel=1e-5)


def test_a_batch_of_one_class_mines_nothing_and_adds_zero():
    config = tiny_config(num_labels=4, trunk_miner="batch_hard")
    model = DCRForImageClassification(config).eval()
    out = model(torch.randn(3, 3, 32, 32), labels=torch.tensor([2, 2, 2]), miner=build_miner(config))
    assert out.center_loss.item() == 0.0


def test_the_miner_follows_the_stage():
    assert build_miner(tiny_config()) is None
    assert build_miner(tiny_config(trunk_miner="batch_hard")) is not None
    assert build_miner(tiny_config(trunk_miner="batch_hard", use_branches=True)) is None  # branch stage: branch_miner
    assert build_miner(tiny_config(branch_miner="batch_hard", use_branches=True)) is not None


def test_mining_without_a_miner_says_how_to_get_one():
    model = DCRForImageClassification(tiny_config(trunk_miner="batch_hard"))
    with pytest.raises(ValueError, match="trunk_miner='batch_hard' needs a miner.*build_miner"):
        model(torch.randn(2, 3, 32, 32), labels=torch.tensor([0, 1]))


def test_the_training_docs_map_the_original_mining_flags_to_arguments_that_parse():
    from pathlib import Path

    from transformers import HfArgumentParser

    from dcr_hf.training import DataArguments, DCRTrainingArguments, ModelArguments
    from dcr_hf.training.arguments import mining_settings

    readme = (Path(__file__).resolve().parent.parent / "docs" / "training.md").read_text()
    rows = {
        "`--trunkloss-miner BatchHardMiner`": "`--trunk_miner batch_hard`",
        "`--trunkloss-miningin center|embedding|none`": "`--trunk_mining_reference center|embedding|none`",
        "`--branchloss-miner BatchHardMiner`": "`--branch_miner batch_hard`",
    }
    for original, ours in rows.items():
        assert any(line.startswith(f"| {original} | {ours}") for line in readme.splitlines()), original
    parser = HfArgumentParser((ModelArguments, DataArguments, DCRTrainingArguments))
    for reference in ("center", "embedding", "none"):
        model_args, _, _ = parser.parse_args_into_dataclasses(
            ["--trunk_miner", "batch_hard", "--trunk_mining_reference", reference, "--branch_miner", "batch_hard"]
        )
        assert mining_settings(model_args) == {
            "trunk_miner": "batch_hard", "branch_miner": "batch_hard", "trunk_mining_reference": reference
        }
