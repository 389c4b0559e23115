import math

import numpy as np

import pytest
import torch
from tests.models import tiny_config

from dcr_hf import DCRConfig, DCRForImageClassification, DCRModel, branch_model_from_trunk
from dcr_hf.configuration_dcr import RESNET_BODIES
from dcr_hf.losses_dcr import center_loss, coupling_loss, update_centers


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.mark.parametrize(
    "overrides",
    [
        dict(trunk_type="resnet"),
        dict(trunk_type="paper"),
        dict(trunk_type="paper", use_batch_norm=False),
        dict(trunk_type="resnet", depths=[2, 2, 2, 2]),
        dict(trunk_type="resnet", layer_type="bottleneck", hidden_sizes=[16, 16, 32, 32]),
    ],
)
def test_trunk_shapes(overrides):
    config = tiny_config(**overrides)
    model = DCRModel(config).eval()
    out = model(torch.randn(3, 3, 32, 32), output_hidden_states=True)
    assert out.pooler_output.shape == (3, 32)
    assert out.last_hidden_state.shape[:2] == (3, 32)
    assert len(out.hidden_states) == 1 + len(config.depths)
    # L2-normalized embeddings by default
    torch.testing.assert_close(out.pooler_output.norm(dim=-1), torch.ones(3))


def test_default_architecture_shapes():
    model = DCRModel(DCRConfig()).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 120, 120))
    assert out.pooler_output.shape == (1, 512)
    assert out.last_hidden_state.shape == (1, 512, 4, 4)
    # ResNet-style blocks 1/2/5/3
    assert [len(stage.layers) for stage in model.trunk.stages] == [1, 2, 5, 3]


@pytest.mark.parametrize(
    "body, parameters",
    # torchvision's resnetN parameter counts (25,557,032 for resnet50, ...) less its 1000-class fc
    [("resnet18", 11_689_512 - 513_000), ("resnet34", 21_797_672 - 513_000), ("resnet50", 25_557_032 - 2_049_000),
     ("resnet101", 44_549_160 - 2_049_000), ("resnet152", 60_192_808 - 2_049_000)],
)
def test_resnet_bodies_have_torchvisions_parameter_counts(body, parameters):
    with torch.device("meta"):
        trunk = DCRModel(DCRConfig(**RESNET_BODIES[body])).trunk
    body_parameters = sum(p.numel() for name, p in trunk.named_parameters() if not name.startswith("projection."))
    assert body_parameters == parameters
    assert trunk.projection.in_features == RESNET_BODIES[body]["hidden_sizes"][-1]


def test_bottleneck_block_strides_on_its_3x3_convolution():
    block = DCRModel(DCRConfig(**RESNET_BODIES["resnet50"])).trunk.stages[1].layers[0]
    convolutions = [layer.convolution for layer in block.layer]
    assert [c.kernel_size for c in convolutions] == [(1, 1), (3, 3), (1, 1)]
    assert [c.stride for c in convolutions] == [(1, 1), (2, 2), (1, 1)]
    assert [c.out_channels for c in convolutions] == [128, 128, 512]
    assert block.shortcut.convolution.stride == (2, 2) and block.shortcut.convolution.in_channels == 256


def test_paper_trunk_prelus_are_channel_wise():
    model = DCRModel(tiny_config(trunk_type="paper"))
    prelus = {name: m for name, m in model.trunk.named_modules() if isinstance(m, torch.nn.PReLU)}
    assert prelus["embedder.embedder.activation"].weight.shape == (model.config.stem_hidden_size,)
    for s, width in enumerate(model.config.hidden_sizes):
        for name in ("layer.0.activation", "activation"):
            assert prelus[f"stages.{s}.layers.0.{name}"].weight.shape == (width,)
    assert len(prelus) == 1 + 2 * sum(model.config.depths)


def test_unnormalized_embeddings():
    model = DCRModel(tiny_config(normalize_embeddings=False)).eval()
    norms = model(torch.randn(4, 3, 32, 32)).pooler_output.norm(dim=-1)
    assert not torch.allclose(norms, torch.ones(4))


