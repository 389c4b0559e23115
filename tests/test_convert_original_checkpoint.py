"""The converter against reference networks written here after the original implementation's
networks and checkpoint format, with its parameter names, saved the way the original saves them: `torch.save` of `{epoch, state_dict (DDP "module." prefix), criterion,
optimizer, monitor}` and `config.json` = `json.dumps(vars(args))` of an argparse namespace with the
original's argument types (tuple defaults become JSON lists)."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import pickle
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModel

from dcr_hf import DCRForImageClassification, DCRImageProcessor
from dcr_hf.convert_original_checkpoint import CONVERTED_PROCESSOR_SETTINGS, convert_original_checkpoint, main
from dcr_hf.original import ConversionError
from tests.hub_standin import HubStandIn

IMAGE, SCALES, CLASSES, EMBEDDING, MID = 32, [8, 12], 6, 24, 20
MEAN, STD = [0.45, 0.4, 0.35], [0.22, 0.25, 0.3]


# --------------------------------------------------------------------------------------------
# Reference networks with the original's names
# --------------------------------------------------------------------------------------------


def conv3x3(cin, cout, stride=1):
    return nn.Conv2d(cin, cout, 3, stride, 1, bias=False)


class BasicBlock(nn.Module):
    """conv1-bn1-relu-conv2-bn2 (+ downsample.0/1 when the shape changes), add, relu."""

    expansion = 1

    def __init__(self, cin, planes, stride):
        super().__init__()
        self.conv1, self.bn1 = conv3x3(cin, planes, stride), nn.BatchNorm2d(planes)
        self.conv2, self.bn2 = conv3x3(planes, planes), nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or cin != planes:
            self.downsample = nn.Sequential(nn.Conv2d(cin, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x):
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class Bottleneck(nn.Module):
    """torchvision's (v1.5): conv1 1x1-bn1-relu-conv2 3x3 (stride)-bn2-relu-conv3 1x1 (4x)-bn3, add, relu."""

    expansion = 4

    def __init__(self, cin, planes, stride):
        super().__init__()
        cout = planes * 4
        self.conv1, self.bn1 = nn.Conv2d(cin, planes, 1, bias=False), nn.BatchNorm2d(planes)
        self.conv2, self.bn2 = conv3x3(planes, planes, stride), nn.BatchNorm2d(planes)
        self.conv3, self.bn3 = nn.Conv2d(planes, cout, 1, bias=False), nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn3(self.conv3(F.relu(self.bn2(self.conv2(out)))))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


def add_resnet_layers(module: nn.Module, block, layers, planes, stem) -> int:
    """conv1 7x7/2 + bn1, then layer1..4 (strides 1/2/2/2), as attributes of `module`; returns the
    output width."""
    module.conv1, module.bn1 = nn.Conv2d(3, stem, 7, 2, 3, bias=False), nn.BatchNorm2d(stem)
    cin = stem
    for s, (n, p) in enumerate(zip(layers, planes), start=1):
        blocks = []
        for i in range(n):
            blocks.append(block(cin, p, (1 if s == 1 else 2) if i == 0 else 1))
            cin = p * block.expansion
        setattr(module, f"layer{s}", nn.Sequential(*blocks))
    return cin


def resnet_features(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """conv1 - bn1 - relu - maxpool 3x3/2 - layer1..4."""
    x = F.max_pool2d(F.relu(module.bn1(module.conv1(x))), 3, 2, 1)
    for s in range(1, 5):
        x = getattr(module, f"layer{s}")(x)
    return x


class ResNetBody(nn.Module):
    """A torchvision ResNet without its classifier."""

    def __init__(self, block, layers, planes, stem):
        super().__init__()
        self.out_features = add_resnet_layers(self, block, layers, planes, stem)

    def forward(self, x):
        return resnet_features(self, x)


class DCRTrunk(nn.Module):
    """The resnet-style trunk: the layers directly under the trunk, then fc1 / fc2."""

    def __init__(self, layers, widths, stem, normalized):
        super().__init__()
        self.normalized = normalized
        width = add_resnet_layers(self, BasicBlock, layers, widths, stem)
        self.fc1, self.fc2 = nn.Linear(width, EMBEDDING), nn.Linear(EMBEDDING, CLASSES)

    def forward(self, x):
        e = self.fc1(resnet_features(self, x).mean(dim=(2, 3)))
        return F.normalize(e) if self.normalized else e


class TruncatedResNet(nn.Module):
    """A torchvision ResNet-N body under `body`, then fc1 / fc2."""

    def __init__(self, block, layers, planes, stem, normalized):
        super().__init__()
        self.normalized = normalized
        self.body = ResNetBody(block, layers, planes, stem)
        self.fc1, self.fc2 = nn.Linear(self.body.out_features, EMBEDDING), nn.Linear(EMBEDDING, CLASSES)

    def forward(self, x):
        e = self.fc1(self.body(x).mean(dim=(2, 3)))
        return F.normalize(e) if self.normalized else e


class PaperBlock(nn.Module):
    """conv1-[bn1]-relu1 (PReLU per channel)-conv2-[bn2], add, relu2 (PReLU per channel)."""

    def __init__(self, c, bn):
        super().__init__()
        self.conv1, self.relu1, self.conv2, self.relu2 = conv3x3(c, c), nn.PReLU(c), conv3x3(c, c), nn.PReLU(c)
        self.bn1 = nn.BatchNorm2d(c) if bn else nn.Identity()  # Identity: no keys, as without BN there
        self.bn2 = nn.BatchNorm2d(c) if bn else nn.Identity()

    def forward(self, x):
        return self.relu2(self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x))))) + x)


