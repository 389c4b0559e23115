"""The converter against small reference networks written here from REFERENCE.md's description,
with the original implementation's parameter names."""

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dcr_hf import DCRImageProcessor, DCRModel
from dcr_hf.convert_original_checkpoint import convert_original_checkpoint, main


class RefBasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class RefResNetTrunk(nn.Module):
    """conv7x7/2 - BN - ReLU - maxpool3x3/2 - layer1..4 - avgpool - fc1 (- fc2)."""

    def __init__(self, layers, widths, emb, classes, normalize):
        super().__init__()
        self.normalize = normalize
        self.conv1 = nn.Conv2d(3, 64 if widths[0] == 64 else widths[0], 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(self.conv1.out_channels)
        cin = self.conv1.out_channels
        for s, (n, w) in enumerate(zip(layers, widths), start=1):
            blocks = [RefBasicBlock(cin if i == 0 else w, w, (1 if s == 1 else 2) if i == 0 else 1) for i in range(n)]
            setattr(self, f"layer{s}", nn.Sequential(*blocks))
            cin = w
        self.fc1 = nn.Linear(cin, emb)
        self.fc2 = nn.Linear(emb, classes)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, 2, 1)
        for s in range(1, 5):
            x = getattr(self, f"layer{s}")(x)
        e = self.fc1(x.mean(dim=(2, 3)))
        return F.normalize(e, dim=-1) if self.normalize else e


class RefPaperBlock(nn.Module):
    def __init__(self, c, bn):
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c) if bn else nn.Identity()
        self.relu1 = nn.PReLU()
        self.conv2 = nn.Conv2d(c, c, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c) if bn else nn.Identity()
        self.relu2 = nn.PReLU()

    def forward(self, x):
        return self.relu2(self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x))))) + x)


