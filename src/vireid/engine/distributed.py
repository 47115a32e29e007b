"""Distributed data parallel set-up for runs launched by ``torchrun``.

``torchrun --nproc_per_node=G -m vireid.cli train --config ...`` (or with ``--nnodes`` and a
rendezvous endpoint for several machines) sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``;
:func:`init_distributed` reads them, picks NCCL on CUDA and gloo on CPU, and binds each process
to its GPU. Without those variables everything runs in one process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str = "auto") -> DistInfo:
    """Initialise the process group when launched by torchrun; a no-op otherwise."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistInfo()
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and device != "cpu"
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    if use_cuda:
        torch.cuda.set_device(local_rank)
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank)


def broadcast_buffers(module: torch.nn.Module, src: int = 0) -> None:
    """Give every rank rank ``src``'s buffers (BatchNorm running statistics). DDP keeps the parameters equal
    but each rank's buffers move with its own last batch until the next training forward broadcasts them."""
    if not dist.is_initialized():
        return
    for buffer in module.buffers():
        dist.broadcast(buffer.data, src=src)


def gather_rows(local: torch.Tensor) -> torch.Tensor:
    """Every rank's rows ``[n_r, D]`` concatenated in rank order, on every rank (CPU, ``local``'s dtype).

    The ranks may hold different row counts (a padded ``all_gather``); a rank with no rows sends none."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return local
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    meta = torch.tensor([local.shape[0], local.shape[1] if local.dim() > 1 else 0], dtype=torch.int64, device=device)
    metas = [torch.zeros_like(meta) for _ in range(dist.get_world_size())]
    dist.all_gather(metas, meta)
    sizes = [int(m[0]) for m in metas]
    width = max(int(m[1]) for m in metas)
    padded = torch.zeros((max(sizes), width), dtype=local.dtype, device=device)
    if local.shape[0]:
        padded[: local.shape[0]] = local.to(device)
    buffers = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(buffers, padded)
    return torch.cat([b[:n] for b, n in zip(buffers, sizes, strict=True)]).cpu()


def barrier(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.barrier()


def cleanup(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