class NewDCRTrunk(nn.Module):
    """The paper-style trunk: conv1 3x3 3->32 - [bn1] - relu (PReLU(32)); layer{s} = Sequential(conv
    3x3 to the stage width, maxpool 2x2/2, blocks at index 2..); average pool - fc1 - fc2."""

    def __init__(self, layers, widths, bn, normalized):
        super().__init__()
        self.normalized = normalized
        self.conv1, self.relu = conv3x3(3, 32), nn.PReLU(32)
        self.bn1 = nn.BatchNorm2d(32) if bn else nn.Identity()
        cin = 32
        for s, (n, w) in enumerate(zip(layers, widths), start=1):
            setattr(self, f"layer{s}", nn.Sequential(conv3x3(cin, w), nn.MaxPool2d(2, 2), *[PaperBlock(w, bn) for _ in range(n)]))
            cin = w
        self.fc1, self.fc2 = nn.Linear(cin, EMBEDDING), nn.Linear(EMBEDDING, CLASSES)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        for s in range(1, 5):
            x = getattr(self, f"layer{s}")(x)
        e = self.fc1(x.mean(dim=(2, 3)))
        return F.normalize(e) if self.normalized else e


class DCRBranch(nn.Module):
    def __init__(self, normalized):
        super().__init__()
        self.normalized = normalized
        self.fc1, self.relu, self.fc2 = nn.Linear(EMBEDDING, MID), nn.PReLU(), nn.Linear(MID, CLASSES)

    def forward(self, trunk_embedding):
        e = self.fc1(trunk_embedding)
        return F.normalize(e) if self.normalized else e


class DCR(nn.Module):
    """The original's model: a trunk and, in both stages, one branch per resolution (HR + scales)."""

    def __init__(self, trunk, normalized):
        super().__init__()
        self.trunk = trunk
        self.branches = nn.ModuleList(DCRBranch(normalized) for _ in range(len(SCALES) + 1))


# Each case: backbone, the original's arguments beyond it, and the reference trunk.
CASES = {
    "DCRTrunk": ("DCRTrunk", ["--layers", "1", "2", "2", "1"],
                 lambda n: DCRTrunk([1, 2, 2, 1], [16, 16, 24, 32], 16, n)),
    "NewDCRTrunk": ("NewDCRTrunk", ["--layers", "1", "2", "1", "1"],
                    lambda n: NewDCRTrunk([1, 2, 1, 1], [16, 24, 24, 32], bn=True, normalized=n)),
    "NewDCRTrunk-wobn": ("NewDCRTrunk", ["--layers", "1", "1", "2", "1", "--wobn"],
                         lambda n: NewDCRTrunk([1, 1, 2, 1], [16, 16, 24, 32], bn=False, normalized=n)),
    "ResNet-18": ("ResNet-18", [], lambda n: TruncatedResNet(BasicBlock, [2, 2, 2, 2], [8, 16, 16, 24], 8, n)),
    "ResNet-50": ("ResNet-50", [], lambda n: TruncatedResNet(Bottleneck, [3, 4, 6, 3], [4, 4, 8, 8], 8, n)),
}


# --------------------------------------------------------------------------------------------
# Saving as the original does
# --------------------------------------------------------------------------------------------


