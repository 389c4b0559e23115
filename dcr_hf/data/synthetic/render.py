"""The face renderer: identity parameters and view conditions -> uint8 images.

No library draws faces, so the renderer is hand-written: every part is a signed-distance mask
on a coordinate grid, evaluated for a whole batch at once with torch. The pose-independent part
of each identity is drawn once on a canonical grid (`_render_canonical`: hair, head, spots,
lower face, eyes and glasses) and tiled into one texture (`_atlas`); each view samples it through
its own warp (`grid_sample`) and adds the expression-dependent parts (eyelids, brows, mouth),
then background, lighting and sensor noise on top (`_render_views`).

Each part is one helper that paints into the shared canvas in place; the helpers run in a fixed
order, so the same parameters always give the same pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .appearance import _FACE_SCALE, _FACE_Y


@dataclass
class _Grid:
    """A batch of identities (and views) and the face coordinates their parts are drawn on.

    `x`, `y` are face coordinates over [-1, 1] (x right, y down), broadcastable to `[n, H, W]`;
    `inv` is pixels per unit of face coordinates (a float, or `[n, 1, 1]` per view).
    """

    ids: dict[str, torch.Tensor]
    x: torch.Tensor
    y: torch.Tensor
    inv: torch.Tensor | float
    size: int
    views: dict[str, torch.Tensor] | None = None

    def p(self, name: str) -> torch.Tensor:
        """An identity parameter, `[n, 1, 1]`."""
        return self.ids[name].view(-1, 1, 1)

    def q(self, name: str) -> torch.Tensor:
        """A view parameter, `[n, 1, 1]`."""
        return self.views[name].view(-1, 1, 1)

    def crop(self, canvas: torch.Tensor, rows: slice, cols: slice) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The canvas (a view: painting it paints `canvas`), x and y inside a window of rows and columns.

        Broadcast axes of x and y (length 1: the canonical grid keeps rows and columns separate)
        are kept whole.
        """

        def cut(t: torch.Tensor) -> torch.Tensor:
            return t[:, rows if t.shape[1] > 1 else slice(None), cols if t.shape[2] > 1 else slice(None)]

        return canvas[:, :, rows, cols], cut(self.x), cut(self.y)


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


def _axis(size: int) -> torch.Tensor:
    """Pixel centres of a `size`-pixel axis over [-1, 1], where `grid_sample(align_corners=False)` expects them."""
    return (torch.arange(size, dtype=torch.float32) + 0.5) / size * 2.0 - 1.0


def _canonical_size(image_size: int) -> int:
    # At least as fine as the most magnified view, so that sampling keeps fine detail.
    return int(np.ceil(image_size * _FACE_SCALE * 1.05))


# Canonical identity parts -----------------------------------------------------------------------


def _render_canonical(ids: dict[str, torch.Tensor], size: int) -> torch.Tensor:
    """Draw the pose- and expression-independent part of each identity on a canonical grid.

    Returns premultiplied RGB and coverage, channels first, `[4, n, size, size]`, over [-1, 1]^2
    (x right, y down) with pixel centres where `grid_sample(align_corners=False)` expects them.
    """
    n = ids["skin"].shape[0]
    axis = _axis(size)
    # Separate row and column coordinates: with no rotation here, most terms are cheap outer sums.
    grid = _Grid(ids, x=axis.view(1, 1, size), y=axis.view(1, size, 1), inv=size / 2.0, size=size)
    canvas = torch.zeros(3, n, size, size)
    hair_shape, hair_field, back = _back_hair(canvas, grid)
    neck, ears, face = _head(canvas, grid)
    _spots(canvas, grid, face)
    _lower_face(canvas, grid, face)
    _eyes_and_glasses(canvas, grid)
    top = _top_hair(canvas, grid, hair_shape, hair_field)

    alpha = torch.maximum(torch.maximum(back, neck), torch.maximum(torch.maximum(ears, face), top))
    out = torch.empty(4, n, size, size)
    torch.mul(canvas, alpha, out=out[:3])
    out[3] = alpha
    return out


