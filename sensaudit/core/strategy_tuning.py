"""Which Jacobian strategy a multi-output model runs.

On a CPU, "auto" is a fixed rule: forward mode when the model has fewer features than outputs,
else one backward pass per output over one forward graph (what the autograd bound does). Timing
the candidates there cost more than it could win: the slow candidates (forward mode over 64
features, vmapped backward passes) ran on whole chunks of real rows, and an 8-output MLP over
131,072 rows ran at 0.43x of the bound (issue 23; benchmarks/engine.py).

On an accelerator no strategy wins everywhere (vectorised strategies can), so "auto" times each
candidate on chunks of real rows (work that counts: the chunks' results are kept) and uses the
fastest for the remaining chunks. The default stays unless another is clearly faster: one
chunk's timing is noisy, and a wrong switch costs every remaining chunk. (Rows per chunk are not
timed: see core/chunking.py.)
"""

from __future__ import annotations

import time
import weakref
from typing import Any

import torch

from sensaudit.core.chunking import Key, Model

TUNED = ("reverse", "vmap-jacrev", "forward", "reverse-vmap")
_TUNING_ROUNDS = 2  # each candidate timed on this many chunks; its best time counts
_SWITCH_MARGIN = 0.9  # leave the default only for a strategy at least 10% faster


class StrategyTuner:
    """The one home of strategy auto-tuning: each model's choice per input shape, kept as
    long as the model lives, so an audit that calls the engine once per data chunk tunes once.
    """

    def __init__(self) -> None:
        self._chosen: weakref.WeakKeyDictionary[Model, Any] = weakref.WeakKeyDictionary()

    def start(self, model: Model, strategy: str, key: Key, *, n_outputs: int,
              n_features: int, chunks: int) -> Tuning:
        """The plan for one call: a fixed strategy, a remembered choice, or a tuning run."""
        if strategy != "auto":
            return Tuning(self, model, key, strategy, active=False)
        chosen = self._remembered(model, key)
        if chosen is not None:
            return Tuning(self, model, key, chosen, active=False)
        default = "forward" if (n_outputs > 1 and n_features < n_outputs) else "reverse"
        # Worth timing only for several outputs, over enough chunks to pay for itself, and
        # never on a CPU (the module's docstring says why). key[2] is the device.
        active = (n_outputs > 1 and chunks > _TUNING_ROUNDS * len(TUNED)
                  and not str(key[2]).startswith("cpu"))
        return Tuning(self, model, key, default, active=active)

    def _remembered(self, model: Model, key: Key) -> str | None:
        try:
            chosen: str | None = self._chosen.get(model, {}).get(key)
            return chosen
        except TypeError:  # not weak-referenceable: tune on every call
            return None

    def remember(self, model: Model, key: Key, strategy: str) -> None:
        try:
            self._chosen.setdefault(model, {})[key] = strategy
        except TypeError:
            pass


class Tuning:
    """One call's tuning run: chunk 0 runs the default untimed, chunks 1.._TUNING_ROUNDS x
    len(TUNED) each time one candidate, then the fastest is used for the rest."""

    def __init__(self, tuner: StrategyTuner, model: Model, key: Key, strategy: str, *,
                 active: bool):
        self.tuner, self.model, self.key = tuner, model, key
        self.strategy = strategy
        self.active = active
        self.timings: dict[str, float] = {}

    def candidate(self, index: int) -> str | None:
        if self.active and 1 <= index <= _TUNING_ROUNDS * len(TUNED):
            return TUNED[(index - 1) % len(TUNED)]
        return None

    def first_try(self, index: int) -> bool:
        return index <= len(TUNED)

    def record(self, index: int, candidate: str, seconds_per_row: float) -> None:
        self.timings[candidate] = min(self.timings.get(candidate, seconds_per_row),
                                      seconds_per_row)
        if index == _TUNING_ROUNDS * len(TUNED):
            self.strategy = fastest(self.timings, default=self.strategy)
            self.active = False
            self.tuner.remember(self.model, self.key, self.strategy)


TUNER = StrategyTuner()


def fastest(timings: dict[Any, Any], default: Any) -> Any:
    """The fastest strategy, but the default unless another beats it clearly: timings of
    single chunks are noisy, and a wrong switch costs every remaining chunk."""
    best = min(timings, key=lambda name: timings[name])
    if default in timings and timings[best] > _SWITCH_MARGIN * timings[default]:
        return default
    return best


def clock(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)  # kernels run asynchronously: wait before reading time
    return time.perf_counter()
