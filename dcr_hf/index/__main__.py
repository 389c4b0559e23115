"""`python -m dcr_hf.index ...`: the `dcr-index` command."""

from .command import main

main()
