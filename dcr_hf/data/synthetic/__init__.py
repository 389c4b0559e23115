"""Synthetic face identities, so that every protocol runs with no download.

`load_synthetic` draws cartoon faces whose identity lives both in coarse features (skin tone,
face shape, hair colour and style) and in fine ones (eye shape and iris colour, thin brows,
moles, freckles, skin and hair texture, glasses, stubble), and renders many views of each
identity with varying pose, scale, lighting, expression, background and noise. At 120 x 120 the
fine detail tells identities apart; at 8 x 8 only the coarse features survive, so
identification degrades the way it does on real low-resolution faces.

The returned `DatasetDict` mirrors the real data sets, with their shared schemas
(`dcr_hf.data.features`): `train` (a CASIA-WebFace stand-in), `retrieval` and `pairs` (LFW:
held-out identities, 10 folds of verification pairs) and `gallery` / `probe` (SCface: one frontal
mugshot per subject, surveillance probes at three distances and five cameras).

Modules, one job each:

- `appearance`: the random draws (identity appearance, view conditions, random streams) and the
  capture tables (`CAMERAS`, `PROBE_SIZES`);
- `render`: the hand-written renderer, one helper per face part;
- `splits`: the splits as `datasets` and `load_synthetic`.
"""

from .appearance import CAMERAS, PROBE_SIZES
from .splits import SYNTHETIC_SPLITS, load_synthetic


__all__ = ["CAMERAS", "PROBE_SIZES", "SYNTHETIC_SPLITS", "load_synthetic"]
