"""The GEMM weight gradient of CPU bf16 convolutions (`dcr_hf.training.conv_weight_grad`): the same
forward and input gradient as the stock path, the weight gradient within bf16 rounding, and used
by the training command where it helps."""

from __future__ import annotations

import contextlib
import copy
import json

import pytest
import torch
import torch.nn.functional as F

import dcr_hf.training.conv_weight_grad as conv_weight_grad
import dcr_hf.training.trainer as trainer_module
from dcr_hf import DCRForImageClassification
from dcr_hf.training.command import train as train_command
from dcr_hf.training.conv_weight_grad import gemm_weight_grad, gemm_weight_grad_helps, uses_gemm_weight_grad

from .models import TINY_TRAINING, tiny_config


def _every_convolution(*shapes) -> bool:
    return True


def _routing(routed: bool):
    """Every convolution through the GEMM path, or the stock path."""
    return gemm_weight_grad(_every_convolution) if routed else contextlib.nullcontext()


def _conv_step(pixels, weight, bias, stride, padding, routed: bool):
    """Output and gradients of one CPU bf16-autocast convolution, through the GEMM path or the stock one."""
    tensors = (pixels, weight) + ((bias,) if bias is not None else ())
    leaves = [tensor.detach().clone().requires_grad_() for tensor in tensors]
    with torch.autocast("cpu", dtype=torch.bfloat16), _routing(routed):
        output = F.conv2d(leaves[0], leaves[1], leaves[2] if bias is not None else None, stride, padding)
    # A fixed, uneven upstream gradient (a plain sum would give every weight the same gradient).
    output.float().mul(torch.linspace(-1.0, 1.0, output.numel()).view_as(output)).sum().backward()
    return output.detach(), [leaf.grad for leaf in leaves]


@pytest.mark.parametrize(
    "in_channels, out_channels, size, kernel, stride, bias",
    [(8, 16, 6, 3, 1, False), (8, 16, 7, 3, 2, False), (8, 16, 7, 1, 2, False), (3, 8, 12, 7, 2, False),
     (64, 64, 4, 3, 1, False), (6, 4, 5, 3, 1, True), (8, 8, 1, 3, 1, False), (8, 8, 2, 5, 2, False)],
    ids=["3x3", "3x3-stride2", "1x1-stride2", "7x7-stem", "64ch-4x4", "bias", "1x1-map", "5x5-stride2-2x2-map"],
)
def test_the_gradients_are_the_stock_paths(in_channels, out_channels, size, kernel, stride, bias):
    torch.manual_seed(0)
    pixels = torch.randn(4, in_channels, size, size).contiguous(memory_format=torch.channels_last)
    weight = torch.randn(out_channels, in_channels, kernel, kernel).contiguous(memory_format=torch.channels_last)
    bias_tensor = torch.randn(out_channels) if bias else None
    stock_output, stock_grads = _conv_step(pixels, weight, bias_tensor, stride, kernel // 2, routed=False)
    output, grads = _conv_step(pixels, weight, bias_tensor, stride, kernel // 2, routed=True)
    assert output.dtype == torch.bfloat16
    assert torch.equal(output, stock_output)  # the same forward
    assert torch.equal(grads[0], stock_grads[0])  # the same input gradient (aten.convolution_backward)
    for grad, stock in zip(grads[1:], stock_grads[1:]):
        # float32 gradients of the float32 weights, as autocast gives them, in the weight's layout
        assert grad.dtype == torch.float32 and grad.stride() == stock.stride()
        torch.testing.assert_close(grad, stock, rtol=1e-2, atol=1e-2 * stock.abs().max().item())


def test_a_trunk_step_gives_the_stock_gradients():
    torch.manual_seed(0)
    model = DCRForImageClassification(tiny_config()).train().to(memory_format=torch.channels_last)
    pixels = torch.randn(6, 3, 3, 32, 32)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])

    def gradients(routed: bool) -> dict[str, torch.Tensor]:
        # a fresh copy each time: the forward pass moves the centers and the batch-norm statistics
        step_model = copy.deepcopy(model)
        torch.manual_seed(1)
        with torch.autocast("cpu", dtype=torch.bfloat16), _routing(routed):
            loss = step_model(pixels, labels=labels).loss
        loss.backward()
        return {name: parameter.grad for name, parameter in step_model.named_parameters() if parameter.grad is not None}

    stock, routed = gradients(False), gradients(True)
    assert stock.keys() == routed.keys()
    for name, grad in routed.items():
        torch.testing.assert_close(grad, stock[name], rtol=2e-2, atol=2e-2 * stock[name].abs().max().item(), msg=name)


