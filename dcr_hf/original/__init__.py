"""The original DCR implementation's files, read for conversion into our models.

`errors` (`ConversionError`), `keys` (its parameter names and ours, per trunk kind),
`checkpoint` (the `*.pth.tar` pickle, read with `weights_only=True`), `arguments` (its
`config.json`), `architecture` (trunk kind, shapes, and config.json checked against them).
`conversion` puts them together into a Hugging Face folder; `dcr_hf.convert_original_checkpoint` is
its command line.
"""

from .._lazy import lazy_exports

# The names load on first use: importing the package (or a command module in it) stays light.
__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "branch_architecture": "architecture",
        "check_arguments_against_weights": "architecture",
        "detect_trunk_kind": "architecture",
        "trunk_architecture": "architecture",
        "OriginalArguments": "arguments",
        "read_original_arguments": "arguments",
        "OriginalCheckpoint": "checkpoint",
        "load_original_checkpoint": "checkpoint",
        "ConversionError": "errors",
        "TRUNK_KINDS": "keys",
        "TrunkKind": "keys",
    },
)

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
