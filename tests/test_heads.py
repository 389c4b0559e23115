"""The classifier heads (`DCRConfig.head`): softmax, CosFace and ArcFace in both stages.

Hand computations of the logits on small cases, the loss of the model against an independent
numpy computation, the config rules, the specialized branch initialization with a margin head,
older folders (no `head` field), the command line's errors and short training runs.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from tests.models import tiny_config
from tests.test_hub_loading import _run_without_dcr_hf

from dcr_hf import DCRConfig, DCRForImageClassification, DCRImageProcessor, branch_model_from_trunk
from dcr_hf.losses_dcr import margin_logits
from dcr_hf.modeling_dcr import DCRCosineClassifier
from dcr_hf.training.arguments import head_settings
from dcr_hf.training.command import main as train_main
from dcr_hf.training.command import parse_arguments
from dcr_hf.training.command import train as train_command

HEAD_FIELDS = ("head", "margin_scale", "margin", "arcface_easy_margin")


# --------------------------------------------------------------------------------------------
# Logits by hand
# --------------------------------------------------------------------------------------------


def test_cosine_classifier_gives_scaled_cosines_by_hand():
    classifier = DCRCosineClassifier(DCRConfig(head="cosface", margin_scale=10.0, num_labels=3), 2)
    with torch.no_grad():
        classifier.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 2.0], [-1.0, 1.0]]))
    # |(3, 4)| = 5: cosines 3/5, 8/(5 * 2), (-3 + 4)/(5 * sqrt 2); (0, -2) against the same weights: 0, -1, -1/sqrt 2.
    expected = 10.0 * torch.tensor([[0.6, 0.8, 1 / (5 * math.sqrt(2))], [0.0, -1.0, -1 / math.sqrt(2)]])
    logits = classifier(torch.tensor([[3.0, 4.0], [0.0, -2.0]]))
    torch.testing.assert_close(logits, expected, rtol=0, atol=1e-5)


def _arcface_by_angle(cosine: float, margin: float) -> float:
    """cos(theta + m) through the angle itself (the implementation uses the product formula)."""
    return math.cos(math.acos(cosine) + margin)


# (head, margin, easy margin, target cosine, expected target cosine after the margin)
MARGIN_CASES = [
    ("cosface", 0.35, False, 0.6, 0.25),
    ("cosface", 0.35, False, -0.9, -1.25),
    ("arcface", 0.5, False, 0.6, _arcface_by_angle(0.6, 0.5)),  # = 0.6 cos .5 - 0.8 sin .5 = 0.14300
    # theta = acos(-0.8) = 2.498 < pi - 0.5 = 2.642: still cos(theta + m)
    ("arcface", 0.5, False, -0.8, _arcface_by_angle(-0.8, 0.5)),
    # theta = acos(-0.95) = 2.824 > pi - 0.5: the threshold branch, cos(theta) - m sin(m)
    ("arcface", 0.5, False, -0.95, -0.95 - 0.5 * math.sin(0.5)),
    ("arcface", 0.5, True, 0.6, _arcface_by_angle(0.6, 0.5)),  # easy margin, cos > 0: the margin
    ("arcface", 0.5, True, -0.3, -0.3),  # easy margin, cos <= 0: the plain cosine
    ("arcface", 0.5, True, -0.95, -0.95),
    ("arcface", 0.2, False, 0.0, -math.sin(0.2)),  # theta = pi/2: cos(pi/2 + m) = -sin(m)
]


@pytest.mark.parametrize("head, margin, easy, target, expected", MARGIN_CASES)
def test_margin_logits_by_hand(head, margin, easy, target, expected):
    scale = 64.0
    cosine = torch.tensor([[target, 0.3, -0.2], [0.1, 0.5, target]])
    labels = torch.tensor([0, 2])
    logits = margin_logits(cosine, labels, head, scale, margin, easy)
    hand = scale * torch.tensor([[expected, 0.3, -0.2], [0.1, 0.5, expected]])
    torch.testing.assert_close(logits, hand, rtol=0, atol=1e-4)


def _hand_margin_cross_entropy(cosine: np.ndarray, labels: np.ndarray, config: DCRConfig) -> float:
    """Mean cross-entropy of the margin logits, in float64 numpy, from the heads' definitions."""
    s, m = config.margin_scale, config.margin
    logits = s * cosine.astype(np.float64)
    for row, label in enumerate(labels):
        c = cosine[row, label]
        if config.head == "cosface":
            target = c - m
        elif config.arcface_easy_margin:
            target = _arcface_by_angle(c, m) if c > 0 else c
        else:
            target = _arcface_by_angle(c, m) if math.acos(c) + m < math.pi else c - m * math.sin(m)
        logits[row, label] = s * target
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_softmax = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return float(-log_softmax[np.arange(len(labels)), labels].mean())


