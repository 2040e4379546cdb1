"""Data-parallel training across processes: the same training code under `torchrun`, one process or many.

Each process joins the group torchrun's environment describes (`init_from_env`: gloo on CPU, NCCL with CUDA);
without that environment everything here is a no-op and training is the ordinary single-process loop.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def init_from_env() -> World:
    """Join the process group torchrun describes (once); a single process gets World() and no group."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend)
    return current()


def current() -> World:
    if not (dist.is_available() and dist.is_initialized()):
        return World()
    return World(
        rank=dist.get_rank(),
        size=dist.get_world_size(),
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
        local_size=int(os.environ.get("LOCAL_WORLD_SIZE", "1")),
    )


def device(world: World) -> torch.device:
    """Where this process trains: its own GPU under NCCL, else the CPU."""
    if torch.cuda.is_available() and world.distributed:
        return torch.device("cuda", world.local_rank)
    if torch.cuda.is_available() and os.environ.get("RECSYS_TRAIN_DEVICE") == "cuda":
        return torch.device("cuda")
    return torch.device("cpu")


def default_threads(processes_here: int = 1) -> int:
    """OMP_NUM_THREADS when set (per process, as torchrun sets it), else this machine's CPUs shared out."""
    configured = os.environ.get("OMP_NUM_THREADS", "")
    if configured.isdigit() and int(configured) > 0:
        return int(configured)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cpus // max(1, processes_here))


def threads_per_process(world: World, requested: int) -> int:
    """CPU threads for one process: the cores shared out among the processes on this machine.

    Always set explicitly before training: the thread count is process-global and other code changes it
    (opening a bundle sets FAISS's OpenMP threads to 1, which torch shares), and results are bitwise
    reproducible only for a given thread count.
    """
    return requested or default_threads(world.local_size)


def all_sum(values: list[float], world: World) -> list[float]:
    """Element-wise sum over processes (float64; exact enough for counts and metric sums)."""
    if not world.distributed:
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64)
    if dist.get_backend() == "nccl":
        tensor = tensor.cuda()
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor.cpu().tolist()


def any_true(flag: bool, world: World) -> bool:
    """True on every process when it is true on any (so all processes stop at the same epoch)."""
    return all_sum([1.0 if flag else 0.0], world)[0] > 0


def barrier(world: World) -> None:
    if world.distributed:
        dist.barrier()
