"""Data-parallel start-up: one process per GPU a job was given (gloo on the CPU in tests)."""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass

import torch
import torch.distributed as dist

from tlm.device import device_name, pick_device
from tlm.io import TLMInputError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Dist:
    """Where this process stands in data-parallel training (rank 0 of 1 without DDP)."""

    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def check_gpu(requested: int, required: bool) -> str:
    """The device description a job records: a GPU asked for but absent is said there (and in the log)."""
    if requested and not torch.cuda.is_available():
        message = (
            f"{requested} GPU(s) requested (resources.gpu) but CUDA finds none: training on the CPU. "
            "Fix: run on a GPU node with a CUDA build of torch, or set resources.gpu: 0"
        )
        if required:
            raise TLMInputError(
                message.replace("training on the CPU", "stopping (trainer.require_gpu: true)")
            )
        log.warning("%s", message)
        return f"cpu ({requested} GPU requested, none found)"
    return device_name(pick_device())


def data_parallel_processes(gpus: int) -> int:
    """One DDP process per GPU a job was given, when it was given several and they are there."""
    return gpus if gpus > 1 and torch.cuda.device_count() >= gpus else 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(fn, world: int, backend: str | None, *args) -> None:
    """fn(Dist, *args): here, or in `world` data-parallel processes on this machine (nccl on GPUs,
    else gloo)."""
    if world <= 1:
        fn(Dist(), *args)
        return
    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    torch.multiprocessing.spawn(
        _ddp_worker, nprocs=world, args=(world, _free_port(), backend, fn, *args)
    )


def _ddp_worker(rank, world, port, backend, fn, *args):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    if backend == "nccl":
        torch.cuda.set_device(rank)
    dist.init_process_group(backend, rank=rank, world_size=world)
    try:
        fn(Dist(rank, world), *args)
    finally:
        dist.destroy_process_group()
