"""Stand-ins for the source networks the face-backbone converter reads, rebuilt in the tests from
the public layouts (not imported from those projects, which the test environment does not have):

- `InsightfaceIResNet`: insightface arcface_torch's `backbones/iresnet.py` (`IBasicBlock`,
  `IResNet`), same module names and forward, so its `state_dict()` has arcface_torch's keys;
- `AdafaceBackbone`: AdaFace's `net.py` `Backbone` with `BasicBlockIR` / `BasicBlockIRSE`
  (`ir`, `ir_se` modes), same module names, returning `(embedding / norm, norm)`.

`randomize` gives every parameter and batch-norm statistic random values (so each one matters to
the output); the files are then written as those projects write them (`save_*`).
"""

from __future__ import annotations

import collections

import torch
from torch import nn

IRESNET_DEPTHS = {"r18": [2, 2, 2, 2], "r34": [3, 4, 6, 3], "r50": [3, 4, 14, 3], "r100": [3, 13, 30, 3], "r200": [6, 26, 60, 6]}
ADAFACE_NETWORKS = {
    "ir_18": ([2, 2, 2, 2], "ir"), "ir_34": ([3, 4, 6, 3], "ir"), "ir_50": ([3, 4, 14, 3], "ir"),
    "ir_101": ([3, 13, 30, 3], "ir"), "ir_se_50": ([3, 4, 14, 3], "ir_se"),
}


# -- insightface arcface_torch ----------------------------------------------------------------


class IBasicBlock(nn.Module):
    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(inplanes, eps=1e-05)
        self.conv1 = nn.Conv2d(inplanes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes, eps=1e-05)
        self.prelu = nn.PReLU(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes, eps=1e-05)
        self.downsample = downsample

    def forward(self, x):
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        identity = self.downsample(x) if self.downsample is not None else x
        return out + identity


