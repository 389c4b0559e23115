"""The AdaFace head (`DCRConfig.head="adaface"`, Kim, Jain & Liu, CVPR 2022): the margin against the
paper's formulas on a hand-computed case, the feature norms the model hands it, the running norm
statistics (buffers: saved, loaded, an exact resume), the config rules and a short training run."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from tests.models import tiny_config

from dcr_hf import DCRConfig, DCRForImageClassification, DCRModel, branch_model_from_trunk
from dcr_hf.losses_dcr import adaface_scaler, margin_logits, trunk_stage_loss
from dcr_hf.training.arguments import head_settings
from dcr_hf.training.command import parse_arguments
from dcr_hf.training.command import train as train_command

# --------------------------------------------------------------------------------------------
# The hand-computed case
# --------------------------------------------------------------------------------------------
#
# m = 0.4, h = 0.333, s = 64, t_alpha = 0.5; running (mu, sigma) = (15, 5) before the step.
# Two samples with feature norms 12 and 22: batch mean 17, unbiased std sqrt((5^2 + 5^2) / 1) =
# sqrt(50) = 7.0710678. Moved statistics: mu = 0.5 * 17 + 0.5 * 15 = 16,
# sigma = 0.5 * 7.0710678 + 0.5 * 5 = 6.0355339.
# Sample 1 (norm 12, label 0, cos 0.6):  z = 0.333 * (12 - 16) / (6.0355339 + 0.001) = -0.2206564
#   g_angle = -m z = 0.0882626, g_add = m + m z = 0.3117374
#   target = cos(acos(0.6) + 0.0882626) - 0.3117374 = cos(1.0155578) - 0.3117374 = 0.2154086
# Sample 2 (norm 22, label 2, cos -0.2): z = 0.333 * (22 - 16) / 6.0365339 = 0.3309846
#   g_angle = -0.1323939, g_add = 0.5323939
#   target = cos(acos(-0.2) - 0.1323939) - 0.5323939 = cos(1.6397604) - 0.5323939 = -0.6013033
COSINES = [[0.6, 0.1, -0.3], [0.5, 0.0, -0.2]]
LABELS = [0, 2]
NORMS = [12.0, 22.0]
MOVED_STATISTICS = [16.0, 6.0355339]
EXPECTED_Z = [-0.2206564, 0.3309846]
# Non-target cosines are unchanged; each target becomes the hand value above (all times s = 64).
EXPECTED_LOGITS = [[64 * 0.2154086, 64 * 0.1, 64 * -0.3], [64 * 0.5, 64 * 0.0, 64 * -0.6013033]]


def _hand_config(**overrides) -> DCRConfig:
    return tiny_config(head="adaface", num_labels=3, adaface_t_alpha=0.5, center_loss_weight=0.0, **overrides)


def test_adaface_margin_matches_the_hand_computed_case():
    config = _hand_config()
    assert (config.margin, config.adaface_h, config.margin_scale) == (0.4, 0.333, 64.0)
    statistics = torch.tensor([15.0, 5.0])
    z = adaface_scaler(config, torch.tensor(NORMS), statistics, move=True)
    np.testing.assert_allclose(statistics.numpy(), MOVED_STATISTICS, atol=1e-6)
    np.testing.assert_allclose(z.numpy(), EXPECTED_Z, atol=1e-6)
    logits = margin_logits(torch.tensor(COSINES), torch.tensor(LABELS), "adaface", 64.0, 0.4, margin_scaler=z)
    np.testing.assert_allclose(logits.numpy(), EXPECTED_LOGITS, atol=64 * 1e-6)


def test_adaface_trunk_loss_is_the_cross_entropy_of_the_hand_logits():
    config = _hand_config()
    statistics = torch.tensor([15.0, 5.0])
    logits = 64.0 * torch.tensor(COSINES)[:, None]  # [batch, resolutions=1, num_labels], as the model returns them
    embeddings = torch.zeros(2, 1, config.embedding_size)
    terms = trunk_stage_loss(
        config, torch.zeros(3, config.embedding_size), embeddings, logits, torch.tensor(LABELS),
        norms=torch.tensor(NORMS)[:, None], norm_statistics=statistics,
    )
    expected = np.asarray(EXPECTED_LOGITS, dtype=np.float64)
    log_softmax = expected - np.log(np.exp(expected - expected.max(1, keepdims=True)).sum(1, keepdims=True)) - expected.max(1, keepdims=True)
    hand_loss = -np.mean([log_softmax[0, 0], log_softmax[1, 2]])
    assert terms["cross_entropy_loss"].item() == pytest.approx(hand_loss, rel=1e-5)
    np.testing.assert_allclose(statistics.numpy(), MOVED_STATISTICS, atol=1e-6)


def test_scaler_is_clipped_and_a_single_norm_keeps_the_std():
    config = _hand_config(adaface_h=10.0)
    statistics = torch.tensor([15.0, 5.0])
    # One norm: mean moves to 0.5 * 40 + 0.5 * 15 = 27.5; the std of one value is undefined, sigma stays 5.
    z = adaface_scaler(config, torch.tensor([40.0]), statistics, move=True)
    assert statistics.tolist() == [27.5, 5.0]
    assert z.tolist() == [1.0]  # 10 * 12.5 / 5.001 clipped to 1
    with pytest.raises(ValueError, match="head='adaface' needs the margin_scaler"):
        margin_logits(torch.tensor(COSINES), torch.tensor(LABELS), "adaface", 64.0, 0.4)


# --------------------------------------------------------------------------------------------
# The model: feature norms, buffers, exact resume
# --------------------------------------------------------------------------------------------


def test_model_hands_the_unnormalized_norms_to_the_margin():
    torch.manual_seed(0)
    model = DCRForImageClassification(tiny_config(head="adaface")).train()
    pixels, labels = torch.randn(4, 3, 3, 32, 32), torch.tensor([0, 1, 2, 4])
    with torch.no_grad():
        # The norms of the trunk's projection before normalization, every copy, resolution-major.
        flat = pixels.transpose(0, 1).reshape(-1, 3, 32, 32)
        raw = model.dcr.trunk(flat, normalize=False)[1]
        outputs = model.dcr(pixels)
    assert model.config.normalize_embeddings
    torch.testing.assert_close(outputs.embedding_norms.transpose(0, 1).reshape(-1), raw.norm(dim=-1))
    torch.testing.assert_close(outputs.pooler_output.norm(dim=-1), torch.ones(4, 3))
    assert not torch.allclose(raw.norm(dim=-1), torch.ones(12))
    before = model.norm_statistics.clone()
    out = model(pixels, labels=labels)
    norms = raw.norm(dim=-1).double().numpy()
    expected = 0.99 * before.double().numpy() + 0.01 * np.array([norms.mean(), norms.std(ddof=1)])
    np.testing.assert_allclose(model.norm_statistics.numpy(), expected, rtol=1e-6)
    assert math.isfinite(out.loss.item())
    model.eval()
    model(pixels, labels=labels)  # evaluation: the statistics stay
    np.testing.assert_allclose(model.norm_statistics.numpy(), expected, rtol=1e-6)


def _steps(model: DCRForImageClassification, optimizer: torch.optim.Optimizer, batches) -> list[float]:
    losses = []
    for pixels, labels in batches:
        optimizer.zero_grad()
        loss = model(pixels, labels=labels).loss
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("use_branches", [False, True], ids=["trunk", "branch"])
def test_resume_from_a_saved_folder_gives_identical_next_logits(tmp_path, use_branches):
    generator = torch.Generator().manual_seed(0)
    batches = [(torch.randn(4, 3, 3, 32, 32, generator=generator), torch.randint(0, 5, (4,), generator=generator))
               for _ in range(4)]
    torch.manual_seed(0)
    model = DCRForImageClassification(tiny_config(head="adaface", adaface_t_alpha=0.5)).train()
    if use_branches:
        model = branch_model_from_trunk(model).train()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    _steps(model, optimizer, batches[:3])
    model.save_pretrained(tmp_path)
    names = ("branch_norm_statistics",) if use_branches else ("norm_statistics",)
    saved = load_file(tmp_path / "model.safetensors")
    for name in names:
        torch.testing.assert_close(saved[name], getattr(model, name), rtol=0, atol=0)
    resumed = DCRForImageClassification.from_pretrained(tmp_path).train()
    fresh = DCRForImageClassification.from_pretrained(tmp_path).train()
    for name in names:  # the same weights without the statistics: the test can tell them apart
        getattr(fresh, name).copy_(torch.tensor([20.0, 100.0]))
    pixels, labels = batches[3]
    next_logits = margin_logits(
        *_cosines_and_labels(model, pixels, labels), "adaface", 64.0, 0.4,
        margin_scaler=_scaler(model, pixels),
    )
    resumed_logits = margin_logits(
        *_cosines_and_labels(resumed, pixels, labels), "adaface", 64.0, 0.4,
        margin_scaler=_scaler(resumed, pixels),
    )
    torch.testing.assert_close(resumed_logits, next_logits, rtol=0, atol=0)
    expected, after_resume, without = (m(pixels, labels=labels).loss.item() for m in (model, resumed, fresh))
    assert after_resume == expected
    assert without != pytest.approx(expected, rel=1e-4)


def _cosines_and_labels(model, pixels, labels):
    """The HR copy's trunk-or-HR-branch cosines `[batch, num_labels]` (no statistics moved)."""
    with torch.no_grad():
        out = model(pixels)
    return out.logits[:, 0] / 64.0, labels