class RefPaperTrunk(nn.Module):
    """conv3x3 3->32 - [BN] - PReLU; per stage: conv3x3, maxpool 2x2, blocks; avgpool - fc1 - fc2."""

    def __init__(self, layers, widths, emb, classes, bn, normalize):
        super().__init__()
        self.normalize = normalize
        self.conv1 = nn.Conv2d(3, 32, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(32) if bn else nn.Identity()
        self.relu = nn.PReLU()
        cin = 32
        for s, (n, w) in enumerate(zip(layers, widths), start=1):
            mods = [nn.Conv2d(cin, w, 3, 1, 1, bias=False), nn.MaxPool2d(2, 2)] + [RefPaperBlock(w, bn) for _ in range(n)]
            setattr(self, f"layer{s}", nn.Sequential(*mods))
            cin = w
        self.fc1 = nn.Linear(cin, emb)
        self.fc2 = nn.Linear(emb, classes)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        for s in range(1, 5):
            x = getattr(self, f"layer{s}")(x)
        e = self.fc1(x.mean(dim=(2, 3)))
        return F.normalize(e, dim=-1) if self.normalize else e


class RefBranch(nn.Module):
    def __init__(self, emb, classes):
        super().__init__()
        self.fc1 = nn.Linear(emb, emb)
        self.relu = nn.PReLU()
        self.fc2 = nn.Linear(emb, classes)


class RefDCR(nn.Module):
    def __init__(self, trunk, branches):
        super().__init__()
        self.trunk = trunk
        self.branches = branches


def _randomize_bn(module):
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
        if isinstance(m, nn.PReLU):
            m.weight.data.uniform_(0.1, 0.4)


def _save_original(tmp_path, model, ddp, criterion=None, args=None):
    state = model.state_dict()
    if ddp:
        state = {f"module.{k}": v for k, v in state.items()}
    path = tmp_path / "model_best.pth.tar"
    torch.save({"epoch": 3, "state_dict": state, "criterion": criterion or {}, "optimizer": {}, "monitor": 0.9}, path)
    config = None
    if args is not None:
        config = tmp_path / "config.json"
        config.write_text(json.dumps(args))
    return path, config


LAYERS, WIDTHS, EMB, CLASSES = [1, 2, 2, 1], [64, 32, 32, 48], 24, 7


@pytest.mark.parametrize("trunk_type, bn, ddp, with_branches", [
    ("resnet", True, True, False),
    ("resnet", True, False, True),
    ("paper", True, True, True),
    ("paper", False, False, False),
])
def test_converted_model_computes_the_original_embeddings(tmp_path, trunk_type, bn, ddp, with_branches):
    torch.manual_seed(0)
    if trunk_type == "resnet":
        trunk = RefResNetTrunk(LAYERS, WIDTHS, EMB, CLASSES, normalize=True)
    else:
        trunk = RefPaperTrunk(LAYERS, WIDTHS, EMB, CLASSES, bn=bn, normalize=True)
    branches = nn.ModuleList(RefBranch(EMB, CLASSES) for _ in range(3)) if with_branches else nn.ModuleList()
    ref = RefDCR(trunk, branches)
    _randomize_bn(ref)
    ref.eval()
    centers = torch.randn(CLASSES, EMB)
    args = {"backbone": trunk_type, "scale_list": [8, 16], "img_size": 64, "normalized_embeddings": True,
            "rgb_mean": [0.5, 0.4, 0.3], "rgb_std": [0.2, 0.25, 0.3]}
    ckpt, config = _save_original(tmp_path, ref, ddp, criterion={"centers": centers}, args=args)
    out = tmp_path / "hf"
    main(["--checkpoint", str(ckpt), "--config", str(config), "--output_dir", str(out)])
    # A folder that loads with trust_remote_code alone: model, processor and pipeline code included.
    code = {"configuration_dcr.py", "modeling_dcr.py", "image_processing_dcr.py", "pipeline_dcr.py"}
    assert code <= {path.name for path in out.iterdir()}

    model = DCRModel.from_pretrained(out).eval()
    assert model.config.trunk_type == trunk_type and model.config.use_branches == with_branches
    assert model.config.depths == LAYERS and model.config.hidden_sizes == WIDTHS
    assert model.config.low_resolution_sizes == [8, 16] and model.config.image_size == 64
    processor = DCRImageProcessor.from_pretrained(out)
    assert processor.image_mean == [0.5, 0.4, 0.3] and processor.image_size == 64
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        trunk_emb = trunk(x)
        got = model(x, resolution=16)
        torch.testing.assert_close(got.trunk_embeddings, trunk_emb, rtol=1e-4, atol=1e-5)
        if with_branches:
            expected = F.normalize(branches[2].fc1(trunk_emb), dim=-1)
            torch.testing.assert_close(got.pooler_output, expected, rtol=1e-4, atol=1e-5)
    from dcr_hf import DCRForImageClassification

    head = DCRForImageClassification.from_pretrained(out)
    torch.testing.assert_close(head.centers, centers)
    torch.testing.assert_close(head.classifier.weight, trunk.fc2.weight)


def test_unknown_and_missing_keys_are_listed(tmp_path):
    trunk = RefResNetTrunk(LAYERS, WIDTHS, EMB, CLASSES, normalize=True)
    state = trunk.state_dict()
    state = {f"trunk.{k}": v for k, v in state.items()}
    state["trunk.extra_head.weight"] = torch.zeros(1)
    path = tmp_path / "a.pth.tar"
    torch.save({"state_dict": state}, path)
    with pytest.raises(KeyError, match="trunk.extra_head.weight"):
        convert_original_checkpoint(path, tmp_path / "out")
    del state["trunk.extra_head.weight"]
    del state["trunk.layer2.1.conv2.weight"]
    state["trunk.layer2.1.conv2.weight"] = state["trunk.layer2.1.conv1.weight"]
    del state["trunk.layer2.0.bn2.weight"]
    torch.save({"state_dict": state}, path)
    with pytest.raises(KeyError, match="layer.1.normalization.weight"):
        convert_original_checkpoint(path, tmp_path / "out")


def test_pickles_are_loaded_weights_only(tmp_path):
    import argparse

    path = tmp_path / "evil.pth.tar"
    # any non-tensor global in the pickle is refused rather than executed
    torch.save({"state_dict": {"trunk.fc1.weight": torch.zeros(2, 2)}, "extra": argparse.Namespace(a=1)}, path)
    with pytest.raises(Exception, match="(?i)weights_only|unsupported|global"):
        convert_original_checkpoint(path, tmp_path / "out")


def test_missing_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pth.tar"):
        convert_original_checkpoint(tmp_path / "nope.pth.tar", tmp_path / "out")