def _back_hair(canvas: torch.Tensor, g: _Grid) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Hair behind the head (long hair reaches the shoulders).

    Returns the hair's signed distance and strand-textured colour (the top hair reuses them) and
    its coverage.
    """
    x, y, inv, p = g.x, g.y, g.inv, g.p
    face_a, face_b = p("face_a"), p("face_b")
    hair_shape = _ellipse(x, y, 0.0, _FACE_Y - 0.04, face_a + p("hair_volume"), face_b + p("hair_volume") * 0.8)
    angle = p("hair_angle")
    strands = torch.sin(p("hair_frequency") * (x * torch.cos(angle) + y * torch.sin(angle)) + p("hair_phase"))
    hair_field = _rgb(g.ids["hair"]) * (1.0 + 0.15 * strands)
    back = _ramp(hair_shape, inv) * _ramp(y - p("hair_length"), inv)
    canvas.lerp_(hair_field, back)
    return hair_shape, hair_field, back


def _head(canvas: torch.Tensor, g: _Grid) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Neck, ears and the face's skin (mottled, darker towards the outline); returns their coverages."""
    x, y, inv, p = g.x, g.y, g.inv, g.p
    face_a, face_b = p("face_a"), p("face_b")
    skin = _rgb(g.ids["skin"])
    neck = _ramp(torch.maximum(x.abs() - face_a * 0.55, _FACE_Y + 0.3 - y), inv)
    canvas.lerp_(skin * 0.8, neck)
    ears = _ramp(_ellipse(x.abs(), y, face_a * 0.97, p("eye_y") + 0.08, 0.065, 0.13), inv)
    canvas.lerp_(skin * 0.88, ears)
    lower = ((y - _FACE_Y) / face_b).clamp(0.0, 1.0)
    face = _ramp(_ellipse(x, y, 0.0, _FACE_Y, face_a * (1.0 - p("jaw") * lower**2), face_b), inv)
    mottle = F.interpolate(g.ids["mottle"], size=(g.size, g.size), mode="bicubic", align_corners=False)[:, 0]
    roundness = ((x / face_a) ** 2 + ((y - _FACE_Y) / face_b) ** 2).clamp(max=1.5)
    canvas.lerp_(skin * ((1.0 + 0.06 * mottle) * (1.0 - 0.2 * roundness**2)), face)
    return neck, ears, face


def _spots(canvas: torch.Tensor, g: _Grid, face: torch.Tensor) -> None:
    """Moles and freckles: points splatted on one map and blurred into soft dots.

    Drawing dozens of discs per identity analytically would dominate the cost.
    """
    ids, size = g.ids, g.size
    n = canvas.shape[1]
    spot_x = torch.cat([ids["mole_x"], ids["freckle_x"]], dim=1)
    spot_y = torch.cat([ids["mole_y"], ids["freckle_y"]], dim=1)
    weight = torch.cat([ids["mole_present"], ids["freckles"][:, None].expand_as(ids["freckle_x"])], dim=1)
    col = ((spot_x + 1.0) / 2.0 * size).long().clamp(0, size - 1)
    row = ((spot_y + 1.0) / 2.0 * size).long().clamp(0, size - 1)
    spots = torch.zeros(n, size * size).scatter_add_(1, row * size + col, weight).view(n, 1, size, size)
    kernel = torch.tensor([[0.3, 0.6, 0.3], [0.6, 1.0, 0.6], [0.3, 0.6, 0.3]])[None, None]
    marks = F.conv2d(spots, kernel, padding=1)[:, 0].clamp_(max=1.0)
    canvas.lerp_(_rgb(ids["skin"]) * 0.5, marks * face)