def _cosines(embeddings: torch.Tensor, weight: torch.Tensor) -> np.ndarray:
    e, w = embeddings.detach().double().numpy(), weight.detach().double().numpy()
    return (e / np.linalg.norm(e, axis=1, keepdims=True)) @ (w / np.linalg.norm(w, axis=1, keepdims=True)).T


HEADS = [dict(head="cosface"), dict(head="arcface"), dict(head="arcface", arcface_easy_margin=True),
         dict(head="cosface", margin_scale=30.0, margin=0.2), dict(head="arcface", margin=1.2)]


@pytest.mark.parametrize("head", HEADS, ids=lambda h: "-".join(map(str, h.values())))
def test_trunk_loss_is_cross_entropy_of_the_hand_margin_logits(head):
    torch.manual_seed(0)
    model = DCRForImageClassification(tiny_config(center_loss_weight=0.0, **head)).eval()
    pixels, labels = torch.randn(4, 3, 3, 32, 32), torch.tensor([0, 1, 4, 1])
    out = model(pixels, labels=labels)
    # All resolution copies share the sample's label.
    embeddings = out.embeddings.reshape(-1, out.embeddings.shape[-1])
    cosine = _cosines(embeddings, model.classifier.weight)
    flat_labels = labels.repeat_interleave(3).numpy()
    assert out.loss.item() == pytest.approx(_hand_margin_cross_entropy(cosine, flat_labels, model.config), rel=1e-5)
    # The returned logits are the scaled cosines, without the margin.
    np.testing.assert_allclose(out.logits.reshape(-1, 5).detach().numpy(), model.config.margin_scale * cosine, atol=1e-4)


@pytest.mark.parametrize("head", ["cosface", "arcface"])
def test_branch_loss_is_the_mean_of_each_branchs_hand_margin_cross_entropy(head):
    torch.manual_seed(0)
    config = tiny_config(head=head, use_branches=True, center_loss_weight=0.0, coupling_loss_weight=0.0)
    model = DCRForImageClassification(config).eval()
    pixels, labels = torch.randn(3, 3, 3, 32, 32), torch.tensor([2, 0, 2])
    out = model(pixels, labels=labels)
    per_branch = [
        _hand_margin_cross_entropy(_cosines(out.embeddings[:, r], head_module.classifier.weight), labels.numpy(), config)
        for r, head_module in enumerate(model.branch_classifiers)
    ]
    assert out.loss.item() == pytest.approx(np.mean(per_branch), rel=1e-5)
    assert all(isinstance(b.activation, torch.nn.Identity) for b in model.branch_classifiers)


