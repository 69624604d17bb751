"""Data-parallel training under torchrun, and the caller's torch state kept apart."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch

from ..model.flowmap import FlowMap
from .config import TrainConfig, resolve_device


@dataclass(frozen=True)
class Dist:
    """This process's place in a data-parallel run (rank 0 of 1 when not distributed)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    owns_group: bool = False

    @property
    def active(self) -> bool:
        return self.world > 1


@contextlib.contextmanager
def process_group(cfg: TrainConfig):
    """This process's :class:`Dist`; a process group created here is destroyed on exit."""
    dctx = _init_distributed(cfg)
    try:
        yield dctx
        if dctx.owns_group:
            import torch.distributed as dist

            # all ranks leave together: tearing the group down while a peer is still in
            # it aborted gloo processes now and then ("terminate called without an
            # active exception")
            dist.barrier()
    finally:
        if dctx.owns_group:
            import torch.distributed as dist

            dist.destroy_process_group()


@contextlib.contextmanager
def caller_state(cfg: TrainConfig):
    """Run with ``cfg.threads`` torch threads and a forked torch RNG: the caller's global
    random state and thread count are as they were afterwards, whatever fit did."""
    threads = torch.get_num_threads()
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        if cfg.threads:
            torch.set_num_threads(int(cfg.threads))
        try:
            yield
        finally:
            torch.set_num_threads(threads)


def _init_distributed(cfg: TrainConfig) -> Dist:
    """Join the process group that ``torchrun`` describes in the environment.

    Outside torchrun (no ``WORLD_SIZE`` > 1) training is single-process. The backend is
    NCCL when the processes train on CUDA, gloo otherwise.
    """
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        return Dist()
    import torch.distributed as dist

    local_rank = int(os.environ.get("LOCAL_RANK", "0") or 0)
    owns = False
    if not dist.is_initialized():
        cuda = torch.cuda.is_available() and cfg.device != "cpu"
        dist.init_process_group("nccl" if cuda else "gloo")
        owns = True
    return Dist(dist.get_rank(), dist.get_world_size(), local_rank, owns)


def device_for(cfg: TrainConfig, dctx: Dist) -> torch.device:
    device = resolve_device(cfg.device)
    if dctx.active and device.type == "cuda":
        device = torch.device("cuda", dctx.local_rank)
        torch.cuda.set_device(device)
    return device


class PairNLL(torch.nn.Module):
    """The training loss as a module, so DistributedDataParallel can wrap it (the model
    itself returns a distribution, which DDP cannot inspect)."""

    def __init__(self, model: FlowMap) -> None:
        super().__init__()
        self.model = model

    def forward(self, x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
        return -self.model(x0).log_prob(x1).mean()


def all_reduce(values: list[float], device, dctx: Dist, op: str = "sum") -> list[float]:
    if not dctx.active:
        return values
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX)
    return t.tolist()