def original_parser() -> argparse.ArgumentParser:
    """The original's argument types (a subset of its flags, unrelated ones included)."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-root", default="/data/faces")
    parser.add_argument("--stage", choices=["trunk", "branch"], default="trunk")
    parser.add_argument("--backbone", default="DCRTrunk")
    parser.add_argument("--layers", nargs="+", type=int, default=[1, 2, 5, 3])
    parser.add_argument("--out-channels", type=int, default=512)
    parser.add_argument("--mid-channels", type=int, default=512)
    parser.add_argument("--normalized-embeddings", action="store_true")
    parser.add_argument("--wobn", action="store_true")
    parser.add_argument("--scale-list", nargs="+", type=int, default=[8, 12, 16, 20])
    parser.add_argument("--img-size", nargs=2, type=int, default=(120, 120))
    parser.add_argument("--rgb-mean", nargs=3, type=float, default=[0.5, 0.5, 0.5])
    parser.add_argument("--rgb-std", nargs=3, type=float, default=[0.5, 0.5, 0.5])
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--optimizer", default="adam")
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--aug-plus", action="store_true")
    parser.add_argument("--trunkloss-miner", default=None)
    parser.add_argument("--trunkloss-miningin", default="center")
    return parser


def original_arguments(backbone: str, stage: str, extra: list[str], normalized: bool) -> dict:
    argv = ["--stage", stage, "--backbone", backbone, "--out-channels", str(EMBEDDING), "--mid-channels", str(MID),
            "--scale-list", *map(str, SCALES), "--rgb-mean", *map(str, MEAN), "--rgb-std", *map(str, STD),
            "--lr", "0.01", "--aug-plus", *extra]
    if normalized:
        argv.append("--normalized-embeddings")
    namespace = vars(original_parser().parse_args(argv))
    namespace["img_size"] = (IMAGE, IMAGE)  # the tuple default's type, at our test size
    return namespace


def _randomize(model: nn.Module) -> None:
    """Batch-norm statistics and affine terms, PReLU slopes: values a trained network has."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.3, 0.3)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
                m.num_batches_tracked.fill_(17)
            elif isinstance(m, nn.PReLU):
                m.weight.uniform_(0.05, 0.5)


def save_original(folder: Path, model: DCR, stage: str, arguments: dict | None, criterion: dict | None = None) -> Path:
    """`model_best.pth.tar` (+ `config.json` when `arguments`) as the original writes them."""
    folder.mkdir(parents=True, exist_ok=True)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    model.trunk(torch.randn(2, 3, IMAGE, IMAGE)).sum().backward()
    optimizer.step()  # a real Adam state: step counts, moments
    if criterion is None:
        criterion = ({"center.centers": torch.randn(CLASSES, EMBEDDING)} if stage == "trunk"
                     else {f"centers.{k}.centers": torch.randn(CLASSES, MID) for k in range(len(model.branches))})
    state_dict = {f"module.{k}": v for k, v in model.state_dict().items()}
    path = folder / "model_best.pth.tar"
    torch.save({"epoch": 42, "state_dict": state_dict, "criterion": criterion, "optimizer": optimizer.state_dict(),
                "monitor": 0.913}, path)
    if arguments is not None:
        (folder / "config.json").write_text(json.dumps(arguments, indent=4))
    return path


def make_original(tmp_path: Path, case: str, stage: str, normalized: bool = True, seed: int = 0):
    torch.manual_seed(seed)
    backbone, extra, build = CASES[case]
    model = DCR(build(normalized), normalized)
    _randomize(model)
    model.eval()
    arguments = original_arguments(backbone, stage, extra, normalized)
    path = save_original(tmp_path / "original", model, stage, arguments)
    return model, path, path.parent / "config.json"


@contextlib.contextmanager
def one_line_error(match: str):
    """A `ConversionError` matching `match`, in one line."""
    with pytest.raises(ConversionError, match=match) as raised:
        yield
    assert "\n" not in str(raised.value), str(raised.value)


# --------------------------------------------------------------------------------------------
# Every trunk kind, both stages: the converted model computes the original's embeddings
# --------------------------------------------------------------------------------------------

# ResNet-N twice: a basic (18) and a bottleneck (50) depth. The paper trunk without batch norm
# also runs without normalized embeddings.
KINDS = [("DCRTrunk", True), ("NewDCRTrunk", True), ("NewDCRTrunk-wobn", False), ("ResNet-18", True), ("ResNet-50", True)]