def test_conv_init_is_kaiming_fan_out():
    model = DCRModel(DCRConfig())
    weight = model.trunk.stages[3].layers[0].layer[0].convolution.weight
    fan_out = weight.shape[0] * weight.shape[2] * weight.shape[3]
    assert weight.std().item() == pytest.approx(math.sqrt(2.0 / fan_out), rel=0.05)


def test_classification_head_single_and_multi_resolution(config):
    model = DCRForImageClassification(config)
    labels = torch.tensor([0, 4])
    out = model(torch.randn(2, 3, 32, 32), labels=labels)
    assert out.logits.shape == (2, 5) and out.embeddings.shape == (2, 32) and out.loss.ndim == 0
    out = model(torch.randn(2, 3, 3, 32, 32), labels=labels)
    assert out.logits.shape == (2, 3, 5) and out.embeddings.shape == (2, 3, 32)
    torch.testing.assert_close(out.loss, out.cross_entropy_loss + out.center_loss)
    out.loss.backward()
    assert model.classifier.weight.grad is not None
    # HR + separate LR copies is the same as one stacked tensor
    model.eval()
    hr, lr = torch.randn(2, 3, 32, 32), torch.randn(2, 2, 3, 32, 32)
    stacked = model(torch.cat([hr[:, None], lr], dim=1)).logits
    torch.testing.assert_close(model(hr, low_resolution_pixel_values=lr).logits, stacked)


def test_trunk_loss_is_cross_entropy_plus_weighted_center_mse(config):
    model = DCRForImageClassification(config).eval()
    x, labels = torch.randn(3, 3, 32, 32), torch.tensor([1, 2, 1])
    out = model(x, labels=labels)  # eval: centers are not updated
    expected_ce = torch.nn.functional.cross_entropy(out.logits, labels)
    expected_center = 0.008 * ((out.embeddings - model.centers[labels]) ** 2).mean()
    torch.testing.assert_close(out.loss, expected_ce + expected_center)


def test_center_update_hand_computed():
    centers = torch.tensor([[0.0, 0.0], [1.0, 1.0], [5.0, 5.0]])
    embeddings = torch.tensor([[1.0, 2.0], [3.0, 4.0], [0.0, 1.0]])
    labels = torch.tensor([0, 0, 1])
    update_centers(centers, embeddings, labels, momentum=0.5)
    # class 0: n=2, sum(e - c) = (1+3, 2+4) = (4, 6) -> c += 0.5/2 * (4, 6) = (1, 1.5)
    # class 1: n=1, e - c = (-1, 0) -> c = (1, 1) + 0.5 * (-1, 0) = (0.5, 1)
    # class 2: absent, unchanged
    torch.testing.assert_close(centers, torch.tensor([[1.0, 1.5], [0.5, 1.0], [5.0, 5.0]]))


def test_centers_update_only_in_training_and_use_all_resolution_copies(config):
    model = DCRForImageClassification(config)
    before = model.centers.clone()
    x, labels = torch.randn(2, 3, 3, 32, 32), torch.tensor([3, 3])
    model.eval()
    model(x, labels=labels)
    torch.testing.assert_close(model.centers, before)
    model.train()
    out = model(x, labels=labels)
    emb = out.embeddings.reshape(-1, 32).detach()
    expected = before[3] + 0.6 * (emb - before[3]).mean(0)
    torch.testing.assert_close(model.centers[3], expected)
    torch.testing.assert_close(model.centers[:3], before[:3])


def test_center_init_std():
    model = DCRForImageClassification(DCRConfig(num_labels=200, depths=[1, 1, 1, 1]))
    assert model.centers.std().item() == pytest.approx(math.sqrt(2 / 200), rel=0.05)


def test_coupling_loss_hand_computed():
    # [resolutions=3, batch=1, size=2]; HR = (1, 1)
    e = torch.tensor([[[1.0, 1.0]], [[0.0, 1.0]], [[1.0, 3.0]]])
    # MSE(HR, r1) = (1 + 0) / 2 = 0.5; MSE(HR, r2) = (0 + 4) / 2 = 2 -> sum 2.5
    assert coupling_loss(e).item() == pytest.approx(2.5)
    assert center_loss(torch.tensor([[1.0, 3.0]]), torch.tensor([[0.0, 0.0], [1.0, 1.0]]), torch.tensor([1])).item() == pytest.approx(2.0)


