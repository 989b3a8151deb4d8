"""The ``engine:`` key and the ``ray:`` section of a config: where the audit runs.

Kept beside :mod:`sensaudit.config.load` (which calls :func:`parse_engine`), as the checks' keys
are in :mod:`sensaudit.settings.checks`. Nothing here imports Ray: a config that names the Ray
engine is read on a machine without it, and the run says how to install it
(:mod:`sensaudit.engines.ray`).

- ``engine``: ``local`` (this process, the default) or ``ray`` (a pool of Ray actors).
- ``ray.address``: the cluster to join (``auto``, ``ray://head:10001``, ...); unset, Ray's own
  default: the cluster ``RAY_ADDRESS`` names, else a Ray instance started on this machine.
- ``ray.workers``: actors in the pool (unset: as many as the cluster's CPUs, or GPUs when
  ``gpus_per_worker`` is set, allow).
- ``ray.cpus_per_worker`` / ``ray.gpus_per_worker``: each actor's resource request.
- ``ray.rows_per_batch``: the rows of a work unit, the data one actor reads at a time (whole
  Parquet row groups; a CSV file is one unit).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sensaudit.core.errors import ConfigError, describe
from sensaudit.core.values import is_finite_number, is_int

if TYPE_CHECKING:
    from sensaudit.config.validate import _Validator

ENGINES = ("local", "ray")
RAY_KEYS = ("address", "workers", "cpus_per_worker", "gpus_per_worker", "rows_per_batch")
# A work unit this size keeps a worker busy for seconds (a 64-feature MLP attributes a few
# hundred thousand rows a second per core), so scheduling costs little, while a dataset of
# millions of rows still splits into enough units to spread over the workers.
ROWS_PER_BATCH = 250_000


@dataclass(frozen=True)
class RaySettings:
    address: str | None = None
    workers: int | None = None
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    rows_per_batch: int = ROWS_PER_BATCH

    def __post_init__(self) -> None:
        # The YAML path checks these with file and key; this guards settings built in Python.
        def bad(key: str, expected: str) -> ConfigError:
            return ConfigError(f"RaySettings: {key} must be {expected} "
                               f"(got {describe(getattr(self, key))})")

        if self.address is not None and (not isinstance(self.address, str)
                                         or not self.address.strip()):
            raise bad("address", "a non-empty string or None")
        if self.workers is not None and not (is_int(self.workers) and self.workers >= 1):
            raise bad("workers", "an integer >= 1 or None")
        if not (is_finite_number(self.cpus_per_worker) and self.cpus_per_worker > 0):
            raise bad("cpus_per_worker", "a number > 0")
        if not (is_finite_number(self.gpus_per_worker) and self.gpus_per_worker >= 0):
            raise bad("gpus_per_worker", "a number >= 0")
        if not (is_int(self.rows_per_batch) and self.rows_per_batch >= 1):
            raise bad("rows_per_batch", "an integer >= 1")


def parse_engine(v: _Validator, top: Mapping[str, Any]) -> tuple[str, RaySettings]:
    """``engine`` and the ``ray`` section of the config's top-level mapping ``top``."""
    engine = v.choice(top.get("engine", "local"), "engine", ENGINES)
    r = v.mapping(top.get("ray") if top.get("ray") is not None else {}, "ray")
    v.keys(r, "ray", optional=RAY_KEYS)
    address = r.get("address")
    workers = r.get("workers")
    return engine, RaySettings(
        address=v.string(address, "ray.address") if address is not None else None,
        workers=v.integer(workers, "ray.workers", minimum=1) if workers is not None else None,
        cpus_per_worker=v.positive(r.get("cpus_per_worker", 1.0), "ray.cpus_per_worker"),
        gpus_per_worker=_non_negative(v, r.get("gpus_per_worker", 0.0), "ray.gpus_per_worker"),
        rows_per_batch=v.integer(r.get("rows_per_batch", ROWS_PER_BATCH), "ray.rows_per_batch",
                                 minimum=1),
    )


def check_engine(name: object, where: str) -> str:
    """An engine named outside a config (``--engine``): one of :data:`ENGINES`."""
    if name not in ENGINES:
        raise ConfigError(f"{where} must be one of {', '.join(ENGINES)} (got {describe(name)})")
    return str(name)


def _non_negative(v: _Validator, value: Any, key: str) -> float:
    if not (is_finite_number(value) and value >= 0):
        v.fail(key, "a number >= 0", value)
    return float(value)