def _scaler(model, pixels):
    """The HR copy's margin scaler against the model's statistics as they stand."""
    with torch.no_grad():
        norms = model.dcr(pixels).embedding_norms[:, 0]
    statistics = model.branch_norm_statistics[0] if model.config.use_branches else model.norm_statistics
    return adaface_scaler(model.config, norms, statistics.clone(), move=False)


def test_branch_stage_keeps_the_trunks_statistics_and_starts_its_own():
    trunk = DCRForImageClassification(tiny_config(head="adaface"))
    trunk.norm_statistics.copy_(torch.tensor([7.0, 3.0]))
    branch = branch_model_from_trunk(trunk)
    assert branch.norm_statistics.tolist() == [7.0, 3.0]
    assert branch.branch_norm_statistics.tolist() == [[20.0, 100.0]] * 3  # HR + two LR sizes


def test_embedder_loads_an_adaface_training_folder_without_the_statistics(tmp_path):
    DCRForImageClassification(tiny_config(head="adaface")).save_pretrained(tmp_path)
    model, info = DCRModel.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["unexpected_keys"] and not info["missing_keys"]
    assert not hasattr(model, "norm_statistics")


def test_other_heads_have_no_norm_statistics():
    model = DCRForImageClassification(tiny_config(head="arcface"))
    assert model.norm_statistics is None and "norm_statistics" not in model.state_dict()