def test_branch_stage_loss_matches_hand_computation(config):
    trunk = DCRForImageClassification(config)
    model = branch_model_from_trunk(trunk, specialized_initialization=False).eval()
    x, labels = torch.randn(2, 3, 3, 32, 32), torch.tensor([0, 2])
    out = model(x, labels=labels)
    emb = out.embeddings.transpose(0, 1)  # [R, B, E]
    logits = out.logits.transpose(0, 1)
    ce = torch.stack([torch.nn.functional.cross_entropy(lg, labels) for lg in logits]).mean()
    cl = torch.stack([((e - c[labels]) ** 2).mean() for e, c in zip(emb, model.branch_centers)]).mean()
    couple = sum(((emb[0] - emb[r]) ** 2).mean() for r in (1, 2))
    torch.testing.assert_close(out.loss, ce + 0.008 * cl + 0.008 * couple)


def test_branch_stage_needs_every_resolution(config):
    model = branch_model_from_trunk(DCRForImageClassification(config))
    with pytest.raises(ValueError, match="every resolution"):
        model(torch.randn(2, 2, 3, 32, 32), labels=torch.tensor([0, 1]))


def test_branch_stage_makes_its_lr_copies_of_plain_pixel_values(config, tmp_path):
    """`[batch, 3, H, W]` HR pixels, as the processor, the Trainer and transformers' common inputs give
    them: the branch model makes the LR copies itself with the processor settings its config records."""
    from dcr_hf import DCRImageProcessor, make_low_resolution_copies

    processor = DCRImageProcessor(image_size=32, image_mean=[0.4, 0.5, 0.6], image_std=[0.2, 0.25, 0.3],
                                  downsample_interpolation="bicubic")
    model = branch_model_from_trunk(DCRForImageClassification(config)).eval()
    processor.write_to_model_config(model.config)
    model.save_pretrained(tmp_path)
    model = DCRForImageClassification.from_pretrained(tmp_path).eval()  # the settings travel with the config
    assert DCRImageProcessor.from_model_config(model.config).to_dict() == processor.to_dict()
    torch.manual_seed(0)
    hr = processor(torch.rand(4, 3, 32, 32)).pixel_values
    labels = torch.tensor([0, 1, 2, 0])
    copies = make_low_resolution_copies(hr, model.config.low_resolution_sizes, processor, normalized=True)
    with torch.no_grad():
        plain = model(pixel_values=hr, labels=labels)
        given = model(pixel_values=hr, low_resolution_pixel_values=copies, labels=labels)
    assert plain.logits.shape == (4, config.num_labels)
    torch.testing.assert_close(plain.loss, given.loss, rtol=0, atol=0)
    torch.testing.assert_close(plain.logits, given.logits[:, 0], rtol=0, atol=0)  # the HR branch
    # A config without recorded settings: the processor's defaults.
    default = branch_model_from_trunk(DCRForImageClassification(config)).eval()
    assert DCRImageProcessor.from_model_config(default.config).to_dict() == DCRImageProcessor(image_size=32).to_dict()
    with pytest.raises(ValueError, match="makes its LR copies of 32x32 images"):
        model(pixel_values=torch.rand(2, 3, 40, 40))


def test_specialized_init_branch_embeddings_equal_trunk_embeddings():
    trunk = DCRForImageClassification(tiny_config()).eval()
    model = branch_model_from_trunk(trunk).eval()
    x = torch.randn(2, 3, 3, 32, 32)
    torch.testing.assert_close(model(x).embeddings, trunk(x).embeddings)
    for branch_classifier in model.branch_classifiers:
        torch.testing.assert_close(branch_classifier.classifier.weight, trunk.classifier.weight)
    torch.testing.assert_close(model.branch_centers[1], trunk.centers)
    # the embedder (AutoModel class) agrees for every resolution
    embedder = DCRModel(model.config)
    embedder.load_state_dict({k[4:]: v for k, v in model.state_dict().items() if k.startswith("dcr.")})
    embedder.eval()
    for resolution in ("hr", 8, 12):
        torch.testing.assert_close(embedder(x[:, 0], resolution=resolution).pooler_output, trunk.dcr(x[:, 0]).pooler_output)