@pytest.mark.parametrize("stage", ["trunk", "branch"])
@pytest.mark.parametrize("case, normalized", KINDS, ids=[k for k, _ in KINDS])
def test_converted_model_computes_the_original_embeddings(tmp_path, case, normalized, stage, caplog):
    reference, checkpoint, config = make_original(tmp_path, case, stage, normalized)
    output = tmp_path / "converted"
    caplog.set_level(logging.WARNING, logger="dcr_hf")
    main(["--checkpoint", str(checkpoint), "--config", str(config), "--output_dir", str(output)])
    # A folder that loads with trust_remote_code alone: model, processor and pipeline code included.
    code = {"configuration_dcr.py", "modeling_dcr.py", "image_processing_dcr.py", "pipeline_dcr.py"}
    assert code <= {path.name for path in output.iterdir()}
    dropped = [r.getMessage() for r in caplog.records if "dropping" in r.getMessage()]
    assert len(dropped) == (1 if stage == "trunk" else 0), dropped
    if stage == "trunk":
        assert "3 untrained branches" in dropped[0]

    model = AutoModel.from_pretrained(output).eval()
    config = model.config
    assert config.use_branches == (stage == "branch")
    assert config.trunk_type == ("paper" if case.startswith("NewDCRTrunk") else "resnet")
    assert config.layer_type == ("bottleneck" if case == "ResNet-50" else "basic")
    assert config.use_batch_norm == (case != "NewDCRTrunk-wobn")
    assert config.normalize_embeddings == normalized
    assert config.low_resolution_sizes == SCALES and config.image_size == IMAGE and config.num_labels == CLASSES
    processor = DCRImageProcessor.from_pretrained(output)
    assert processor.image_mean == MEAN and processor.image_std == STD and processor.image_size == IMAGE
    # The original's LR operator, written into the folder: PIL Lanczos down, bilinear up, in 8 bits.
    assert (processor.downsample_interpolation, processor.upsample_interpolation) == ("lanczos", "bilinear")
    saved = json.loads((output / "preprocessor_config.json").read_text())
    assert saved["downsample_interpolation"] == "lanczos"

    x = torch.randn(4, 3, IMAGE, IMAGE)
    with torch.no_grad():
        trunk_embedding = reference.trunk(x)
        if stage == "trunk":
            pairs = [(model(x).pooler_output, trunk_embedding)]
        else:
            resolutions = [None, *SCALES]  # branch 0 = HR, branch i = the i-th scale
            pairs = [(model(x, resolution=r).pooler_output, branch(trunk_embedding))
                     for r, branch in zip(resolutions, reference.branches)]
    difference = max(float((got - expected).abs().max()) for got, expected in pairs)
    print(f"\nmax embedding difference {case} / {stage}: {difference:.3g}")
    assert difference < 1e-5

    head = DCRForImageClassification.from_pretrained(output)
    criterion = torch.load(checkpoint, weights_only=True)["criterion"]
    torch.testing.assert_close(head.classifier.weight, reference.trunk.fc2.weight, rtol=0, atol=0)
    if stage == "trunk":
        torch.testing.assert_close(head.centers, criterion["center.centers"], rtol=0, atol=0)
    else:
        for k, branch in enumerate(reference.branches):
            torch.testing.assert_close(head.branch_centers[k], criterion[f"centers.{k}.centers"], rtol=0, atol=0)
            torch.testing.assert_close(head.branch_classifiers[k].classifier.weight, branch.fc2.weight, rtol=0, atol=0)
            torch.testing.assert_close(head.branch_classifiers[k].activation.weight, branch.relu.weight, rtol=0, atol=0)


@pytest.mark.slow
def test_converted_folder_loads_as_remote_code_without_dcr_hf(tmp_path):
    """The converted paper-style branch model (channel-wise PReLUs) through `trust_remote_code` only."""
    from tests.test_hub_loading import _run_without_dcr_hf

    reference, checkpoint, config = make_original(tmp_path, "NewDCRTrunk", "branch")
    convert_original_checkpoint(checkpoint, tmp_path / "converted", config)
    x = torch.randn(2, 3, IMAGE, IMAGE)
    torch.save(x, tmp_path / "x.pt")
    with torch.no_grad():
        expected = reference.branches[2](reference.trunk(x))
    output = _run_without_dcr_hf(
        f"""
        import torch
        from transformers import AutoModel
        model = AutoModel.from_pretrained({str(tmp_path / "converted")!r}, trust_remote_code=True).eval()
        with torch.no_grad():
            torch.save(model(torch.load({str(tmp_path / "x.pt")!r}), resolution=12).pooler_output, {str(tmp_path / "got.pt")!r})
        print("ok")
        """,
        cwd=tmp_path,
    )
    assert "ok" in output
    torch.testing.assert_close(torch.load(tmp_path / "got.pt"), expected, rtol=0, atol=1e-5)


