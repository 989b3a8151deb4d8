"""Rows per chunk for the Jacobian engine: a fixed rule from the model's memory per row.

On a CPU a chunk's forward and backward passes run fastest while what they touch stays in
cache: the activations autograd saves for the backward pass, the gradients of the same size
the backward pass makes, and the chunk's Jacobian. Smaller chunks pay each operator's fixed
cost (dispatch, autograd bookkeeping, waking the other threads) more often. So the engine
measures the bytes a row costs once per model and input shape, by counting the tensors autograd
saves on two small probe batches, and sizes chunks to a fixed budget. It used to time candidate
sizes on real chunks instead; on a shared machine that measured the load of the moment, and its
choice moved from run to run. docs/performance-engine.md has the sweep behind the numbers.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

import torch

Model = Callable[[torch.Tensor], torch.Tensor]
# What a chosen size is remembered under: the call's shape and settings (dtype, outputs, ...).
Key = tuple[object, ...]

# Bytes per CPU chunk (saved activations plus Jacobian). In two sweeps of seven MLPs (narrow and
# wide, one to eight outputs, float32 and float64; docs/performance-engine.md) the sizes this
# budget picks ran at 0.91-1.00 of the fastest fixed size, five of the seven at 0.96 or more;
# the 16 MiB budget with a 4,096-row floor it replaced ran eight outputs at 0.90-0.93. On this
# 2-core machine the best sizes held 5-10 MiB: a few times the 2 MiB of L2 cache per core, well
# under the 32 MiB of L3. 8 MiB is 3,072 rows of a 64-256-256-1 MLP in float32 (2.5 KB a
# row), 1,536 rows with eight outputs and 8,192 rows of a 64-64-64-1.
_CPU_BYTES_PER_CHUNK = 2**23
_CPU_ROW_STEP = 512  # rows are a multiple of this: no odd tail of a few rows per chunk
# Below about a thousand rows each operator's fixed cost shows (512-row chunks ran at 0.59-0.98
# of the best, under 0.9 for five of the seven models in a sweep); far above 65,536 rows the
# gain is nil and the chunk's graph holds memory for nothing.
_CPU_MIN_ROWS = 1_024
_CPU_MAX_ROWS = 65_536
# Rows per chunk where the memory per row is not measured (methods that expand each row into
# many copies size their blocks from this).
_CPU_DEFAULT_ROWS = 4_096
# On a GPU bigger chunks keep the device busy.
_GPU_CHUNK_ROWS = 65_536
# Either way the Jacobian of one chunk is capped near 2**22 elements (16 MiB in float32) so
# wide models stay within memory.
_JACOBIAN_ELEMENTS_PER_CHUNK = 2**22
_MIN_CHUNK_ROWS = 64
_PROBE_ROWS = (8, 16)


def default_batch_size(n_features: int, n_outputs: int = 1,
                       device: torch.device | str = "cpu") -> int:
    """Rows per chunk for a model with this many features and outputs on this device, when
    its memory per row is not known (the methods that expand each row into many)."""
    rows = _GPU_CHUNK_ROWS if torch.device(device).type == "cuda" else _CPU_DEFAULT_ROWS
    return max(_MIN_CHUNK_ROWS, min(rows, chunk_cap(n_features, n_outputs)))


def chunk_cap(n_features: int, n_outputs: int) -> int:
    """The most rows whose Jacobian stays within the per-chunk element budget."""
    return max(_MIN_CHUNK_ROWS, _JACOBIAN_ELEMENTS_PER_CHUNK // max(1, n_features * n_outputs))


def rows_for_footprint(bytes_per_row: float, n_features: int, n_outputs: int,
                       element_size: int) -> int:
    """CPU rows per chunk for a model that saves ``bytes_per_row`` for its backward pass: the
    cache budget over that plus the row's Jacobian (outputs x features values of
    ``element_size`` bytes), rounded down to a multiple of 512 rows, within
    [_CPU_MIN_ROWS, _CPU_MAX_ROWS] and the Jacobian's cap."""
    jacobian_bytes = n_outputs * n_features * element_size
    rows = int(_CPU_BYTES_PER_CHUNK // (bytes_per_row + jacobian_bytes))
    rows = max(_CPU_MIN_ROWS, min(_CPU_MAX_ROWS, rows // _CPU_ROW_STEP * _CPU_ROW_STEP))
    return max(_MIN_CHUNK_ROWS, min(rows, chunk_cap(n_features, n_outputs)))


def saved_bytes_per_row(model: Model, x: torch.Tensor) -> float:
    """Bytes autograd keeps per row for the backward pass of ``model`` at rows like ``x``.

    Counts the distinct storages saved during forward passes over two probe batches built from
    x's first row; the difference divided by the extra rows leaves out what does not grow with
    the rows (weights). A model that fails here fails the same way in the engine, which then
    reports it: the probe answers 0 and lets it.
    """
    totals = []
    for rows in _PROBE_ROWS:
        saved: dict[int, int] = {}

        def pack(tensor: torch.Tensor, saved: dict[int, int] = saved) -> torch.Tensor:
            try:
                storage = tensor.untyped_storage()
                saved[storage.data_ptr()] = storage.nbytes()
            except (RuntimeError, NotImplementedError):  # no plain storage (a tensor subclass)
                saved[id(tensor)] = tensor.numel() * tensor.element_size()
            return tensor

        probe = x[:1].detach().expand(rows, -1).clone().requires_grad_(True)
        try:
            with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, _unpack):
                model(probe)
        except Exception:  # noqa: BLE001 - the engine's own call reports a failing model
            return 0.0
        totals.append(sum(saved.values()))
    return max(0.0, (totals[1] - totals[0]) / (_PROBE_ROWS[1] - _PROBE_ROWS[0]))


def _unpack(tensor: torch.Tensor) -> torch.Tensor:
    return tensor


class ChunkSizes:
    """Each model's rows per chunk per input shape, kept as long as the model lives, so an
    audit that calls the engine once per data chunk probes once."""

    def __init__(self) -> None:
        self._rows: weakref.WeakKeyDictionary[Model, Any] = weakref.WeakKeyDictionary()

    def rows(self, model: Model, key: Key, x: torch.Tensor, n_outputs: int) -> int:
        """Rows per chunk for ``model`` at inputs like ``x``: the GPU default on a GPU, else
        the footprint rule; calls with no more rows than the smallest chunk need no probe."""
        n_features = x.shape[1]
        if x.device.type != "cpu" or x.shape[0] <= _CPU_MIN_ROWS:
            return default_batch_size(n_features, n_outputs, x.device)
        try:
            remembered: int | None = self._rows.get(model, {}).get(key)
        except TypeError:  # not weak-referenceable: probe on every call (two tiny batches)
            remembered = None
        if remembered is not None:
            return remembered
        rows = rows_for_footprint(saved_bytes_per_row(model, x), n_features, n_outputs,
                                  x.element_size())
        try:
            self._rows.setdefault(model, {})[key] = rows
        except TypeError:
            pass
        return rows


CHUNKS = ChunkSizes()