def test_random_branch_init_differs_from_trunk(config):
    trunk = DCRForImageClassification(config).eval()
    model = branch_model_from_trunk(trunk, specialized_initialization=False).eval()
    x = torch.randn(2, 3, 3, 32, 32)
    assert not torch.allclose(model(x).embeddings, trunk(x).embeddings)


def test_frozen_trunk_stays_in_eval_and_gets_no_gradient(config):
    trunk = DCRForImageClassification(config)
    model = branch_model_from_trunk(trunk)
    model.train()
    assert model.training and not model.dcr.trunk.training
    running_mean = model.dcr.trunk.embedder.embedder.normalization.running_mean.clone()
    out = model(torch.randn(2, 3, 3, 32, 32), labels=torch.tensor([0, 1]))
    out.loss.backward()
    torch.testing.assert_close(model.dcr.trunk.embedder.embedder.normalization.running_mean, running_mean)
    assert all(p.grad is None for p in model.dcr.trunk.parameters())
    assert model.dcr.branches[1].projection.weight.grad is not None
    # unfreezing: trunk trains again
    model = branch_model_from_trunk(trunk, freeze_trunk=False).train()
    assert model.dcr.trunk.training
    model(torch.randn(2, 3, 3, 32, 32), labels=torch.tensor([0, 1])).loss.backward()
    assert model.dcr.trunk.projection.weight.grad is not None


def test_from_trunk_rejects_bare_embedder_for_specialized_init(config):
    with pytest.raises(ValueError, match="classifier"):
        branch_model_from_trunk(DCRModel(config))


def test_branch_model_from_a_trunk_folder_equals_from_the_trunk_model(tmp_path, config):
    trunk = DCRForImageClassification(config).eval()
    trunk.save_pretrained(tmp_path / "trunk")
    from_folder = branch_model_from_trunk(tmp_path / "trunk", low_resolution_sizes=[8]).eval()
    from_model = branch_model_from_trunk(trunk, low_resolution_sizes=[8]).eval()
    assert from_folder.config.use_branches and from_folder.config.low_resolution_sizes == [8]
    assert from_folder.state_dict().keys() == from_model.state_dict().keys()
    for key, value in from_model.state_dict().items():
        torch.testing.assert_close(from_folder.state_dict()[key], value, rtol=0, atol=0, msg=key)
    with pytest.raises(TypeError, match="trunk must be a path, a Hub id or a DCR model, got dict"):
        branch_model_from_trunk({})


def test_per_sample_resolution_routing():
    trunk = DCRForImageClassification(tiny_config())
    model = branch_model_from_trunk(trunk, specialized_initialization=False)
    embedder = DCRModel(model.config)
    embedder.load_state_dict({k[4:]: v for k, v in model.state_dict().items() if k.startswith("dcr.")})
    embedder.eval()
    x = torch.randn(3, 3, 32, 32)
    mixed = embedder(x, resolution=[8, "hr", 12]).pooler_output
    torch.testing.assert_close(mixed[0], embedder(x[:1], resolution=8).pooler_output[0])
    torch.testing.assert_close(mixed[1], embedder(x[1:2], resolution=32).pooler_output[0])
    torch.testing.assert_close(mixed[2], embedder(x[2:], resolution=torch.tensor([12])).pooler_output[0])
    with pytest.raises(ValueError, match=r"available.*\[8, 12\]"):
        embedder(x, resolution=16)


@pytest.mark.parametrize(
    "shape, match",
    [((2, 32, 32), "shape"), ((2, 1, 32, 32), "channels"), ((2, 2, 2, 3, 32, 32), "shape")],
)
def test_bad_input_rank_or_channels(shape, match, config):
    model = DCRForImageClassification(config)
    with pytest.raises(ValueError, match=match):
        model(torch.randn(*shape))
    with pytest.raises(ValueError, match="every resolution copy"):
        DCRModel(tiny_config(use_branches=True))(torch.randn(2, 2, 3, 32, 32))