# --------------------------------------------------------------------------------------------
# config.json and the stage
# --------------------------------------------------------------------------------------------


def test_config_json_keys_are_read_and_the_rest_ignored(tmp_path):
    _, checkpoint, config = make_original(tmp_path, "DCRTrunk", "trunk")
    arguments = json.loads(config.read_text())
    assert arguments["img_size"] == [IMAGE, IMAGE] and isinstance(arguments["scale_list"], list)
    arguments["img_size"] = IMAGE  # a hand-edited file holds an int
    config.write_text(json.dumps(arguments))
    model = convert_original_checkpoint(checkpoint, tmp_path / "out", config)
    assert model.config.image_size == IMAGE


def test_processor_settings_of_converted_checkpoints_are_one_dict(tmp_path, monkeypatch):
    _, checkpoint, config = make_original(tmp_path, "DCRTrunk", "trunk")
    monkeypatch.setitem(CONVERTED_PROCESSOR_SETTINGS, "upsample_interpolation", "bicubic")
    convert_original_checkpoint(checkpoint, tmp_path / "out", config)
    assert DCRImageProcessor.from_pretrained(tmp_path / "out").upsample_interpolation == "bicubic"


def test_without_config_a_checkpoint_with_branches_needs_the_stage(tmp_path, caplog):
    reference, checkpoint, _ = make_original(tmp_path, "ResNet-18", "branch")
    with one_line_error(r"holds 3 branches, which the original keeps in both stages.*--stage"):
        convert_original_checkpoint(checkpoint, tmp_path / "out")
    # --stage alone: the LR scales are unknown, and the default four do not fit three branches.
    with one_line_error(r"holds 3 branches, but the LR scales \[8, 12, 16, 20\].*scale_list"):
        convert_original_checkpoint(checkpoint, tmp_path / "out", stage="branch")
    # A hand-written config.json without `stage`: --stage says it; what the file lacks is assumed, said once.
    hand_written = tmp_path / "config.json"
    hand_written.write_text(json.dumps({"scale_list": SCALES, "img_size": IMAGE}))
    caplog.set_level(logging.WARNING, logger="dcr_hf")
    caplog.clear()
    model = convert_original_checkpoint(checkpoint, tmp_path / "out", hand_written, stage="branch")
    assert model.config.use_branches and model.config.normalize_embeddings
    assumed = [r.getMessage() for r in caplog.records if "assuming" in r.getMessage()]
    assert assumed == [
        f"{hand_written} does not say what the original trained with; assuming normalized_embeddings=True, "
        "rgb_mean=[0.5, 0.5, 0.5], rgb_std=[0.5, 0.5, 0.5]."
    ]


def test_stage_flag_contradicting_config_json_is_refused(tmp_path):
    _, checkpoint, config = make_original(tmp_path, "DCRTrunk", "trunk")
    with one_line_error(r"--stage branch contradicts .*config.json: stage='trunk'"):
        convert_original_checkpoint(checkpoint, tmp_path / "out", config, stage="branch")


def test_missing_centers_are_warned_about(tmp_path, caplog):
    torch.manual_seed(0)
    model = DCR(CASES["DCRTrunk"][2](True), True).eval()
    checkpoint = save_original(tmp_path, model, "trunk", original_arguments("DCRTrunk", "trunk", CASES["DCRTrunk"][1], True),
                               criterion={})
    caplog.set_level(logging.WARNING, logger="dcr_hf")
    convert_original_checkpoint(checkpoint, tmp_path / "out", tmp_path / "config.json")
    assert any("no class centers ['center.centers']" in r.getMessage() for r in caplog.records)


# --------------------------------------------------------------------------------------------
# Bad input: one line naming the file, the key or value, and what was expected
# --------------------------------------------------------------------------------------------


def _resave(checkpoint: Path, edit) -> None:
    saved = torch.load(checkpoint, weights_only=True)
    edit(saved)
    torch.save(saved, checkpoint)


