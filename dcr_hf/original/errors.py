"""The one error a conversion of the original's files raises."""

from ..errors_dcr import DCRInputError


class ConversionError(DCRInputError):
    """An original checkpoint or `config.json` that cannot be converted exactly; the message names
    the file, the key or value, and what was expected."""


__all__ = ["ConversionError"]