def test_only_bf16_autocast_training_convolutions_are_routed(monkeypatch):
    calls = []
    original = conv_weight_grad.GemmWeightGradConv2d.apply
    monkeypatch.setattr(conv_weight_grad.GemmWeightGradConv2d, "apply", lambda *args: calls.append(1) or original(*args))
    pixels = torch.randn(2, 4, 4, 4)
    weight = torch.randn(4, 4, 3, 3, requires_grad=True)
    with gemm_weight_grad(_every_convolution):
        F.conv2d(pixels, weight, padding=1)  # float32, no autocast
        with torch.autocast("cpu", dtype=torch.bfloat16):
            with torch.no_grad():
                F.conv2d(pixels, weight, padding=1)  # no gradient
            F.conv2d(pixels, weight.detach(), padding=1)  # no weight gradient wanted
            F.conv2d(pixels, weight, padding=1, dilation=2)  # dilated: the stock path
            assert not calls
            F.conv2d(pixels, weight, padding=1)
    assert len(calls) == 1


def test_the_rule_picks_1x1_kernels_and_small_output_maps():
    # the DCR trunk at 120x120, batch 160: the 4x4 stage and its 1x1 shortcuts, not the 8x8 stage
    assert uses_gemm_weight_grad(torch.Size([160, 512, 4, 4]), torch.Size([512, 512, 3, 3]), (1, 1), (1, 1))
    assert uses_gemm_weight_grad(torch.Size([160, 256, 8, 8]), torch.Size([512, 256, 3, 3]), (2, 2), (1, 1))
    assert uses_gemm_weight_grad(torch.Size([160, 128, 15, 15]), torch.Size([256, 128, 1, 1]), (2, 2), (0, 0))
    assert not uses_gemm_weight_grad(torch.Size([160, 64, 30, 30]), torch.Size([128, 64, 1, 1]), (2, 2), (0, 0))
    assert not uses_gemm_weight_grad(torch.Size([6, 16, 4, 4]), torch.Size([16, 16, 3, 3]), (1, 1), (1, 1))  # narrow
    assert not uses_gemm_weight_grad(torch.Size([160, 256, 8, 8]), torch.Size([256, 256, 3, 3]), (1, 1), (1, 1))
    assert not uses_gemm_weight_grad(torch.Size([160, 3, 120, 120]), torch.Size([64, 3, 7, 7]), (2, 2), (3, 3))


@pytest.mark.parametrize(
    "flags, expected",
    [("avx512f avx512_bf16", True), ("avx512f avx512_bf16 amx_bf16 amx_tile", False), ("avx2 fma", False)],
    ids=["avx512-bf16", "amx", "no-bf16"],
)
def test_it_helps_on_avx512_bf16_without_amx(tmp_path, flags, expected):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nflags\t\t: fpu sse {flags}\n")
    assert gemm_weight_grad_helps(str(cpuinfo)) is expected
    assert gemm_weight_grad_helps(str(tmp_path / "missing")) is False


TINY = [*TINY_TRAINING, "--use_cpu", "true", "--max_steps", "1", "--eval_strategy", "no", "--save_strategy", "no",
        "--load_best_model_at_end", "false", "--evaluate_before_training", "false"]


@pytest.mark.parametrize(
    "options, expected",
    [(["--bf16", "true"], True), (["--bf16", "true", "--cpu_gemm_weight_grad", "false"], False), ([], False),
     (["--bf16", "true", "--activation_checkpointing", "true"], False)],
    ids=["bf16", "bf16-off", "float32", "bf16-checkpointing"],
)
def test_the_training_command_uses_it_for_cpu_bf16(tmp_path, monkeypatch, options, expected):
    monkeypatch.setattr(trainer_module, "gemm_weight_grad_helps", lambda: True)  # as on an AVX512-BF16 CPU
    monkeypatch.setattr(conv_weight_grad, "MIN_GEMM_IN_CHANNELS", 1)  # the tiny trunk's layers are narrow
    calls = []
    original = conv_weight_grad.GemmWeightGradConv2d.apply
    monkeypatch.setattr(conv_weight_grad.GemmWeightGradConv2d, "apply", lambda *args: calls.append(1) or original(*args))
    train_command(["--output_dir", str(tmp_path), *TINY, *options])
    assert bool(calls) is expected
    assert json.loads((tmp_path / "trainer_state.json").read_text())["global_step"] == 1