def test_keys_of_no_known_trunk_name_the_kinds_tried_and_the_keys(tmp_path):
    vgg = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3))
    torch.save({"epoch": 1, "state_dict": {f"module.features.{k}": v for k, v in vgg.state_dict().items()}},
               tmp_path / "vgg.pth.tar")
    with pytest.raises(ConversionError) as raised:
        convert_original_checkpoint(tmp_path / "vgg.pth.tar", tmp_path / "out")
    message = str(raised.value)
    assert "fit no known trunk" in message and "features.0.weight" in message and "\n" not in message
    for kind in ("DCRTrunk (resnet-style)", "NewDCRTrunk (paper-style)", "ResNet-N (torchvision body)"):
        assert kind in message

    _, checkpoint, config = make_original(tmp_path, "DCRTrunk", "trunk")
    _resave(checkpoint, lambda saved: saved["state_dict"].update({"module.trunk.extra_head.weight": torch.zeros(2)}))
    with one_line_error(r"keys none of them knows \(1\): \['trunk.extra_head.weight'\]"):
        convert_original_checkpoint(checkpoint, tmp_path / "out", config)


@pytest.mark.parametrize(
    "case, edit, match",
    [
        ("DCRTrunk", {"layers": [1, 2, 5, 3]}, r"layers=\[1, 2, 5, 3\], but the weights in .* hold \[1, 2, 2, 1\] blocks"),
        ("DCRTrunk", {"backbone": "NewDCRTrunk"}, r"backbone='NewDCRTrunk' names a NewDCRTrunk .* are a DCRTrunk"),
        ("ResNet-18", {"backbone": "ResNet-50"}, r"'ResNet-50' has bottleneck blocks \[3, 4, 6, 3\].* basic blocks \[2, 2, 2, 2\]"),
        ("ResNet-18", {"backbone": "ResNet-34"}, r"'ResNet-34' has basic blocks \[3, 4, 6, 3\].* basic blocks \[2, 2, 2, 2\]"),
        ("NewDCRTrunk", {"wobn": True}, r"wobn=true, but the weights .* have batch norm"),
        ("NewDCRTrunk-wobn", {"wobn": False}, r"wobn=false, but the weights .* have no batch norm"),
        ("DCRTrunk", {"out_channels": 512}, r"out_channels=512, but .* embed to 24"),
        ("DCRTrunk", {"mid_channels": 512}, r"mid_channels=512, but .* 20-wide branches"),
        ("DCRTrunk", {"scale_list": [8, 12, 16, 20]}, r"scale_list=\[8, 12, 16, 20\] means 5 branches .* hold 3"),
        ("DCRTrunk", {"img_size": [120, 100]}, r"img_size=\[120, 100\], expected a square size"),
        ("DCRTrunk", {"backbone": "VGG-16"}, r"backbone='VGG-16', expected one of \('DCRTrunk'"),
        ("DCRTrunk", {"stage": "both"}, r"stage='both', expected one of \('trunk', 'branch'\)"),
        ("DCRTrunk", {"scale_list": [8, 32]}, r"low_resolution_sizes holds 32"),
        ("DCRTrunk", {"rgb_std": [0.5, 0.0, 0.5]}, r"rgb_std=\[0.5, 0.0, 0.5\], expected a list of 3 positive numbers"),
        ("DCRTrunk", {"layers": "1 2 2 1"}, r"layers='1 2 2 1', expected a list of positive block counts"),
    ],
    ids=["layers", "backbone-kind", "resnet-depth-block", "resnet-depth", "wobn-with-bn", "wobn-without-bn",
         "out_channels", "mid_channels", "scale_list", "img_size", "backbone-name", "stage-name", "scale-too-large",
         "rgb_std", "layers-type"],
)
def test_config_json_contradicting_the_weights_names_both(tmp_path, case, edit, match):
    _, checkpoint, config = make_original(tmp_path, case, "branch")
    arguments = json.loads(config.read_text())
    arguments.update(edit)
    config.write_text(json.dumps(arguments))
    with one_line_error(match):
        convert_original_checkpoint(checkpoint, tmp_path / "out", config)
    assert not (tmp_path / "out").exists()  # refused before anything is written


