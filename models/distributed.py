"""Several processes, one model: ``torch.distributed`` as ``torchrun`` sets it up.

``torchrun`` (``python -m torch.distributed.run``) starts one process per device and gives each
its ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE`` and the rendezvous address in the environment;
:func:`process_group` joins them (NCCL on CUDA, gloo on the CPU) and leaves again. Outside
``torchrun`` every function here answers for a world of one process, so the same training code
runs alone or under ``torchrun``.

Data parallelism follows ``DistributedSampler``: every rank draws the same seeded permutation of
the epoch and takes every ``world``-th index from its own offset (:func:`epoch_shard`); the model
is wrapped in ``DistributedDataParallel``, which averages the gradients across ranks.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data.distributed import DistributedSampler


def active() -> bool:
    """A process group of more than one process is joined."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def is_main() -> bool:
    return rank() == 0


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def launched() -> bool:
    """This process was started by ``torchrun`` (which sets ``RANK`` and ``WORLD_SIZE``)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


@contextmanager
def process_group() -> Iterator[None]:
    """Join the ``torchrun`` process group for the block (a no-op outside ``torchrun``)."""
    if not launched() or int(os.environ["WORLD_SIZE"]) < 2 or dist.is_initialized():
        yield
        return
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(local_rank())
    dist.init_process_group("nccl" if cuda else "gloo")
    try:
        yield
    finally:
        dist.destroy_process_group()


def epoch_shard(n: int, seed: int, epoch: int) -> torch.Tensor:
    """This rank's indices of epoch ``epoch``: ``DistributedSampler``'s disjoint shard of one
    permutation of ``range(n)`` seeded by ``seed + epoch`` (the tail that does not divide evenly
    among the ranks is left out: every rank takes as many rows)."""
    sampler = DistributedSampler(range(n), num_replicas=world_size(), rank=rank(), shuffle=True,
                                 seed=seed, drop_last=True)
    sampler.set_epoch(epoch)
    return torch.tensor(list(sampler), dtype=torch.long)


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` summed over the ranks, in place (unchanged in a world of one)."""
    if active():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast_buffers(module: torch.nn.Module) -> None:
    """Rank 0's buffers (batch-norm running statistics) to every rank, so all hold one model."""
    if active():
        for buffer in module.buffers():
            dist.broadcast(buffer, src=0)


def broadcast_object(obj: Any) -> Any:
    """Rank 0's ``obj`` (picklable) on every rank."""
    if not active():
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank."""
    if not active():
        return [obj]
    gathered: list[Any] = [None] * world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def barrier() -> None:
    if active():
        dist.barrier()