def _lower_face(canvas: torch.Tensor, g: _Grid, face: torch.Tensor) -> None:
    """Blush, stubble and moustache, then the nose, inside the window below the eyes."""
    ids, inv, p = g.ids, g.inv, g.p
    rows = _span(float(ids["eye_y"].min()) + 0.04, 1.0, g.size)
    cols = _span(-float(ids["face_a"].max()), float(ids["face_a"].max()), g.size)
    band, xb, yb = g.crop(canvas, rows, cols)
    skin_here = face[:, rows, cols]
    hair = _rgb(ids["hair"])
    nose_y, mouth_y = p("nose_y"), p("mouth_y")
    blush = (1.0 - _ellipse(xb.abs(), yb, 0.3, nose_y, 0.13, 0.09) / 0.06).clamp(0.0, 1.0) * p("blush") * 0.5
    band.lerp_(_rgb(torch.tensor([[0.85, 0.35, 0.35]])), blush * skin_here)
    stubble = F.interpolate(ids["stubble"], size=(g.size, g.size), mode="nearest")[:, 0, rows, cols] > 0.35
    band.lerp_(hair * 0.8, skin_here * _ramp(mouth_y - 0.07 - yb, inv) * stubble * p("beard"))
    moustache = _ramp(_ellipse(xb, yb, 0.0, mouth_y - p("upper_lip") - 0.03, p("mouth_w") * 1.1, 0.028), inv)
    band.lerp_(hair * 0.85, moustache * p("moustache") * 0.9)
    _nose(band, xb, yb, g)


def _nose(band: torch.Tensor, xb: torch.Tensor, yb: torch.Tensor, g: _Grid) -> None:
    """Shading along the sides of the nose, a lit nose tip and the nostrils."""
    inv, p = g.inv, g.p
    skin = _rgb(g.ids["skin"])
    nose_y, nose_w = p("nose_y"), p("nose_w")
    side = torch.maximum((xb.abs() - nose_w * 0.75).abs() - 0.012, torch.maximum(p("eye_y") + 0.06 - yb, yb - nose_y))
    band.lerp_(skin * 0.7, _ramp(side, inv) * 0.35)
    band.lerp_((skin * 1.12).clamp(max=1.0), _ramp(_ellipse(xb, yb, 0.0, nose_y - 0.015, nose_w, 0.045), inv) * 0.35)
    band.lerp_(skin * 0.4, _ramp(_ellipse(xb.abs(), yb, nose_w * 0.55, nose_y + 0.015, 0.026, 0.013), inv))


