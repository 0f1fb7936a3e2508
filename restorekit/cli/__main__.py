"""``python -m restorekit.cli``."""

from restorekit.cli import main

main()
