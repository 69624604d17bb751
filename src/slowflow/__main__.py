"""``python -m slowflow`` (and ``torchrun -m slowflow``) runs the command-line interface."""

import sys

from .cli import main

sys.exit(main())
