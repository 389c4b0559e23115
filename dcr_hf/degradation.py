"""The degradation model of low-resolution (LR) probes: blur, noise and JPEG on top of the resizing.

The processor's LR operator (`DCRImageProcessor.low_resolution_copies`) is the resizing: down to
s x s, back up. With a degradation (`DCRConfig.degradation`, checked by `check_degradation`), every
LR copy of a sample is made as a CCTV camera would record the face, by the operator's hook between
those two steps:

    downsample (the processor's filter) -> blur -> noise -> JPEG -> 8 bits -> upsample

Each step is applied to a sample with its probability, with parameters drawn once per sample and
used for all its LR copies (a 16x16 and an 8x8 copy of one face are blurred alike, in their own
pixels). The blur acts on the s x s image, in its pixels: a camera's point-spread function is a
property of its own pixels, so one range means the same at every size, and blurring an s x s
image costs nothing next to blurring the HR one with a kernel L/s times wider.

Batched, on the images' device. The random draws come from a CPU generator (the global one
during training, so that a resumed run draws what an uninterrupted one did; a seeded one per
image content for evaluation, so that every model and every batching sees the same probes) and
are moved to the device. kornia gives the Gaussian blur, the per-sample filtering and the JPEG
codec; written here by hand: the motion-blur kernels of per-sample length and angle (kornia's
have one length per batch) and the Poisson-like noise.
"""

from __future__ import annotations

import json
import math
import os
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .errors_dcr import DCRInputError
from .configuration_dcr import DEGRADATION_PRESETS, check_degradation
from .image_processing_dcr import DCRImageProcessor

#: Points per motion-blur line (its sub-pixel rasterization).
_MOTION_SAMPLES = 33


def resolve_degradation(value: str | dict | None, name: str = "--degradation") -> dict | None:
    """A command-line value -> checked settings: `none`, a preset name (`DEGRADATION_PRESETS`) or
    the path of a JSON file holding the settings (a dict of steps). Raises `ValueError` naming `name`."""
    if value is None or isinstance(value, dict):
        return check_degradation(value, name=name.lstrip("-"))
    if value == "none":
        return None
    if value in DEGRADATION_PRESETS:
        return check_degradation(DEGRADATION_PRESETS[value], name=name.lstrip("-"))
    if not value.endswith(".json") and not os.path.exists(value):
        raise DCRInputError(
            f"{name} {value}: expected none, one of {sorted(DEGRADATION_PRESETS)} or a JSON file of settings."
        )
    try:
        with open(value, encoding="utf-8") as handle:
            settings = json.load(handle)
    except OSError as error:
        raise DCRInputError(f"{name} {value}: cannot read the file ({error.strerror}).") from None
    except json.JSONDecodeError as error:
        raise DCRInputError(f"{name} {value}:{error.lineno}: not valid JSON ({error.msg}).") from None
    return check_degradation(settings, name=f"{value}: degradation")


@dataclass
class DegradationDraw:
    """Per-sample parameters of one batch (CPU tensors, `[batch]`)."""

    blur: torch.Tensor  # 0: none, 1: Gaussian, 2: motion
    sigma: torch.Tensor
    motion_length: torch.Tensor
    motion_angle: torch.Tensor  # radians
    noise: torch.Tensor  # 0: none, 1: Gaussian, 2: Poisson-like
    noise_sigma: torch.Tensor  # 8-bit levels
    poisson_peak: torch.Tensor
    jpeg_quality: torch.Tensor  # 0: no JPEG

    @classmethod
    def cat(cls, draws: Sequence[DegradationDraw]) -> DegradationDraw:
        return cls(*(torch.cat([getattr(d, name) for d in draws]) for name in cls.__dataclass_fields__))


