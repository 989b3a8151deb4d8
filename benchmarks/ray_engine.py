"""The local engine against the Ray engine, on the same partitioned Parquet data.

Writes N rows of 64 float32 features as ``--files`` Parquet files (one row group each) and an
MLP 64-64-64-1 (as benchmarks/end_to_end.py), then audits the folder with ``sensaudit``'s
reports (csv, markdown, json) and ``report.examples: all`` (examples.csv holds every row):

- the local engine, in this process, with ``--threads`` torch threads;
- the Ray engine on a local Ray instance of ``--cpus`` CPUs, for each ``--workers`` count
  (1 CPU and 1 torch thread per worker), once on the data and once on 1,000 rows of it (one
  work unit): the latter is the engine's fixed cost (workers started, models loaded, three
  passes' round trips);
- with Ray Data installed, one trivial pass of ``ray.data`` ``map_batches`` over an actor pool,
  what a design starting an actor pool per pass would pay per pass.

Phases come from the progress callback: the time of each pass's last update. The per-worker
rate of the audit pass, with the fixed cost and the driver's serial work, gives the estimate
of how the run scales with workers that the script prints last.

    python benchmarks/ray_engine.py                   # 1M rows, 8 files, 1 and 2 workers
    python benchmarks/ray_engine.py --rows 200000     # a quick look
"""

from __future__ import annotations

import argparse
import logging
import math
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

# benchmarks/ is the script's folder: end_to_end's model is shared.
from end_to_end import FEATURES, make_model

from sensaudit import load_config
from sensaudit.api import run_audit
from sensaudit.config.ray import RaySettings


def make_data(folder: Path, rows: int, files: int) -> None:
    generator = np.random.default_rng(0)
    names = [f"f{j}" for j in range(FEATURES)]
    folder.mkdir()
    bounds = np.linspace(0, rows, files + 1).astype(int)
    for i, (start, stop) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
        block = generator.standard_normal((stop - start, FEATURES), dtype=np.float32)
        pq.write_table(pa.table(dict(zip(names, block.T, strict=True))),
                       folder / f"part-{i:04d}.parquet", row_group_size=max(1, stop - start))


class Phases:
    """The progress callback's updates, timed: when each pass sent its last one."""

    def __init__(self) -> None:
        self.began = time.perf_counter()
        self.last: dict[str, float] = {}

    def __call__(self, stage: str, done: int, total: int | None) -> None:
        self.last[stage] = time.perf_counter() - self.began


def audit(config: Path, engine: str, ray: RaySettings | None = None) -> tuple[float, Phases]:
    cfg = replace(load_config(config), engine=engine)
    if ray is not None:
        cfg = replace(cfg, ray=ray)
    phases = Phases()
    run_audit(cfg, progress=phases)
    return time.perf_counter() - phases.began, phases


