"""`python -m locallearn` (also what `torchrun -m locallearn` runs)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