def _eye_white(
    ax: torch.Tensor, yb: torch.Tensor, g: _Grid
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The almond-shaped eye whites (mirrored: `ax` is |x|) in eye-local coordinates.

    Returns the eye-local x, the tilted eye-local y, the lid's half-opening and the whites' coverage.
    """
    eye_w, eye_h = g.p("eye_w"), g.p("eye_h")
    lx = ax - g.p("eye_x")
    ly = yb - g.p("eye_y") + g.p("eye_tilt") * lx
    lid = eye_h * (1.0 - (lx / eye_w) ** 2)
    white = _ramp(torch.maximum(ly.abs() - lid, lx.abs() - eye_w), g.inv)
    return lx, ly, lid, white


def _eyes_and_glasses(canvas: torch.Tensor, g: _Grid) -> None:
    """Eyes, then glasses around them, inside the window that holds both."""
    ids = g.ids
    reach = float((ids["eye_x"] + ids["eye_w"] * 1.45 + ids["glasses_thickness"]).max())
    ring_h = ids["eye_w"] * 1.45 / 1.3 + 0.02
    rows = _span(float((ids["eye_y"] - ring_h).min()), float((ids["eye_y"] + ring_h).max()), g.size)
    cols = _span(-reach, reach, g.size)
    band, xb, yb = g.crop(canvas, rows, cols)
    ax = xb.abs()
    lx = _eyes(band, ax, yb, g)
    _glasses(band, ax, lx, yb, g)


def _eyes(band: torch.Tensor, ax: torch.Tensor, yb: torch.Tensor, g: _Grid) -> torch.Tensor:
    """Almond-shaped whites, iris, pupil, catch light and upper lash line; returns the eye-local x."""
    ids, inv = g.ids, g.inv
    eye_y, eye_w = g.p("eye_y"), g.p("eye_w")
    lx, ly, lid, white = _eye_white(ax, yb, g)
    band.lerp_(_rgb(torch.tensor([[0.93, 0.91, 0.88]])), white)
    iris_r = g.p("iris_r")
    iris_distance = torch.sqrt(lx**2 + (yb - eye_y) ** 2)
    band.lerp_(_rgb(ids["iris"]), _ramp(iris_distance - iris_r, inv) * white)
    band.lerp_(_rgb(ids["iris"]) * 0.15, _ramp(iris_distance - iris_r * 0.45, inv) * white)
    glint = torch.sqrt((lx + iris_r * 0.35) ** 2 + (yb - eye_y + iris_r * 0.35) ** 2) - 0.011
    band.lerp_(torch.ones(3, 1, 1, 1), _ramp(glint, inv) * white)
    lashes = _ramp(torch.maximum((ly + lid).abs() - 0.007, lx.abs() - eye_w * 1.05), inv)
    band.lerp_(_rgb(ids["brow_colour"]) * 0.6, lashes)
    return lx


def _glasses(band: torch.Tensor, ax: torch.Tensor, lx: torch.Tensor, yb: torch.Tensor, g: _Grid) -> None:
    """Round rims around the eyes joined by a bridge, for the identities that wear glasses."""
    p = g.p
    eye_x, eye_y = p("eye_x"), p("eye_y")
    ring_w = p("eye_w") * 1.45
    thickness = p("glasses_thickness")
    ring = (torch.sqrt(lx**2 + ((yb - eye_y) * 1.3) ** 2) - ring_w).abs() - thickness
    bridge = torch.maximum((yb - eye_y + 0.02).abs() - thickness, ax - eye_x + ring_w)
    band.lerp_(_rgb(g.ids["glasses_colour"]), _ramp(torch.minimum(ring, bridge), g.inv) * p("glasses"))


def _top_hair(canvas: torch.Tensor, g: _Grid, hair_shape: torch.Tensor, hair_field: torch.Tensor) -> torch.Tensor:
    """Hair on top of the head, above a hairline that recedes at the temples; returns its coverage."""
    x, y, inv, p = g.x, g.y, g.inv, g.p
    top = _ramp(hair_shape, inv) * _ramp(y - p("hairline") - p("recession") * (x / p("face_a")) ** 2, inv)
    canvas.lerp_(hair_field, top)
    return top


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


# Views ------------------------------------------------------------------------------------------


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
    u, v, grid = _pose(ids, views, image_size)
    canvas, alpha = _sample_atlas(atlas, identity, grid)
    # Expression parts, drawn only inside the windows that hold them in every view of the chunk.
    _eyelids_and_brows(canvas, grid)
    _mouth(canvas, grid)
    return _background_light_and_noise(canvas, alpha, grid, u, v, noise)


def _pose(
    ids: dict[str, torch.Tensor], views: dict[str, torch.Tensor], image_size: int
) -> tuple[torch.Tensor, torch.Tensor, _Grid]:
    """Image coordinates `u`, `v` and the face coordinates each view's pixels show.

    Image -> face coordinates through the inverse similarity transform, then a yaw/pitch-like
    warp: inner features slide while the silhouette stays, which foreshortens one side of the
    face like a small head turn.
    """
    axis = _axis(image_size)
    u, v = axis.view(1, 1, image_size), axis.view(1, image_size, 1)
    q = lambda name: views[name].view(-1, 1, 1)  # noqa: E731
    cos, sin, scale = torch.cos(q("angle")), torch.sin(q("angle")), q("scale")
    du, dv = u - q("shift_x"), v - q("shift_y")
    xa = (cos * du + sin * dv) / scale
    ya = (cos * dv - sin * du) / scale
    x = xa - q("yaw") * (1.0 - (xa / 0.75) ** 2).clamp_(min=0.0)
    y = ya - q("pitch") * (1.0 - (ya / 0.9) ** 2).clamp_(min=0.0)
    inv = q("scale") * (image_size / 2.0)
    return u, v, _Grid(ids, x=x, y=y, inv=inv, size=image_size, views=views)


def _sample_atlas(
    atlas: tuple[torch.Tensor, int], identity: torch.Tensor, g: _Grid
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample each view's identity tile at its face coordinates -> premultiplied RGB [3, n, H, W], coverage.

    Clamping to the tile's border pixels keeps bilinear sampling inside the tile (it replicates
    the border: the neck continues downwards).
    """
    texture, columns = atlas
    tile = texture.shape[-1] // columns
    n, image_size = identity.shape[0], g.size
    limit = 1.0 - 1.0 / tile
    row, col = (identity // columns).view(-1, 1, 1), (identity % columns).view(-1, 1, 1)
    grid = torch.empty(n, image_size, image_size, 2)
    for axis_index, coordinate, offset in ((0, g.x, col), (1, g.y, row)):
        target = grid[..., axis_index]
        torch.clamp(coordinate, -limit, limit, out=target)
        target.add_(1.0 + 2.0 * offset).mul_(tile / texture.shape[-1 - axis_index]).sub_(1.0)
    grid = grid.view(1, n * image_size, image_size, 2)
    sampled = F.grid_sample(texture, grid, mode="bilinear", align_corners=False).view(4, n, image_size, image_size)
    return sampled[:3], sampled[3]


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


def _eyelids_and_brows(canvas: torch.Tensor, g: _Grid) -> None:
    """Eyelids, then brows, inside the window that holds both in every view."""
    ids, views = g.ids, g.views
    top = ids["eye_y"] - ids["brow_gap"] - ids["brow_arch"] - ids["brow_thickness"] - 0.25 * ids["brow_len"]
    reach = float(torch.maximum(ids["eye_w"], ids["brow_len"]).add(ids["eye_x"]).max()) + 0.02
    bottom = ids["eye_y"] + ids["eye_h"] + ids["eye_tilt"].abs() * ids["eye_w"]
    box = (-reach, reach, float((top - views["brow_raise"]).min()) - 0.02, float(bottom.max()) + 0.02)
    rows, cols = _window(views, box, g.size)
    band, xb, yb = g.crop(canvas, rows, cols)
    ax = xb.abs()
    _eyelids(band, ax, yb, g)
    _brows(band, ax, yb, g)


def _eyelids(band: torch.Tensor, ax: torch.Tensor, yb: torch.Tensor, g: _Grid) -> None:
    """Eyelids close over the eye whites (blinks, squints)."""
    _, ly, lid, white = _eye_white(ax, yb, g)
    closed = _ramp(ly - (2.0 * g.q("blink") - 1.0) * lid, g.inv) * white * (g.q("blink") > 0.02)
    band.lerp_(_rgb(g.ids["skin"]) * 0.85, closed)


def _brows(band: torch.Tensor, ax: torch.Tensor, yb: torch.Tensor, g: _Grid) -> None:
    """Brows: raised or lowered, inner ends pulled down by a frown."""
    p, q = g.p, g.q
    brow_len = p("brow_len")
    bx = ax - p("eye_x")
    outward = (bx / brow_len).clamp(-1.0, 1.0)
    centre = p("eye_y") - p("brow_gap") - q("brow_raise")
    line = centre - p("brow_arch") * (1.0 - outward**2) + (p("brow_slope") - q("frown")) * bx * 0.5
    half = p("brow_thickness") * (1.0 - 0.175 * (outward + 1.0))
    brows = _ramp(torch.maximum((yb - line).abs() - half, bx.abs() - brow_len), g.inv)
    band.lerp_(_rgb(g.ids["brow_colour"]), brows)


def _mouth(canvas: torch.Tensor, g: _Grid) -> None:
    """Mouth: lips around a line that curves up with a smile, open (dark inside, teeth) or closed (a seam)."""
    ids, inv, p, q = g.ids, g.inv, g.p, g.q
    reach = float(ids["mouth_w"].max()) * 1.1 + 0.02
    box = (-reach, reach, float(ids["mouth_y"].min()) - 0.12, float(ids["mouth_y"].max()) + 0.12)
    band, xb, yb = g.crop(canvas, *_window(g.views, box, g.size))
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


def _background_light_and_noise(
    canvas: torch.Tensor, alpha: torch.Tensor, g: _Grid, u: torch.Tensor, v: torch.Tensor, noise: torch.Tensor
) -> torch.Tensor:
    """Background behind the head, then light, then sensor noise -> [3, n, H, W] in [0, 1].

    Light is a gain, a colour cast and a gradient across the image; the noise images come from the
    caller's noise bank, scaled per view.
    """
    views, q = g.views, g.q
    background = _rgb(views["background"]) * (1.0 + q("background_gradient") * v)
    image = torch.addcmul(canvas, background, 1.0 - alpha)
    image *= (q("gain") * (1.0 + q("gradient_x") * u + q("gradient_y") * v)).clamp_(min=0.0)
    image *= _rgb(views["cast"])
    return image.addcmul_(noise, views["noise"].view(1, -1, 1, 1)).clamp_(0.0, 1.0)
