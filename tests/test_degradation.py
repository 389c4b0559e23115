"""The degradation model (`dcr_hf.degradation`, `DCRConfig.degradation`): its settings rule, each
step against an independent measurement, the per-sample draw shared by a sample's copies, the
seeded evaluation draws, and the training and evaluation commands that use it."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch

from dcr_hf import DCRConfig, DCRImageProcessor
from dcr_hf.configuration_dcr import DEGRADATION_PRESETS, check_degradation
from dcr_hf.data.transforms import TrainTransform
from dcr_hf.degradation import Degradation, _gaussian_kernels, _motion_kernels, resolve_degradation
from dcr_hf.low_resolution import make_low_resolution_copies

SURVEILLANCE = DEGRADATION_PRESETS["surveillance"]


def _faces(count: int = 6, size: int = 48, seed: int = 0) -> torch.Tensor:
    """Smooth [0, 1] images (a coarse random pattern brought up to `size`)."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(count, 3, 6, 6, generator=generator)
    return torch.nn.functional.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)


def _only(step: str, **fields) -> dict:
    """One step of the surveillance preset at probability 1, with `fields` replaced."""
    return {step: {**SURVEILLANCE[step], "probability": 1.0, **fields}}


# -- the settings rule ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(DEGRADATION_PRESETS))
def test_presets_are_valid_and_saved_with_the_config(tmp_path, name):
    config = DCRConfig(degradation=DEGRADATION_PRESETS[name])
    config.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["degradation"] == check_degradation(DEGRADATION_PRESETS[name])
    assert DCRConfig.from_pretrained(tmp_path).degradation == config.degradation


def test_no_degradation_is_the_default_and_an_old_config_loads_without_one(tmp_path):
    assert DCRConfig().degradation is None
    config = DCRConfig().to_dict()
    del config["degradation"]
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert DCRConfig.from_pretrained(tmp_path).degradation is None


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (_only("jpeg", quality=[0, 90]), r"degradation.jpeg.quality=\[0, 90\] leaves the allowed \[1, 100\]"),
        (_only("jpeg", quality=[30, 101]), r"degradation.jpeg.quality=\[30, 101\] leaves the allowed \[1, 100\]"),
        (_only("jpeg", quality=[30.5, 90]), r"degradation.jpeg.quality holds 30.5; expected a whole number"),
        (_only("blur", gaussian_sigma=[-0.5, 1.0]), r"degradation.blur.gaussian_sigma=\[-0.5, 1.0\] leaves the allowed \[0, 4\]"),
        (_only("noise", gaussian_sigma=[5.0, 2.0]), r"degradation.noise.gaussian_sigma=\[5.0, 2.0\] is an empty range"),
        (_only("noise", poisson_peak=[0.0, 10.0]), r"degradation.noise.poisson_peak=\[0.0, 10.0\] leaves the allowed"),
        (_only("blur", probability=1.5), r"degradation.blur.probability=1.5 is outside \[0, 1\]"),
        (_only("blur", kinds=[]), r"degradation.blur.kinds=\[\] must be a non-empty list of \['gaussian', 'motion'\]"),
        (_only("blur", kinds=["defocus"]), r"degradation.blur.kinds=\['defocus'\] must be a non-empty list"),
        (_only("blur", motion_length=[1.0]), r"degradation.blur.motion_length=\[1.0\] must be a range \[low, high\]"),
        (_only("noise", gaussian_sigma=[float("nan"), 2.0]), r"degradation.noise.gaussian_sigma holds nan; expected a finite number"),
        ({"fog": {}}, r"degradation has unknown steps \['fog'\]"),
        ({"jpeg": {"quality": [30, 90]}}, r"degradation.jpeg must have exactly the fields \['probability', 'quality'\]"),
    ],
)
def test_bad_settings_are_refused_naming_the_field(settings, message):
    with pytest.raises(ValueError, match=message):
        DCRConfig(degradation=settings)