def test_non_finite_weights_name_the_tensor(tmp_path):
    _, checkpoint, config = make_original(tmp_path, "NewDCRTrunk", "trunk")
    _resave(checkpoint, lambda saved: saved["state_dict"]["module.trunk.layer2.3.conv1.weight"].view(-1)[:2].fill_(float("nan")))
    with one_line_error(r"tensor module.trunk.layer2.3.conv1.weight \(state_dict\) holds 2 NaN/inf"):
        convert_original_checkpoint(checkpoint, tmp_path / "out", config)
    _resave(checkpoint, lambda saved: saved["state_dict"]["module.trunk.layer2.3.conv1.weight"].zero_())
    _resave(checkpoint, lambda saved: saved["criterion"]["center.centers"].view(-1)[0].fill_(float("inf")))
    with one_line_error(r"tensor center.centers \(criterion\) holds 1 NaN/inf"):
        convert_original_checkpoint(checkpoint, tmp_path / "out", config)


def test_missing_and_misshapen_weights_are_named_as_in_the_original(tmp_path):
    _, checkpoint, config = make_original(tmp_path, "ResNet-50", "trunk")
    _resave(checkpoint, lambda saved: saved["state_dict"].pop("module.trunk.body.layer3.2.bn3.running_var"))
    with one_line_error(r"lacks weights .*ResNet-N .*\['trunk.body.layer3.2.bn3.running_var'\]"):
        convert_original_checkpoint(checkpoint, tmp_path / "out", config)
    _resave(checkpoint, lambda saved: saved["state_dict"].update(
        {"module.trunk.body.layer3.2.bn3.running_var": torch.ones(7)}))
    with one_line_error(r"trunk.body.layer3.2.bn3.running_var has shape \(7,\).* needs \(32,\)"):
        convert_original_checkpoint(checkpoint, tmp_path / "out", config)


