"""``python -m reports``: see `reports.cli` (``python -m reports --help``)."""
import sys

from reports.cli import main

if __name__ == "__main__":
    sys.exit(main())