def test_command_line_values(tmp_path):
    assert resolve_degradation("none") is None
    assert resolve_degradation("surveillance") == check_degradation(SURVEILLANCE)
    good = tmp_path / "mine.json"
    good.write_text(json.dumps(_only("jpeg", quality=[10, 20])))
    assert resolve_degradation(str(good))["jpeg"]["quality"] == [10, 20]
    with pytest.raises(ValueError, match=r"--degradation fog: expected none, one of \['blur', 'jpeg', 'noise', 'surveillance'\]"):
        resolve_degradation("fog")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(_only("jpeg", quality=[0, 20])))
    with pytest.raises(ValueError, match=rf"{bad}: degradation.jpeg.quality=\[0, 20\] leaves the allowed \[1, 100\]"):
        resolve_degradation(str(bad))
    broken = tmp_path / "broken.json"
    broken.write_text('{"jpeg":\n  {"quality": [1, 2],}}')
    with pytest.raises(ValueError, match=rf"--degradation {broken}:2: not valid JSON"):
        resolve_degradation(str(broken))
    with pytest.raises(ValueError, match="cannot read the file"):
        resolve_degradation(str(tmp_path / "missing.json"))


# -- each step -----------------------------------------------------------------------------------


@pytest.mark.parametrize("sigma", [0.5, 1.0, 1.5])
def test_gaussian_kernels_are_the_sampled_gaussian_of_the_drawn_sigma(sigma):
    kernel = _gaussian_kernels(torch.tensor([sigma], dtype=torch.float64), 13)[0].numpy()
    offsets = np.arange(13) - 6.0
    line = np.exp(-(offsets**2) / (2 * sigma**2))
    np.testing.assert_allclose(kernel, np.outer(line, line) / line.sum() ** 2, rtol=1e-12, atol=1e-15)
    variance = (kernel.sum(axis=0) * offsets**2).sum()
    if sigma >= 1.0:  # sampled at pixel centres, a narrower Gaussian has less than sigma**2
        assert variance == pytest.approx(sigma**2, rel=1e-3)


def test_motion_kernels_are_lines_of_the_drawn_length_and_angle():
    length = torch.tensor([0.0, 3.0, 3.0], dtype=torch.float64)
    angle = torch.tensor([0.0, 0.0, np.pi / 2], dtype=torch.float64)
    kernels = _motion_kernels(length, angle, 7)
    assert torch.allclose(kernels.sum(dim=(1, 2)), torch.ones(3, dtype=torch.float64))
    assert kernels[0, 3, 3] == 1.0  # length 0: a delta
    horizontal, vertical = kernels[1], kernels[2]
    assert horizontal[3].sum().item() == pytest.approx(1.0) and vertical[:, 3].sum().item() == pytest.approx(1.0)
    offsets = torch.arange(7, dtype=torch.float64) - 3
    spread = (horizontal.sum(dim=0) * offsets**2).sum().item()
    assert 0.6 < spread < 1.0  # a segment of length 3, point-sampled then splatted: 3**2 / 12 plus the splat
    torch.testing.assert_close(vertical, horizontal.T)


def test_gaussian_noise_has_the_drawn_standard_deviation():
    processor = DCRImageProcessor(image_size=48, downsample_interpolation="bicubic", upsample_interpolation="bilinear")
    flat = torch.full((64, 3, 48, 48), 0.5)
    torch.manual_seed(0)
    settings = _only("noise", kinds=["gaussian"], gaussian_sigma=[10.0, 10.0])
    small = Degradation(settings).degrade(
        torch.full((64, 3, 16, 16), 0.5), Degradation(settings).draw(64), torch.randn(64, 3, 16, 16), in_8_bits=False
    )
    assert small.std().item() == pytest.approx(10 / 255, rel=0.05)
    copies = Degradation(settings).low_resolution_copies(flat, [16], processor)
    assert copies.std().item() > 0.5 * 10 / 255  # still noisy after the upsampling


def test_poisson_like_noise_grows_with_the_pixel_value():
    settings = _only("noise", kinds=["poisson"], poisson_peak=[100.0, 100.0])
    degradation = Degradation(settings)
    torch.manual_seed(0)
    for value in (0.1, 0.8):
        small = degradation.degrade(torch.full((64, 3, 16, 16), value), degradation.draw(64), torch.randn(64, 3, 16, 16), in_8_bits=False)
        assert small.std().item() == pytest.approx((value / 100.0) ** 0.5, rel=0.05)


