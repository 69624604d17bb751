"""``python -m slowflow`` (and ``torchrun -m slowflow``) runs the command-line interface."""

from .cli import entry

entry()