def test_empty_truncated_and_unsafe_checkpoints_name_the_file(tmp_path):
    _, checkpoint, config = make_original(tmp_path, "DCRTrunk", "trunk")
    data = checkpoint.read_bytes()
    empty, truncated = tmp_path / "empty.pth.tar", tmp_path / "truncated.pth.tar"
    empty.write_bytes(b"")
    truncated.write_bytes(data[: len(data) // 2])
    with one_line_error(r"empty.pth.tar is empty \(0 bytes\)"):
        convert_original_checkpoint(empty, tmp_path / "out", config)
    with one_line_error(r"truncated.pth.tar is truncated or corrupt \(PytorchStreamReader failed"):
        convert_original_checkpoint(truncated, tmp_path / "out", config)
    with one_line_error(r"nope.pth.tar does not exist"):
        convert_original_checkpoint(tmp_path / "nope.pth.tar", tmp_path / "out", config)
    unsafe = tmp_path / "unsafe.pth.tar"
    torch.save({"state_dict": {"trunk.fc1.weight": torch.zeros(2, 2)}, "args": argparse.Namespace(lr=0.1)}, unsafe)
    with one_line_error(r"unsafe.pth.tar is a pickle that would import argparse.Namespace \(.*weights_only=True refused"):
        convert_original_checkpoint(unsafe, tmp_path / "out", config)
    bad_json = tmp_path / "bad.json"
    bad_json.write_text('{"stage": "trunk",\n "backbone": }')
    with one_line_error(r"bad.json line 2: not valid JSON"):
        convert_original_checkpoint(checkpoint, tmp_path / "out", bad_json)


class _RunsCode:
    """Unpickling calls `os.system`: what a crafted checkpoint does."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy-pickle"])
def test_a_folder_random_bytes_and_a_pickle_that_runs_code_each_get_their_own_message(tmp_path, legacy):
    _, _, config = make_original(tmp_path, "DCRTrunk", "trunk")
    folder, noise, crafted = tmp_path / "model_best.pth.tar", tmp_path / "noise.pth.tar", tmp_path / "crafted.pth.tar"
    folder.mkdir()
    noise.write_bytes(bytes(range(7, 200)) * 4)
    marker = tmp_path / "ran"
    if legacy:
        crafted.write_bytes(pickle.dumps({"state_dict": _RunsCode(marker)}, protocol=4))
    else:
        torch.save({"state_dict": _RunsCode(marker)}, crafted)
    with one_line_error(f"^checkpoint {re.escape(str(folder))} is a folder, not a file; expected the original's checkpoint "
                        r"file \(model_best.pth.tar or checkpoint.pth.tar\).$"):
        convert_original_checkpoint(folder, tmp_path / "out", config)
    with one_line_error(f"^checkpoint {re.escape(str(noise))} is neither a torch.save archive nor a pickle "
                        r"\(it starts with bytes 07 08 09 0a 0b 0c 0d 0e\).$"):
        convert_original_checkpoint(noise, tmp_path / "out", config)
    with one_line_error(f"^checkpoint {re.escape(str(crafted))} is a pickle that would import (posix|os).system "
                        r"\(to run code or build objects other than tensors\): torch.load with weights_only=True "
                        "refused it, and nothing in it was run.$"):
        convert_original_checkpoint(crafted, tmp_path / "out", config)
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_command_line_prints_one_error_line_and_exits_2(tmp_path, capsys):
    empty = tmp_path / "empty.pth.tar"
    empty.write_bytes(b"")
    with pytest.raises(SystemExit) as raised:
        main(["--checkpoint", str(empty), "--output", str(tmp_path / "out")])
    assert raised.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: ") and "Traceback" not in err
    assert err.splitlines()[-1].endswith(f"error: checkpoint {empty} is empty (0 bytes).")


@pytest.mark.slow
def test_module_command_converts_and_fails_without_a_traceback(tmp_path):
    _, checkpoint, config = make_original(tmp_path, "DCRTrunk", "branch")
    command = [sys.executable, "-m", "dcr_hf.convert_original_checkpoint", "--checkpoint", str(checkpoint)]
    env = {"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    done = subprocess.run([*command, "--output", str(tmp_path / "out")], capture_output=True, text=True, env=env)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.startswith("usage: ") and ": error: checkpoint" in done.stderr.splitlines()[-1]
    done = subprocess.run([*command, "--config", str(config), "--output", str(tmp_path / "out")],
                          capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert "Converted a resnet trunk + branches checkpoint (6 classes)" in done.stdout


def test_push_sends_the_converted_folder_and_a_card_privately_in_one_commit(tmp_path, monkeypatch, capsys):
    """Against a local stand-in for the Hub's HTTP API: the repo is checked before the conversion,
    created private, and gets the whole folder in one commit with the token."""
    _, checkpoint, config = make_original(tmp_path, "DCRTrunk", "trunk")
    output = tmp_path / "converted"
    with HubStandIn() as hub:
        hub.patch(monkeypatch)
        main(["--checkpoint", str(checkpoint), "--config", str(config), "--output_dir", str(output), "--push_to_hub",
              "--hub_model_id", "org/dcr-trunk", "--hub_private_repo", "--hub_token", hub.token, "--hub_revision", "v1"])
    sent = hub.api_requests()
    assert [r.path for r in sent[:5]] == ["/api/whoami-v2", "/api/repos/create", "/api/models/org/dcr-trunk/auth-check/write",
                                          "/api/models/org/dcr-trunk", "/api/models/org/dcr-trunk/branch/v1"]
    assert sent[1].json()["visibility"] == "private" and hub.repos[("model", "org/dcr-trunk")]["private"] is True
    assert {r.headers.get("authorization") for r in sent} == {f"Bearer {hub.token}"}
    [commit] = hub.commits
    assert commit.revision == "v1"
    assert set(commit.files) == {p.name for p in output.iterdir()} >= {"config.json", "model.safetensors", "README.md",
                                                                      "preprocessor_config.json", "modeling_dcr.py"}
    assert all(commit.files[name] == (output / name).read_bytes() for name in commit.files)


def test_a_bad_token_stops_the_conversion_before_it_starts(tmp_path, monkeypatch, capsys):
    _, checkpoint, config = make_original(tmp_path, "DCRTrunk", "trunk")
    with HubStandIn() as hub:
        hub.patch(monkeypatch)
        with pytest.raises(SystemExit) as raised:
            main(["--checkpoint", str(checkpoint), "--config", str(config), "--output_dir", str(tmp_path / "out"),
                  "--push_to_hub", "--hub_model_id", "org/x", "--hub_token", "hf_wrong"])
    assert raised.value.code == 2 and not (tmp_path / "out").exists() and not hub.commits
    assert "did not accept the token: Invalid user token." in capsys.readouterr().err.splitlines()[-1]


def test_an_output_folder_holding_a_model_is_replaced_only_when_asked(tmp_path):
    _, checkpoint, config = make_original(tmp_path, "DCRTrunk", "trunk")
    convert_original_checkpoint(checkpoint, tmp_path / "out", config)
    before = (tmp_path / "out" / "model.safetensors").read_bytes()
    with one_line_error("already holds a model .*pass --overwrite_output_dir"):
        convert_original_checkpoint(checkpoint, tmp_path / "out", config)
    assert (tmp_path / "out" / "model.safetensors").read_bytes() == before
    convert_original_checkpoint(checkpoint, tmp_path / "out", config, overwrite=True)