@pytest.mark.parametrize("quality", [30, 70])
def test_jpeg_loses_about_what_pil_jpeg_loses(quality):
    images = _faces(4, 16)
    degradation = Degradation(_only("jpeg", quality=[quality, quality]))
    coded = degradation.degrade(images, degradation.draw(4), torch.zeros_like(images), in_8_bits=True)
    for image, ours in zip(images, coded):
        pil = PIL.Image.fromarray((image.movedim(0, -1).numpy() * 255).round().astype(np.uint8))
        buffer = io.BytesIO()
        pil.save(buffer, "JPEG", quality=quality)
        reference = torch.from_numpy(np.asarray(PIL.Image.open(buffer), dtype=np.float32) / 255).movedim(-1, 0)
        ours_error, pil_error = (ours - image).abs().mean().item(), (reference - image).abs().mean().item()
        assert 0.5 * pil_error < ours_error < 2.0 * pil_error
        assert (ours - reference).abs().mean().item() < pil_error


# -- the operator --------------------------------------------------------------------------------


@pytest.mark.parametrize("operator", [("lanczos", "bilinear"), ("bicubic", "bicubic")])
def test_steps_that_never_apply_give_the_plain_copies_to_the_bit(operator):
    processor = DCRImageProcessor(image_size=48, downsample_interpolation=operator[0], upsample_interpolation=operator[1])
    pixels = processor.normalize_pixels(_faces())
    never = {step: {**section, "probability": 0.0} for step, section in SURVEILLANCE.items()}
    degraded = Degradation(never).low_resolution_copies(pixels, [8, 12, 20], processor, normalized=True)
    plain = make_low_resolution_copies(pixels, [8, 12, 20], processor, normalized=True)
    torch.testing.assert_close(degraded, plain, rtol=0, atol=0 if operator[0] == "lanczos" else 5e-6)  # the fast path: float rounding in the torch modes


def test_the_surveillance_preset_degrades_within_the_pixel_range():
    processor = DCRImageProcessor(image_size=48)
    pixels = processor.normalize_pixels(_faces(8))
    torch.manual_seed(0)
    degraded = Degradation(SURVEILLANCE).low_resolution_copies(pixels, [8, 16], processor, normalized=True)
    plain = make_low_resolution_copies(pixels, [8, 16], processor, normalized=True)
    assert degraded.shape == plain.shape == (8, 2, 3, 48, 48) and degraded.dtype == torch.float32
    low, high = processor.pixel_range()
    assert degraded.min().item() >= min(low) - 1e-6 and degraded.max().item() <= max(high) + 1e-6
    assert (degraded - plain).abs().mean().item() > 0.02


def test_a_samples_copies_share_one_draw():
    """JPEG at probability 0.5: the samples changed at 8x8 are exactly those changed at 16x16."""
    processor = DCRImageProcessor(image_size=48)
    pixels = _faces(16)
    torch.manual_seed(3)
    degraded = Degradation(_only("jpeg", probability=0.5)).low_resolution_copies(pixels, [8, 16], processor)
    plain = make_low_resolution_copies(pixels, [8, 16], processor)
    changed = (degraded - plain).flatten(2).abs().amax(dim=2) > 0  # [sample, size]
    assert 0 < changed[:, 0].sum() < 16
    assert torch.equal(changed[:, 0], changed[:, 1])


def test_training_draws_follow_the_global_generator():
    processor = DCRImageProcessor(image_size=48)
    pixels = _faces()
    degradation = Degradation(SURVEILLANCE)
    torch.manual_seed(7)
    first = degradation.low_resolution_copies(pixels, [8, 12], processor)
    torch.manual_seed(7)
    again = degradation.low_resolution_copies(pixels, [8, 12], processor)
    other = degradation.low_resolution_copies(pixels, [8, 12], processor)
    assert torch.equal(first, again) and not torch.equal(first, other)


def test_seeded_draws_depend_on_the_image_and_the_seed_only():
    processor = DCRImageProcessor(image_size=48)
    pixels = _faces(6)
    seeded = Degradation(SURVEILLANCE, seed=0)
    whole = seeded.low_resolution_copies(pixels, [8, 12], processor)
    torch.manual_seed(123)  # the global generator plays no part
    part = seeded.low_resolution_copies(pixels[[4, 1]], [8, 12], processor)
    torch.testing.assert_close(part, whole[[4, 1]], rtol=0, atol=0)
    other_seed = Degradation(SURVEILLANCE, seed=1).low_resolution_copies(pixels, [8, 12], processor)
    assert not torch.equal(other_seed, whole)


