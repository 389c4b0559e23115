"""Random draws of the synthetic faces: identity appearance, view conditions and random streams.

Every draw comes from its own `numpy` stream (`_rng`: seed, role, purpose), so that each role's
faces do not depend on the sizes of the other roles. This module also holds the tables that
describe the SCface-style capture setup (`CAMERAS`, `PROBE_SIZES`, the per-distance gain) and the
colour palettes the identities are drawn from. Drawing only: nothing here renders pixels.
"""

from __future__ import annotations

import numpy as np
import torch


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
_GLASSES_COLOURS = np.array([[0.05, 0.05, 0.05], [0.45, 0.30, 0.10], [0.70, 0.62, 0.35]])
_NUM_MOLES = 4
_NUM_FRECKLES = 48
_FACE_Y = 0.05  # the face centre sits a little below the image centre
_FACE_SCALE = 1.1  # faces fill the frame like aligned crops, with a little background


def _rng(seed: int, role: str, purpose: int) -> np.random.Generator:
    return np.random.default_rng([seed, _ROLE[role], purpose])


def _torch_generator(seed: int, role: str) -> torch.Generator:
    return torch.Generator().manual_seed(int(_rng(seed, role, _NOISE).integers(2**62)))


def _pick(
    rng: np.random.Generator, n: int, palette: np.ndarray, jitter: float, probabilities: np.ndarray | None = None
) -> np.ndarray:
    """`n` palette colours, each jittered a little."""
    choice = rng.choice(len(palette), size=n, p=probabilities)
    return np.clip(palette[choice] + rng.normal(0.0, jitter, (n, 3)), 0.02, 0.98)


def _draw_identities(rng: np.random.Generator, n: int) -> dict[str, torch.Tensor]:
    """Draw the appearance of `n` identities: one float32 tensor per parameter, [n], [n, k] or maps.

    The groups are drawn in a fixed order from the one stream, so the same seed gives the same faces.
    """
    skin, hair, bald, long_hair = _draw_skin_and_hair(rng, n)
    params = {
        "skin": skin,
        "hair": hair,
        **_draw_colours(rng, n, skin, hair),
        **_draw_head_and_hair(rng, n, bald, long_hair),
        **_draw_features(rng, n),
        **_draw_marks(rng, n),
    }
    params["mouth_y"] = params["nose_y"] + params["mouth_dy"]
    return {key: torch.as_tensor(value, dtype=torch.float32) for key, value in params.items()}


def _draw_skin_and_hair(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Skin colour (between two neighbouring tones), hair colour, and who is bald or long-haired."""
    tone = rng.uniform(0, len(_SKIN_TONES) - 1, n)
    low = np.floor(tone).astype(int).clip(0, len(_SKIN_TONES) - 2)
    skin = _SKIN_TONES[low] + (tone - low)[:, None] * (_SKIN_TONES[low + 1] - _SKIN_TONES[low])
    skin = np.clip(skin + rng.normal(0.0, 0.02, (n, 3)), 0.05, 0.98)
    hair = _pick(rng, n, _HAIR_COLOURS, 0.04, _HAIR_PROBABILITIES)
    bald = rng.random(n) < 0.08
    long_hair = rng.random(n) < 0.35
    return skin, hair, bald, long_hair


def _draw_colours(rng: np.random.Generator, n: int, skin: np.ndarray, hair: np.ndarray) -> dict[str, np.ndarray]:
    """Brow, iris, lip and glasses colours."""
    u = rng.uniform
    return {
        "brow_colour": np.clip(hair * u(0.5, 0.9, (n, 1)) + 0.03, 0.02, 0.9),
        "iris": _pick(rng, n, _IRIS_COLOURS, 0.04),
        "lip": np.clip(skin * np.array([0.85, 0.55, 0.55]) + rng.normal(0.0, 0.03, (n, 3)), 0.05, 0.95),
        "glasses_colour": _pick(rng, n, _GLASSES_COLOURS, 0.03),
    }


def _draw_head_and_hair(
    rng: np.random.Generator, n: int, bald: np.ndarray, long_hair: np.ndarray
) -> dict[str, np.ndarray]:
    """Face outline and hair style."""
    u = rng.uniform
    return {
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
    }


def _draw_features(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """Geometry of the eyes, brows, nose and mouth."""
    u = rng.uniform
    return {
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
    }


def _draw_marks(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """Fine marks: moles, freckles, glasses, stubble, moustache, blush, skin mottling."""
    u = rng.uniform
    return {
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


def _camera_views(
    rng: np.random.Generator, camera: np.ndarray, distance: np.ndarray
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Views seen by the SCface-style `camera` at `distance`, one per entry.

    Each camera's fixed viewpoint and exposure replace the unconstrained ones (a little of the
    drawn pose is kept), and farther probes are darker. Returns the views, with no sensor noise,
    and the per-view noise level to add to the low-resolution image instead.
    """
    views = _draw_views(rng, len(camera))
    table = {key: torch.tensor([CAMERAS[c][key] for c in camera]) for key in ("yaw", "pitch", "gain")}
    views["yaw"] = table["yaw"] + views["yaw"] * 0.3
    views["pitch"] = table["pitch"] + views["pitch"] * 0.3
    views["gain"] = table["gain"] * torch.tensor([_DISTANCE_GAIN[d] for d in distance], dtype=torch.float32)
    views["cast"] = torch.tensor([CAMERAS[c]["cast"] for c in camera], dtype=torch.float32)
    noise = views["noise"].clone()
    views["noise"] = torch.zeros_like(noise)  # the caller adds it to the low-resolution image
    return views, noise
