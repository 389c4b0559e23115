"""The batched fast path of the LR operator against the processor whose matrices it uses."""

import pytest
import torch

from dcr_hf.image_processing_dcr import DCRImageProcessor
from dcr_hf.low_resolution import make_low_resolution_copies


@pytest.mark.parametrize(
    "downsample,upsample",
    [("lanczos", "bilinear"), ("lanczos", "bicubic"), ("lanczos", "lanczos"),
     ("bicubic", "bilinear"), ("bilinear", "bicubic"), ("area", "nearest")],
)
def test_make_low_resolution_copies_matches_the_processor(downsample, upsample):
    torch.manual_seed(6)
    processor = DCRImageProcessor(
        image_size=40, image_mean=(0.4, 0.5, 0.6), image_std=(0.2, 0.25, 0.3),
        downsample_interpolation=downsample, upsample_interpolation=upsample,
    )
    # Pixels of 8-bit images, as decoding makes them (the 8-bit operator rounds to those levels anyway).
    pixels01 = processor.rescale_pixels(torch.randint(0, 256, (3, 3, 40, 40)))
    copies = make_low_resolution_copies(pixels01, (5, 16), processor)
    normalized = make_low_resolution_copies(processor.normalize_pixels(pixels01), (5, 16), processor, normalized=True)
    assert copies.shape == (3, 2, 3, 40, 40)
    for index, size in enumerate((5, 16)):
        # Oracle: the processor's own LR simulation (one size at a time, clamped to [0, 1]).
        expected = processor.simulate_low_resolution(pixels01, size)
        if processor.low_resolution_in_8_bits:
            # Same matrices, same rounding points, exact float64 products: equal to the bit.
            assert torch.equal(copies[:, index], expected)
            assert torch.equal(normalized[:, index], processor.normalize_pixels(expected))
        else:
            torch.testing.assert_close(copies[:, index], expected, atol=2e-6, rtol=0)
            torch.testing.assert_close(normalized[:, index], processor.normalize_pixels(expected), atol=2e-5, rtol=0)


@pytest.mark.parametrize("downsample", ["lanczos", "bicubic"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float64])
def test_make_low_resolution_copies_keeps_the_dtype_and_the_input(downsample, dtype):
    pixel_values = torch.rand(2, 3, 32, 32).to(dtype)
    before = pixel_values.clone()
    processor = DCRImageProcessor(image_size=32, downsample_interpolation=downsample)
    copies = make_low_resolution_copies(pixel_values, (8,), processor, normalized=True)
    assert copies.dtype == dtype and copies.shape == (2, 1, 3, 32, 32)
    assert torch.equal(pixel_values, before)  # not modified in place
    expected = processor.normalize_pixels(processor.simulate_low_resolution(pixel_values.float() * 0.5 + 0.5, 8))
    torch.testing.assert_close(copies[:, 0].float(), expected, atol=1e-2, rtol=0)


def test_sizes_and_image_shape_are_checked():
    processor = DCRImageProcessor(image_size=32)
    with pytest.raises(ValueError, match="below image_size=32"):
        make_low_resolution_copies(torch.rand(1, 3, 32, 32), (8, 32), processor)
    with pytest.raises(ValueError, match="needs 32x32 images"):
        make_low_resolution_copies(torch.rand(1, 3, 40, 40), (8,), processor)


@pytest.mark.parametrize("downsample,upsample", [("lanczos", "bilinear"), ("bicubic", "bilinear")])
def test_the_four_call_sites_give_the_same_pixels(downsample, upsample):
    """One LR operator: the processor, the batched path, the degradation with every step off and the
    probe figure's rows make the same copy of one image, to the bit."""
    import numpy as np
    import PIL.Image

    from dcr_hf.configuration_dcr import DEGRADATION_PRESETS
    from dcr_hf.degradation import Degradation
    from dcr_hf.evaluation.probes import probe_rows

    processor = DCRImageProcessor(
        image_size=48, image_mean=(0.4, 0.5, 0.6), image_std=(0.2, 0.25, 0.3),
        downsample_interpolation=downsample, upsample_interpolation=upsample,
    )
    rng = np.random.default_rng(4)
    # Smooth shapes and hard edges (Lanczos overshoots them), at another size than the model's.
    image = np.kron(rng.integers(0, 256, (10, 10, 3)), np.ones((6, 6, 1))).astype(np.uint8)
    image[::9] = 255
    image = PIL.Image.fromarray(image)
    sizes = [8, 12, 20]

    by_processor = torch.stack([processor(image, low_resolution_size=s).pixel_values for s in sizes], dim=1)
    pixels = processor(image, do_normalize=False).pixel_values  # the HR image in [0, 1]
    batched = make_low_resolution_copies(pixels, sizes, processor)
    never = {step: {**section, "probability": 0.0} for step, section in DEGRADATION_PRESETS["surveillance"].items()}
    degraded = Degradation(never, seed=0).low_resolution_copies(pixels, sizes, processor)
    _, probe_clean, probe_degraded = probe_rows(image, processor, sizes, Degradation(never, seed=0))

    assert by_processor.shape == (1, 3, 3, 48, 48)
    assert torch.equal(processor.normalize_pixels(batched), by_processor)
    assert torch.equal(degraded, batched)
    assert np.array_equal(probe_clean, batched[0].movedim(-3, -1).numpy())
    assert np.array_equal(probe_degraded, probe_clean)
    # The copies are LR probes, not the HR image, and the training path (normalized in, normalized
    # out) makes them too: to the bit in 8 bits, to float rounding in a torch mode (linear on
    # normalized pixels).
    assert (by_processor[:, 0] - processor.normalize_pixels(pixels)).abs().max() > 0.1
    from_normalized = make_low_resolution_copies(processor.normalize_pixels(pixels), sizes, processor, normalized=True)
    if downsample == "lanczos":
        assert torch.equal(from_normalized, by_processor)
    else:
        torch.testing.assert_close(from_normalized, by_processor, atol=2e-5, rtol=0)