def test_autocast_leaves_the_degradation_as_it_is():
    processor = DCRImageProcessor(image_size=48)
    pixels = processor.normalize_pixels(_faces(4))
    degradation = Degradation(SURVEILLANCE, seed=0)
    plain = degradation.low_resolution_copies(pixels, [8], processor, normalized=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_autocast = degradation.low_resolution_copies(pixels, [8], processor, normalized=True)
    torch.testing.assert_close(under_autocast, plain, rtol=0, atol=0)


def test_the_training_transform_degrades_alike_in_the_loader_and_in_the_step():
    processor = DCRImageProcessor(image_size=48)
    images = (_faces(4) * 255).round().to(torch.uint8)
    degradation = Degradation(SURVEILLANCE)
    loader_side = TrainTransform(processor, [8, 12], augmentation="flip", degradation=degradation)
    step_side = TrainTransform(processor, [8, 12], augmentation="flip", defer_low_resolution=True, degradation=degradation)
    torch.manual_seed(5)
    expected = loader_side.model_inputs(images)
    torch.manual_seed(5)
    got = step_side.model_inputs(images)
    torch.testing.assert_close(got["low_resolution_pixel_values"], expected["low_resolution_pixel_values"], rtol=0, atol=0)
    plain = TrainTransform(processor, [8, 12], augmentation="flip", defer_low_resolution=True)
    torch.manual_seed(5)
    assert not torch.equal(plain.model_inputs(images)["low_resolution_pixel_values"], got["low_resolution_pixel_values"])


def test_a_transform_refuses_settings_in_place_of_a_degradation():
    with pytest.raises(TypeError, match="degradation must be a dcr_hf.degradation.Degradation or None, got dict"):
        TrainTransform(DCRImageProcessor(image_size=48), [8], degradation=SURVEILLANCE)


# -- the commands --------------------------------------------------------------------------------

TINY_TRAIN = [
    "--synthetic_num_identities", "6", "--synthetic_images_per_identity", "2", "--synthetic_num_pairs", "20",
    "--image_size", "48", "--low_resolution_sizes", "8", "12", "--architecture", "small", "--depths", "1", "1", "1", "1",
    "--hidden_sizes", "8", "8", "16", "16", "--embedding_size", "16", "--per_device_train_batch_size", "6",
    "--report_to", "none", "--dataloader_num_workers", "0", "--seed", "0", "--disable_tqdm", "true", "--use_cpu", "true",
    "--validation_dataset", "none", "--eval_strategy", "no", "--load_best_model_at_end", "false", "--max_steps", "2",
]
EVAL = [
    "--dataset", "synthetic", "--synthetic_num_verification_identities", "20",
    "--synthetic_verification_images_per_identity", "3", "--synthetic_num_pairs", "20", "--synthetic_num_subjects", "3", "--synthetic_image_size", "48",
    "--per_device_eval_batch_size", "8",
]


@pytest.mark.slow
def test_training_saves_the_degradation_and_the_branch_stage_keeps_or_drops_it(tmp_path):
    from dcr_hf.training.command import train

    train(["--output_dir", str(tmp_path / "trunk"), *TINY_TRAIN, "--degradation", "surveillance"])
    saved = json.loads((tmp_path / "trunk" / "config.json").read_text())["degradation"]
    assert saved == check_degradation(SURVEILLANCE)
    train(["--output_dir", str(tmp_path / "kept"), *TINY_TRAIN, "--stage", "branch", "--trunk", str(tmp_path / "trunk")])
    assert json.loads((tmp_path / "kept" / "config.json").read_text())["degradation"] == saved
    train(["--output_dir", str(tmp_path / "dropped"), *TINY_TRAIN, "--stage", "branch", "--trunk", str(tmp_path / "trunk"),
           "--degradation", "none"])
    assert json.loads((tmp_path / "dropped" / "config.json").read_text())["degradation"] is None


@pytest.mark.slow
def test_evaluation_on_degraded_probes_and_the_probe_figure(tmp_path, capsys):
    from dcr_hf import DCRForImageClassification
    from dcr_hf.evaluation.command import run
    from tests.models import tiny_config

    folder = tmp_path / "model"
    torch.manual_seed(0)
    DCRForImageClassification(tiny_config(image_size=48)).save_pretrained(folder)
    DCRImageProcessor(image_size=48).save_pretrained(folder)
    base = ["--model_name_or_path", str(folder), *EVAL, "--sizes", "8", "12"]
    clean = run(base)["model"]
    figure = tmp_path / "figures" / "probes.png"
    degraded = run([*base, "--probe_degradation", "surveillance", "--show_probes", str(figure)])["model"]
    assert degraded["probe_degradation"] == check_degradation(SURVEILLANCE) and clean["probe_degradation"] is None
    assert degraded["by_resolution"]["hr"] == clean["by_resolution"]["hr"]  # the HR images stay clean
    assert degraded["by_resolution"]["8"]["auc"] != clean["by_resolution"]["8"]["auc"]
    again = run([*base, "--probe_degradation", "surveillance", "--per_device_eval_batch_size", "3"])["model"]
    assert again["by_resolution"]["8"]["auc"] == degraded["by_resolution"]["8"]["auc"]  # seeded by image, not batch
    image = PIL.Image.open(figure)
    assert image.format == "PNG" and image.size[0] > image.size[1]
    out = capsys.readouterr().out
    assert f"Wrote {figure}" in out and "LR probes of model degraded by surveillance (seed 0)" in out


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--probe_degradation", "fog"], "--probe_degradation fog: expected none, one of"),
        (["--protocol", "identification", "--probe_degradation", "jpeg"], "--probe_degradation jpeg: identification uses real LR probes"),
        (["--show_probes", "probes.txt"], "--show_probes probes.txt: expected the name of a .png file to write."),
        (["--probe_degradation", "blur", "--update_card"], "--update_card with --probe_degradation blur: a model card records"),
    ],
)
def test_evaluation_refuses_bad_degradation_options_in_one_line(tmp_path, capsys, extra, message):
    from dcr_hf.evaluation.command import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--model_name_or_path", str(tmp_path / "nope"), *EVAL, *extra])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "Traceback" not in err
    assert message in err.strip().splitlines()[-1]


