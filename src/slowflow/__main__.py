"""``python -m slowflow`` (and ``torchrun -m slowflow``) runs the command-line interface."""

from .cli import _entry

_entry()
