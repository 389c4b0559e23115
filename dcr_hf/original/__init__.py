"""The original DCR implementation's files, read for conversion into our models.

`errors` (`ConversionError`), `keys` (its parameter names and ours, per trunk kind),
`checkpoint` (the `*.pth.tar` pickle, read with `weights_only=True`), `arguments` (its
`config.json`), `architecture` (trunk kind, shapes, and config.json checked against them).
`dcr_hf.convert_original_checkpoint` is the command that puts them together.
"""

from .architecture import branch_architecture, check_arguments_against_weights, detect_trunk_kind, trunk_architecture
from .arguments import OriginalArguments, read_original_arguments
from .checkpoint import OriginalCheckpoint, load_original_checkpoint
from .errors import ConversionError
from .keys import TRUNK_KINDS, TrunkKind

__all__ = [
    "TRUNK_KINDS",
    "ConversionError",
    "OriginalArguments",
    "OriginalCheckpoint",
    "TrunkKind",
    "branch_architecture",
    "check_arguments_against_weights",
    "detect_trunk_kind",
    "load_original_checkpoint",
    "read_original_arguments",
    "trunk_architecture",
]