class Degradation:
    """A checked degradation model (`settings` as `check_degradation` returns them).

    `seed=None` draws from the global CPU generator (training); an int draws every image's
    degradation from a generator seeded by that int and the image's pixels (evaluation: the same
    image always gets the same degradation, whatever the batch, worker or model).
    """

    _BLUR_KINDS = {"gaussian": 1, "motion": 2}
    _NOISE_KINDS = {"gaussian": 1, "poisson": 2}

    def __init__(self, settings: dict, seed: int | None = None) -> None:
        checked = check_degradation(settings)
        if checked is None:
            raise DCRInputError("Degradation needs settings with at least one step; use None for no degradation.")
        self.settings = checked
        self.seed = seed

    def __repr__(self) -> str:
        return f"Degradation({self.settings!r}, seed={self.seed!r})"

    # -- the draws ----------------------------------------------------------------------------

    def _kinds(self, step: str, table: dict[str, int], count: int, generator) -> torch.Tensor:
        section = self.settings.get(step)
        if section is None:
            return torch.zeros(count, dtype=torch.int64)
        applied = torch.rand(count, generator=generator) < section["probability"]
        codes = torch.tensor([table[kind] for kind in section["kinds"]])
        chosen = codes[torch.randint(len(codes), (count,), generator=generator)]
        return torch.where(applied, chosen, torch.zeros_like(chosen))

    def _uniform(self, step: str, field: str, count: int, generator) -> torch.Tensor:
        low, high = self.settings[step][field] if step in self.settings else (0.0, 0.0)
        return low + (high - low) * torch.rand(count, generator=generator, dtype=torch.float64)

    def draw(self, count: int, generator: torch.Generator | None = None) -> DegradationDraw:
        """The parameters of `count` samples, in a fixed order of draws (CPU)."""
        blur = self._kinds("blur", self._BLUR_KINDS, count, generator)
        sigma = self._uniform("blur", "gaussian_sigma", count, generator)
        length = self._uniform("blur", "motion_length", count, generator)
        angle = math.pi * torch.rand(count, generator=generator, dtype=torch.float64)
        noise = self._kinds("noise", self._NOISE_KINDS, count, generator)
        noise_sigma = self._uniform("noise", "gaussian_sigma", count, generator)
        peak = self._uniform("noise", "poisson_peak", count, generator)
        quality = torch.zeros(count, dtype=torch.int64)
        if "jpeg" in self.settings:
            low, high = self.settings["jpeg"]["quality"]
            applied = torch.rand(count, generator=generator) < self.settings["jpeg"]["probability"]
            quality = torch.where(applied, torch.randint(low, high + 1, (count,), generator=generator), quality)
        return DegradationDraw(blur, sigma, length, angle, noise, noise_sigma, peak, quality)

    def _generators(self, pixel_values: torch.Tensor) -> list[torch.Generator] | None:
        """One CPU generator per image, seeded by `seed` and the image's 8-bit levels (evaluation): the
        same image gives the same draw whether it came normalized (and back) or as pixels in [0, 1]."""
        if self.seed is None:
            return None
        levels = pixel_values.detach().to("cpu", torch.float32).mul(255.0).round_().clamp_(0.0, 255.0).to(torch.uint8)
        flat = levels.contiguous().view(pixel_values.shape[0], -1)
        generators = []
        for row in flat:
            generator = torch.Generator()
            generator.manual_seed((self.seed * 0x9E3779B1 + zlib.crc32(row.numpy().tobytes())) % (1 << 63))
            generators.append(generator)
        return generators

    # -- the operator -------------------------------------------------------------------------

    def low_resolution_copies(
        self, pixel_values: torch.Tensor, sizes: Sequence[int], processor: DCRImageProcessor, normalized: bool = False
    ) -> torch.Tensor:
        """Every degraded LR copy of a batch: `[batch, len(sizes), 3, L, L]` on its device, as
        `make_low_resolution_copies` makes the plain ones (`normalized` as there)."""
        if not torch.is_tensor(pixel_values) or not pixel_values.is_floating_point() or pixel_values.ndim != 4:
            raise DCRInputError(f"pixel_values must be a float tensor [batch, 3, H, W], got {pixel_values!r:.80}.")
        with torch.autocast(pixel_values.device.type, enabled=False):
            pixels = pixel_values.float()
            generators = self._generators(processor.denormalize_pixels(pixels) if normalized else pixels)
            count = pixels.shape[0]
            if generators is None:
                draw = self.draw(count)
            else:
                draw = DegradationDraw.cat([self.draw(1, generator) for generator in generators]) if count else self.draw(0)

            def between(small: torch.Tensor, size: int) -> torch.Tensor:
                # The torch modes may overshoot [0, 1] here, as in the plain operator.
                noise = _standard_normal((count, pixels.shape[1], size, size), generators)
                return self.degrade(small, draw, noise, in_8_bits=processor.low_resolution_in_8_bits)

            result = processor.low_resolution_copies(pixels, sizes, normalized=normalized, between=between)
        return result.to(pixel_values.dtype)

    def degrade(self, small: torch.Tensor, draw: DegradationDraw, noise: torch.Tensor, in_8_bits: bool = True) -> torch.Tensor:
        """Blur, noise and JPEG of s x s images `[batch, 3, s, s]` in [0, 1] with `draw`'s parameters
        (`noise`: standard normal values of the images' shape, on the CPU); rounded to 8 bits when
        `in_8_bits` (an LR image file's levels)."""
        device = small.device
        if bool((draw.blur > 0).any()):
            small = _blur(small, draw, device)
        if bool((draw.noise > 0).any()):
            small = _add_noise(small, draw, noise.to(device, non_blocking=True))
        if bool((draw.jpeg_quality > 0).any()):
            small = _jpeg(small, draw.jpeg_quality)
        if in_8_bits:  # (a no-op on the levels of a step that did not apply)
            small = small.mul(255.0).round_().clamp_(0.0, 255.0).div_(255.0)
        return small


def _standard_normal(shape: tuple[int, ...], generators: list[torch.Generator] | None) -> torch.Tensor:
    if generators is None:
        return torch.randn(shape)
    return torch.stack([torch.randn(shape[1:], generator=g) for g in generators]) if generators else torch.randn(shape)