def test_softmax_head_is_the_original_linear_classifier():
    torch.manual_seed(0)
    model = DCRForImageClassification(tiny_config(center_loss_weight=0.0)).eval()
    assert isinstance(model.classifier, torch.nn.Linear) and model.classifier.bias is not None
    pixels, labels = torch.randn(2, 3, 32, 32), torch.tensor([3, 1])
    out = model(pixels, labels=labels)
    expected = torch.nn.functional.cross_entropy(model.classifier(out.embeddings), labels)
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_arcface_gradient_is_finite_where_an_embedding_meets_its_class_weight():
    classifier = DCRCosineClassifier(DCRConfig(head="arcface", num_labels=2), 3)
    with torch.no_grad():
        classifier.weight.copy_(torch.tensor([[1.0, 2.0, 2.0], [0.0, 1.0, 0.0]]))
    embeddings = torch.tensor([[1.0, 2.0, 2.0], [-1.0, -2.0, -2.0]], requires_grad=True)  # cos = 1 and -1
    logits = margin_logits(classifier.cosine(embeddings), torch.tensor([0, 0]), "arcface", 64.0, 0.5)
    torch.nn.functional.cross_entropy(logits, torch.tensor([0, 0])).backward()
    assert torch.isfinite(embeddings.grad).all() and torch.isfinite(classifier.weight.grad).all()


def test_cosine_classifier_runs_in_float32_under_bf16_autocast():
    torch.manual_seed(0)
    classifier = DCRCosineClassifier(DCRConfig(head="cosface", num_labels=4), 16)
    torch.nn.init.normal_(classifier.weight)
    embeddings = torch.randn(5, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        autocast = classifier(embeddings)
    assert autocast.dtype == torch.float32
    torch.testing.assert_close(autocast, classifier(embeddings), rtol=0, atol=1e-5)


# --------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("head, scale, margin", [("cosface", 64.0, 0.35), ("arcface", 64.0, 0.5)])
def test_margin_heads_default_scale_and_margin_are_saved(tmp_path, head, scale, margin):
    config = DCRConfig(head=head)
    assert (config.margin_scale, config.margin) == (scale, margin)
    config.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert {k: saved[k] for k in HEAD_FIELDS} == {"head": head, "margin_scale": scale, "margin": margin,
                                                   "arcface_easy_margin": False}
    assert DCRConfig(head=head, margin_scale=30, margin=0.2).margin == 0.2


@pytest.mark.parametrize("margin", [0.0, -0.1, math.pi / 2, 2.0])
def test_arcface_margin_outside_zero_to_half_pi_is_refused(margin):
    with pytest.raises(ValueError, match=r"^margin=.*outside \(0, 1\.5708\) for head='arcface'"):
        DCRConfig(head="arcface", margin=margin)


@pytest.mark.parametrize(
    "fields, match",
    [
        (dict(head="cosface", margin=1.0), r"^margin=1.0 is outside \(0, 1\) for head='cosface'"),
        (dict(head="cosface", margin_scale=0), r"^margin_scale must be positive"),
        (dict(head="arcface", margin="0.5"), r"^margin must be a finite number, got '0.5'"),
        (dict(head="arcface", margin=float("nan")), r"^margin must be a finite number, got nan"),
        (dict(margin=0.3), r"^margin=0.3 is only used by the margin heads"),
        (dict(margin_scale=30.0), r"^margin_scale=30.0 is only used by the margin heads"),
        (dict(head="cosface", arcface_easy_margin=True), r"^arcface_easy_margin=True is only used by head='arcface'"),
        (dict(head="sphereface"), r"^head='sphereface' is not one of"),
    ],
)
def test_bad_head_settings_name_the_field(fields, match):
    with pytest.raises(ValueError, match=match):
        DCRConfig(**fields)


def test_older_folder_without_head_fields_loads_as_the_softmax_model(tmp_path):
    torch.manual_seed(0)
    model = DCRForImageClassification(tiny_config(use_branches=True)).eval()
    model.save_pretrained(tmp_path)
    config_file = tmp_path / "config.json"
    saved = json.loads(config_file.read_text())
    config_file.write_text(json.dumps({k: v for k, v in saved.items() if k not in HEAD_FIELDS}))  # as saved before heads
    loaded = DCRForImageClassification.from_pretrained(tmp_path).eval()
    assert loaded.config.head == "softmax" and loaded.config.margin is None
    assert isinstance(loaded.classifier, torch.nn.Linear)
    pixels, labels = torch.randn(2, 3, 3, 32, 32), torch.tensor([0, 4])
    before, after = model(pixels, labels=labels), loaded(pixels, labels=labels)
    torch.testing.assert_close(after.logits, before.logits, rtol=0, atol=0)
    torch.testing.assert_close(after.loss, before.loss, rtol=0, atol=0)


# --------------------------------------------------------------------------------------------
# Branch stage
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("head", ["cosface", "arcface"])
def test_specialized_init_with_a_margin_head_starts_at_the_trunk(head):
    torch.manual_seed(0)
    trunk = DCRForImageClassification(tiny_config(head=head)).eval()
    branch = branch_model_from_trunk(trunk).eval()
    for branch_classifier in branch.branch_classifiers:
        assert isinstance(branch_classifier.classifier, DCRCosineClassifier)
        torch.testing.assert_close(branch_classifier.classifier.weight, trunk.classifier.weight, rtol=0, atol=0)
    pixels = torch.randn(2, 3, 3, 32, 32)
    at_start, of_trunk = branch(pixels), trunk(pixels)
    torch.testing.assert_close(at_start.embeddings, of_trunk.embeddings, rtol=0, atol=1e-6)
    # Without a PReLU in front of the cosine classifier, the branches' logits are the trunk's as well.
    torch.testing.assert_close(at_start.logits, of_trunk.logits, rtol=0, atol=1e-4)


def test_from_trunk_keeps_the_trunks_head():
    trunk = DCRForImageClassification(tiny_config(head="cosface"))
    with pytest.raises(ValueError, match="trained with head='cosface', not 'softmax'"):
        branch_model_from_trunk(trunk, head="softmax")
    branch = branch_model_from_trunk(trunk, margin=0.2)  # margin and scale may change
    assert (branch.config.head, branch.config.margin) == ("cosface", 0.2)


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "extra, match",
    [
        (["--head", "arcface", "--margin", "2"], "error: margin=2.0 is outside (0, 1.5708) for head='arcface'"),
        (["--margin", "0.3"], "error: margin=0.3 is only used by the margin heads"),
    ],
)
def test_bad_head_arguments_are_one_line_usage_errors(tmp_path, capsys, extra, match):
    with pytest.raises(SystemExit) as exit_info:
        train_main(["--output_dir", str(tmp_path / "out"), "--use_cpu", "true", *extra])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert match in error  # "<prog>: error: margin=...", one line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("extra, expected", [([], {}), (["--arcface_easy_margin"], {"arcface_easy_margin": True}),
                                             (["--arcface_easy_margin", "false"], {"arcface_easy_margin": False})])
