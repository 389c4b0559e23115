"""Conversions into DCR models: a trained trunk into the branch-stage model (`trunk`), and the
face-recognition backbones of other projects into DCR trunks (`face_backbone`, with one reader per
source format: `arcface_torch`, `adaface`, `cvlface`, sharing `keymap`). Only `trunk` loads with
the package: the backbone conversion is imported by `dcr-convert --source ...` when it runs."""

from .trunk import branch_model_from_trunk

__all__ = ["branch_model_from_trunk"]