@pytest.mark.parametrize("use_branches", [False, True])
def test_embedder_takes_every_resolution_copy_at_once(use_branches):
    """`[batch, resolutions, C, H, W]`: copy r through branch r, equal to one 4-D call per copy."""
    config = tiny_config(use_branches=use_branches)
    model = DCRModel(config).eval()
    x = torch.randn(3, len(config.resolutions), 3, 32, 32)
    with torch.no_grad():
        out = model(x)
        assert out.pooler_output.shape == (3, len(config.resolutions), config.branch_hidden_size)
        for index, resolution in enumerate(config.resolutions):
            single = model(x[:, index], resolution=resolution)
            torch.testing.assert_close(out.pooler_output[:, index], single.pooler_output, atol=1e-6, rtol=0)
            torch.testing.assert_close(out.trunk_embeddings[:, index], single.trunk_embeddings, atol=1e-6, rtol=0)


def test_labels_out_of_range(config):
    model = DCRForImageClassification(config)
    with pytest.raises(ValueError, match="label 5 .*num_labels=5"):
        model(torch.randn(2, 3, 32, 32), labels=torch.tensor([0, 5]))
    with pytest.raises(ValueError, match="label -1"):
        model(torch.randn(2, 3, 32, 32), labels=torch.tensor([-1, 0]))


def test_save_load_round_trip_identical_outputs_and_centers(tmp_path, config):
    model = DCRForImageClassification(config)
    model.train()
    model(torch.randn(2, 3, 3, 32, 32), labels=torch.tensor([0, 1]))  # move centers and BN stats
    model = branch_model_from_trunk(model)
    model.eval()
    model.save_pretrained(tmp_path)
    reloaded = DCRForImageClassification.from_pretrained(tmp_path).eval()
    x = torch.randn(2, 3, 3, 32, 32)
    torch.testing.assert_close(reloaded(x).embeddings, model(x).embeddings)
    torch.testing.assert_close(reloaded.centers, model.centers)
    torch.testing.assert_close(reloaded.branch_centers, model.branch_centers)
    assert reloaded.trunk_is_frozen


def test_gradient_checkpointing_gives_same_gradients():
    config = tiny_config()
    model = DCRForImageClassification(config)
    x, labels = torch.randn(2, 3, 32, 32), torch.tensor([0, 1])
    state = {k: v.clone() for k, v in model.state_dict().items()}
    model(x, labels=labels).loss.backward()
    expected = model.dcr.trunk.stages[0].layers[0].layer[0].convolution.weight.grad.clone()
    other = DCRForImageClassification(config)
    other.load_state_dict(state)
    other.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    other.train()
    assert other.dcr.trunk.stages[0].layers[0].gradient_checkpointing
    other(x, labels=labels).loss.backward()
    torch.testing.assert_close(other.dcr.trunk.stages[0].layers[0].layer[0].convolution.weight.grad, expected)


def test_freeze_batch_norm_keeps_statistics():
    model = DCRForImageClassification(tiny_config(freeze_batch_norm=True)).train()
    bn = model.dcr.trunk.embedder.embedder.normalization
    before = bn.running_mean.clone()
    model(torch.randn(2, 3, 32, 32), labels=torch.tensor([0, 1])).loss.backward()
    torch.testing.assert_close(bn.running_mean, before)
    assert bn.weight.grad is not None


def test_channels_last_model_gives_the_same_embeddings(config):
    model = DCRModel(config).eval()
    x = torch.randn(3, 3, 32, 32)
    expected = model(x).pooler_output
    model = model.to(memory_format=torch.channels_last)
    assert model.trunk.embedder.embedder.convolution.weight.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(model(x).pooler_output, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_floating_inputs_of_another_dtype_run_in_the_weights_dtype(dtype):
    model = DCRModel(tiny_config(use_branches=True)).eval()
    pixels = torch.randn(2, 3, 32, 32)
    expected = model(pixels.to(dtype).float(), resolution=8).pooler_output  # the same values, rounded to dtype
    output = model(pixels.to(dtype), resolution=8).pooler_output
    assert output.dtype == torch.float32
    torch.testing.assert_close(output, expected, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int64, torch.bool])