def test_head_flags_reach_the_config_only_when_given(tmp_path, extra, expected):
    # Absent flags stay None, so a branch stage keeps what its trunk was trained with.
    model_args, _, _ = parse_arguments(["--output_dir", str(tmp_path), *extra])
    assert head_settings(model_args) == expected


def test_branch_stage_refuses_another_head_than_the_trunks(tmp_path, capsys):
    DCRForImageClassification(tiny_config(head="arcface")).save_pretrained(tmp_path / "trunk")
    DCRImageProcessor(image_size=32).save_pretrained(tmp_path / "trunk")
    with pytest.raises(SystemExit) as exit_info:
        train_main(["--stage", "branch", "--trunk", str(tmp_path / "trunk"), "--head", "cosface",
                    "--output_dir", str(tmp_path / "out"), "--use_cpu", "true"])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert "was trained with head='arcface', but --head is 'cosface'" in error


# --------------------------------------------------------------------------------------------
# Training (slow: short end-to-end runs on synthetic identities)
# --------------------------------------------------------------------------------------------

TRAIN = [
    "--synthetic_num_identities", "40", "--synthetic_images_per_identity", "6", "--synthetic_num_pairs", "400",
    "--image_size", "48", "--low_resolution_sizes", "8", "12", "--architecture", "small",
    "--depths", "1", "1", "1", "1", "--hidden_sizes", "8", "16", "16", "32", "--embedding_size", "32",
    "--per_device_train_batch_size", "16", "--report_to", "none", "--dataloader_num_workers", "0", "--seed", "0",
    "--disable_tqdm", "true", "--use_cpu", "true", "--eval_strategy", "no", "--save_strategy", "no",
    "--load_best_model_at_end", "false",
]


