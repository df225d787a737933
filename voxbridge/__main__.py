"""``python -m voxbridge``."""

import sys

from .cli import main

# Guarded: worker processes (speech recognition) import the main module again when they start.
if __name__ == "__main__":
    sys.exit(main())
