"""Shared fixtures for the model, training, CLI and calibration tests."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def torch_one_thread():
    """Run torch on one intra-op thread for the duration of a test module, then restore.

    The test machine has 2 shared cores. With 2 OpenMP threads, a training step of a small
    model took ~150 ms instead of ~1 ms whenever another process held a core (the threads
    spin at barriers); one thread makes the timings of these small models stable. Modules
    opt in with ``pytestmark = pytest.mark.usefixtures("torch_one_thread")``.

    Running the numba simulator (its OpenMP runtime) resets torch's thread count to the
    number of cores, so code that trains after simulating sets one thread again right
    before training (``fit(..., threads=1)``, or ``torch.set_num_threads(1)`` before a CLI
    command); this fixture still restores the original count when the module ends.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
