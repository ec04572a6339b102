"""Process-group set-up shared by every ``multi_gpu_*.json`` overlay: NCCL on GPUs, gloo on CPU (tests, laptops)."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence

import torch
import torch.distributed as dist

__all__ = [
    "init_distributed",
    "distributed_device",
    "wrap_ddp",
    "is_main_process",
    "main_process_first",
    "preparation_stage",
    "handlers_for_rank",
]


def init_distributed() -> None:
    """Join the ``torchrun`` process group (no-op if already joined); the backend follows the hardware."""
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")


def distributed_device() -> torch.device:
    """This rank's device: ``cuda:LOCAL_RANK`` when GPUs exist, else the CPU."""
    if torch.cuda.is_available():
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
        torch.cuda.set_device(local_rank)
        return torch.device(f"cuda:{local_rank}")
    return torch.device("cpu")


def wrap_ddp(network: torch.nn.Module, device: torch.device, find_unused_parameters: bool = False) -> torch.nn.Module:
    """``DistributedDataParallel`` with ``device_ids`` only on GPU (gloo on CPU rejects them)."""
    network = network.to(device)
    device_ids = [device] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(
        network, device_ids=device_ids, find_unused_parameters=find_unused_parameters
    )


def is_main_process() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0


def handlers_for_rank(handlers: Sequence, every_rank: Sequence[str] = ()) -> list:
    """The handlers this process attaches: all of them on the main process; on the other ranks only those whose class
    name is in ``every_rank`` (the ones that must run everywhere, e.g. ``StopOnNonFiniteLoss``, ``ValidationHandler``,
    ``CheckpointLoader``); logging and file-writing handlers stay on rank 0. The multi-GPU overlays' one rank filter."""
    if is_main_process():
        return list(handlers)
    keep = set(every_rank)
    return [handler for handler in handlers if type(handler).__name__ in keep]


def preparation_stage() -> int:
    """When this process runs an idempotent preparation step under ``torchrun``: 0 the global rank 0, 1 the first
    process of every other node (``LOCAL_RANK`` 0), 2 every other process. See :func:`main_process_first`."""
    if dist.get_rank() == 0:
        return 0
    return 1 if int(os.environ.get("LOCAL_RANK", "0")) == 0 else 2


def main_process_first(fn: Callable) -> Callable:
    """Run ``fn`` (an idempotent preparation step that skips what already exists: generating data, caching
    volumes, building a model folder) first on rank 0, then on the first process of each other node, then on the
    rest, with a barrier between the stages.

    On one shared filesystem rank 0 builds everything and the later stages find it ready; with node-local disks each
    node's first process builds its own copy; in both cases no two processes of one node ever write the same file at
    once. Plain call outside DDP."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return fn(*args, **kwargs)
        stage, result = preparation_stage(), None
        for turn in range(3):
            if turn == stage:
                result = fn(*args, **kwargs)
            dist.barrier()
        return result

    return wrapper