def test_integer_inputs_are_refused_in_one_line(dtype):
    model = DCRModel(tiny_config())
    with pytest.raises(ValueError, match=f"pixel_values has dtype {dtype}; the model expects normalized floating-point"):
        model(torch.zeros(1, 3, 32, 32, dtype=dtype))


@pytest.mark.parametrize("resolution", [np.int64(8), torch.tensor(8), 8.0, np.float32(8.0), [np.int64(8), torch.tensor(8)]],
                         ids=["numpy-int", "0-d-tensor", "float", "numpy-float", "per-sample-scalars"])
def test_resolution_scalars_of_any_kind_pick_the_branch(resolution):
    model = DCRModel(tiny_config(use_branches=True)).eval()
    pixels = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(model(pixels, resolution=resolution).pooler_output,
                               model(pixels, resolution=8).pooler_output, rtol=0, atol=0)


@pytest.mark.parametrize("resolution", [8.7, True, object()])
def test_resolutions_that_are_not_sizes_are_refused(resolution):
    model = DCRModel(tiny_config(use_branches=True))
    with pytest.raises(ValueError, match="is not a size: expected an int"):
        model(torch.randn(1, 3, 32, 32), resolution=resolution)


@pytest.mark.parametrize("use_branches", [False, True])
def test_an_empty_batch_gives_empty_outputs_and_no_loss(use_branches):
    head = DCRForImageClassification(tiny_config(use_branches=use_branches)).eval()
    copies = torch.randn(0, 3, 3, 32, 32)
    output = head(copies)
    assert output.logits.shape == (0, 3, 5) and output.embeddings.shape == (0, 3, 32)
    assert head.dcr(torch.randn(0, 3, 32, 32)).pooler_output.shape == (0, 32)
    with pytest.raises(ValueError, match="labels were given for an empty batch"):
        head(copies, labels=torch.empty(0, dtype=torch.int64))


@pytest.mark.slow  # traces both training stages with dynamo
@pytest.mark.parametrize("stage", ["trunk", "branch"])
def test_training_step_compiles_into_one_graph(config, stage):
    """`--torch_compile` traces the whole training forward (loss, center update) without a graph
    break: no host read of a tensor and no data-dependent shape."""
    torch.manual_seed(0)
    model = DCRForImageClassification(config)
    if stage == "branch":
        model = branch_model_from_trunk(model)
    model.train()
    pixel_values = torch.randn(4, 3, 3, config.image_size, config.image_size)
    explanation = torch._dynamo.explain(model)(pixel_values, labels=torch.tensor([0, 1, 1, 4]))
    assert explanation.graph_break_count == 0, [str(reason.reason)[:200] for reason in explanation.break_reasons]
    assert explanation.graph_count == 1


# --------------------------------------------------------------------------------------------
# Behaving as transformers models do (in the style of transformers' ResNet model tests)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model_class", [DCRModel, DCRForImageClassification])
@pytest.mark.parametrize("use_branches", [False, True])
def test_config_output_hidden_states_is_honoured(model_class, use_branches):
    config = tiny_config(use_branches=use_branches)
    config.output_hidden_states = True
    model = model_class(config).eval()
    copies = len(config.resolutions)
    x = torch.randn(2, copies, 3, 32, 32) if use_branches and model_class is DCRForImageClassification else torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        hidden_states = model(x).hidden_states
        assert model(x, output_hidden_states=False).hidden_states is None  # the argument wins over the config
        config.output_hidden_states = False
        assert model(x).hidden_states is None
        assert model(x, output_hidden_states=True).hidden_states is not None
    assert len(hidden_states) == 1 + len(config.depths)
    # The stem (stride 4: 7x7/2 conv + max-pool), then one map per stage, each stage after the first halving it.
    sizes = [(config.stem_hidden_size, 8), *zip(config.hidden_sizes, (8, 4, 2, 1))]
    for hidden_state, (channels, side) in zip(hidden_states, sizes):
        assert hidden_state.shape[-3:] == (channels, side, side)


