"""Conversions into DCR models: a trained trunk into the branch-stage model (`trunk`)."""

from .trunk import branch_model_from_trunk

__all__ = ["branch_model_from_trunk"]