def _kernel_size(draw: DegradationDraw) -> int:
    """An odd kernel side covering the widest Gaussian (3 sigma each way) and the longest line."""
    sigma = float(draw.sigma[draw.blur == 1].max()) if bool((draw.blur == 1).any()) else 0.0
    length = float(draw.motion_length[draw.blur == 2].max()) if bool((draw.blur == 2).any()) else 0.0
    half = max(math.ceil(3.0 * sigma), math.ceil(length / 2.0) + 1, 1)
    return 2 * half + 1


def _gaussian_kernels(sigma: torch.Tensor, size: int) -> torch.Tensor:
    """Normalized isotropic Gaussians `[batch, size, size]` (float64, CPU); sigma 0 is a delta."""
    offsets = torch.arange(size, dtype=torch.float64) - size // 2
    scaled = offsets[None, :] / sigma.clamp(min=1e-6)[:, None]
    line = torch.exp(-0.5 * scaled**2)
    line = line / line.sum(dim=1, keepdim=True)
    return line[:, :, None] * line[:, None, :]


def _motion_kernels(length: torch.Tensor, angle: torch.Tensor, size: int) -> torch.Tensor:
    """Line kernels `[batch, size, size]` (float64, CPU) of per-sample length and angle, centred:
    points along the segment splatted bilinearly onto the pixel grid, then normalized (length 0 is
    a delta). Hand-written: kornia's motion kernels have one length for the whole batch."""
    batch = length.shape[0]
    steps = torch.linspace(-0.5, 0.5, _MOTION_SAMPLES, dtype=torch.float64)
    along = steps[None, :] * length[:, None]  # [batch, samples]
    x = along * torch.cos(angle)[:, None] + size // 2
    y = along * torch.sin(angle)[:, None] + size // 2
    x0, y0 = x.floor(), y.floor()
    kernels = torch.zeros(batch, size * size, dtype=torch.float64)
    for dx in (0, 1):
        for dy in (0, 1):
            weight = (1 - (x - x0 - dx).abs()) * (1 - (y - y0 - dy).abs())
            column, row = (x0 + dx).long().clamp(0, size - 1), (y0 + dy).long().clamp(0, size - 1)
            kernels.scatter_add_(1, row * size + column, weight)
    kernels = kernels.view(batch, size, size)
    return kernels / kernels.sum(dim=(1, 2), keepdim=True)


def _blur(small: torch.Tensor, draw: DegradationDraw, device: torch.device) -> torch.Tensor:
    from kornia.filters import filter2d

    size = _kernel_size(draw)
    delta = torch.zeros(size, size, dtype=torch.float64)
    delta[size // 2, size // 2] = 1.0
    kernels = torch.where(
        (draw.blur == 1)[:, None, None],
        _gaussian_kernels(draw.sigma, size),
        torch.where((draw.blur == 2)[:, None, None], _motion_kernels(draw.motion_length, draw.motion_angle, size), delta),
    )
    # Replicated borders: an 8x8 image is narrower than a reflected wide kernel needs.
    return filter2d(small, kernels.to(device=device, dtype=small.dtype, non_blocking=True), border_type="replicate")


def _add_noise(small: torch.Tensor, draw: DegradationDraw, noise: torch.Tensor) -> torch.Tensor:
    """Gaussian noise of `noise_sigma` 8-bit levels, or Poisson-like noise: the normal
    approximation of a photon count, standard deviation sqrt(x / peak) at pixel value x."""
    device, dtype = small.device, small.dtype
    shape = (-1, 1, 1, 1)
    kind = draw.noise.to(device, non_blocking=True).view(shape)
    gaussian = (draw.noise_sigma / 255.0).to(device=device, dtype=dtype, non_blocking=True).view(shape)
    peak = draw.poisson_peak.to(device=device, dtype=dtype, non_blocking=True).view(shape)
    std = torch.where(kind == 1, gaussian.expand_as(small), torch.sqrt(small.clamp(min=0.0) / peak))
    std = torch.where(kind == 0, torch.zeros_like(std), std)
    return (small + std * noise).clamp_(0.0, 1.0)


def _jpeg(small: torch.Tensor, quality: torch.Tensor) -> torch.Tensor:
    """kornia's JPEG codec (4:2:0, the libjpeg tables scaled by quality) on the samples with a quality."""
    from kornia.enhance import jpeg_codec_differentiable

    chosen = torch.nonzero(quality > 0).flatten()  # CPU indices: no wait for the device
    if chosen.numel() == 0:
        return small
    index = chosen.to(small.device, non_blocking=True)
    coded = jpeg_codec_differentiable(
        small.index_select(0, index).clamp(0.0, 1.0), quality[chosen].to(device=small.device, dtype=small.dtype, non_blocking=True)
    )
    return small.index_copy(0, index, coded.clamp(0.0, 1.0).to(small.dtype))


def degradation_for(settings: dict | None, seed: int | None = None) -> Degradation | None:
    """`Degradation(settings, seed)`, or `None` for no degradation (`None` or `{}`)."""
    return Degradation(settings, seed) if settings else None


__all__ = ["Degradation", "DegradationDraw", "degradation_for", "resolve_degradation"]