def ray_data_pass(ray: object, workers: int) -> float | None:
    """One trivial map_batches pass over an actor pool of ``workers`` (None without Ray Data)."""
    try:
        import ray.data
    except ImportError:
        return None
    logging.getLogger("ray.data").setLevel(logging.ERROR)
    ray.data.DataContext.get_current().enable_progress_bars = False

    class Echo:
        def __call__(self, batch: dict) -> dict:
            return batch

    began = time.perf_counter()
    items = ray.data.from_items([{"unit": i} for i in range(8)], override_num_blocks=8)
    list(items.map_batches(Echo, batch_size=1, num_cpus=1,
                           compute=ray.data.ActorPoolStrategy(size=workers)).iter_rows())
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    import ray

    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, ray {ray.__version__}, {args.rows:,} rows x {FEATURES} "
          f"float32 features in {args.files} Parquet files, MLP {FEATURES}-64-64-1; local "
          f"engine {args.threads} threads; Ray: local instance of {args.cpus} CPUs, 1 CPU and "
          "1 thread per worker\n")
    with tempfile.TemporaryDirectory(prefix="sensaudit-ray-bench-") as folder:
        root = Path(folder)
        make_model(root / "model.pt2")
        make_data(root / "rows", args.rows, args.files)
        (root / "tiny").mkdir()
        pq.write_table(pq.read_table(root / "rows" / "part-0000.parquet").slice(0, 1000),
                       root / "tiny" / "part-0000.parquet")
        configs = {}
        for name, data, extra in (("rows", "rows", "  examples: all\n"),
                                  ("tiny", "tiny", "  examples: all\n"),
                                  ("no_examples", "rows", "  examples: none\n")):
            configs[name] = root / f"{name}.yaml"
            configs[name].write_text(f"model:\n  path: {root / 'model.pt2'}\ndata:\n  path: "
                                     f"{root / data}\nreport:\n  dir: {root / 'out' / name}\n"
                                     + extra)
        local, phases = audit(configs["rows"], "local")
        print("| engine | workers | wall s | rows/s | vs local | phases (s, cumulative) |")
        print("|---|---:|---:|---:|---:|---|")
        print(f"| local | - | {local:.1f} | {args.rows / local:,.0f} | 1.00x | read pass "
              f"{phases.last['audit']:.1f}, replay {phases.last['examples']:.1f} |", flush=True)
        began = time.perf_counter()
        ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False,
                 logging_level=logging.ERROR)
        started = time.perf_counter() - began
        measured = {}
        for workers in args.workers:
            settings = RaySettings(workers=workers, cpus_per_worker=1)
            fixed, tiny = audit(configs["tiny"], "ray", settings)
            wall, phases = audit(configs["rows"], "ray", settings)
            stats, audited = phases.last["statistics"], phases.last["audit"]
            # The passes' own time: the big run's less the tiny run's (start-up, round trips).
            read = stats - tiny.last["statistics"]
            attribute = (audited - stats) - (tiny.last["audit"] - tiny.last["statistics"])
            measured[workers] = (fixed, wall, read, attribute, wall - audited)
            print(f"| ray | {workers} | {wall:.1f} | {args.rows / wall:,.0f} | "
                  f"{wall / local:.2f}x | workers up + statistics {stats:.1f}, audit pass "
                  f"{audited:.1f}, reports {wall:.1f} |", flush=True)
        most = max(args.workers)
        quiet, _ = audit(configs["no_examples"], "ray", RaySettings(workers=most,
                                                                     cpus_per_worker=1))
        print(f"| ray, report.examples: none | {most} | {quiet:.1f} | {args.rows / quiet:,.0f} "
              f"| {quiet / local:.2f}x | |", flush=True)
        print(f"\nray.init (a local instance): {started:.1f} s, once per process.")
        for workers, (fixed, _, read, attribute, serial) in measured.items():
            print(f"{workers} worker(s): fixed cost (the same audit of 1,000 rows, one unit) "
                  f"{fixed:.1f} s; beyond it, statistics pass {read:.1f} s, audit pass "
                  f"{attribute:.1f} s; after the last unit {serial:.1f} s on the driver.")
        for workers in args.workers:
            data_pass = ray_data_pass(ray, workers)
            if data_pass is not None:
                print(f"Ray Data: one trivial map_batches pass over a pool of {workers} "
                      f"actor(s): {data_pass:.1f} s.")
        ray.shutdown()
    if 1 not in measured:
        return
    fixed, _, read, attribute, serial = measured[1]
    read_rate, audit_rate = args.rows / max(read, 1e-9), args.rows / max(attribute, 1e-9)
    streamed = measured[most][1] - quiet  # examples.csv's cost on the driver, roughly
    stream_rate = args.rows / streamed if streamed > 0 else math.inf
    print(f"\nPer worker (one core): statistics {read_rate:,.0f} rows/s, audit pass "
          f"{audit_rate:,.0f} rows/s. The driver streamed examples.csv at about "
          f"{stream_rate:,.0f} rows/s ({streamed:.1f} s of the {most}-worker run).")
    rows = 100_000_000
    print(f"Estimate for {rows:,} rows on w such workers (units >= w): fixed + rows / w x "
          "(1/statistics + 1/audit) + the driver's part after the last unit (x rows); with "
          "examples.csv for every row the audit pass is no faster than the driver streams it:")
    for workers in (1, 4, 16, 64):
        after = serial * rows / args.rows
        quiet_audit = rows / (workers * audit_rate)
        base = fixed + rows / (workers * read_rate) + after
        print(f"  w={workers:>2}: report.examples: none {(base + quiet_audit) / 60:,.1f} min, "
              f"all {(base + max(quiet_audit, rows / stream_rate)) / 60:,.1f} min")

if __name__ == "__main__":
    main()
