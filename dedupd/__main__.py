"""``python -m dedupd``."""

from dedupd.cli import main

main()
