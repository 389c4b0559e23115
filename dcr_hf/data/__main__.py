"""`python -m dcr_hf.data <command> ...`: the command line of `dcr_hf.data.command`."""

import sys

from .command import main

if __name__ == "__main__":
    sys.exit(main())
