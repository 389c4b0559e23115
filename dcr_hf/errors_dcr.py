"""The exceptions dcr-hf raises for bad input: a value, file or folder that is not what was expected.

Every check of the package raises one of these, with a message that names what was wrong and what
was expected. The command lines show them as usage errors (one line, exit status 2) and any other
exception as the bug it is (a traceback). Each derives from the built-in exception a caller would
catch (`ValueError`; `FileNotFoundError` and the other `OSError`s for paths), so `except ValueError`
and `except FileNotFoundError` keep working. It travels with the model files (no imports).
"""


class DCRInputError(ValueError):
    """A value, file or folder given to dcr-hf is not what was expected (the message says which and why)."""


class DCRFileNotFoundError(DCRInputError, FileNotFoundError):
    """A file or folder the input names does not exist."""


class DCRFileExistsError(DCRInputError, FileExistsError):
    """A path the input names holds something that must not be overwritten, or is a file where a folder is expected."""


class DCRNotADirectoryError(DCRInputError, NotADirectoryError):
    """A path the input names is a file where a folder is expected."""


class DCRPermissionError(DCRInputError, PermissionError):
    """A path the input names cannot be written or read."""


class DCRFileError(DCRInputError, OSError):
    """A file the input names cannot be used (unreadable, broken, of another kind)."""


__all__ = [
    "DCRFileError",
    "DCRFileExistsError",
    "DCRFileNotFoundError",
    "DCRInputError",
    "DCRNotADirectoryError",
    "DCRPermissionError",
]
