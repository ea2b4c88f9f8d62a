"""A guard that refuses work which would not fit, instead of swapping or being OOM-killed."""
from __future__ import annotations

import os

import torch


def available_bytes(device: torch.device) -> int:
    """Memory free right now on ``device``: CUDA's free memory, or the host's MemAvailable."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def check_memory(needed: int, max_memory: int | None, device: torch.device, what: str) -> None:
    """Raise ``MemoryError`` naming ``what`` if ``needed`` bytes exceed ``max_memory`` (bytes;
    default: :func:`available_bytes` of ``device``)."""
    limit = available_bytes(device) if max_memory is None else max_memory
    if needed > limit:
        source = "max_memory" if max_memory is not None else f"free memory on {device}"
        raise MemoryError(f"{what} needs about {needed / 2**30:.2f} GiB but {source} is "
                          f"{limit / 2**30:.2f} GiB; raise max_memory, use fewer labelled nodes or hops, "
                          f"or run on a larger device")
