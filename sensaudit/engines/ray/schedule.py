"""Work units over the actor pool, results back in unit order.

Each actor has up to :data:`PER_WORKER` units in flight (one running, one queued, so it never
waits for the driver), and the driver runs at most :data:`LOOKAHEAD` units per worker ahead of
the oldest unit not yet handed on: results that arrive early wait in Ray's object store, which
this bounds. Results are handed on in unit order, so the merges run in one order whatever the
timing (the report is the same run after run) and examples rows stream to the report folder in
the data's order, one unit at a time: nothing collects them on the driver.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from sensaudit.engines.ray.job import Failure
from sensaudit.engines.ray.worker import unpack

PER_WORKER = 2
LOOKAHEAD = 4


def run_units(ray: Any, actors: Sequence[Any], call: str, plan: object, units: int,
              on_result: Callable[[int, Any], None]) -> None:
    """Call ``actor.<call>(unit, plan)`` for units 0 .. units - 1 and give each result to
    ``on_result(unit, result)`` in unit order. A :class:`~.job.Failure` is raised as its
    error (bad input met by a worker); the plan travels once, through the object store.

    A result is fetched only when its turn comes: one that finishes early waits in Ray's
    object store (which spills to disk), so the driver holds one unit's result at a time.
    """
    plan_ref = ray.put(plan)
    slots = deque(actor for _ in range(PER_WORKER) for actor in actors)
    pending: dict[Any, tuple[int, Any]] = {}
    finished: dict[int, Any] = {}
    submitted = delivered = 0
    window = LOOKAHEAD * len(actors)
    while delivered < units:
        while slots and submitted < units and submitted - delivered < window:
            actor = slots.popleft()
            pending[getattr(actor, call).remote(submitted, plan_ref)] = (submitted, actor)
            submitted += 1
        if delivered not in finished:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                unit, actor = pending.pop(ref)
                finished[unit] = ref
                slots.append(actor)
        while delivered in finished:
            result = unpack(ray.get(finished.pop(delivered)))
            if isinstance(result, Failure):
                raise result.error
            on_result(delivered, result)
            delivered += 1
