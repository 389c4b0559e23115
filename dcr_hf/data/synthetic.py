"""Synthetic face identities, so that every protocol runs with no download.

`load_synthetic` draws cartoon faces whose identity lives both in coarse features (skin tone,
face shape, hair colour and style) and in fine ones (eye shape and iris colour, thin brows,
moles, freckles, skin and hair texture, glasses, stubble), and renders many views of each
identity with varying pose, scale, lighting, expression, background and noise. At 120 x 120 the
fine detail tells identities apart; at 8 x 8 only the coarse features survive, so
identification degrades the way it does on real low-resolution faces.

The returned `DatasetDict` mirrors the real data sets: `train` (a CASIA-WebFace stand-in),
`retrieval` and `pairs` (LFW: held-out identities, 10 folds of verification pairs) and
`gallery` / `probe` (SCface: one frontal mugshot per subject, surveillance probes at three
distances and five cameras).

No library draws faces, so the renderer is hand-written: every part is a signed-distance mask
on a coordinate grid, evaluated for a whole batch at once with torch. The pose-independent part
of each identity is drawn once on a canonical grid; each view samples it through its own warp
(`grid_sample`) and adds the expression-dependent parts (brows, eyelids, mouth) on top.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from datasets import ClassLabel, Dataset, DatasetDict, Features, Image, Value
from transformers.utils import logging

from ..image_processing_dcr import simulate_low_resolution


logger = logging.get_logger(__name__)

#: Splits returned by `load_synthetic`, in order.
SYNTHETIC_SPLITS = ("train", "retrieval", "pairs", "gallery", "probe")

#: SCface-style probe distance -> side (pixels) of the low-resolution image the probe is made
#: from; distance 1 is the farthest, as in SCface.
PROBE_SIZES = {1: 16, 2: 24, 3: 40}

#: SCface-style cameras 1..5: a fixed viewpoint (yaw, pitch: the cameras hang above the subject)
#: and exposure (gain, RGB colour cast) each, like five physical cameras.
CAMERAS = {
    1: {"yaw": 0.06, "pitch": 0.05, "gain": 0.85, "cast": (1.00, 1.00, 0.94)},
    2: {"yaw": -0.05, "pitch": 0.06, "gain": 0.75, "cast": (0.94, 1.00, 1.06)},
    3: {"yaw": 0.00, "pitch": 0.07, "gain": 0.90, "cast": (1.06, 1.00, 0.90)},
    4: {"yaw": 0.09, "pitch": 0.04, "gain": 0.70, "cast": (1.00, 1.00, 1.00)},
    5: {"yaw": -0.08, "pitch": 0.05, "gain": 0.65, "cast": (0.90, 0.96, 1.10)},
}

# Farther probes are also darker (less light reaches a distant subject in a corridor).
_DISTANCE_GAIN = {1: 0.75, 2: 0.85, 3: 0.95}

# Independent random streams: (role, purpose). Each role's faces do not depend on the sizes of
# the other roles, and a single split can be rendered alone with the same pixels.
_ROLE = {"train": 0, "verification": 1, "surveillance": 2}
_IDENTITIES, _VIEWS, _PAIRS, _NOISE = 0, 1, 2, 3

_SKIN_TONES = np.array(
    [[0.96, 0.80, 0.69], [0.90, 0.68, 0.54], [0.78, 0.55, 0.40], [0.58, 0.39, 0.27], [0.38, 0.25, 0.17]]
)
_HAIR_COLOURS = np.array(
    [
        [0.07, 0.05, 0.04],  # black
        [0.22, 0.13, 0.07],  # dark brown
        [0.42, 0.27, 0.14],  # brown
        [0.82, 0.68, 0.42],  # blond
        [0.62, 0.26, 0.10],  # red
        [0.55, 0.55, 0.55],  # grey
        [0.86, 0.86, 0.84],  # white
    ]
)
_HAIR_PROBABILITIES = np.array([0.30, 0.25, 0.17, 0.11, 0.06, 0.07, 0.04])
_IRIS_COLOURS = np.array(
    [[0.32, 0.19, 0.09], [0.14, 0.09, 0.06], [0.28, 0.48, 0.75], [0.27, 0.48, 0.30], [0.50, 0.55, 0.60]]
)
_NUM_MOLES = 4
_NUM_FRECKLES = 48
_FACE_Y = 0.05  # the face centre sits a little below the image centre
_FACE_SCALE = 1.1  # faces fill the frame like aligned crops, with a little background


def _ramp(distance: torch.Tensor, inv_pixel: torch.Tensor | float) -> torch.Tensor:
    """Anti-aliased coverage of a shape from its signed distance (negative inside), one pixel wide."""
    return (0.5 - distance * inv_pixel).clamp_(0.0, 1.0)


def _ellipse(x: torch.Tensor, y: torch.Tensor, cx, cy, a, b) -> torch.Tensor:
    """Approximate signed distance to an axis-aligned ellipse (exact along its short axis)."""
    short = torch.minimum(torch.as_tensor(a), torch.as_tensor(b))
    return (torch.sqrt(((x - cx) / a) ** 2 + ((y - cy) / b) ** 2) - 1.0) * short


def _rgb(colour: torch.Tensor) -> torch.Tensor:
    """[n, 3] colours -> [3, n, 1, 1], to broadcast over a channels-first batch [3, n, H, W]."""
    return colour.T[:, :, None, None]


def _span(low: float, high: float, size: int) -> slice:
    """Pixel rows (or columns) of a `size`-pixel axis over [-1, 1] that cover [low, high], plus a margin."""
    first = int(np.floor((low + 1.0) / 2.0 * size - 0.5)) - 2
    last = int(np.ceil((high + 1.0) / 2.0 * size - 0.5)) + 3
    return slice(min(max(first, 0), size), min(max(last, 0), size))


def _draw_identities(rng: np.random.Generator, n: int) -> dict[str, torch.Tensor]:
    """Draw the appearance of `n` identities: one float32 tensor per parameter, [n], [n, k] or maps."""
    u = rng.uniform

    def pick(palette: np.ndarray, jitter: float, probabilities: np.ndarray | None = None) -> np.ndarray:
        choice = rng.choice(len(palette), size=n, p=probabilities)
        return np.clip(palette[choice] + rng.normal(0.0, jitter, (n, 3)), 0.02, 0.98)

    tone = u(0, len(_SKIN_TONES) - 1, n)
    low = np.floor(tone).astype(int).clip(0, len(_SKIN_TONES) - 2)
    skin = _SKIN_TONES[low] + (tone - low)[:, None] * (_SKIN_TONES[low + 1] - _SKIN_TONES[low])
    skin = np.clip(skin + rng.normal(0.0, 0.02, (n, 3)), 0.05, 0.98)
    hair = pick(_HAIR_COLOURS, 0.04, _HAIR_PROBABILITIES)
    bald = rng.random(n) < 0.08
    long_hair = rng.random(n) < 0.35
    params = {
        "skin": skin,
        "hair": hair,
        "brow_colour": np.clip(hair * u(0.5, 0.9, (n, 1)) + 0.03, 0.02, 0.9),
        "iris": pick(_IRIS_COLOURS, 0.04),
        "lip": np.clip(skin * np.array([0.85, 0.55, 0.55]) + rng.normal(0.0, 0.03, (n, 3)), 0.05, 0.95),
        "glasses_colour": pick(np.array([[0.05, 0.05, 0.05], [0.45, 0.30, 0.10], [0.70, 0.62, 0.35]]), 0.03),
        # Face outline, centred at y = _FACE_Y: half-width, half-height, narrowing towards the chin.
        "face_a": u(0.50, 0.62, n),
        "face_b": u(0.66, 0.78, n),
        "jaw": u(0.05, 0.35, n),
        # Hair: hairline height, recession at the temples, volume, how far down the sides reach,
        # and the strands' spatial frequency, direction and phase.
        "hairline": np.where(bald, -1.2, u(-0.56, -0.36, n)),
        "recession": u(0.0, 0.2, n),
        "hair_volume": np.where(bald, 0.0, u(0.06, 0.16, n)),
        "hair_length": np.where(long_hair, u(0.3, 0.95, n), np.where(bald, -0.6, u(-0.3, 0.05, n))),
        "hair_frequency": u(40.0, 90.0, n),
        "hair_angle": u(-0.6, 0.6, n),
        "hair_phase": u(0.0, 2 * np.pi, n),
        # Eyes (mirrored): height, half spacing, almond half-width and half-height, tilt, iris.
        "eye_y": u(-0.12, 0.0, n),
        "eye_x": u(0.19, 0.26, n),
        "eye_w": u(0.085, 0.12, n),
        "eye_h": u(0.032, 0.055, n),
        "eye_tilt": u(-0.18, 0.18, n),
        "iris_r": u(0.032, 0.05, n),
        # Brows: gap above the eyes, half-length, half-thickness, arch, slope.
        "brow_gap": u(0.075, 0.13, n),
        "brow_len": u(0.075, 0.12, n),
        "brow_thickness": u(0.008, 0.028, n),
        "brow_arch": u(0.0, 0.04, n),
        "brow_slope": u(-0.25, 0.25, n),
        # Nose tip height and half-width; mouth height below the nose, half-width, lips.
        "nose_y": u(0.12, 0.22, n),
        "nose_w": u(0.05, 0.09, n),
        "mouth_dy": u(0.13, 0.2, n),
        "mouth_w": u(0.11, 0.19, n),
        "upper_lip": u(0.012, 0.03, n),
        "lower_lip": u(0.018, 0.045, n),
        # Fine marks: moles, freckles, glasses, stubble, moustache, blush, skin mottling.
        "mole_x": u(-0.42, 0.42, (n, _NUM_MOLES)),
        "mole_y": u(-0.35, 0.5, (n, _NUM_MOLES)),
        "mole_present": (rng.random((n, _NUM_MOLES)) < 0.4).astype(float),
        "freckles": (rng.random(n) < 0.3) * u(0.4, 0.8, n),
        "freckle_x": rng.normal(0.0, 0.22, (n, _NUM_FRECKLES)),
        "freckle_y": rng.normal(0.1, 0.07, (n, _NUM_FRECKLES)),
        "glasses": (rng.random(n) < 0.2).astype(float),
        "glasses_thickness": u(0.008, 0.016, n),
        "beard": (rng.random(n) < 0.18) * u(0.4, 0.9, n),
        "moustache": (rng.random(n) < 0.2).astype(float),
        "blush": u(0.0, 0.35, n),
        "mottle": rng.normal(0.0, 1.0, (n, 1, 14, 14)),
        "stubble": rng.random((n, 1, 64, 64)),
    }
    params["mouth_y"] = params["nose_y"] + params["mouth_dy"]
    return {key: torch.as_tensor(value, dtype=torch.float32) for key, value in params.items()}


def _render_canonical(ids: dict[str, torch.Tensor], size: int) -> torch.Tensor:
    """Draw the pose- and expression-independent part of each identity on a canonical grid.

    Returns premultiplied RGB and coverage, channels first, `[4, n, size, size]`, over [-1, 1]^2
    (x right, y down) with pixel centres where `grid_sample(align_corners=False)` expects them.
    """
    n = ids["skin"].shape[0]
    axis = (torch.arange(size, dtype=torch.float32) + 0.5) / size * 2.0 - 1.0
    # Separate row and column coordinates: with no rotation here, most terms are cheap outer sums.
    x, y = axis.view(1, 1, size), axis.view(1, size, 1)
    inv = size / 2.0
    p = lambda name: ids[name].view(-1, 1, 1)  # noqa: E731
    face_a, face_b = p("face_a"), p("face_b")
    skin, hair = _rgb(ids["skin"]), _rgb(ids["hair"])

    canvas = torch.zeros(3, n, size, size)
    # Hair behind the head (long hair reaches the shoulders), then neck, ears and face.
    hair_shape = _ellipse(x, y, 0.0, _FACE_Y - 0.04, face_a + p("hair_volume"), face_b + p("hair_volume") * 0.8)
    angle = p("hair_angle")
    strands = torch.sin(p("hair_frequency") * (x * torch.cos(angle) + y * torch.sin(angle)) + p("hair_phase"))
    hair_field = hair * (1.0 + 0.15 * strands)
    back = _ramp(hair_shape, inv) * _ramp(y - p("hair_length"), inv)
    canvas.lerp_(hair_field, back)
    neck = _ramp(torch.maximum(x.abs() - face_a * 0.55, _FACE_Y + 0.3 - y), inv)
    canvas.lerp_(skin * 0.8, neck)
    ears = _ramp(_ellipse(x.abs(), y, face_a * 0.97, p("eye_y") + 0.08, 0.065, 0.13), inv)
    canvas.lerp_(skin * 0.88, ears)
    lower = ((y - _FACE_Y) / face_b).clamp(0.0, 1.0)
    face = _ramp(_ellipse(x, y, 0.0, _FACE_Y, face_a * (1.0 - p("jaw") * lower**2), face_b), inv)
    mottle = F.interpolate(ids["mottle"], size=(size, size), mode="bicubic", align_corners=False)[:, 0]
    roundness = ((x / face_a) ** 2 + ((y - _FACE_Y) / face_b) ** 2).clamp(max=1.5)
    canvas.lerp_(skin * ((1.0 + 0.06 * mottle) * (1.0 - 0.2 * roundness**2)), face)

    # Moles and freckles: points splatted on one map and blurred into soft dots (drawing dozens of
    # discs per identity analytically would dominate the cost).
    spot_x = torch.cat([ids["mole_x"], ids["freckle_x"]], dim=1)
    spot_y = torch.cat([ids["mole_y"], ids["freckle_y"]], dim=1)
    weight = torch.cat([ids["mole_present"], ids["freckles"][:, None].expand_as(ids["freckle_x"])], dim=1)
    col = ((spot_x + 1.0) / 2.0 * size).long().clamp(0, size - 1)
    row = ((spot_y + 1.0) / 2.0 * size).long().clamp(0, size - 1)
    spots = torch.zeros(n, size * size).scatter_add_(1, row * size + col, weight).view(n, 1, size, size)
    kernel = torch.tensor([[0.3, 0.6, 0.3], [0.6, 1.0, 0.6], [0.3, 0.6, 0.3]])[None, None]
    marks = F.conv2d(spots, kernel, padding=1)[:, 0].clamp_(max=1.0)
    canvas.lerp_(skin * 0.5, marks * face)

    # Lower face: blush, stubble, moustache, nose shading, nose tip and nostrils.
    rows = _span(float(ids["eye_y"].min()) + 0.04, 1.0, size)
    cols = _span(-float(ids["face_a"].max()), float(ids["face_a"].max()), size)
    band, xb, yb, skin_here = canvas[:, :, rows, cols], x[:, :, cols], y[:, rows], face[:, rows, cols]
    nose_y, nose_w, mouth_y = p("nose_y"), p("nose_w"), p("mouth_y")
    blush = (1.0 - _ellipse(xb.abs(), yb, 0.3, nose_y, 0.13, 0.09) / 0.06).clamp(0.0, 1.0) * p("blush") * 0.5
    band.lerp_(_rgb(torch.tensor([[0.85, 0.35, 0.35]])), blush * skin_here)
    stubble = F.interpolate(ids["stubble"], size=(size, size), mode="nearest")[:, 0, rows, cols] > 0.35
    band.lerp_(hair * 0.8, skin_here * _ramp(mouth_y - 0.07 - yb, inv) * stubble * p("beard"))
    moustache = _ramp(_ellipse(xb, yb, 0.0, mouth_y - p("upper_lip") - 0.03, p("mouth_w") * 1.1, 0.028), inv)
    band.lerp_(hair * 0.85, moustache * p("moustache") * 0.9)
    side = torch.maximum((xb.abs() - nose_w * 0.75).abs() - 0.012, torch.maximum(p("eye_y") + 0.06 - yb, yb - nose_y))
    band.lerp_(skin * 0.7, _ramp(side, inv) * 0.35)
    band.lerp_((skin * 1.12).clamp(max=1.0), _ramp(_ellipse(xb, yb, 0.0, nose_y - 0.015, nose_w, 0.045), inv) * 0.35)
    band.lerp_(skin * 0.4, _ramp(_ellipse(xb.abs(), yb, nose_w * 0.55, nose_y + 0.015, 0.026, 0.013), inv))

    # Eyes: almond-shaped whites, iris, pupil, catch light, upper lash line; glasses around them.
    eye_x, eye_y, eye_w, eye_h = p("eye_x"), p("eye_y"), p("eye_w"), p("eye_h")
    ring_w = eye_w * 1.45
    reach = float((ids["eye_x"] + ids["eye_w"] * 1.45 + ids["glasses_thickness"]).max())
    ring_h = ids["eye_w"] * 1.45 / 1.3 + 0.02
    rows = _span(float((ids["eye_y"] - ring_h).min()), float((ids["eye_y"] + ring_h).max()), size)
    cols = _span(-reach, reach, size)
    band, xb, yb = canvas[:, :, rows, cols], x[:, :, cols], y[:, rows]
    ax = xb.abs()
    lx = ax - eye_x
    ly = yb - eye_y + p("eye_tilt") * lx
    lid = eye_h * (1.0 - (lx / eye_w) ** 2)
    white = _ramp(torch.maximum(ly.abs() - lid, lx.abs() - eye_w), inv)
    band.lerp_(_rgb(torch.tensor([[0.93, 0.91, 0.88]])), white)
    iris_r = p("iris_r")
    iris_distance = torch.sqrt(lx**2 + (yb - eye_y) ** 2)
    band.lerp_(_rgb(ids["iris"]), _ramp(iris_distance - iris_r, inv) * white)
    band.lerp_(_rgb(ids["iris"]) * 0.15, _ramp(iris_distance - iris_r * 0.45, inv) * white)
    glint = torch.sqrt((lx + iris_r * 0.35) ** 2 + (yb - eye_y + iris_r * 0.35) ** 2) - 0.011
    band.lerp_(torch.ones(3, 1, 1, 1), _ramp(glint, inv) * white)
    lashes = _ramp(torch.maximum((ly + lid).abs() - 0.007, lx.abs() - eye_w * 1.05), inv)
    band.lerp_(_rgb(ids["brow_colour"]) * 0.6, lashes)
    thickness = p("glasses_thickness")
    ring = (torch.sqrt(lx**2 + ((yb - eye_y) * 1.3) ** 2) - ring_w).abs() - thickness
    bridge = torch.maximum((yb - eye_y + 0.02).abs() - thickness, ax - eye_x + ring_w)
    band.lerp_(_rgb(ids["glasses_colour"]), _ramp(torch.minimum(ring, bridge), inv) * p("glasses"))

    # Hair on top of the head, above a hairline that recedes at the temples.
    top = _ramp(hair_shape, inv) * _ramp(y - p("hairline") - p("recession") * (x / face_a) ** 2, inv)
    canvas.lerp_(hair_field, top)

    alpha = torch.maximum(torch.maximum(back, neck), torch.maximum(torch.maximum(ears, face), top))
    out = torch.empty(4, n, size, size)
    torch.mul(canvas, alpha, out=out[:3])
    out[3] = alpha
    return out


def _atlas(canonical: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Tile canonical images [4, n, S, S] into one texture [1, 4, rows * S, columns * S].

    One `grid_sample` on the atlas replaces gathering a canonical copy for every view.
    Returns the atlas and its number of tile columns (identity k is tile (k // columns, k % columns)).
    """
    channels, n, size, _ = canonical.shape
    columns = int(np.ceil(np.sqrt(n)))
    rows = -(-n // columns)
    padded = F.pad(canonical, (0, 0, 0, 0, 0, rows * columns - n))
    atlas = padded.view(channels, rows, columns, size, size).permute(0, 1, 3, 2, 4)
    return atlas.reshape(1, channels, rows * size, columns * size), columns


def _draw_views(rng: np.random.Generator, n: int) -> dict[str, torch.Tensor]:
    """Per-image pose, expression, lighting, background and noise for `n` unconstrained views."""
    u = rng.uniform
    grey = u(0.1, 0.9, (n, 1))
    views = {
        # Residual misalignment of an aligned face crop, plus a small head turn.
        "angle": np.clip(rng.normal(0.0, 0.035, n), -0.09, 0.09),
        "shift_x": u(-0.025, 0.025, n),
        "shift_y": u(-0.025, 0.025, n),
        "scale": _FACE_SCALE * u(0.95, 1.05, n),
        "yaw": u(-0.1, 0.1, n),
        "pitch": u(-0.04, 0.04, n),
        "smile": u(-0.6, 1.0, n),
        "open": np.where(rng.random(n) < 0.5, 0.0, u(0.005, 0.05, n)),
        "brow_raise": u(-0.02, 0.035, n),
        "frown": u(-0.25, 0.25, n),
        "blink": np.where(rng.random(n) < 0.85, u(0.0, 0.35, n), u(0.35, 1.0, n)),
        "gain": u(0.6, 1.3, n),
        "gradient_x": u(-0.35, 0.35, n),
        "gradient_y": u(-0.25, 0.25, n),
        "cast": u(0.9, 1.1, (n, 3)),
        "background": np.clip(grey + u(0.0, 0.5, (n, 1)) * (u(0.0, 1.0, (n, 3)) - grey), 0.0, 1.0),
        "background_gradient": u(-0.3, 0.3, n),
        "noise": u(0.005, 0.04, n),
    }
    return {key: torch.as_tensor(value, dtype=torch.float32) for key, value in views.items()}


def _neutral_views(n: int) -> dict[str, torch.Tensor]:
    """Frontal, evenly lit, neutral-expression mugshot views on a plain light background."""
    still = ("angle", "shift_x", "shift_y", "yaw", "pitch", "smile", "open", "brow_raise", "frown", "blink")
    views = {key: torch.zeros(n) for key in (*still, "gradient_x", "gradient_y", "background_gradient")}
    views.update(
        scale=torch.full((n,), _FACE_SCALE),
        gain=torch.ones(n),
        cast=torch.ones(n, 3),
        background=torch.full((n, 3), 0.82),
        noise=torch.full((n,), 0.005),
    )
    return views


def _window(views: dict[str, torch.Tensor], box: tuple[float, float, float, float], size: int) -> tuple[slice, slice]:
    """Image rows and columns that contain the face-coordinate box (x0, x1, y0, y1) in every view."""
    x0, x1, y0, y1 = box
    yaw, pitch = float(views["yaw"].abs().max()), float(views["pitch"].abs().max())
    fx = torch.tensor([x0 - yaw, x1 + yaw, x0 - yaw, x1 + yaw]).view(1, 4)
    fy = torch.tensor([y0 - pitch, y0 - pitch, y1 + pitch, y1 + pitch]).view(1, 4)
    cos, sin = torch.cos(views["angle"])[:, None], torch.sin(views["angle"])[:, None]
    scale = views["scale"][:, None]
    u = views["shift_x"][:, None] + scale * (cos * fx - sin * fy)
    v = views["shift_y"][:, None] + scale * (sin * fx + cos * fy)
    return _span(float(v.min()), float(v.max()), size), _span(float(u.min()), float(u.max()), size)


def _render_views(
    atlas: tuple[torch.Tensor, int],
    ids: dict[str, torch.Tensor],
    identity: torch.Tensor,
    views: dict[str, torch.Tensor],
    image_size: int,
    generator: torch.Generator,
    chunk_size: int = 64,
) -> torch.Tensor:
    """Render one view per entry of `identity` ([n] indices into `ids`) -> uint8 [n, H, W, 3].

    Sensor noise comes from a bank of noise images, a random slice of it per chunk: drawing fresh
    noise for every view would cost about as much as rendering it.
    """
    noise_bank = torch.randn(3, 2 * chunk_size, image_size, image_size, generator=generator)
    images = torch.empty(len(identity), image_size, image_size, 3, dtype=torch.uint8)
    for start in range(0, len(identity), chunk_size):
        index = identity[start : start + chunk_size]
        chunk_ids = {key: value[index] for key, value in ids.items() if value.ndim <= 2}
        chunk_views = {key: value[start : start + chunk_size] for key, value in views.items()}
        offset = int(torch.randint(0, chunk_size + 1, (1,), generator=generator))
        noise = noise_bank[:, offset : offset + len(index)]
        chunk = _render_chunk(atlas, index, chunk_ids, chunk_views, image_size, noise)
        # Rendering is channels-first across the batch; images are stored channels-last.
        images[start : start + len(index)].copy_(chunk.mul_(255.0).round_().permute(1, 2, 3, 0))
    return images


def _render_chunk(
    atlas: tuple[torch.Tensor, int],
    identity: torch.Tensor,
    ids: dict[str, torch.Tensor],
    views: dict[str, torch.Tensor],
    image_size: int,
    noise: torch.Tensor,
) -> torch.Tensor:
    """Render a chunk of views, channels first: [3, n, H, W] in [0, 1]; `noise` is [3, n, H, W]."""
    texture, columns = atlas
    tile = texture.shape[-1] // columns
    n = identity.shape[0]
    axis = (torch.arange(image_size, dtype=torch.float32) + 0.5) / image_size * 2.0 - 1.0
    u, v = axis.view(1, 1, image_size), axis.view(1, image_size, 1)
    p = lambda name: ids[name].view(-1, 1, 1)  # noqa: E731
    q = lambda name: views[name].view(-1, 1, 1)  # noqa: E731

    # Pose: image -> face coordinates through the inverse similarity transform, then a
    # yaw/pitch-like warp: inner features slide while the silhouette stays, which foreshortens
    # one side of the face like a small head turn.
    cos, sin, scale = torch.cos(q("angle")), torch.sin(q("angle")), q("scale")
    du, dv = u - q("shift_x"), v - q("shift_y")
    xa = (cos * du + sin * dv) / scale
    ya = (cos * dv - sin * du) / scale
    x = xa - q("yaw") * (1.0 - (xa / 0.75) ** 2).clamp_(min=0.0)
    y = ya - q("pitch") * (1.0 - (ya / 0.9) ** 2).clamp_(min=0.0)
    inv = q("scale") * (image_size / 2.0)

    # Sample each view's identity tile; clamping to the tile's border pixels keeps bilinear
    # sampling inside the tile (it replicates the border: the neck continues downwards).
    limit = 1.0 - 1.0 / tile
    row, col = (identity // columns).view(-1, 1, 1), (identity % columns).view(-1, 1, 1)
    grid = torch.empty(n, image_size, image_size, 2)
    for axis_index, coordinate, offset in ((0, x, col), (1, y, row)):
        target = grid[..., axis_index]
        torch.clamp(coordinate, -limit, limit, out=target)
        target.add_(1.0 + 2.0 * offset).mul_(tile / texture.shape[-1 - axis_index]).sub_(1.0)
    grid = grid.view(1, n * image_size, image_size, 2)
    sampled = F.grid_sample(texture, grid, mode="bilinear", align_corners=False).view(4, n, image_size, image_size)
    canvas, alpha = sampled[:3], sampled[3]

    # Expression parts, drawn only inside the window that holds them in every view of the chunk.
    eye_w, eye_h, brow_len = p("eye_w"), p("eye_h"), p("brow_len")
    top = ids["eye_y"] - ids["brow_gap"] - ids["brow_arch"] - ids["brow_thickness"] - 0.25 * ids["brow_len"]
    reach = float(torch.maximum(ids["eye_w"], ids["brow_len"]).add(ids["eye_x"]).max()) + 0.02
    bottom = ids["eye_y"] + ids["eye_h"] + ids["eye_tilt"].abs() * ids["eye_w"]
    box = (-reach, reach, float((top - views["brow_raise"]).min()) - 0.02, float(bottom.max()) + 0.02)
    rows, cols = _window(views, box, image_size)
    band, xb, yb = canvas[:, :, rows, cols], x[:, rows, cols], y[:, rows, cols]
    ax = xb.abs()
    # Eyelids close over the eye whites (blinks, squints).
    lx = ax - p("eye_x")
    ly = yb - p("eye_y") + p("eye_tilt") * lx
    lid = eye_h * (1.0 - (lx / eye_w) ** 2)
    white = _ramp(torch.maximum(ly.abs() - lid, lx.abs() - eye_w), inv)
    closed = _ramp(ly - (2.0 * q("blink") - 1.0) * lid, inv) * white * (q("blink") > 0.02)
    band.lerp_(_rgb(ids["skin"]) * 0.85, closed)
    # Brows: raised or lowered, inner ends pulled down by a frown.
    bx = ax - p("eye_x")
    outward = (bx / brow_len).clamp(-1.0, 1.0)
    centre = p("eye_y") - p("brow_gap") - q("brow_raise")
    line = centre - p("brow_arch") * (1.0 - outward**2) + (p("brow_slope") - q("frown")) * bx * 0.5
    half = p("brow_thickness") * (1.0 - 0.175 * (outward + 1.0))
    brows = _ramp(torch.maximum((yb - line).abs() - half, bx.abs() - brow_len), inv)
    band.lerp_(_rgb(ids["brow_colour"]), brows)

    # Mouth: lips around a line that curves up with a smile, open or closed.
    reach = float(ids["mouth_w"].max()) * 1.1 + 0.02
    box = (-reach, reach, float(ids["mouth_y"].min()) - 0.12, float(ids["mouth_y"].max()) + 0.12)
    rows, cols = _window(views, box, image_size)
    band, xb, yb = canvas[:, :, rows, cols], x[:, rows, cols], y[:, rows, cols]
    mouth_w = p("mouth_w") * (1.0 + 0.08 * q("smile"))
    across = (xb / mouth_w).clamp(-1.0, 1.0)
    body = torch.sqrt((1.0 - across**2).clamp_(min=0.0))
    line = p("mouth_y") + q("smile") * 0.035 * (0.4 - across**2)
    gap = q("open") / 2.0
    outside = xb.abs() - mouth_w
    upper_half, lower_half = p("upper_lip") * body / 2.0, p("lower_lip") * body / 2.0
    upper = (yb - (line - gap - upper_half)).abs() - upper_half
    lower = (yb - (line + gap + lower_half)).abs() - lower_half
    band.lerp_(_rgb(ids["lip"]), _ramp(torch.maximum(torch.minimum(upper, lower), outside), inv))
    inside = _ramp(torch.maximum((yb - line).abs() - gap, outside + 0.01), inv) * (q("open") > 0)
    band.lerp_(_rgb(torch.tensor([[0.25, 0.06, 0.06]])), inside)
    teeth = inside * _ramp(torch.maximum(yb - line + gap * 0.2, xb.abs() - mouth_w * 0.6), inv)
    band.lerp_(_rgb(torch.tensor([[0.9, 0.88, 0.82]])), teeth)
    seam = _ramp(torch.maximum((yb - line).abs() - 0.006, outside), inv) * (q("open") == 0)
    band.lerp_(_rgb(ids["lip"]) * 0.55, seam)

    # Background behind the head, then light: gain, colour cast and a gradient across the image,
    # then sensor noise drawn from a bank of noise images (drawing fresh noise for every view
    # costs more than rendering it).
    background = _rgb(views["background"]) * (1.0 + q("background_gradient") * v)
    image = torch.addcmul(canvas, background, 1.0 - alpha)
    image *= (q("gain") * (1.0 + q("gradient_x") * u + q("gradient_y") * v)).clamp_(min=0.0)
    image *= _rgb(views["cast"])
    return image.addcmul_(noise, views["noise"].view(1, -1, 1, 1)).clamp_(0.0, 1.0)


def _encode(images: torch.Tensor) -> list[bytes]:
    """uint8 images [n, H, W, 3] -> binary PPM files, one per image.

    PPM (a one-line header and the raw RGB bytes) rather than PNG: encoding one noisy 120 x 120
    PNG costs ~2.5 ms, which would dominate the build time. It is lossless and PIL decodes it to
    an RGB image.
    """
    array = images.numpy()
    header = b"P6\n%d %d\n255\n" % (array.shape[2], array.shape[1])
    return [header + item.tobytes() for item in array]


def _rng(seed: int, role: str, purpose: int) -> np.random.Generator:
    return np.random.default_rng([seed, _ROLE[role], purpose])


def _torch_generator(seed: int, role: str) -> torch.Generator:
    return torch.Generator().manual_seed(int(_rng(seed, role, _NOISE).integers(2**62)))


def _identity_images(
    seed: int, role: str, num_identities: int, images_per_identity: int, image_size: int
) -> tuple[list[bytes], np.ndarray]:
    """Render `images_per_identity` unconstrained views of each identity of a role.

    Returns the encoded images, identity-major, and their labels `[num_identities * images_per_identity]`.
    """
    ids = _draw_identities(_rng(seed, role, _IDENTITIES), num_identities)
    atlas = _atlas(_render_canonical(ids, _canonical_size(image_size)))
    labels = np.repeat(np.arange(num_identities), images_per_identity)
    views = _draw_views(_rng(seed, role, _VIEWS), len(labels))
    images = _render_views(atlas, ids, torch.as_tensor(labels), views, image_size, _torch_generator(seed, role))
    return _encode(images), labels


def _canonical_size(image_size: int) -> int:
    # At least as fine as the most magnified view, so that sampling keeps fine detail.
    return int(np.ceil(image_size * _FACE_SCALE * 1.05))


def _class_label(role: str, n: int) -> ClassLabel:
    return ClassLabel(names=[f"{role}_{i:04d}" for i in range(n)])


def _image_dataset(images: list[bytes], labels: np.ndarray, role: str, n: int) -> Dataset:
    features = Features({"image": Image(), "label": _class_label(role, n)})
    return Dataset.from_dict({"image": images, "label": labels.tolist()}, features=features)


def _pairs_dataset(seed: int, images: list[bytes], labels: np.ndarray, num_identities: int, num_pairs: int) -> Dataset:
    """LFW-style pairs: 10 folds of equal size, half same and half different identity each.

    As in LFW's View 2, the folds are identity-disjoint: fold k draws only from the k-th tenth of
    the identities. Pairs are distinct and in fold order (the folds are contiguous blocks).
    """
    rng = _rng(seed, "verification", _PAIRS)
    per_class = num_pairs // 20
    by_identity = [np.flatnonzero(labels == i) for i in range(num_identities)]
    rows: dict[str, list] = {"image_a": [], "image_b": [], "is_same": [], "fold": [], "label_a": [], "label_b": []}
    for fold, group in enumerate(np.array_split(np.arange(num_identities), 10)):
        same = [(a, b) for i in group for j, a in enumerate(by_identity[i]) for b in by_identity[i][j + 1 :]]
        different = [
            (a, b) for j, i in enumerate(group) for k in group[j + 1 :] for a in by_identity[i] for b in by_identity[k]
        ]
        if min(len(same), len(different)) < per_class:
            raise ValueError(
                f"num_pairs={num_pairs} needs {per_class} same and {per_class} different pairs per fold, but fold "
                f"{fold} has {len(group)} identities giving only {len(same)} same and {len(different)} different "
                "pairs; lower num_pairs or raise num_verification_identities / images_per_identity."
            )
        for is_same, candidates in ((1, same), (0, different)):
            for choice in rng.choice(len(candidates), size=per_class, replace=False):
                a, b = candidates[choice]
                if rng.random() < 0.5:  # the first image is not always the lower index
                    a, b = b, a
                rows["image_a"].append(images[a])
                rows["image_b"].append(images[b])
                rows["is_same"].append(is_same)
                rows["fold"].append(fold)
                rows["label_a"].append(int(labels[a]))
                rows["label_b"].append(int(labels[b]))
    label = _class_label("verification", num_identities)
    features = Features(
        {
            "image_a": Image(),
            "image_b": Image(),
            "is_same": Value("int8"),
            "fold": Value("int8"),
            "label_a": label,
            "label_b": label,
        }
    )
    return Dataset.from_dict(rows, features=features)


def _surveillance_datasets(seed: int, num_subjects: int, image_size: int, split: str | None) -> dict[str, Dataset]:
    """SCface-style gallery (one neutral mugshot per subject) and probes (5 cameras x 3 distances each)."""
    ids = _draw_identities(_rng(seed, "surveillance", _IDENTITIES), num_subjects)
    atlas = _atlas(_render_canonical(ids, _canonical_size(image_size)))
    generator = _torch_generator(seed, "surveillance")
    label = _class_label("surveillance", num_subjects)
    subjects = np.arange(num_subjects)
    datasets = {}

    gallery = _render_views(atlas, ids, torch.as_tensor(subjects), _neutral_views(num_subjects), image_size, generator)
    if split in (None, "gallery"):
        features = Features({"image": Image(), "label": label, "subject": Value("int32")})
        rows = {"image": _encode(gallery), "label": subjects.tolist(), "subject": (subjects + 1).tolist()}
        datasets["gallery"] = Dataset.from_dict(rows, features=features)
    if split not in (None, "probe"):
        return datasets

    cameras = np.array(sorted(CAMERAS))
    distances = np.array(sorted(PROBE_SIZES))
    # Subject-major, then camera, then distance: the order of SCface's file listing.
    subject, camera, distance = (a.ravel() for a in np.meshgrid(subjects, cameras, distances, indexing="ij"))
    views = _draw_views(_rng(seed, "surveillance", _VIEWS), len(subject))
    table = {key: torch.tensor([CAMERAS[c][key] for c in camera]) for key in ("yaw", "pitch", "gain")}
    views["yaw"] = table["yaw"] + views["yaw"] * 0.3
    views["pitch"] = table["pitch"] + views["pitch"] * 0.3
    views["gain"] = table["gain"] * torch.tensor([_DISTANCE_GAIN[d] for d in distance], dtype=torch.float32)
    views["cast"] = torch.tensor([CAMERAS[c]["cast"] for c in camera], dtype=torch.float32)
    noise = views["noise"].clone()
    views["noise"] = torch.zeros_like(noise)  # sensor noise is added to the low-resolution image below
    rendered = _render_views(atlas, ids, torch.as_tensor(subject), views, image_size, generator)
    probes = rendered.permute(0, 3, 1, 2).float() / 255.0
    for d, probe_size in PROBE_SIZES.items():
        at = torch.as_tensor(distance == d)
        probes[at] = simulate_low_resolution(probes[at], probe_size, clamp=(0.0, 1.0))
    probes += torch.randn(probes.shape, generator=generator) * (noise + 0.01).view(-1, 1, 1, 1)
    probes = probes.clamp_(0.0, 1.0).mul_(255.0).round_().to(torch.uint8).permute(0, 2, 3, 1).contiguous()
    features = Features(
        {
            "image": Image(),
            "label": label,
            "subject": Value("int32"),
            "camera": Value("int8"),
            "distance": Value("int8"),
        }
    )
    rows = {
        "image": _encode(probes),
        "label": subject.tolist(),
        "subject": (subject + 1).tolist(),
        "camera": camera.tolist(),
        "distance": distance.tolist(),
    }
    datasets["probe"] = Dataset.from_dict(rows, features=features)
    return datasets


def load_synthetic(
    split: str | None = None,
    num_identities: int = 200,
    images_per_identity: int = 10,
    image_size: int = 120,
    seed: int = 0,
    num_pairs: int = 600,
    num_verification_identities: int = 50,
    num_surveillance_subjects: int = 40,
) -> DatasetDict | Dataset:
    """Build a synthetic face-identity data set for every protocol, deterministically from `seed`.

    Three disjoint groups of identities, each drawn from its own random stream (so the held-out
    faces do not change when `num_identities` does):

    - `train`: `num_identities` identities x `images_per_identity` views; columns `image`
      (RGB PIL image, `image_size` x `image_size`) and `label` (`ClassLabel`, names `train_NNNN`).
    - `retrieval`: `num_verification_identities` held-out identities x `images_per_identity`
      views (an LFW stand-in); columns `image`, `label` (names `verification_NNNN`).
    - `pairs`: `num_pairs` LFW-style verification pairs of `retrieval` images; columns
      `image_a`, `image_b`, `is_same` (1 same identity, 0 not), `fold` (0..9: contiguous blocks of
      `num_pairs / 10` pairs, half same, half different, identity-disjoint across folds),
      `label_a`, `label_b`.
    - `gallery`: one frontal, neutral, evenly lit mugshot for each of
      `num_surveillance_subjects` other held-out subjects; columns `image`, `label`
      (names `surveillance_NNNN`), `subject` (`label + 1`, like SCface's file numbers).
    - `probe`: SCface-style surveillance views, one per subject, camera (1..5, see `CAMERAS`) and
      distance (1 farthest .. 3, see `PROBE_SIZES`): rendered at `image_size`, brought down to
      16 / 24 / 40 pixels and back with `simulate_low_resolution`, darker and noisier when
      farther; columns `image`, `label`, `subject`, `camera`, `distance`.

    Views vary pose (rotation, shift, scale, yaw/pitch-like warp), expression (smile, open
    mouth, brows, blinks), lighting (gain, colour cast, gradient), background and noise.

    Args:
        split: one of `SYNTHETIC_SPLITS` to build only that split, or `None` for all of them.
        num_identities: training identities.
        images_per_identity: views per identity in `train` and `retrieval` (>= 2).
        image_size: side of every image, in pixels (> 40, the largest probe size).
        seed: the same seed gives the same pixels, a different seed different faces.
        num_pairs: verification pairs, a multiple of 20 (10 folds x same/different).
        num_verification_identities: held-out identities of `retrieval` and `pairs` (>= 20).
        num_surveillance_subjects: held-out subjects of `gallery` and `probe`.

    Returns:
        A `DatasetDict` with the splits above, or the one `Dataset` asked for by `split`.
    """
    if split is not None and split not in SYNTHETIC_SPLITS:
        raise ValueError(f"split={split!r} is not a synthetic split; expected None or one of {SYNTHETIC_SPLITS}.")
    for name, value, minimum in (
        ("num_identities", num_identities, 1),
        ("images_per_identity", images_per_identity, 2),
        ("num_verification_identities", num_verification_identities, 20),
        ("num_surveillance_subjects", num_surveillance_subjects, 1),
        ("image_size", image_size, max(PROBE_SIZES.values()) + 1),
    ):
        if not isinstance(value, int) or value < minimum:
            raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}.")
    if not isinstance(num_pairs, int) or num_pairs <= 0 or num_pairs % 20:
        raise ValueError(f"num_pairs must be a positive multiple of 20 (10 folds x same/different), got {num_pairs!r}.")

    splits: dict[str, Dataset] = {}
    if split in (None, "train"):
        images, labels = _identity_images(seed, "train", num_identities, images_per_identity, image_size)
        splits["train"] = _image_dataset(images, labels, "train", num_identities)
    if split in (None, "retrieval", "pairs"):
        images, labels = _identity_images(
            seed, "verification", num_verification_identities, images_per_identity, image_size
        )
        if split in (None, "retrieval"):
            splits["retrieval"] = _image_dataset(images, labels, "verification", num_verification_identities)
        if split in (None, "pairs"):
            splits["pairs"] = _pairs_dataset(seed, images, labels, num_verification_identities, num_pairs)
    if split in (None, "gallery", "probe"):
        splits.update(_surveillance_datasets(seed, num_surveillance_subjects, image_size, split))
    logger.info("Built synthetic splits %s.", {name: len(ds) for name, ds in splits.items()})
    return splits[split] if split is not None else DatasetDict(splits)
