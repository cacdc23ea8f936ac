"""Several training processes (torchrun): process-group set-up and the few collectives the
trainer needs (agree on stopping, average the logged loss, gather per-rank JSON state).

`torchrun --nproc_per_node=N -m restore_cli train …` sets RANK, WORLD_SIZE, LOCAL_RANK and
MASTER_ADDR/PORT; `start_distributed` then joins the group (NCCL on GPUs, gloo on CPUs). A
single process without those variables gets a context of world size 1 and every collective
is the identity.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistributedContext:
    """This process's place in the group; `owns_group` when `start_distributed` created it."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def start_distributed(use_cuda: bool) -> DistributedContext:
    """Join the process group described by the torchrun environment (or an existing one)."""
    if dist.is_available() and dist.is_initialized():
        return DistributedContext(
            rank=dist.get_rank(),
            world_size=dist.get_world_size(),
            local_rank=int(os.environ.get("LOCAL_RANK", "0")),
        )
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistributedContext()
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    backend = "nccl" if use_cuda else "gloo"
    if use_cuda:
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend=backend, rank=rank, world_size=world_size)
    return DistributedContext(rank=rank, world_size=world_size, local_rank=local_rank, owns_group=True)


def stop_distributed(context: DistributedContext, finished: bool = True) -> None:
    """Leave the group this process created. After a normal finish every rank first meets at a
    barrier: a rank that tears its gloo connections down while a peer is still using them can
    make the peer abort ("terminate called without an active exception"). After a failure the
    peers may never arrive, so the barrier is skipped."""
    if context.owns_group and dist.is_initialized():
        if finished:
            dist.barrier()
        dist.destroy_process_group()


def agree(context: DistributedContext, flags: list[bool], device: torch.device) -> list[bool]:
    """Each flag true on every rank when it is true on at least one (so that all ranks stop, or
    fail, at the same step)."""
    if not context.enabled:
        return list(flags)
    value = torch.tensor([1.0 if f else 0.0 for f in flags], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return [bool(v > 0) for v in value.tolist()]


def sum_over_ranks(context: DistributedContext, values: list[float], device: torch.device) -> list[float]:
    """Element-wise sum of `values` over the ranks."""
    if not context.enabled:
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor.tolist()


def gather_json(context: DistributedContext, value: Any, device: torch.device) -> list[Any]:
    """Every rank's JSON-able `value`, in rank order (sent as UTF-8 bytes, never pickled)."""
    if not context.enabled:
        return [value]
    data = torch.tensor(list(json.dumps(value).encode("utf-8")), dtype=torch.uint8, device=device)
    length = torch.tensor([data.numel()], dtype=torch.int64, device=device)
    lengths = [torch.zeros_like(length) for _ in range(context.world_size)]
    dist.all_gather(lengths, length)
    longest = int(max(int(n.item()) for n in lengths))
    padded = torch.zeros(longest, dtype=torch.uint8, device=device)
    padded[: data.numel()] = data
    chunks = [torch.zeros_like(padded) for _ in range(context.world_size)]
    dist.all_gather(chunks, padded)
    return [json.loads(bytes(chunk[: int(n.item())].cpu().tolist()).decode("utf-8")) for chunk, n in zip(chunks, lengths)]