class InsightfaceIResNet(nn.Module):
    def __init__(self, layers: list[int], num_features: int = 512, dropout: float = 0.0):
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64, eps=1e-05)
        self.prelu = nn.PReLU(64)
        self.layer1 = self._make_layer(64, layers[0])
        self.layer2 = self._make_layer(128, layers[1])
        self.layer3 = self._make_layer(256, layers[2])
        self.layer4 = self._make_layer(512, layers[3])
        self.bn2 = nn.BatchNorm2d(512, eps=1e-05)
        self.dropout = nn.Dropout(p=dropout, inplace=True)
        self.fc = nn.Linear(512 * 7 * 7, num_features)
        self.features = nn.BatchNorm1d(num_features, eps=1e-05)
        nn.init.constant_(self.features.weight, 1.0)
        self.features.weight.requires_grad = False

    def _make_layer(self, planes: int, blocks: int) -> nn.Sequential:
        # Every stage strides by 2, so its first block always has the projected shortcut.
        downsample = nn.Sequential(nn.Conv2d(self.inplanes, planes, 1, 2, bias=False), nn.BatchNorm2d(planes, eps=1e-05))
        layers = [IBasicBlock(self.inplanes, planes, 2, downsample)]
        self.inplanes = planes
        layers += [IBasicBlock(planes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.prelu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = self.dropout(torch.flatten(self.bn2(x), 1))
        return self.features(self.fc(x))


# -- AdaFace ------------------------------------------------------------------------------------


class Flatten(nn.Module):
    def forward(self, x):
        return x.view(x.size(0), -1)


class SEModule(nn.Module):
    def __init__(self, channels: int, reduction: int):
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, channels // reduction, kernel_size=1, padding=0, bias=False)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(channels // reduction, channels, kernel_size=1, padding=0, bias=False)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x):
        return x * self.sigmoid(self.fc2(self.relu(self.fc1(self.avg_pool(x)))))


class BasicBlockIR(nn.Module):
    def __init__(self, in_channel: int, depth: int, stride: int, squeeze_excitation: bool = False):
        super().__init__()
        if in_channel == depth:
            self.shortcut_layer = nn.MaxPool2d(1, stride)
        else:
            self.shortcut_layer = nn.Sequential(nn.Conv2d(in_channel, depth, (1, 1), stride, bias=False), nn.BatchNorm2d(depth))
        self.res_layer = nn.Sequential(
            nn.BatchNorm2d(in_channel),
            nn.Conv2d(in_channel, depth, (3, 3), (1, 1), 1, bias=False),
            nn.BatchNorm2d(depth),
            nn.PReLU(depth),
            nn.Conv2d(depth, depth, (3, 3), stride, 1, bias=False),
            nn.BatchNorm2d(depth),
        )
        if squeeze_excitation:
            self.res_layer.add_module("se_block", SEModule(depth, 16))

    def forward(self, x):
        return self.res_layer(x) + self.shortcut_layer(x)


class AdafaceBackbone(nn.Module):
    def __init__(self, units: list[int], mode: str = "ir"):
        super().__init__()
        self.input_layer = nn.Sequential(nn.Conv2d(3, 64, (3, 3), 1, 1, bias=False), nn.BatchNorm2d(64), nn.PReLU(64))
        widths = [64, 64, 128, 256, 512]
        modules = []
        for stage, count in enumerate(units):
            modules.append(BasicBlockIR(widths[stage], widths[stage + 1], 2, mode == "ir_se"))
            modules += [BasicBlockIR(widths[stage + 1], widths[stage + 1], 1, mode == "ir_se") for _ in range(count - 1)]
        self.body = nn.Sequential(*modules)
        self.output_layer = nn.Sequential(
            nn.BatchNorm2d(512), nn.Dropout(0.4), Flatten(), nn.Linear(512 * 7 * 7, 512), nn.BatchNorm1d(512, affine=False)
        )

    def forward(self, x):
        x = self.output_layer(self.body(self.input_layer(x)))
        norm = torch.norm(x, 2, 1, True)
        return torch.div(x, norm), norm


# -- building, randomizing, saving ----------------------------------------------------------------


def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights and batch-norm statistics of moderate size (activations stay finite through
    100+ blocks), then eval mode."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if not tensor.is_floating_point():
                continue
            if name.endswith("running_var"):
                tensor.copy_(torch.rand(tensor.shape, generator=generator) * 0.5 + 0.75)
            elif name.endswith(("running_mean", "bias")):
                tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.1)
            elif tensor.ndim == 1:  # batch-norm and PReLU weights
                tensor.copy_(torch.rand(tensor.shape, generator=generator) * 0.5 + 0.5)
            else:
                fan_in = tensor[0].numel()
                tensor.copy_(torch.randn(tensor.shape, generator=generator) / fan_in**0.5)
    return model.eval()


def insightface_network(architecture: str, seed: int = 0) -> InsightfaceIResNet:
    return randomize(InsightfaceIResNet(IRESNET_DEPTHS[architecture]), seed)


def adaface_network(architecture: str, seed: int = 0) -> AdafaceBackbone:
    units, mode = ADAFACE_NETWORKS[architecture]
    return randomize(AdafaceBackbone(units, mode), seed)


def save_arcface_torch_model(network: nn.Module, path) -> None:
    """`model.pt` as arcface_torch's train_v2.py writes it: the backbone's state dict."""
    torch.save(network.state_dict(), path)


def save_arcface_torch_training_checkpoint(network: nn.Module, path, classes: int = 10) -> None:
    """`checkpoint_gpu_N.pt` (`save_all_states`): the backbone beside Partial FC, optimizer and scheduler."""
    softmax_fc = nn.Module()
    softmax_fc.weight = nn.Parameter(torch.randn(classes, 512) * 0.01)
    optimizer = torch.optim.SGD(list(network.parameters())[:3] + [softmax_fc.weight], lr=0.1, momentum=0.9)
    torch.save({
        "epoch": 3, "global_step": 1200,
        "state_dict_backbone": network.state_dict(),
        "state_dict_softmax_fc": softmax_fc.state_dict(),
        "state_optimizer": optimizer.state_dict(),
        "state_lr_scheduler": {"base_lrs": [0.1], "last_epoch": 1200, "_step_count": 1201, "warmup": 100},
    }, path)


def save_adaface_lightning_checkpoint(network: nn.Module, path, classes: int = 10) -> None:
    """A PyTorch Lightning `.ckpt` of AdaFace's `Trainer` module: `state_dict` with `model.*` and the
    margin head's `head.kernel`, optimizer and scheduler states, loops, callbacks, hyper-parameters."""
    kernel = nn.Parameter(torch.randn(512, classes) * 0.01)
    state_dict = collections.OrderedDict(
        [(f"model.{key}", value) for key, value in network.state_dict().items()] + [("head.kernel", kernel.detach())]
    )
    optimizer = torch.optim.SGD([kernel], lr=0.1, momentum=0.9)
    kernel.grad = torch.ones_like(kernel)
    optimizer.step()
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[12, 20, 24], gamma=0.1)
    torch.save({
        "epoch": 25, "global_step": 100000, "pytorch-lightning_version": "1.8.6",
        "state_dict": state_dict,
        "loops": {"fit_loop": {"state_dict": {}, "epoch_progress": {"total": {"ready": 26, "completed": 25}}}},
        "callbacks": {"ModelCheckpoint{'monitor': 'val_acc', 'mode': 'max'}": {"best_model_score": torch.tensor(0.9)}},
        "optimizer_states": [optimizer.state_dict()],
        "lr_schedulers": [scheduler.state_dict()],
        "hparams_name": "kwargs",
        "hyper_parameters": {"arch": "ir_50", "head": "adaface", "m": 0.4, "h": 0.333, "s": 64.0, "t_alpha": 0.01,
                             "lr": 0.1, "lr_milestones": "12,20,24", "batch_size": 512},
    }, path)


def bgr_input(images_uint8: torch.Tensor) -> torch.Tensor:
    """AdaFace's `to_input`: RGB uint8 `[N, H, W, 3]` -> BGR, `(x / 255 - 0.5) / 0.5`, `[N, 3, H, W]`."""
    return ((images_uint8.flip(-1).double() / 255.0 - 0.5) / 0.5).permute(0, 3, 1, 2).float().contiguous()


def rgb_input(images_uint8: torch.Tensor) -> torch.Tensor:
    """arcface_torch's inference: RGB uint8 `[N, H, W, 3]` -> `(x / 255 - 0.5) / 0.5`, `[N, 3, H, W]`."""
    return ((images_uint8.double() / 255.0 - 0.5) / 0.5).permute(0, 3, 1, 2).float().contiguous()
