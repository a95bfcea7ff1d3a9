"""`python -m sites`: the medsplit command line."""

import sys

from .cli import main

sys.exit(main())