def test_training_refuses_a_bad_degradation_before_any_data_is_read(tmp_path, capsys):
    from dcr_hf.training.command import main

    bad = tmp_path / "ranges.json"
    bad.write_text(json.dumps(_only("blur", gaussian_sigma=[-1.0, 1.0])))
    with pytest.raises(SystemExit) as exit_info:
        main(["--output_dir", str(tmp_path / "out"), "--degradation", str(bad)])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "Traceback" not in err
    assert err.strip().splitlines()[-1].endswith(f"{bad}: degradation.blur.gaussian_sigma=[-1.0, 1.0] leaves the allowed [0, 4].")


def test_probe_degradation_model_takes_each_models_own_and_says_so():
    from types import SimpleNamespace

    from dcr_hf.evaluation.command import EvaluationArguments, probe_degradations

    models = [SimpleNamespace(config=SimpleNamespace(degradation=check_degradation(DEGRADATION_PRESETS["jpeg"]))),
              SimpleNamespace(config=SimpleNamespace(degradation=None))]
    degradations, notes = probe_degradations(["a", "b"], models, None, EvaluationArguments(probe_degradation="model", degradation_seed=3))
    assert degradations[0].settings == check_degradation(DEGRADATION_PRESETS["jpeg"]) and degradations[0].seed == 3
    assert degradations[1] is None
    assert notes[0].startswith("a: LR probes degraded by its own training degradation (seed 3)")
    assert notes[1] == "b: --probe_degradation model, but the model was trained without one: its probes are resized only"
    shared, [note] = probe_degradations(["a", "b"], models, check_degradation(SURVEILLANCE), EvaluationArguments(probe_degradation="surveillance"))
    assert all(d.settings == check_degradation(SURVEILLANCE) for d in shared)
    assert note.startswith("LR probes of every model degraded by surveillance (seed 0)")


def test_training_on_real_low_resolution_images_refuses_a_degradation(tmp_path, capsys):
    from dcr_hf.training.command import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--output_dir", str(tmp_path / "out"), "--stage", "finetune", "--init_from", str(tmp_path / "nope"),
              "--dataset", "scface", "--data_root", str(tmp_path), "--degradation", "jpeg"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert err.strip().splitlines()[-1].endswith(
        "--degradation jpeg: --dataset scface trains on real LR images, which are used as they are; "
        "the degradation model applies to simulated LR copies."
    )
