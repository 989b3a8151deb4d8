"""Joining Ray, and the pool of audit actors.

Ray is an optional extra: :func:`require_ray` imports it or says how to install it (exit 2).
:func:`ray_session` joins the cluster ``ray.address`` names (Ray's own default when unset: the
one ``RAY_ADDRESS`` names, else a Ray instance started here) unless this process already joined
one, and leaves only what it started. :func:`worker_pool` starts the actors with the resources
the config asks for and stops them at the end, also on error.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sensaudit._version import __version__
from sensaudit.config.ray import RaySettings
from sensaudit.core.errors import ConfigError, first_line
from sensaudit.engines.ray.job import Failure, Job, WorkerInfo
from sensaudit.engines.ray.worker import AuditWorker, unpack
from sensaudit.reports.staging import terminated_by

INSTALL = "pip install 'sensaudit[ray]'"
# A worker whose node dies is started again elsewhere and its unit retried: units are pure
# functions of the data, so a retry changes nothing in the result.
RESTARTS = 3
_NO_CRASH_HANDLER = "RAY_DISABLE_FAILURE_SIGNAL_HANDLER"


def require_ray(source: object) -> Any:
    """The ``ray`` module, or a ConfigError saying how to install it."""
    try:
        import ray
    except ImportError:
        raise ConfigError(f"{source}: engine 'ray' needs Ray, which is not installed here; "
                          f"install it with: {INSTALL}") from None
    return ray


@contextmanager
def ray_session(settings: RaySettings, source: object) -> Iterator[Any]:
    """Ray, joined for the audit; shut down afterwards only if this call started it."""
    ray = require_ray(source)
    started = not ray.is_initialized()
    if started:
        # ray.init installs a SIGTERM handler of its own (sys.exit): the one in place (the
        # report folder's, which removes a half-written report) is put back.
        main = threading.current_thread() is threading.main_thread()
        previous = signal.getsignal(signal.SIGTERM) if main else None
        _no_crash_handler(ray)
        try:
            # Workers' output stays in the cluster's logs: the CLI's stdout is the report.
            ray.init(address=settings.address, include_dashboard=False, log_to_driver=False,
                     logging_level=logging.ERROR)
        except SystemExit as exc:
            # SIGTERM while ray.init runs meets Ray's own handler: sys.exit(15), an exit
            # status that reads as neither a signal nor sensaudit's. Stop what it started.
            _shutdown_quietly(ray)
            if exc.code == signal.SIGTERM:
                raise SystemExit(128 + signal.SIGTERM) from None
            raise
        except (ConnectionError, ValueError, RuntimeError) as exc:
            where = f"ray.address '{settings.address}'" if settings.address else "Ray"
            raise ConfigError(f"{source}: cannot start or join {where} "
                              f"({first_line(exc)})") from None
        finally:
            if main:
                signal.signal(signal.SIGTERM, previous)
    try:
        yield ray
    except BaseException:
        # The report folder's SIGTERM handler raises SystemExit(143); raised inside ray.get,
        # Ray replaces it with SystemExit(1), the "gate failed" status. Put 143 back.
        signum = terminated_by()
        if signum is not None:
            raise SystemExit(128 + signum) from None
        raise
    finally:
        if started:
            ray.shutdown()


def _no_crash_handler(ray: Any) -> None:
    """Ray's core worker installs absl's crash handler for SIGTERM in the driver, which aborts
    (exit 134) instead of letting the run clean up. Ray reads its switch
    (RAY_DISABLE_FAILURE_SIGNAL_HANDLER) into ray_constants when ray is imported, so the
    environment variable is too late here: the constant is set, for this process only (Ray's
    own processes keep their crash reports)."""
    constants = getattr(getattr(ray, "_private", None), "ray_constants", None)
    if constants is not None and hasattr(constants, _NO_CRASH_HANDLER):
        setattr(constants, _NO_CRASH_HANDLER, True)


def _shutdown_quietly(ray: Any) -> None:
    try:
        if ray.is_initialized():
            ray.shutdown()
    except Exception:  # noqa: BLE001 - already on the way out
        pass


def pool_size(ray: Any, settings: RaySettings, units: int, source: object) -> int:
    """``ray.workers``, or as many workers as the cluster's CPUs (GPUs, when each asks for
    some) hold; never more than there are units."""
    resources = ray.cluster_resources()
    cpus, gpus = float(resources.get("CPU", 0)), float(resources.get("GPU", 0))
    if settings.gpus_per_worker > gpus:
        raise ConfigError(f"{source}: ray.gpus_per_worker is {settings.gpus_per_worker:g} but "
                          f"the Ray cluster has {gpus:g} GPU(s)")
    if settings.cpus_per_worker > cpus:
        raise ConfigError(f"{source}: ray.cpus_per_worker is {settings.cpus_per_worker:g} but "
                          f"the Ray cluster has {cpus:g} CPU(s)")
    fits = int(cpus // settings.cpus_per_worker)
    if settings.gpus_per_worker:
        fits = min(fits, int(gpus // settings.gpus_per_worker))
    return max(1, min(settings.workers or fits, units))


@contextmanager
def worker_pool(ray: Any, settings: RaySettings, job: Job, size: int) -> Iterator[list[Any]]:
    """``size`` actors that have each loaded the models; stopped on the way out."""
    remote = ray.remote(num_cpus=settings.cpus_per_worker, num_gpus=settings.gpus_per_worker,
                        max_restarts=RESTARTS, max_task_retries=RESTARTS)(AuditWorker)
    actors = [remote.remote(job) for _ in range(size)]
    try:
        try:
            answers = ray.get([actor.info.remote() for actor in actors])
        except ray.exceptions.RayActorError as exc:
            raise ConfigError(f"{job.plan.source}: a Ray worker could not start "
                              f"({first_line(exc)}); every node needs sensaudit {__version__} "
                              "and its dependencies installed") from None
        for info in answers:
            _check_worker(unpack(info))
        yield actors
    finally:
        for actor in actors:
            ray.kill(actor)


def _check_worker(info: object) -> None:
    if isinstance(info, Failure):
        raise info.error
    if not isinstance(info, WorkerInfo):
        raise TypeError(f"a Ray worker answered {type(info).__name__}, not its WorkerInfo")
    if info.version != __version__:
        # A worker running other code would merge into a report that no version wrote.
        raise ConfigError(f"a Ray worker (pid {info.pid}) runs sensaudit {info.version}, the "
                          f"driver {__version__}; install the same version on every node")