def _missing_keys_folder(model, folder, *dropped):
    """Save `model` to `folder`, then remove the `dropped` tensors from its weights file."""
    from safetensors.torch import load_file, save_file

    model.save_pretrained(folder)
    weights = load_file(folder / "model.safetensors")
    for key in dropped:
        del weights[key]
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    return folder


@pytest.mark.parametrize("use_branches", [False, True])
def test_centers_are_the_same_in_every_way_of_building_a_model(tmp_path, use_branches):
    """`_init_weights` leaves `centers` / `branch_centers` as `__init__` made them: a fresh model, its
    `_init_weights` again, `from_config` and a checkpoint without them all give the same centers."""
    from transformers import AutoModelForImageClassification

    config = tiny_config(use_branches=use_branches)
    buffers = ["centers", "branch_centers"] if use_branches else ["centers"]
    fresh = DCRForImageClassification(config)
    expected = {name: getattr(fresh, name).clone() for name in buffers}
    # N(0, sqrt(2 / num_labels)) as in the original (see test_center_init_std), not a zero tensor.
    assert all(value.abs().sum() > 0 for value in expected.values())
    torch.manual_seed(123)  # the centers do not depend on the global seed
    other = DCRForImageClassification(config)
    other.apply(other._init_weights)
    from_config = AutoModelForImageClassification.from_config(config)
    folder = _missing_keys_folder(fresh, tmp_path / "no-centers", *buffers)
    loaded = [DCRForImageClassification.from_pretrained(folder) for _ in range(2)]
    for model in (other, from_config, *loaded):
        for name in buffers:
            torch.testing.assert_close(getattr(model, name), expected[name], rtol=0, atol=0, msg=name)
    # Centers that are in the checkpoint are loaded, not re-initialized.
    with torch.no_grad():
        fresh.centers.add_(1.0)
    fresh.save_pretrained(tmp_path / "moved")
    torch.testing.assert_close(DCRForImageClassification.from_pretrained(tmp_path / "moved").centers, fresh.centers)


def _checkpointed_gradients(model, x, labels):
    """Gradients of every trained parameter, and how many layers went through the checkpoint function."""
    calls = []
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    for module in model.modules():
        if getattr(module, "gradient_checkpointing", False):
            func = module._gradient_checkpointing_func
            module._gradient_checkpointing_func = lambda *a, _func=func, **k: (calls.append(1), _func(*a, **k))[1]
    model.train()
    model(x, labels=labels).loss.backward()
    return {n: p.grad for n, p in model.named_parameters() if p.requires_grad}, len(calls)


def test_gradient_checkpointing_covers_an_unfrozen_trunk_in_the_branch_stage():
    trunk = DCRForImageClassification(tiny_config())
    x, labels = torch.randn(2, 3, 3, 32, 32), torch.tensor([0, 1])
    plain = branch_model_from_trunk(trunk, freeze_trunk=False).train()
    state = {k: v.clone() for k, v in plain.state_dict().items()}
    plain(x, labels=labels).loss.backward()
    expected = {n: p.grad for n, p in plain.named_parameters() if p.requires_grad}
    checkpointed = branch_model_from_trunk(trunk, freeze_trunk=False)
    checkpointed.load_state_dict(state)
    got, calls = _checkpointed_gradients(checkpointed, x, labels)
    assert calls == sum(tiny_config().depths)  # every residual block of the trunk, the layers that train
    assert any(name.startswith("dcr.trunk.") for name in got)
    assert got.keys() == expected.keys()
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], msg=name)


def test_gradient_checkpointing_with_a_frozen_trunk_says_there_is_nothing_to_checkpoint(caplog):
    import logging

    model = branch_model_from_trunk(DCRForImageClassification(tiny_config()))
    caplog.set_level(logging.WARNING, logger="dcr_hf")
    _, calls = _checkpointed_gradients(model, torch.randn(2, 3, 3, 32, 32), torch.tensor([0, 1]))
    model.activation_checkpointing_enable()  # said once, not at every call
    notes = [r.getMessage() for r in caplog.records if "nothing to checkpoint" in r.getMessage()]
    assert len(notes) == 1 and "frozen trunk" in notes[0]
    assert calls == 0