def _mean_accuracy(result: dict) -> float:
    return float(np.mean([v["accuracy"] for v in result["by_resolution"].values()]))


@pytest.fixture(scope="module")
def _one_thread():
    # Tiny convolutions on 2 shared cores: one OpenMP thread is far faster than two.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.mark.slow
@pytest.mark.parametrize("head", ["softmax", "cosface", "arcface"])
def test_training_with_each_head_beats_the_untrained_trunk(tmp_path, _one_thread, head):
    result = train_command(["--output_dir", str(tmp_path / head), *TRAIN, "--num_train_epochs", "15", "--head", head])
    before, after = result["before"], result["after"]
    for size, untrained in before["by_resolution"].items():
        assert after["by_resolution"][size]["accuracy"] > untrained["accuracy"], size
    assert _mean_accuracy(after) > _mean_accuracy(before) + 0.05
    assert json.loads((tmp_path / head / "config.json").read_text())["head"] == head
    recipe = json.loads((tmp_path / head / "training_recipe.json").read_text())
    assert recipe["head"] == {"softmax": "softmax", "cosface": "cosface (s=64, m=0.35)",
                              "arcface": "arcface (s=64, m=0.5)"}[head]


@pytest.mark.slow
def test_branch_stage_of_a_margin_trunk_starts_at_the_trunk_and_trains(tmp_path, _one_thread):
    trunk = train_command(["--output_dir", str(tmp_path / "trunk"), *TRAIN, "--num_train_epochs", "2",
                           "--head", "arcface", "--margin", "0.4"])
    branch = train_command(["--output_dir", str(tmp_path / "branch"), *TRAIN, "--num_train_epochs", "1",
                            "--stage", "branch", "--trunk", str(tmp_path / "trunk")])
    for size, of_trunk in trunk["after"]["by_resolution"].items():  # the specialized initialization
        assert branch["before"]["by_resolution"][size]["accuracy"] == pytest.approx(of_trunk["accuracy"], abs=1e-9)
        assert branch["before"]["by_resolution"][size]["auc"] == pytest.approx(of_trunk["auc"], abs=1e-6)
    saved = json.loads((tmp_path / "branch" / "config.json").read_text())
    assert (saved["head"], saved["margin"], saved["use_branches"]) == ("arcface", 0.4, True)
    assert math.isfinite(json.loads((tmp_path / "branch" / "train_results.json").read_text())["train_loss"])


@pytest.mark.slow
def test_margin_head_folder_loads_with_remote_code_alone(tmp_path):
    torch.manual_seed(0)
    model = DCRForImageClassification(tiny_config(head="arcface", use_branches=True, arcface_easy_margin=True)).eval()
    model.save_pretrained(tmp_path / "model")
    pixels, labels = torch.randn(2, 3, 3, 32, 32), torch.tensor([1, 3])
    torch.save({"pixels": pixels, "labels": labels}, tmp_path / "batch.pt")
    expected = model(pixels, labels=labels)
    out = _run_without_dcr_hf(
        f"""
        import torch
        from transformers import AutoModelForImageClassification
        model = AutoModelForImageClassification.from_pretrained({str(tmp_path / "model")!r}, trust_remote_code=True).eval()
        batch = torch.load({str(tmp_path / "batch.pt")!r}, weights_only=True)
        out = model(batch["pixels"], labels=batch["labels"])
        print(repr(out.loss.item()), repr(out.logits.abs().sum().item()))
        """,
        cwd=tmp_path,
    )
    loss, logits = map(float, out.split())
    assert loss == pytest.approx(expected.loss.item(), rel=1e-6)
    assert logits == pytest.approx(expected.logits.abs().sum().item(), rel=1e-6)
