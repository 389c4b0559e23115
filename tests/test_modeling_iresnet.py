"""The face-recognition IResNet trunks (`trunk_type` "iresnet" / "ir", `modeling_iresnet_dcr.py`):
the config's rules, save / load exactly, the fixed input size, branches and the pipeline on top."""

from __future__ import annotations

import pytest
import torch
from tests.face_sources import randomize
from tests.models import tiny_config
from transformers import AutoModel, pipeline

from dcr_hf import DCRConfig, DCRForImageClassification, DCRImageProcessor, DCRModel, branch_model_from_trunk
from dcr_hf.configuration_dcr import IRESNET_BODIES
from dcr_hf.errors_dcr import DCRInputError

TRUNKS = [dict(trunk_type="iresnet"), dict(trunk_type="ir"), dict(trunk_type="ir", squeeze_excitation_reduction=4)]


def _tiny(**overrides) -> DCRConfig:
    return tiny_config(hidden_sizes=[8, 8, 16, 16], stem_hidden_size=8, **overrides)


@pytest.mark.parametrize("trunk", TRUNKS)
def test_save_and_load_is_exact(tmp_path, trunk):
    model = randomize(DCRModel(_tiny(**trunk)))
    model.save_pretrained(tmp_path)
    loaded = AutoModel.from_pretrained(tmp_path).eval()
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x).pooler_output, model(x).pooler_output)
    assert (tmp_path / "modeling_iresnet_dcr.py").is_file()  # travels with the folder for remote code


def test_the_layouts_differ_where_the_projects_do():
    insightface, adaface = DCRModel(_tiny(trunk_type="iresnet")).trunk, DCRModel(_tiny(trunk_type="ir")).trunk
    # A stage that keeps its width (64 -> 64 in the published nets; 8 -> 8 here) but strides.
    assert isinstance(insightface.stages[0].layers[0].shortcut.convolution, torch.nn.Conv2d)
    assert isinstance(adaface.stages[0].layers[0].shortcut, torch.nn.MaxPool2d)
    assert insightface.head.features.affine and insightface.head.features.bias is not None
    assert not adaface.head.features.affine
    assert isinstance(DCRModel(_tiny(trunk_type="ir", squeeze_excitation_reduction=4)).trunk.stages[0].layers[0]
                      .squeeze_excitation.reduce, torch.nn.Conv2d)


def test_another_input_size_is_refused_in_one_line():
    model = DCRModel(_tiny(trunk_type="iresnet")).eval()
    with pytest.raises(DCRInputError, match=r"pixel_values are 24x24; a 'iresnet' trunk takes 32x32 images only"):
        model(torch.randn(1, 3, 24, 24))


@pytest.mark.parametrize(
    "fields,match",
    [
        (dict(trunk_type="resnet", squeeze_excitation_reduction=4), "belong to trunk_type in"),
        (dict(trunk_type="paper", trunk_dropout=0.4), "belong to trunk_type in"),
        (dict(trunk_type="ir", trunk_dropout=1.0), r"trunk_dropout must be a number in \[0, 1\)"),
        (dict(trunk_type="ir", squeeze_excitation_reduction=0), "squeeze_excitation_reduction must be a positive"),
        (dict(trunk_type="ir", squeeze_excitation_reduction=32), "at least squeeze_excitation_reduction=32 wide"),
        (dict(trunk_type="iresnet", layer_type="bottleneck"), "layer_type='bottleneck' needs trunk_type='resnet'"),
    ],
)
def test_config_refuses_fields_the_trunk_does_not_have(fields, match):
    with pytest.raises(DCRInputError, match=match):
        _tiny(**fields)


def test_the_bodies_are_112_pixel_512_d_networks():
    for name, body in IRESNET_BODIES.items():
        config = DCRConfig(**body)
        assert config.image_size == 112 and config.embedding_size == 512 and config.stem_hidden_size == 64, name


def test_branches_and_the_pipeline_on_an_iresnet_trunk(tmp_path):
    trunk = randomize(DCRForImageClassification(_tiny(trunk_type="ir", squeeze_excitation_reduction=4)))
    model = branch_model_from_trunk(trunk).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        outputs = model.dcr(x, resolution=8)
    # Specialized initialization: the branch embedding is the trunk embedding at step 0.
    torch.testing.assert_close(outputs.pooler_output, outputs.trunk_embeddings)
    model.save_pretrained(tmp_path)
    DCRImageProcessor(image_size=32, channel_order="bgr").save_pretrained(tmp_path)
    extractor = pipeline("image-feature-extraction", model=str(tmp_path), trust_remote_code=True)
    import PIL.Image

    image = PIL.Image.fromarray((torch.rand(32, 32, 3) * 255).to(torch.uint8).numpy())
    features = extractor(image, resolution=8)
    processor = DCRImageProcessor.from_pretrained(tmp_path)
    with torch.no_grad():
        expected = AutoModel.from_pretrained(tmp_path).eval()(processor(image).pixel_values, resolution=8).pooler_output
    torch.testing.assert_close(torch.tensor(features).reshape(-1), expected.reshape(-1), rtol=0, atol=1e-5)


@pytest.mark.parametrize("reload", [False, True])
def test_training_step_reaches_every_trunk_parameter_but_the_fixed_batch_norm_weight(tmp_path, reload):
    model = DCRForImageClassification(_tiny(trunk_type="iresnet"))
    if reload:  # loading must not make insightface's fixed weight trainable
        model.save_pretrained(tmp_path)
        model = DCRForImageClassification.from_pretrained(tmp_path)
    model.train()
    tracked = int(model.dcr.trunk.head.features.num_batches_tracked)
    loss = model(torch.randn(4, 3, 32, 32), labels=torch.tensor([0, 1, 2, 3])).loss
    loss.backward()
    for name, parameter in model.dcr.trunk.named_parameters():
        if name == "head.features.weight":
            assert parameter.grad is None
        else:
            assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
    assert int(model.dcr.trunk.head.features.num_batches_tracked) == tracked + 1


def test_the_fixed_scale_batch_norm_is_torchs_batch_norm():
    from dcr_hf.modeling_iresnet_dcr import DCRFixedScaleBatchNorm1d

    ours, torchs = DCRFixedScaleBatchNorm1d(6), torch.nn.BatchNorm1d(6)
    randomize(torchs)
    ours.load_state_dict(torchs.state_dict())
    x = torch.randn(5, 6)
    for mode in (True, False):
        ours.train(mode), torchs.train(mode)
        torch.testing.assert_close(ours(x), torchs(x), rtol=0, atol=1e-6)
        for key, value in torchs.state_dict().items():
            torch.testing.assert_close(ours.state_dict()[key], value, rtol=0, atol=1e-6)