# --------------------------------------------------------------------------------------------
# Config and command line
# --------------------------------------------------------------------------------------------


def test_adaface_defaults_are_saved(tmp_path):
    DCRConfig(head="adaface").save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert {k: saved[k] for k in ("head", "margin_scale", "margin", "adaface_h", "adaface_t_alpha")} == {
        "head": "adaface", "margin_scale": 64.0, "margin": 0.4, "adaface_h": 0.333, "adaface_t_alpha": 0.01}


@pytest.mark.parametrize(
    "fields, match",
    [
        (dict(head="adaface", margin=1.0), r"^margin=1.0 is outside \(0, 1\) for head='adaface'"),
        (dict(head="adaface", adaface_h=0.0), r"^adaface_h=0.0 is outside \(0, inf\)"),
        (dict(head="adaface", adaface_h="0.3"), r"^adaface_h must be a finite number, got '0.3'"),
        (dict(head="adaface", adaface_t_alpha=1.5), r"^adaface_t_alpha=1.5 is outside \(0, 1\]"),
        (dict(head="adaface", adaface_t_alpha=0), r"^adaface_t_alpha=0 is outside \(0, 1\]"),
        (dict(head="arcface", adaface_h=0.3), r"^adaface_h=0.3 is only used by head='adaface', not by head='arcface'"),
        (dict(adaface_t_alpha=0.1), r"^adaface_t_alpha=0.1 is only used by head='adaface'"),
    ],
)
def test_bad_adaface_settings_name_the_field(fields, match):
    with pytest.raises(ValueError, match=match):
        DCRConfig(**fields)


def test_adaface_flags_reach_the_config(tmp_path):
    model_args, _, _ = parse_arguments(["--output_dir", str(tmp_path), "--head", "adaface", "--adaface_h", "0.5",
                                        "--adaface_t_alpha", "0.1"])
    assert head_settings(model_args) == {"head": "adaface", "adaface_h": 0.5, "adaface_t_alpha": 0.1}


def test_train_hf_head_adaface_runs_end_to_end(tmp_path):
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train_command([
            "--output_dir", str(tmp_path), "--head", "adaface", "--use_cpu", "true",
            "--synthetic_num_identities", "6", "--synthetic_images_per_identity", "3", "--synthetic_num_pairs", "20",
            "--image_size", "48", "--low_resolution_sizes", "8", "--depths", "1", "1", "1", "1",
            "--hidden_sizes", "8", "8", "16", "16", "--embedding_size", "16", "--per_device_train_batch_size", "6",
            "--dataloader_num_workers", "0", "--disable_tqdm", "true", "--report_to", "none", "--max_steps", "3",
            "--eval_strategy", "no", "--save_strategy", "no", "--load_best_model_at_end", "false",
            "--evaluate_before_training", "false",
        ])
    finally:
        torch.set_num_threads(previous)
    assert json.loads((tmp_path / "trainer_state.json").read_text())["global_step"] == 3
    recipe = json.loads((tmp_path / "training_recipe.json").read_text())
    assert recipe["head"] == "adaface (s=64, m=0.4, h=0.333, t_alpha=0.01)"
    statistics = load_file(tmp_path / "model.safetensors")["norm_statistics"]
    assert statistics.tolist() != [20.0, 100.0] and torch.isfinite(statistics).all()
