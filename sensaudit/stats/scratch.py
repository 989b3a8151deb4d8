"""Reused working memory for the per-chunk work that only passes through a chunk-sized array.

The statistics sum in float64, so a chunk's float32 values are widened first: 51 MB for
100,000 rows x 64 features. Allocated fresh for every chunk, a block that size comes from the
operating system each time (glibc maps anything over 32 MiB directly and unmaps it on free), and
the page faults of first touching it cost several times the arithmetic done on it: on 2 CPU
cores, widening such a chunk takes 27 ms into fresh memory and 4 ms into memory already touched.
So such arrays live in buffers kept per thread, device and named slot and reused chunk after
chunk; each holds the largest array asked of it so far for the thread's life.

A buffer is valid until the next request for the same slot on the same thread: a caller uses
it within one call and never keeps it.
"""

from __future__ import annotations

import threading

import torch

_LOCAL = threading.local()


def reused(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device | str = "cpu", *,
           slot: str) -> torch.Tensor:
    """An uninitialised contiguous tensor of ``shape`` and ``dtype`` in this thread's buffer
    for ``slot`` on ``device`` (see the module docstring for how long it is valid)."""
    buffers: dict[tuple[str, torch.device, torch.dtype], torch.Tensor] = \
        _LOCAL.__dict__.setdefault("buffers", {})
    key = (slot, torch.device(device), dtype)
    size = 1
    for n in shape:
        size *= n
    buffer = buffers.get(key)
    if buffer is None or buffer.numel() < size:
        buffer = torch.empty(size, dtype=dtype, device=device)
        buffers[key] = buffer
    return buffer[:size].view(shape)


def widened(values: torch.Tensor) -> torch.Tensor:
    """A float64 copy of ``values`` (same shape and device, contiguous) in the reused buffer of
    slot "widened", for the caller to work on in place."""
    if not values.is_contiguous():  # a fresh copy keeps its strides, so sums add in one order
        return values.detach().to(torch.float64, copy=True)
    out = reused(tuple(values.shape), torch.float64, values.device, slot="widened")
    out.copy_(values.detach())
    return out
