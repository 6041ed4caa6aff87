"""Data that does not fit on the device: kept in host memory, batches gathered into pinned
buffers and copied to the device without blocking.

Two pinned buffers alternate, so gathering batch i+1 on the host overlaps the device's work on
batch i; an event per buffer keeps a buffer from being refilled before its copy has finished.
"""

from __future__ import annotations

import os

import torch

RESIDENT_FRACTION = 0.5  # data may take this share of the device's free memory


def keep_on_host(nbytes: int, device: torch.device) -> bool:
    """Whether the data stays in host memory: on CUDA when it would take more than half of the
    free device memory (or REGTRAIN_HOST_DATA=1 forces it, to compare the paths)."""
    forced = os.environ.get("REGTRAIN_HOST_DATA")
    if forced is not None:
        return forced == "1"
    if device.type != "cuda":
        return False
    free, _ = torch.cuda.mem_get_info(device)
    return nbytes > RESIDENT_FRACTION * free


class HostBatches:
    def __init__(self, X: torch.Tensor, y: torch.Tensor, batch_size: int, device: torch.device) -> None:
        self.X, self.y, self.device = X, y, device
        pin = device.type == "cuda"
        self.buffers = [
            (
                torch.empty((batch_size, *X.shape[1:]), dtype=X.dtype, pin_memory=pin),
                torch.empty(batch_size, dtype=y.dtype, pin_memory=pin),
            )
            for _ in range(2)
        ]
        self.copied: list[torch.cuda.Event | None] = [None, None]
        self.turn = 0

    def get(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """X[idx], y[idx] on the device (idx on the host)."""
        k, self.turn = self.turn, 1 - self.turn
        copied = self.copied[k]
        if copied is not None:
            copied.synchronize()
        xs, ys = self.buffers[k]
        n = len(idx)
        torch.index_select(self.X, 0, idx, out=xs[:n])
        torch.index_select(self.y, 0, idx, out=ys[:n])
        xb = xs[:n].to(self.device, non_blocking=True)
        yb = ys[:n].to(self.device, non_blocking=True)
        if self.device.type == "cuda":
            event = torch.cuda.Event()
            event.record()
            self.copied[k] = event
        return xb, yb
